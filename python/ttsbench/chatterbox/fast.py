"""The fast Chatterbox path: fast T3 decoding + S3Gen/HiFT on the same stream, whole or chunked (streaming).

``FastChatterbox(model)`` wraps a loaded ``ChatterboxTTS`` (upstream object, upstream weights):

* ``synthesize(text, params, max_new_tokens)`` = ``ChatterboxTTS.generate`` with T3 replaced by
  :class:`~ttsbench.chatterbox.fast_t3.FastT3`; S3Gen runs upstream's ``S3Token2Wav.inference`` with one
  change on CUDA: each Euler step of the CFM solver (the estimator called 10 times on the same shapes) is
  captured once per call in a CUDA graph and replayed (same kernels, same inputs: same numbers). Upstream's
  ``add_optional_chunk_mask`` holds a host sync (``.item()``) that graph capture forbids; while capturing it
  is swapped for a sync-free equivalent (identical result for static_chunk_size 0, which S3Gen uses). The
  flow encoder is replayed from a CUDA graph per input shape too (:mod:`~ttsbench.chatterbox.fast_s3`, bit-equal).
  HiFT runs as released unless ``hift`` says otherwise (:mod:`~ttsbench.chatterbox.fast_hift`: ``sync-free``, or
  ``graph``, replayed from a CUDA graph per shape).
* ``stream(text, ...)`` yields float32 audio chunks: the first once ``first_chunk_tokens`` valid speech tokens
  are decoded and vocoded, then one per ``chunk_tokens`` valid tokens (fixed chunk shapes, so their CFM graphs
  are captured once — ``warmup`` — and replayed). Each later chunk is vocoded with ``context_tokens`` tokens of
  left context whose audio is dropped; the last ``crossfade_ms`` of a chunk are held back and crossfaded with
  the next chunk's audio of the same time span. Total length = whole-utterance vocoding's length; the samples
  are an approximation of it (the seams are not bit-equal).
* the Perth watermark upstream applies after S3Gen is applied here too (per chunk when streaming), with the
  watermarker's network on the model's device.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ttsbench.chatterbox import fast_s3
from ttsbench.chatterbox.fast_s3 import CompiledEstimator, S3Graphs, sync_free_chunk_mask
from ttsbench.chatterbox.fast_t3 import FastT3, SamplingParams

SR = 24000
SAMPLES_PER_TOKEN = 960  # 25 tokens/s → 2 mel frames of 480 samples at 24 kHz


class Seam:
    """The seams of one stream's chunks: each chunk starts with a crossfade from the last ``fade`` samples of
    the chunk before (held back from it), then goes through ``finish`` (the watermark), and holds back its own
    last ``fade`` samples for the next. Chunks must pass through in order; :attr:`tail` is what is held back."""

    def __init__(self, fade: int, finish: Callable[[Any], Any]) -> None:
        import numpy as np

        self.fade = fade
        self.ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32) if fade else None
        self.finish = finish
        self.tail: Any = None

    def post(self, ctx: int, stamp: list[float]) -> Callable[[Any], Any]:
        """The step after vocoding a chunk with ``ctx`` tokens of left context (float32 numpy waveform in,
        audio out); appends the time the seam was done (before ``finish``) to ``stamp``."""

        def run(wav: Any) -> Any:
            import numpy as np

            start, fade = ctx * SAMPLES_PER_TOKEN, self.fade
            audio = wav[start:]
            if self.tail is not None:  # the held-back end of the last chunk spans the time of wav[start-fade:start]
                tail = self.tail
                head = tail * (1.0 - self.ramp) + wav[start - fade : start] * self.ramp if start >= fade else tail
                audio = np.concatenate([head.astype(np.float32), audio])
            stamp.append(time.perf_counter())
            audio = self.finish(audio)
            if fade and len(audio) > fade:
                self.tail, audio = audio[-fade:].copy(), audio[:-fade]
            else:
                self.tail = None
            return audio.astype(np.float32, copy=False)

        return run


@dataclass
class StreamTimings:
    t3_tokens: int = 0
    t3_s: float = 0.0
    s3gen_s: float = 0.0
    watermark_s: float = 0.0
    first_chunk_s: float | None = None
    chunks: list[int] = field(default_factory=list)


def chunk_shapes(first_chunk_tokens: int, chunk_tokens: int, context_tokens: int) -> tuple[int, ...]:
    """The token counts a streamed chunk is vocoded at (new tokens + left context), so that S3Gen's graphs
    captured for them are replayed (a shape not captured is vocoded eagerly, several times slower): the first
    chunk, the steady chunks (context + chunk), and first + context plus sizes up to steady no more than
    ``first_chunk_tokens`` apart for the last, shorter chunk of a sentence. Every last chunk comes after at
    least ``first_chunk_tokens`` tokens, so one of these shapes always fits it with real left context."""
    steady = context_tokens + chunk_tokens
    low = min(first_chunk_tokens + context_tokens, steady)
    between = min(10, max(0, -(-(steady - low) // max(1, first_chunk_tokens)) - 1))  # at most 13 shapes
    mid = {low + (steady - low) * k // (between + 1) for k in range(1, between + 1)}
    return tuple(sorted({first_chunk_tokens, low, steady} | mid))


def left_context(n: int, done: int, context_tokens: int, shapes: tuple[int, ...]) -> int:
    """Tokens of left context for a chunk of ``n`` new tokens after ``done`` tokens: the fewest that give one of
    ``shapes`` with at least ``min(context_tokens, done)`` of context; else the most (at most ``done``) that
    give one of them with less; else ``min(context_tokens, done)`` (a shape without graphs)."""
    want = min(context_tokens, done)
    fits = [s - n for s in shapes if 0 <= s - n <= done]
    return min((c for c in fits if c >= want), default=max(fits, default=want))


class VocoderLock:
    """A mutex for the one vocoder where first chunks go first: ``with lock:`` waits while the vocoder is busy or
    any first chunk waits; ``with lock.urgent():`` (a request's first chunk) only while it is busy. Under
    concurrent streams a new request's first audio then waits for at most the chunk being vocoded, not for
    the later chunks of every other stream."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._busy = False
        self._urgent = 0

    def _acquire(self, urgent: bool) -> None:
        with self._cv:
            self._urgent += urgent
            while self._busy or (not urgent and self._urgent):
                self._cv.wait()
            self._urgent -= urgent
            self._busy = True

    def _release(self) -> None:
        with self._cv:
            self._busy = False
            self._cv.notify_all()

    def __enter__(self) -> None:
        self._acquire(False)

    def __exit__(self, *exc: object) -> None:
        self._release()

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        self._acquire(True)
        try:
            yield
        finally:
            self._release()


class _EulerEntry:
    """Static inputs of one CFM step shape and its captured graph."""

    def __init__(self, B: int, T: int, kw: dict) -> None:
        self.x_in = torch.zeros([2 * B, 80, T], **kw)
        self.mask_in = torch.zeros([2 * B, 1, T], **kw)
        self.mu_in = torch.zeros([2 * B, 80, T], **kw)
        self.t_in = torch.zeros([2 * B], **kw)
        self.spks_in = torch.zeros([2 * B, 80], **kw)
        self.cond_in = torch.zeros([2 * B, 80, T], **kw)
        self.xs = torch.zeros([B, 80, T], **kw)
        self.t_cur = torch.zeros(1, **kw)
        self.r_cur = torch.zeros(1, **kw)
        self.graph: Any = None

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of the per-call inputs and the running state (stream-ordered, no host sync): what a nested
        call of the same shape would overwrite."""
        return [t.clone() for t in (self.mask_in, self.mu_in, self.spks_in, self.cond_in, self.xs)]

    def restore(self, saved: list[torch.Tensor]) -> None:
        for dst, src in zip((self.mask_in, self.mu_in, self.spks_in, self.cond_in, self.xs), saved, strict=True):
            dst.copy_(src)


class GraphEuler:
    """Drop-in for ``CausalConditionalCFM.solve_euler`` (non-meanflow) with the step in a CUDA graph.

    Same arithmetic as upstream's loop (CFG pair in one batch of 2B, ``(1 + r) * d - r * c``, ``x + dt * d``).
    The graph of a shape (B, T) is kept, so repeated shapes — the streaming chunks — replay every step without
    capturing again. Up to ``max_cached`` shapes: past that, a new shape's steps run eagerly (``uncached``), and
    no graph is ever dropped while others may replay (:data:`~ttsbench.chatterbox.fast_s3.NEVER_EVICT`)."""

    def __init__(self, cfm: Any, max_cached: int = 24) -> None:
        self.cfm = cfm
        self.error: str | None = None
        self.graphed_calls = 0
        self.captures = 0
        self.uncached = 0
        self.max_cached = max_cached
        self.frozen = False  # True: no new captures (concurrent serving); unseen shapes run eagerly
        # called after every step but the last with the step's entry; may vocode other rows in between (the
        # vocoder thread's preemption, fast_vocoder.VocodeBatcher), keeping this call's state with
        # entry.snapshot()/restore() where it reuses the same shape
        self.between: Callable[[_EulerEntry], None] | None = None
        self._cache: dict[tuple, _EulerEntry] = {}

    @staticmethod
    def _capture(step: Callable[[], None]) -> Any:
        """One Euler step captured in a CUDA graph (it runs at ``replay()``); tests replace this with a stand-in
        whose replay runs ``step`` on the same static buffers."""
        g = torch.cuda.CUDAGraph()
        with sync_free_chunk_mask(), torch.cuda.graph(g):
            step()
        return g

    def __call__(
        self,
        x: torch.Tensor,
        t_span: torch.Tensor,
        mu: torch.Tensor,
        mask: torch.Tensor,
        spks: torch.Tensor,
        cond: torch.Tensor,
        meanflow: bool = False,
    ) -> torch.Tensor:
        from chatterbox.models.s3gen.flow_matching import cast_all

        cfm = self.cfm
        in_dtype = x.dtype
        x, t_span, mu, mask, spks, cond = cast_all(x, t_span, mu, mask, spks, cond, dtype=cfm.estimator.dtype)
        B, T = mu.size(0), x.size(2)
        cuda = fast_s3.graphable(x) and self.error is None
        key = (B, T, x.dtype, x.device)
        e = self._cache.get(key) if cuda else None
        if e is None:
            e = _EulerEntry(B, T, {"device": x.device, "dtype": x.dtype})
            if cuda and (self.frozen or len(self._cache) >= self.max_cached):
                cuda = False  # eager: a full cache drops nothing (NEVER_EVICT)
                self.uncached += 1
            if cuda:
                self._cache[key] = e
        e.mask_in[:B] = mask
        e.mask_in[B:] = mask
        e.mu_in[:B] = mu
        e.spks_in[:B] = spks
        e.cond_in[:B] = cond
        e.xs.copy_(x)
        rate = cfm.inference_cfg_rate

        def step() -> None:
            e.x_in[:B] = e.xs
            e.x_in[B:] = e.xs
            e.t_in[:B] = e.t_cur
            e.t_in[B:] = e.t_cur
            dxdt = cfm.estimator.forward(
                x=e.x_in, mask=e.mask_in, mu=e.mu_in, t=e.t_in, spks=e.spks_in, cond=e.cond_in, r=None
            )
            d, c = torch.split(dxdt, [B, B], dim=0)
            d = (1.0 + rate) * d - rate * c
            e.xs.copy_(e.xs + (e.r_cur - e.t_cur) * d)

        used_graph = False
        between = self.between
        last = len(t_span) - 2
        for k, (t, r) in enumerate(itertools.pairwise(t_span)):
            e.t_cur.copy_(t.unsqueeze(0))
            e.r_cur.copy_(r.unsqueeze(0))
            if e.graph is None and k >= 1 and cuda and self.error is None:
                try:
                    e.graph = self._capture(step)
                    self.captures += 1
                except RuntimeError as exc:  # the graphs held stay alive (NEVER_EVICT), unused from now on
                    self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                    torch.cuda.synchronize()
            if e.graph is not None:
                e.graph.replay()
                used_graph = True
            else:
                step()
            if between is not None and k < last:
                between(e)
        self.graphed_calls += int(used_graph)
        return e.xs.clone().to(in_dtype)


class FastChatterbox:
    """Fast T3 + S3Gen (graph-stepped CFM) for one loaded upstream ``ChatterboxTTS``."""

    CHUNK_TOKENS = 50  # streaming: valid speech tokens per chunk after the first (2 s of audio)
    CONTEXT_TOKENS = 8  # streaming: left context vocoded with each later chunk, its audio dropped

    def __init__(
        self,
        model: Any,
        dtype: torch.dtype | None = None,
        max_len: int = 2048,
        cuda_graph: bool | None = None,
        watermark: bool = True,
        graph_s3: bool = True,
        hift: str = "upstream",
        s3_compile: bool = False,
        t3_attn: bool | None = None,
    ) -> None:
        self.model = model
        self.device = torch.device(model.device) if isinstance(model.device, str) else model.device
        # t3_attn: the fused decode attention (fast_attn.py); None = where it loads and passes its check
        self.t3 = FastT3(model.t3, dtype=dtype, max_len=max_len, cuda_graph=cuda_graph, attn=t3_attn)
        cfm = model.s3gen.flow.decoder
        self.euler = GraphEuler(cfm)
        self._cfm = cfm
        self.use_graph = self.t3.cuda_graph if cuda_graph is None else bool(cuda_graph)
        # HiFT (fast_hift.py): upstream, sync-free (no blocking copies) or graph (sync-free + CUDA graph per
        # shape). Not upstream changes the shared upstream model in place, and in-process equivalence checks
        # compare against that model: off by default.
        from ttsbench.chatterbox import fast_hift

        if hift not in fast_hift.MODES:
            raise ValueError(f"hift={hift!r}: use one of {', '.join(fast_hift.MODES)}")
        self.hift = hift if self.device.type == "cuda" else "upstream"
        self.hift_sync_free: dict[str, Any] | None = None
        hift_graph = None
        if self.hift == "sync-free":
            self.hift_sync_free = fast_hift.install(model.s3gen.mel2wav, self.device)
        elif self.hift == "graph":
            hift_graph = fast_hift.GraphedHift(model.s3gen.mel2wav, self.device)
            self.hift_sync_free = hift_graph.sync_free
        # flow-encoder (and HiFT) graphs on top of the CFM step graph; graph_s3=False keeps them eager
        self.s3graphs = S3Graphs(model.s3gen, hift=hift_graph)
        # opt-in, not bit-equal: the CFM estimator through torch.compile (checked and installed in warmup())
        self.s3_compile = CompiledEstimator(cfm) if s3_compile and self.device.type == "cuda" else None
        self.graph_s3 = graph_s3
        self._cond_obj: Any = None
        self._exaggeration: float | None = None  # host copy of the conditionals' exaggeration (no device read)
        # one vocoder for every request thread: the CFM/encoder graphs' static buffers are shared
        self.s3_lock = VocoderLock()
        self.batch: Any = None  # BatchT3 + T3Scheduler once enable_batching() ran
        self.scheduler: Any = None
        self.s3_stream: Any = None  # high-priority CUDA stream for vocoding next to batched T3 (enable_batching)
        self.pause_t3_first_chunk = True  # batched T3 launches no steps while a first chunk is vocoded
        self.vocoder: Any = None  # VocodeBatcher once enable_batching(batch_vocoder=True) ran
        self.catch_up = True  # with that vocoder: a stream that fell behind sends its due chunks at once
        self.watermarker = None
        if watermark:
            self.watermarker = model.watermarker
            net = getattr(self.watermarker, "perth_net", None)
            if net is not None and self.device.type == "cuda":
                net.to(self.device)

    # ------------------------------------------------------------------ pieces

    def text_tokens(self, text: str) -> torch.Tensor:
        from ttsbench.chatterbox.fast_equiv import text_tokens_for

        return text_tokens_for(self.model, text)

    def _prepare(self, exaggeration: float) -> None:
        """ChatterboxTTS.generate's exaggeration update of the T3 conditionals."""
        from chatterbox.models.t3.modules.cond_enc import T3Cond

        m = self.model
        if m.conds is None:
            raise RuntimeError("no voice conditionals: load a voice (conds.pt or prepare_conditionals) first")
        if self._exaggeration == exaggeration and m.conds.t3 is self._cond_obj:
            return  # per-voice cache: no device read (host sync) on the hot path
        if exaggeration != float(m.conds.t3.emotion_adv[0, 0, 0]):
            c = m.conds.t3
            m.conds.t3 = T3Cond(
                speaker_emb=c.speaker_emb,
                cond_prompt_speech_tokens=c.cond_prompt_speech_tokens,
                emotion_adv=exaggeration * torch.ones(1, 1, 1),
            ).to(device=m.device)
        self._exaggeration, self._cond_obj = exaggeration, m.conds.t3

    @torch.inference_mode()
    def vocode(self, speech_tokens: torch.Tensor) -> torch.Tensor:
        """Upstream ``S3Token2Wav.inference`` on valid tokens (1-D) → (1, samples) on the device."""
        s3 = self.model.s3gen
        if self.use_graph:  # the graph itself is only captured on CUDA; elsewhere the same step runs eagerly
            s3.flow.decoder.solve_euler = self.euler
        graphs = self.use_graph and self.graph_s3
        compiled = self.s3_compile is not None and self.s3_compile.active
        try:
            with sync_free_chunk_mask() if compiled else contextlib.nullcontext(), self.s3graphs.installed(graphs):
                wav, _ = s3.inference(speech_tokens=speech_tokens.to(self.device), ref_dict=self.model.conds.gen)
        finally:
            s3.flow.decoder.__dict__.pop("solve_euler", None)
        return wav

    def _watermark(self, wav: Any) -> Any:
        if self.watermarker is None:
            return wav
        return self.watermarker.apply_watermark(wav, sample_rate=SR)

    @staticmethod
    def valid(tokens: torch.Tensor) -> torch.Tensor:
        """Upstream's ``drop_invalid_tokens`` + ``tokens < 6561`` on a 1-D token tensor."""
        return tokens[tokens < 6561]

    # ------------------------------------------------------------------ whole utterance

    @torch.inference_mode()
    def synthesize(
        self,
        text: str,
        params: SamplingParams,
        max_new_tokens: int = 1000,
        exaggeration: float = 0.5,
        timings: StreamTimings | None = None,
    ) -> Any:
        """Float32 numpy waveform at 24 kHz (``ChatterboxTTS.generate`` semantics)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        self._prepare(exaggeration)
        t0 = time.perf_counter()
        tokens = self.t3.generate(self.model.conds.t3, self.text_tokens(text), max_new_tokens, params).view(-1)
        sync()
        t1 = time.perf_counter()
        with self.s3_lock:
            wav = self.vocode(self.valid(tokens))
            out = wav.squeeze(0).detach().cpu().numpy()
            t2 = time.perf_counter()
            out = self._watermark(out)
        t3 = time.perf_counter()
        if timings is not None:
            timings.t3_tokens, timings.t3_s = len(tokens), t1 - t0
            timings.s3gen_s, timings.watermark_s = t2 - t1, t3 - t2
        return out

    # ------------------------------------------------------------------ streaming

    @torch.inference_mode()
    def stream(
        self,
        text: str,
        params: SamplingParams,
        max_new_tokens: int = 1000,
        exaggeration: float = 0.5,
        first_chunk_tokens: int = 12,
        chunk_tokens: int = CHUNK_TOKENS,
        context_tokens: int = CONTEXT_TOKENS,
        crossfade_ms: float = 10.0,
        poll_tokens: int = 4,
        timings: StreamTimings | None = None,
        tokens: Callable[..., Iterator[torch.Tensor]] | None = None,
        on_tokens_done: Callable[[], None] | None = None,
    ) -> Iterator[Any]:
        """Float32 numpy chunks at 24 kHz, the first as soon as ``first_chunk_tokens`` valid speech tokens are
        decoded and vocoded; then chunks of exactly ``chunk_tokens`` valid tokens (plus ``context_tokens`` of
        left context whose audio is dropped), so that they all have the same shape and replay cached graphs;
        the rest at the end, with as much more left context as keeps that shape where enough tokens precede it.

        ``tokens``: where the speech tokens come from, called like ``FastT3.iter_tokens(t3_cond, text_tokens,
        max_new_tokens, params)`` — e.g. ``T3Scheduler.tokens`` (batched decoding across requests). Vocoding then
        takes ``s3_lock`` per chunk, so several request threads can stream at once. ``on_tokens_done()`` is called
        once the last token is in, before the last chunk is vocoded (e.g. to start decoding the next sentence).

        Catching up: where ``tokens`` returns a :class:`~ttsbench.chatterbox.fast_batch.TokenStream` (it has
        ``ready()``) and the batching vocoder runs, a later chunk that falls due takes along the tokens decoded
        meanwhile: every chunk due by then (and the last, shorter one once the tokens are done) goes to the
        vocoder at once, up to its batch size, and they share one call instead of one call each (a call costs
        about the same for one row as for four: on the H100 a 58-token chunk took 120 ms alone). Chunk
        boundaries, shapes and seams stay as above; the rows of one call get their own draws of the shared
        noise, as rows of different streams already did."""
        import numpy as np

        self._prepare(exaggeration)
        t_start = time.perf_counter()
        valid_all = torch.zeros(0, dtype=torch.long, device=self.device)
        done = 0  # valid tokens already vocoded
        target = first_chunk_tokens
        seam = Seam(int(SR * crossfade_ms / 1000.0), self._watermark)
        tm = timings or StreamTimings()

        shapes = chunk_shapes(first_chunk_tokens, chunk_tokens, context_tokens)  # graphs captured for these
        batcher = self.vocoder if tokens is not None else None
        # the batching vocoder may hold later chunks back while this stream decodes toward its first chunk
        first_in = batcher.expect_first() if batcher is not None else (lambda: None)

        def piece(n: int, at: int) -> tuple[torch.Tensor, torch.Tensor, int]:
            """The chunk of ``n`` new tokens after ``at``: its tokens with left context (a captured shape where
            possible), the sentence before them (more left context, should the batcher want it), the context."""
            ctx = left_context(n, at, context_tokens, shapes)  # the last, shorter chunk: a captured shape too
            return valid_all[at - ctx : at + n], valid_all[max(0, at - ctx - max(shapes)) : at - ctx], ctx

        def finish(audio: Any, t0: float, t1: float, n: int) -> Any:
            nonlocal done
            tm.s3gen_s += t1 - t0
            tm.watermark_s += time.perf_counter() - t1
            done += n
            if tm.first_chunk_s is None:
                tm.first_chunk_s = time.perf_counter() - t_start
            tm.chunks.append(len(audio))
            return audio

        def runs_out() -> float | None:
            """When a listener who started playing at the first chunk runs out of the audio sent so far."""
            if tm.first_chunk_s is None:
                return None
            return t_start + tm.first_chunk_s + sum(tm.chunks) / SR

        def via_batcher(sizes: list[int]) -> list[Any]:
            """Consecutive chunks of ``sizes`` new tokens through the batching vocoder thread (seam and watermark
            there), queued at once so that they can share one call; in order, seams and all. Several when the
            stream fell behind (T3 ran ahead of the vocoder); a request's first chunk is urgent."""
            t0 = time.perf_counter()
            first = tm.first_chunk_s is None
            at, jobs, stamps = done, [], []
            for n in sizes:
                chunk, prefix, ctx = piece(n, at)
                stamps.append([])
                jobs.append((chunk, prefix, seam.post(ctx, stamps[-1])))
                at += n
            audios = batcher.vocode_many(jobs, urgent=first, first_in=first_in, deadline=runs_out())
            return [finish(a, t0, st[0], n) for a, st, n in zip(audios, stamps, sizes, strict=True)]

        def vocode_next(n: int) -> Any:
            if batcher is not None:  # concurrent streams
                return via_batcher([n])[0]
            t0 = time.perf_counter()
            chunk, _, ctx = piece(n, done)
            first = tm.first_chunk_s is None
            stamp: list[float] = []
            hold = (
                self.scheduler.paused()
                if tokens is not None and self.scheduler is not None and first and self.pause_t3_first_chunk
                else contextlib.nullcontext()
            )
            with self.s3_lock.urgent() if first else self.s3_lock, hold, self._on_s3_stream():
                # same turn of the vocoder: a first chunk waits only once
                audio = seam.post(ctx, stamp)(self.vocode(chunk).squeeze(0).float().cpu().numpy())
            return finish(audio, t0, stamp[0], n)

        def add(part: torch.Tensor) -> None:
            nonlocal valid_all
            tm.t3_tokens += len(part)
            valid_all = torch.cat([valid_all, self.valid(part.to(self.device))])

        t_tok = time.perf_counter()
        polls = tuple(range(poll_tokens, max_new_tokens, poll_tokens))
        if tokens is None:
            parts = self.t3.iter_tokens(
                self.model.conds.t3, self.text_tokens(text), max_new_tokens, params, chunk_sizes=polls
            )
        else:
            parts = tokens(self.model.conds.t3, self.text_tokens(text), max_new_tokens, params)
        # a TokenStream (the server's): the tokens decoded while this stream's last chunk was being vocoded
        ready = getattr(parts, "ready", None) if batcher is not None and self.catch_up else None
        told = False

        def tokens_done() -> None:  # once, as soon as the last token is in
            nonlocal told
            if not told and on_tokens_done is not None:
                on_tokens_done()
            told = True

        try:
            for part in parts:
                add(part)
                tm.t3_s += time.perf_counter() - t_tok
                while len(valid_all) - done >= target:
                    if ready is not None and target == chunk_tokens:
                        for more in ready():
                            add(more)
                        left = len(valid_all) - done
                        sizes = [chunk_tokens] * (left // chunk_tokens)
                        if parts.exhausted:
                            tokens_done()
                            if left % chunk_tokens:  # the last, shorter chunk rides along
                                sizes.append(left % chunk_tokens)
                        if len(sizes) > 1:
                            yield from via_batcher(sizes[: batcher.max_batch])
                            continue
                    yield vocode_next(target)
                    target = chunk_tokens
                t_tok = time.perf_counter()
            tokens_done()
            if len(valid_all) > done:
                yield vocode_next(len(valid_all) - done)
        finally:  # no first chunk (no tokens, an error, the client gone): the vocoder stops waiting for one
            first_in()
        if seam.tail is not None:
            tm.chunks.append(len(seam.tail))
            yield seam.tail.astype(np.float32, copy=False)

    WARMUP_TEXT = (
        "This is a warm-up sentence for the fast path, long enough to fill the first streamed chunk and "
        "one more, so that the graphs of both chunk shapes are captured before the first request."
    )

    def warmup(
        self,
        params: SamplingParams,
        exaggeration: float = 0.5,
        first_chunk_tokens: int = 12,
        chunk_tokens: int = CHUNK_TOKENS,
        context_tokens: int = CONTEXT_TOKENS,
    ) -> dict:
        """Capture the T3 graphs of every KV bucket and S3Gen's graphs of every streaming chunk shape."""
        t0 = time.perf_counter()
        n = self.t3.capture_all()
        if self.s3_compile is not None and not self.s3_compile.active and self.s3_compile.error is None:
            probe = torch.zeros(1, first_chunk_tokens, dtype=torch.long, device=self.device)
            s3 = self.model.s3gen
            self.s3_compile.check(lambda: s3.flow_inference(probe, ref_dict=self.model.conds.gen, finalize=True))
        need = first_chunk_tokens + chunk_tokens
        for _ in range(2):  # encoder graphs: a shape's first call warms up, its second captures
            for _ in self.stream(
                self.WARMUP_TEXT,
                params,
                max_new_tokens=int(need * 1.6) + 8,
                exaggeration=exaggeration,
                first_chunk_tokens=first_chunk_tokens,
                chunk_tokens=chunk_tokens,
                context_tokens=context_tokens,
            ):
                pass
        shapes = chunk_shapes(first_chunk_tokens, chunk_tokens, context_tokens)
        self.euler.max_cached = max(self.euler.max_cached, len(shapes) + 2)
        self.s3graphs.widen(len(shapes) + 2)
        with self.s3_lock:
            for n_tok in shapes:  # the last chunks' shapes too
                for _ in range(2):
                    self.vocode(torch.zeros(n_tok, dtype=torch.long, device=self.device))
        return {
            "t3_graphs": n,
            "cfm_graphs": len(self.euler._cache),
            "s3_graphs": self.s3graphs.state(),
            "s3_compile": self.s3_compile.state() if self.s3_compile is not None else None,
            "s": time.perf_counter() - t0,
        }

    def enable_batching(
        self,
        slots: int = 4,
        poll_tokens: int = 4,
        batch_vocoder: bool = True,
        vocoder_preempt: bool = False,
        vocoder_yield: bool = False,
        vocoder_catch_up: bool = True,
        vocoder_deadlines: bool = False,
        first_chunk_tokens: int = 12,
        chunk_tokens: int = CHUNK_TOKENS,
        prefill_graphs: bool = False,
    ) -> dict:
        """Decode concurrent requests together: a :class:`~ttsbench.chatterbox.fast_batch.BatchT3` of ``slots``
        slots over this path's T3 weights, its graphs captured now, and the scheduler thread started. Stream with
        ``stream(..., tokens=self.scheduler.tokens)``. ``batch_vocoder``: chunks of concurrent streams are vocoded
        together by a :class:`~ttsbench.chatterbox.fast_vocoder.VocodeBatcher` (its batch shapes for
        the first chunk and for context + chunk captured now); else they take the vocoder in turn.
        ``vocoder_preempt``: that batcher vocodes first chunks between the CFM steps of a batch of later ones;
        ``vocoder_yield``: its batches of later chunks wait while a request decodes toward its first chunk.
        ``vocoder_catch_up``: a stream that fell behind sends its due chunks at once (:meth:`stream`).
        ``vocoder_deadlines``: later chunks by their listener's playback deadline; yields only with slack.
        ``prefill_graphs``: the batch's prefill replayed from CUDA graphs (:class:`BatchT3`, opt-in)."""
        from ttsbench.chatterbox.fast_batch import BatchT3, T3Scheduler
        from ttsbench.chatterbox.fast_vocoder import VocodeBatcher

        t0 = time.perf_counter()
        self.batch = BatchT3(self.t3, slots=slots, prefill_graphs=prefill_graphs)
        n = self.batch.capture_all()
        if self.device.type == "cuda":
            self.s3_stream = torch.cuda.Stream(self.device, priority=-1)  # lower number = higher priority
        vocoder = None
        if batch_vocoder and slots > 1:
            # batches of 2..slots are captured for the first and the steady chunk only: 2 x (slots - 1) CFM graphs,
            # not one per shape (a last, shorter chunk joins a steady one's batch with more left context)
            chunk_lengths = (first_chunk_tokens, self.CONTEXT_TOKENS + chunk_tokens)
            every = chunk_shapes(first_chunk_tokens, chunk_tokens, self.CONTEXT_TOKENS)
            shapes = 2 * (slots * len(chunk_lengths) + len(every))  # all captured shapes, with room for the rest
            self.euler.max_cached = max(self.euler.max_cached, shapes)
            self.s3graphs.widen(shapes)
            self.vocoder = VocodeBatcher(
                self,
                max_batch=slots,
                lengths=chunk_lengths,
                preempt=vocoder_preempt,
                yield_t3=vocoder_yield,
                deadlines=vocoder_deadlines,
            )
            vocoder = self.vocoder.warmup(chunk_lengths) if self.use_graph and self.device.type == "cuda" else {}
        self.scheduler = T3Scheduler(self.batch, poll=poll_tokens)
        self.catch_up = vocoder_catch_up
        return {
            "slots": slots,
            "widths": list(self.batch.widths),
            "graphs": n,
            "graph_error": self.batch.graph_error,
            "prefill_graph_error": self.batch.prefill_graph_error,
            "compiled": self.batch.compiled,
            "compile_error": self.batch.compile_error,
            "vocoder": vocoder,
            "s": time.perf_counter() - t0,
        }

    @contextlib.contextmanager
    def _on_s3_stream(self) -> Iterator[None]:
        """Vocode on ``s3_stream`` when batching on CUDA: T3 steps run on the scheduler's stream at normal
        priority and would otherwise starve the vocoder's many small kernels (measured on the H200: first
        audio ≈ the whole utterance's T3 time for long sentences when both ran at the same priority)."""
        s = self.s3_stream
        if s is None:
            yield
            return
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            yield

    def freeze_graphs(self) -> None:
        """No more S3Gen graph captures (shapes not captured by now run eagerly): a capture while another
        thread launches work on the GPU is not safe, so concurrent serving freezes the graphs after warm-up."""
        self.euler.frozen = True
        self.s3graphs.freeze()

    def hift_state(self) -> dict[str, Any]:
        """Which HiFT runs (upstream, sync-free, graph), what was swapped, and the graphs' counts."""
        g = self.s3graphs.hift
        return {"mode": self.hift, "sync_free": self.hift_sync_free, "graphs": g.state() if g else None}

    @property
    def graph_error(self) -> str | None:
        """The first CUDA-graph problem of any part (that part then runs eagerly), or None."""
        return self.t3.graph_error or self.euler.error or self.s3graphs.error
