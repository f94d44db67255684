"""Concurrent streams for the fast Chatterbox path: T3 decode steps batched across requests.

:class:`BatchT3` decodes up to ``slots`` requests in one step. Each request owns one *slot*: its CFG pair is
rows ``2s, 2s+1`` of a static KV cache ``[layers, 2*slots, heads, max_len, head_dim]``, and it has its own
device-side state — cache position, learned speech position, tokens drawn, the set of tokens seen (repetition
penalty), sampling parameters (CFG weight, temperature, penalty, min_p, top_p, greedy) and stop handling. The
math per row is :class:`~ttsbench.chatterbox.fast_t3.FastT3`'s (same fused weights, same layer pieces, same
sampler), with per-row RoPE, cache writes and attention masks, so a request decodes the same tokens whether it
shares the step or not (greedy; checked in tests/test_chatterbox_fast.py — on CUDA up to the rounding of a
different GEMM shape).

A step runs the rows of slots ``[0, W)`` only, ``W`` the smallest of :data:`WIDTHS` covering the highest busy
slot (free slots are handed out lowest first): one request decodes at width 1 — FastT3's own shapes and
kernels (Triton GEMV, compiled layer pieces) — and the KV bucket is the one of the longest busy slot. Each
(width, bucket) step and each width's sampler are captured once in a CUDA graph (:meth:`capture_all`);
with ``prefill_graphs`` (opt-in) so is the prefill of each slot per prefix length padded to a multiple of
:data:`PREFILL_PAD` (zeros after the prefix change nothing before it in a causal pass; the logits are read at
the prefix's last position).

:class:`T3Scheduler` owns a ``BatchT3`` and one thread: it admits waiting requests into free slots (prefill,
one request at a time, between steps), runs ``poll`` steps for all busy slots, reads the new tokens
back (one host sync per ``poll`` steps), hands each request its tokens through a queue and frees the slots of
requests that drew EOS or reached their cap. Callers iterate :meth:`T3Scheduler.tokens` — the same contract as
``FastT3.iter_tokens`` (CPU tensors here) — from their own threads, and vocode while the scheduler keeps
decoding (``FastChatterbox.stream(..., tokens=...)``): S3Gen chunks of different requests interleave with the
T3 steps of all of them. On CUDA the scheduler runs on its own stream, so T3 steps and vocoding overlap on the
GPU.
"""

from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ttsbench.chatterbox.fast_t3 import BUCKET, FastT3, SamplingParams

WIDTHS = (1, 2, 4, 8)
PREFILL_PAD = 32  # prefill lengths are padded to a multiple of this (one graph per slot and padded length)
PREFILL_MAX = 512  # longer prefixes are prefilled eagerly


class BatchT3:
    """Static per-slot state + batched decode/sample steps over the weights of one :class:`FastT3`."""

    def __init__(self, fast: FastT3, slots: int = 4, prefill_graphs: bool = False) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.f = f = fast
        self.slots = slots
        self.widths = (*(w for w in WIDTHS if w < slots), slots)
        dev, dt = f.device, f.dtype
        self.device = dev
        S, V, L = slots, f.vocab, f.max_len
        shape = (f.n_layers, 2 * S, f.n_heads, L, f.head_dim)
        self.k_cache = torch.zeros(shape, device=dev, dtype=dt)
        self.v_cache = torch.zeros(shape, device=dev, dtype=dt)
        self.tok = torch.zeros(S, dtype=torch.long, device=dev)
        self.pos = torch.zeros(S, dtype=torch.long, device=dev)
        self.spos = torch.zeros(S, dtype=torch.long, device=dev)
        self.n = torch.zeros(S, dtype=torch.long, device=dev)
        self.active = torch.zeros(S, dtype=torch.long, device=dev)  # 1 = busy: pos/spos/n advance
        self.logits = torch.zeros(2 * S, V, device=dev, dtype=torch.float32)
        self.seen = torch.zeros(S, V, dtype=torch.bool, device=dev)
        self.out = torch.zeros(S, L, dtype=torch.long, device=dev)
        self.p_cfg = torch.zeros(S, 1, device=dev, dtype=torch.float32)
        self.p_pen = torch.ones(S, 1, device=dev, dtype=torch.float32)
        self.p_temp = torch.ones(S, 1, device=dev, dtype=torch.float32)
        self.p_minp = torch.zeros(S, 1, device=dev, dtype=torch.float32)
        self.p_topp = torch.ones(S, 1, device=dev, dtype=torch.float32)
        self.p_greedy = torch.zeros(S, 1, dtype=torch.bool, device=dev)
        # prefill_graphs: a prefix zero-padded to a multiple of PREFILL_PAD, replayed from a graph per (slot,
        # length). Opt-in: one H100 server with them hung in its c=4 level (2026-12-07, cause not found yet)
        self.prefill_graphs = prefill_graphs
        self.prefill_max = min(PREFILL_MAX, L - 2)
        self._pf_embeds = torch.zeros(2, self.prefill_max, f.hidden, device=dev, dtype=dt)
        self._pf_last = torch.zeros(1, dtype=torch.long, device=dev)
        self._pf_logits = torch.zeros(2, V, device=dev, dtype=torch.float32)
        self.prefill_graph_error: str | None = None
        # captured on a stream of their own: graphs captured on one stream share its cuBLAS workspace
        # (pytorch#193402), and the prefill's GEMMs run next to the vocoder's graphs. A guess at the c=4 hang
        # above, not measured
        self._pf_capture_stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
        self._graphs: dict[Any, Any] = {}
        self._pool: Any = None
        self.cuda_graph = f.cuda_graph
        self.graph_error: str | None = None
        self.compiled = f.compiled  # the compiled layer pieces of FastT3 (recompiled per width)
        self.compile_error: str | None = None

    # ------------------------------------------------------------------ steps

    def width_for(self, top_slot: int) -> int:
        """Rows of the smallest step width that covers slots ``[0, top_slot]``."""
        return next(w for w in self.widths if w > top_slot)

    def _decode(self, W: int, bucket: int) -> None:
        f = self.f
        R = 2 * W
        e = F.embedding(self.tok[:W], f.emb_w) + F.embedding(self.spos[:W], f.spos_w)  # (W, C)
        h = e.to(f.dtype).repeat_interleave(2, dim=0).view(R, 1, f.hidden)
        pos = self.pos[:W].repeat_interleave(2)  # (R,) cache slot of each row
        if W == 1:  # FastT3's shapes exactly: one position for the pair
            cos, sin = f.cos.index_select(0, self.pos[:1]), f.sin.index_select(0, self.pos[:1])
        else:
            cos = f.cos.index_select(0, pos).view(R, 1, 1, f.head_dim)
            sin = f.sin.index_select(0, pos).view(R, 1, 1, f.head_dim)
        attend = f._attend_fn(pos, bucket, self.k_cache, self.v_cache)
        self.logits[:R].copy_(f._layers(h, cos, sin, attend, decode=self.compiled)[:, -1])
        self.pos[:W].add_(self.active[:W])
        self.spos[:W].add_(self.active[:W])

    def _sample(self, W: int, use_top_p: bool) -> None:
        lgp = self.logits[: 2 * W].view(W, 2, -1)
        cond, uncond = lgp[:, 0], lgp[:, 1]
        lg = cond + self.p_cfg[:W] * (cond - uncond)  # (W, V)
        pen = torch.where(lg < 0, lg * self.p_pen[:W], lg / self.p_pen[:W])
        lg = torch.where(self.seen[:W], pen, lg)
        lg = lg / self.p_temp[:W]
        probs = torch.softmax(lg, dim=-1)
        lg = lg.masked_fill(probs < self.p_minp[:W] * probs.amax(dim=-1, keepdim=True), -math.inf)
        if use_top_p:
            srt, idx = torch.sort(lg, descending=False)
            cum = srt.softmax(dim=-1).cumsum(dim=-1)
            drop = cum <= (1 - self.p_topp[:W])
            drop[..., -1:] = False
            lg = lg.masked_fill(drop.scatter(1, idx, drop), -math.inf)
        probs = torch.softmax(lg, dim=-1)
        race = torch.empty_like(probs).exponential_().clamp_min_(1e-30)
        tok = torch.where(self.p_greedy[:W].view(-1), probs.argmax(dim=-1), (probs / race).argmax(dim=-1))
        self.tok[:W].copy_(tok)
        self.seen[:W].scatter_(1, tok.view(W, 1), True)
        flat = torch.arange(W, device=self.device) * self.f.max_len + self.n[:W]
        self.out.view(-1).index_copy_(0, flat, tok)
        self.n[:W].add_(self.active[:W])

    # ------------------------------------------------------------------ graphs

    def _state(self) -> tuple[torch.Tensor, ...]:
        return (self.tok, self.pos, self.spos, self.n, self.logits, self.seen, self.out)

    def _run(self, key: Any, fn: Any) -> None:
        if not self.cuda_graph:
            fn()
            return
        g = self._graphs.get(key)
        if g is None:
            try:
                g = self._capture(fn)
            except Exception as exc:
                torch.cuda.synchronize()
                if self.compiled:  # retry once with the eager layer pieces before giving up on graphs
                    self.compiled = False
                    self.compile_error = f"capture with compiled layers failed: {type(exc).__name__}: {exc}"[:300]
                    self._graphs.clear()
                    self._run(key, fn)
                    return
                if not isinstance(exc, RuntimeError):
                    raise
                self.graph_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                self.cuda_graph = False
                torch.cuda.synchronize()
                fn()
                return
            self._graphs[key] = g
        g.replay()

    def _capture(self, fn: Any, stream: Any = None) -> Any:
        state = [t.clone() for t in self._state()]
        rng = torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        for dst, src in zip(self._state(), state, strict=True):
            dst.copy_(src)
        g = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(g, pool=self._pool, stream=stream):
            fn()
        for dst, src in zip(self._state(), state, strict=True):
            dst.copy_(src)
        with contextlib.suppress(RuntimeError):  # else only the first call's seed-to-draw mapping changes
            torch.cuda.set_rng_state(rng)
        return g

    def step(self, W: int, top_pos: int, use_top_p: bool = False) -> None:
        """Sample then decode for slots ``[0, W)``; ``top_pos`` = the largest cache slot fed this step."""
        bucket = min(self.f.max_len, (top_pos // BUCKET + 1) * BUCKET)
        self._run(("sample", W, use_top_p), lambda: self._sample(W, use_top_p))
        self._run(("decode", W, bucket), lambda: self._decode(W, bucket))

    def capture_all(self, up_to: int | None = None) -> int:
        """Capture every (width, bucket) decode graph, every width's sampler and the prefill graphs
        (:meth:`capture_prefill`) now, not inside a request."""
        if not self.cuda_graph:
            return 0
        top = min(self.f.max_len, up_to or self.f.max_len)
        with torch.inference_mode():
            saved = self.active.clone()
            self.active.zero_()  # captures must not move any state
            for W in self.widths:
                for b in range(BUCKET, top + BUCKET, BUCKET):
                    self.step(W, min(b, self.f.max_len) - 1)
            self.active.copy_(saved)
        self.capture_prefill()
        return len(self._graphs)

    def _prefill_fn(self, s: int, Lp: int, embeds: torch.Tensor | None = None) -> Any:
        """Prefill of slot ``s`` over ``Lp`` positions: the causal pass over ``embeds`` (default: the static
        ``_pf_embeds``, a prefix zero-padded to ``Lp``) writing the slot's cache rows ``[0, Lp)``; the logits at
        position ``_pf_last`` -> ``_pf_logits``. Padding after the prefix changes nothing before it (causal), and
        its cache slots are overwritten by the decode steps before any step attends to them."""
        f = self.f
        r0, r1 = 2 * s, 2 * s + 2
        cos, sin = f.cos[:Lp], f.sin[:Lp]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.k_cache[i, r0:r1, :, :Lp] = k
            self.v_cache[i, r0:r1, :, :Lp] = v
            return F.scaled_dot_product_attention(
                q.contiguous(), self.k_cache[i, r0:r1, :, :Lp], self.v_cache[i, r0:r1, :, :Lp], is_causal=True
            )

        def run() -> None:
            x = self._pf_embeds[:, :Lp] if embeds is None else embeds.to(f.dtype)
            logits = f._layers(x, cos, sin, attend)
            self._pf_logits.copy_(logits.index_select(1, self._pf_last)[:, 0])

        return run

    def capture_prefill(self) -> int:
        """Capture the prefill graph of every slot and padded prefix length up to :attr:`prefill_max` now (a
        capture while other threads launch GPU work is not safe). A failed capture leaves the prefill eager
        (``prefill_graph_error``) and every other graph as it was. Returns the number of prefill graphs."""
        if not (self.cuda_graph and self.prefill_graphs) or self.prefill_graph_error is not None:
            return 0
        n = 0
        with torch.inference_mode():
            for s in range(self.slots):
                for Lp in range(PREFILL_PAD, self.prefill_max + 1, PREFILL_PAD):
                    key = ("prefill", s, Lp)
                    if key in self._graphs:
                        continue
                    self._pf_last.fill_(Lp - 1)
                    try:
                        self._graphs[key] = self._capture(self._prefill_fn(s, Lp), self._pf_capture_stream)
                    except RuntimeError as exc:
                        if self.device.type == "cuda":
                            torch.cuda.synchronize()
                        self.prefill_graph_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                        return n
                    n += 1
        return n

    # ------------------------------------------------------------------ slots

    @torch.inference_mode()
    def admit(self, s: int, t3_cond: Any, text_tokens: torch.Tensor, params: SamplingParams) -> int:
        """Prefill slot ``s`` (rows 2s, 2s+1) with a request's prefix; returns the prefix length L."""
        f = self.f
        embeds = f.prefix_embeds(t3_cond, text_tokens, params.cfg_weight)
        L = embeds.shape[1]
        if f.max_len < L + 2:
            raise ValueError(f"prefix of {L} positions does not fit max_len {f.max_len}")
        Lp = -(-L // PREFILL_PAD) * PREFILL_PAD
        self._pf_last.fill_(L - 1)
        if self.prefill_graphs and Lp <= self.prefill_max:  # padded: a graph per (slot, padded length)
            self._pf_embeds[:, :L].copy_(embeds)
            self._pf_embeds[:, L:Lp].zero_()
            g = self._graphs.get(("prefill", s, Lp)) if self.cuda_graph else None
            if g is not None:
                g.replay()
            else:
                self._prefill_fn(s, Lp)()
        else:
            self._prefill_fn(s, L, embeds)()
        self.logits[2 * s : 2 * s + 2].copy_(self._pf_logits)
        self.pos[s] = L
        self.spos[s] = 1
        self.n[s] = 0
        self.seen[s].zero_()
        self.seen[s, f.start_token] = True
        self.p_cfg[s] = params.cfg_weight
        self.p_pen[s] = float(params.repetition_penalty)
        self.p_temp[s] = params.temperature
        self.p_minp[s] = params.min_p
        self.p_topp[s] = params.top_p
        self.p_greedy[s] = bool(params.greedy)
        self.active[s] = 1
        return L

    def release(self, s: int) -> None:
        self.active[s] = 0
        self.pos[s] = 0
        self.spos[s] = 0


@dataclass
class _Request:
    t3_cond: Any
    text_tokens: torch.Tensor
    max_new_tokens: int
    params: SamplingParams
    out: queue.Queue = field(default_factory=queue.Queue)
    slot: int = -1
    L: int = 0
    max_new: int = 0
    steps: int = 0  # steps run for this request (tokens drawn, on the device)
    checked: int = 0  # tokens read back and delivered
    cancelled: bool = False  # the caller stopped listening (client gone): free the slot at the next poll


_DONE = object()


class TokenStream:
    """One submitted request's speech tokens as they are decoded (CPU tensors, a drawn EOS included).

    Decoding starts at :meth:`T3Scheduler.submit`, before anyone iterates: the next sentence of a reply can be
    decoded while the current one is still vocoded. :meth:`close` (also on ``with`` exit) frees the slot of a
    request nobody will read to the end."""

    def __init__(self, req: _Request) -> None:
        self._req = req
        self._done = False
        self._held: Any = None  # the end (or an error) that ready() ran into, for __next__ to deliver
        self.exhausted = False  # every token has been delivered or is in hand (ready() saw the end)

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> torch.Tensor:
        if self._done:
            raise StopIteration
        if self._held is not None:  # the end or an error that ready() ran into
            item, self._held = self._held, None
        else:
            item = self._req.out.get()
        if item is _DONE:
            self.exhausted = True
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise RuntimeError(f"T3 decoding failed: {item}") from item
        return item

    def ready(self) -> list[torch.Tensor]:
        """The parts decoded by now, without waiting (``[]`` when none); the end or an error is kept for the
        next ``next()``, and the end sets :attr:`exhausted`: then what this returned was the last of it."""
        got: list[torch.Tensor] = []
        while self._held is None and not self._done:
            try:
                item = self._req.out.get_nowait()
            except queue.Empty:
                break
            if item is _DONE or isinstance(item, BaseException):
                self._held = item
                self.exhausted = item is _DONE
            else:
                got.append(item)
        return got

    def close(self) -> None:
        self._done = True
        self._req.cancelled = True  # a no-op once finished; else the scheduler drops the request

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class T3Scheduler:
    """One decoding thread for many callers: continuous batching over a :class:`BatchT3`."""

    def __init__(self, batch: BatchT3, poll: int = 4) -> None:
        self.b = batch
        self.poll = max(1, int(poll))
        self._waiting: queue.Queue = queue.Queue()
        self._busy: dict[int, _Request] = {}
        self._cv = threading.Condition()
        self._stop = False
        self._hold = 0  # > 0: a latency-critical vocode is running; no new T3 steps are launched
        self.error: str | None = None
        self.steps = 0
        self.width_steps: dict[int, int] = {}
        self.stream = torch.cuda.Stream(batch.device) if batch.device.type == "cuda" else None
        self._thread = threading.Thread(target=self._loop, name="t3-scheduler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=10)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Launch no T3 steps while inside (the steps already queued finish): the first chunk's vocoding then
        has the GPU to itself."""
        with self._cv:
            self._hold += 1
        try:
            yield
        finally:
            with self._cv:
                self._hold -= 1
                self._cv.notify_all()

    def submit(
        self, t3_cond: Any, text_tokens: torch.Tensor, max_new_tokens: int, params: SamplingParams
    ) -> TokenStream:
        """Queue one request now; its tokens arrive through the returned :class:`TokenStream`."""
        if params.cfg_weight <= 0:
            raise ValueError("batched T3 decodes the CFG pair: cfg_weight must be > 0")
        req = _Request(t3_cond, text_tokens.detach().to("cpu"), int(max_new_tokens), params)
        with self._cv:
            if self.error is not None:
                raise RuntimeError(f"T3 scheduler stopped: {self.error}")
            self._waiting.put(req)
            self._cv.notify_all()
        return TokenStream(req)

    def queued(self) -> int:
        """Requests submitted and still waiting for a slot (all slots busy)."""
        return self._waiting.qsize()

    def tokens(
        self, t3_cond: Any, text_tokens: torch.Tensor, max_new_tokens: int, params: SamplingParams
    ) -> Iterator[torch.Tensor]:
        """Speech tokens of one request as they are decoded (CPU tensors, a drawn EOS included); the request is
        queued at the first ``next()``."""
        with self.submit(t3_cond, text_tokens, max_new_tokens, params) as stream:
            yield from stream

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        ctx = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        try:
            with ctx, torch.inference_mode():
                while True:
                    with self._cv:
                        while not self._stop and (self._hold or (not self._busy and self._waiting.empty())):
                            self._cv.wait()
                        if self._stop:
                            return
                    self._admit()
                    if self._busy:
                        self._run_steps()
        except BaseException as exc:  # report to every caller; never leave one waiting
            self.error = f"{type(exc).__name__}: {exc}"
            print(f"t3-scheduler: {self.error}", file=sys.stderr, flush=True)
            for req in list(self._busy.values()):
                req.out.put(exc)
            while not self._waiting.empty():
                self._waiting.get().out.put(exc)

    def _admit(self) -> None:
        b = self.b
        while len(self._busy) < b.slots and not self._waiting.empty():
            req = self._waiting.get()
            s = min(set(range(b.slots)) - set(self._busy))
            try:
                req.L = b.admit(s, req.t3_cond, req.text_tokens.to(b.device), req.params)
            except Exception as exc:
                req.out.put(exc)
                continue
            req.slot = s
            req.max_new = max(0, min(req.max_new_tokens, b.f.max_len - req.L - 1))
            self._busy[s] = req
            if req.max_new == 0:
                self._finish(req)

    def _run_steps(self) -> None:
        b = self.b
        reqs = list(self._busy.values())
        n = min(self.poll, *(r.max_new - r.steps for r in reqs))
        W = b.width_for(max(self._busy))
        top_p = any(r.params.top_p < 1.0 for r in reqs)
        for _ in range(n):
            top = max(r.L + r.steps for r in reqs)
            b.step(W, top, top_p)
            for r in reqs:
                r.steps += 1
        self.steps += n
        self.width_steps[W] = self.width_steps.get(W, 0) + n
        lo = min(r.checked for r in reqs)
        hi = max(r.steps for r in reqs)
        new = b.out[:, lo:hi].cpu()  # the one host sync per `poll` steps
        for r in reqs:
            if r.cancelled:
                self._finish(r)
                continue
            got = new[r.slot, r.checked - lo : r.steps - lo]
            stop = (got == b.f.stop_token).nonzero()
            if stop.numel():
                r.out.put(got[: int(stop[0, 0]) + 1].clone())
                self._finish(r)
                continue
            if got.numel():
                r.out.put(got.clone())
            r.checked = r.steps
            if r.steps >= r.max_new:
                self._finish(r)

    def _finish(self, req: _Request) -> None:
        self.b.release(req.slot)
        self._busy.pop(req.slot, None)
        req.out.put(_DONE)
