"""Fast T3 decoding for Chatterbox (chatterbox-tts 0.1.7, English Llama_520M backbone).

Reproduces ``T3.inference`` of chatterbox 0.1.7 step for step, with the per-token overhead taken out:

* conditioning prefix: built by upstream's own ``T3.prepare_input_embeds`` (speaker / perceiver / emotion
  conditioning, text embeddings + learned text positions, CFG row 1 with zeroed text embeddings), then the
  BOS embedding (speech position 0) appended to both rows, exactly as upstream;
* backbone: the same Llama weights (RMSNorm, llama3-scaled RoPE from the model's own rotary module,
  SDPA attention, SiLU MLP), q/k/v and gate/up projections fused into one matmul each (the upstream modules'
  parameters become views into the fused tensors, so no weight is held twice in the model's dtype);
* a static KV cache ``[layers, 2 (CFG pair), heads, max_len, head_dim]``, preallocated once; the CFG pair is
  one batch of 2 (as upstream);
* the decode step (embedding + learned speech position, 30 layers, speech head) and the sampling step
  (CFG combine, repetition penalty over every token seen incl. BOS, temperature, min_p, top_p, draw) run on
  the GPU with device-side counters, each captured once in a CUDA graph per KV bucket (attention reads only
  ``bucket`` cache slots, a multiple of 128); no host sync per token, the stop token is checked every
  ``check_every`` steps;
* on CUDA the decode step's 2-row linears run as one Triton GEMV each (``fast_gemv``; cuBLAS runs fp32 M=2
  GEMMs far below bandwidth), checked against ``F.linear`` at start-up per weight shape (``gemv_error`` if not);
* ``dtype=torch.bfloat16`` keeps a bf16 copy of the backbone and cache (logits and sampling in fp32).

Where it differs from upstream (and why that is honest):

* the draw: upstream calls ``torch.multinomial(probs)``; this path draws ``argmax(probs / E)`` with
  ``E ~ Exp(1)`` (the exponential-race form of the same categorical distribution; capturable in a graph).
  Same distribution, different random stream: with a fixed seed the tokens differ from upstream's.
* top_p = 1.0 (``ChatterboxTTS.generate``'s default) skips the top-p sort: upstream's ``TopPLogitsWarper``
  then only masks tokens whose probability is already exactly 0, which changes no draw.
* the alignment stream analyzer: upstream builds it only for the multilingual model; the English model this
  path supports has none, so nothing is skipped. A multilingual T3 is refused (``UnsupportedModel``).
* upstream stops right after the EOS draw; this path may run up to ``check_every - 1`` extra steps on the GPU
  and drops them, so the returned tokens are the same.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

BUCKET = 128


class UnsupportedModel(RuntimeError):
    """The T3 instance is not the English Llama T3 this path reproduces."""


@dataclass
class SamplingParams:
    temperature: float = 0.8
    cfg_weight: float = 0.5
    repetition_penalty: float = 1.2
    min_p: float = 0.05
    top_p: float = 1.0
    greedy: bool = False  # argmax of the processed logits (for equivalence checks)


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm exactly: statistics in fp32, scaled in the input dtype."""
    dt = x.dtype
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(dt)


def _rot(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class FastT3:
    """Static-cache, graph-captured decoder for one ``chatterbox.models.t3.T3`` (English, Llama)."""

    def __init__(
        self,
        t3: Any,
        dtype: torch.dtype | None = None,
        max_len: int = 2048,
        cuda_graph: bool | None = None,
        check_every: int = 16,
        compile_layers: bool | None = None,
        gemv: bool | None = None,
        attn: bool | None = None,
    ) -> None:
        if getattr(t3, "is_gpt", False) or t3.hp.is_multilingual:
            raise UnsupportedModel("fast T3 supports the English Llama T3 only (no GPT-2 / multilingual)")
        cfg = t3.cfg
        self.t3 = t3
        self.device = t3.device
        self.model_dtype = t3.speech_head.weight.dtype
        self.dtype = dtype or self.model_dtype
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        if cfg.num_key_value_heads != self.n_heads:
            raise UnsupportedModel("fast T3 expects as many KV heads as query heads (Llama_520M)")
        self.hidden = cfg.hidden_size
        self.eps = cfg.rms_norm_eps
        self.max_len = max_len
        self.check_every = max(1, int(check_every))
        self.cuda_graph = (self.device.type == "cuda") if cuda_graph is None else bool(cuda_graph)
        self.vocab = t3.speech_head.weight.shape[0]
        self.stop_token = t3.hp.stop_speech_token
        self.start_token = t3.hp.start_speech_token
        self._fuse_weights()
        dev, dt = self.device, self.dtype
        # RoPE table from the model's own rotary module (llama3 scaling), cast like HF casts it
        pos = torch.arange(max_len, device=dev)[None]
        probe = torch.zeros(1, 1, self.head_dim, device=dev, dtype=torch.float32)
        cos, sin = t3.tfmr.rotary_emb(probe, position_ids=pos)
        self.cos, self.sin = cos[0].to(dt), sin[0].to(dt)
        shape = (self.n_layers, 2, self.n_heads, max_len, self.head_dim)
        self.k_cache = torch.zeros(shape, device=dev, dtype=dt)
        self.v_cache = torch.zeros(shape, device=dev, dtype=dt)
        # static decode state (device-side)
        self.tok = torch.zeros(1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)  # cache slot of the token fed next
        self.spos = torch.zeros(1, dtype=torch.long, device=dev)  # its learned speech position
        self.n = torch.zeros(1, dtype=torch.long, device=dev)  # tokens drawn so far
        self.logits = torch.zeros(2, self.vocab, device=dev, dtype=torch.float32)
        self.seen = torch.zeros(self.vocab, dtype=torch.bool, device=dev)
        self.out = torch.zeros(max_len, dtype=torch.long, device=dev)
        self.p_cfg = torch.zeros((), device=dev, dtype=torch.float32)
        self.p_pen = torch.ones((), device=dev, dtype=torch.float32)
        self.p_temp = torch.ones((), device=dev, dtype=torch.float32)
        self.p_minp = torch.zeros((), device=dev, dtype=torch.float32)
        self.p_topp = torch.ones((), device=dev, dtype=torch.float32)
        self.prefix_len = 0
        self._graphs: dict[Any, torch.cuda.CUDAGraph] = {}
        self._pool: Any = None
        self.graph_error: str | None = None
        self.compile_error: str | None = None
        self.gemv_error: str | None = None
        self._lin = F.linear
        self.gemv = False
        if gemv if gemv is not None else self.device.type == "cuda":
            self._try_gemv()
        self._attn: Callable[..., torch.Tensor] | None = None
        self.attn_error: str | None = None
        if attn if attn is not None else self.device.type == "cuda":
            self._try_attn()
        self._pre, self._post = self._layer_fns()
        self.compiled = False
        if compile_layers if compile_layers is not None else self.cuda_graph:
            self._try_compile()

    # ------------------------------------------------------------------ weights

    def _fuse_weights(self) -> None:
        t3, dt = self.t3, self.dtype
        same = dt == self.model_dtype
        self.layers: list[tuple[torch.Tensor, ...]] = []
        with torch.no_grad():
            for layer in t3.tfmr.layers:
                a, m = layer.self_attn, layer.mlp
                projs = [a.q_proj, a.k_proj, a.v_proj]
                gu = [m.gate_proj, m.up_proj]
                if any(p.bias is not None for p in [*projs, a.o_proj, *gu, m.down_proj]):
                    raise UnsupportedModel("fast T3 expects bias-free Llama projections")
                wqkv = torch.cat([p.weight for p in projs]).to(dt).contiguous()
                wgu = torch.cat([p.weight for p in gu]).to(dt).contiguous()
                if same:  # upstream keeps working on views of the fused tensors: no weight held twice
                    off = 0
                    for p in projs:
                        n = p.weight.shape[0]
                        p.weight.data = wqkv[off : off + n]
                        off += n
                    n = m.gate_proj.weight.shape[0]
                    m.gate_proj.weight.data = wgu[:n]
                    m.up_proj.weight.data = wgu[n:]
                self.layers.append(
                    tuple(
                        w.detach()
                        for w in (
                            layer.input_layernorm.weight.to(dt),
                            wqkv,
                            a.o_proj.weight.to(dt),
                            layer.post_attention_layernorm.weight.to(dt),
                            wgu,
                            m.down_proj.weight.to(dt),
                        )
                    )
                )
            self.norm_w = t3.tfmr.norm.weight.to(dt)
            self.head_w = t3.speech_head.weight.to(dt)
            self.head_b = None if t3.speech_head.bias is None else t3.speech_head.bias.to(dt)
            self.emb_w = t3.speech_emb.weight
            self.spos_w = t3.speech_pos_emb.emb.weight

    def weight_bytes_per_step(self) -> int:
        """Bytes of weights one decode step reads (backbone + final norm + speech head)."""
        tensors = [w for layer in self.layers for w in layer] + [self.norm_w, self.head_w]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------ forward

    def _try_gemv(self) -> None:
        """Take the Triton GEMV (``fast_gemv``) for the decode step's 2-row linears where it loads and agrees
        with ``F.linear`` on every weight shape of the step (rel 1e-5 fp32, 1e-2 bf16); else say why."""
        from ttsbench.chatterbox import fast_gemv

        op, why = fast_gemv.load()
        if op is None:
            self.gemv_error = why
            return
        lin = fast_gemv.make_linear(op)
        tol = 1e-5 if self.dtype == torch.float32 else 1e-2
        try:
            with torch.inference_mode():
                for w in (*self.layers[0][1:], self.head_w):
                    if w.dim() != 2:
                        continue
                    x = torch.randn(2, 1, w.shape[1], device=self.device, dtype=self.dtype)
                    ref = F.linear(x.float(), w.float())
                    got = lin(x, w).float()
                    err = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
                    if not err <= tol:
                        raise RuntimeError(f"gemv {tuple(w.shape)} differs from F.linear by {err:.2e}")
        except Exception as exc:
            self.gemv_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return
        self._lin = lin
        self.gemv = True

    def _try_attn(self) -> None:
        """Take the fused decode attention (``fast_attn``: cache write + attention in one kernel per layer)
        where it loads and agrees with the eager form on this decoder's head shape (rel 1e-5 fp32, 2e-2 bf16,
        rows at different positions); else say why (``attn_error``)."""
        from ttsbench.chatterbox import fast_attn

        op, why = fast_attn.load()
        if op is None:
            self.attn_error = why
            return
        tol = 1e-5 if self.dtype == torch.float32 else 2e-2
        H, D, kw = self.n_heads, self.head_dim, {"device": self.device, "dtype": self.dtype}
        try:
            with torch.inference_mode():
                q, k, v = (torch.randn(4, H, 1, D, **kw) for _ in range(3))
                cache = [torch.randn(4, H, 2 * BUCKET, D, **kw) for _ in range(2)]
                pos = torch.tensor([0, 1, BUCKET + 3, 2 * BUCKET - 1], device=self.device)
                mine = [c.clone() for c in cache]
                got = op(q, k, v, *mine, pos, 2 * BUCKET)
                ref = fast_attn.eager(q, k, v, *cache, pos, 2 * BUCKET)
                err = float((got.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30))
                if not err <= tol:
                    raise RuntimeError(f"fused attention differs from the eager form by {err:.2e}")
                if not all(torch.equal(a, b) for a, b in zip(mine, cache, strict=True)):
                    raise RuntimeError("fused attention wrote the KV cache differently from the eager form")
        except Exception as exc:
            self.attn_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return
        self._attn = op

    @property
    def fused_attn(self) -> bool:
        return self._attn is not None

    def _layer_fns(self) -> tuple[Callable, Callable]:
        eps, H, D = self.eps, self.n_heads, self.head_dim
        lin = self._lin

        def pre(h: torch.Tensor, ln1: torch.Tensor, wqkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
            B, S, _ = h.shape
            x = _rms(h, ln1, eps)
            qkv = lin(x, wqkv).view(B, S, 3, H, D).transpose(1, 3)  # (B, H, 3, S, D)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            return q * cos + _rot(q) * sin, k * cos + _rot(k) * sin, v

        def post(
            h: torch.Tensor, o: torch.Tensor, wo: torch.Tensor, ln2: torch.Tensor, wgu: torch.Tensor, wd: torch.Tensor
        ) -> torch.Tensor:
            B, S, _ = h.shape
            h = h + lin(o.transpose(1, 2).reshape(B, S, H * D), wo)
            x = _rms(h, ln2, eps)
            g, u = lin(x, wgu).chunk(2, dim=-1)
            return h + lin(F.silu(g) * u, wd)

        return pre, post

    def _try_compile(self) -> None:
        """torch.compile the per-layer pieces of the decode step (one shape: B=2, S=1) where it works and
        agrees with the eager pieces to 1e-5; else stay eager and say why (``compile_error``)."""
        try:
            pre_c = torch.compile(self._pre, fullgraph=True, dynamic=False)
            post_c = torch.compile(self._post, fullgraph=True, dynamic=False)
            ln1, wqkv, wo, ln2, wgu, wd = self.layers[0]
            with torch.inference_mode():
                h = torch.randn(2, 1, self.hidden, device=self.device, dtype=self.dtype)
                cos, sin = self.cos[5:6], self.sin[5:6]
                ref = self._pre(h, ln1, wqkv, cos, sin)
                got = pre_c(h, ln1, wqkv, cos, sin)
                o = torch.randn(2, self.n_heads, 1, self.head_dim, device=self.device, dtype=self.dtype)
                ref_p = self._post(h, o, wo, ln2, wgu, wd)
                got_p = post_c(h, o, wo, ln2, wgu, wd)
            tol = 1e-5 if self.dtype == torch.float32 else 2e-2
            for a, b in zip((*got, got_p), (*ref, ref_p), strict=True):
                err = float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))
                if err > tol:
                    raise RuntimeError(f"compiled layer differs from eager by {err:.2e}")
        except Exception as exc:
            self.compile_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return
        self._dpre, self._dpost = pre_c, post_c
        self.compiled = True

    def _layers(
        self,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        decode: bool = False,
    ) -> torch.Tensor:
        """The backbone + speech head; ``attend(i, q, k, v)`` writes layer ``i``'s new keys/values into its
        cache and returns the attention output (B, H, S, D)."""
        pre, post = (self._dpre, self._dpost) if (decode and self.compiled) else (self._pre, self._post)
        for i, (ln1, wqkv, wo, ln2, wgu, wd) in enumerate(self.layers):
            q, k, v = pre(h, ln1, wqkv, cos, sin)
            o = attend(i, q, k, v)
            h = post(h, o, wo, ln2, wgu, wd)
        h = _rms(h, self.norm_w, self.eps)
        return self._lin(h, self.head_w, self.head_b).float()

    def _prefill(self, embeds: torch.Tensor) -> None:
        """Full causal pass over the prefix (B=2, L); fills cache slots [0, L) and ``self.logits``."""
        L = embeds.shape[1]
        if self.max_len < L + 2:
            raise ValueError(f"prefix of {L} positions does not fit max_len {self.max_len}")
        cos, sin = self.cos[:L], self.sin[:L]

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            self.k_cache[i, :, :, :L] = k
            self.v_cache[i, :, :, :L] = v
            return F.scaled_dot_product_attention(
                q.contiguous(), self.k_cache[i, :, :, :L], self.v_cache[i, :, :, :L], is_causal=True
            )

        logits = self._layers(embeds.to(self.dtype), cos, sin, attend)
        self.logits.copy_(logits[:, -1])
        self.prefix_len = L

    def _attend_fn(
        self, pos: torch.Tensor, bucket: int, k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None
    ) -> Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """A decode step's ``attend``: one query per row at cache slot ``pos[row]`` (R,), attending over the
        bucket's slots up to it — the fused kernel (``fast_attn``) where it passed its start-up check, else the
        eager math of SDPA (cache writes, masked scores, softmax in fp32). ``k_cache``/``v_cache``: the
        ``[layers, rows, heads, max_len, head_dim]`` caches (default: this decoder's)."""
        kc = self.k_cache if k_cache is None else k_cache
        vc = self.v_cache if v_cache is None else v_cache
        if self._attn is not None:
            op = self._attn
            return lambda i, q, k, v: op(q, k, v, kc[i], vc[i], pos, bucket)
        from ttsbench.chatterbox.fast_attn import eager, mask_bias

        bias = mask_bias(pos, bucket, self.dtype)  # once per step, not per layer
        return lambda i, q, k, v: eager(q, k, v, kc[i], vc[i], pos, bucket, bias)

    def _decode(self, bucket: int) -> None:
        """Feed ``self.tok`` at slot ``self.pos`` / speech position ``self.spos``; logits → ``self.logits``."""
        e = F.embedding(self.tok, self.emb_w) + F.embedding(self.spos, self.spos_w)  # (1, C)
        h = e.to(self.dtype).expand(2, -1).reshape(2, 1, self.hidden)
        cos = self.cos.index_select(0, self.pos)  # (1, D)
        sin = self.sin.index_select(0, self.pos)
        attend = self._attend_fn(self.pos.expand(2), bucket)
        self.logits.copy_(self._layers(h, cos, sin, attend, decode=True)[:, -1])
        self.pos.add_(1)
        self.spos.add_(1)

    def _sample(self, greedy: bool, use_top_p: bool) -> None:
        """Upstream's processors on ``self.logits``; the draw → ``self.tok``, ``self.out[n]``, ``self.seen``."""
        cond, uncond = self.logits[0:1], self.logits[1:2]
        lg = cond + self.p_cfg * (cond - uncond)  # (1, V)
        pen = torch.where(lg < 0, lg * self.p_pen, lg / self.p_pen)
        lg = torch.where(self.seen.view(1, -1), pen, lg)
        lg = lg / self.p_temp
        probs = torch.softmax(lg, dim=-1)
        lg = lg.masked_fill(probs < self.p_minp * probs.amax(dim=-1, keepdim=True), -math.inf)
        if use_top_p:
            srt, idx = torch.sort(lg, descending=False)
            cum = srt.softmax(dim=-1).cumsum(dim=-1)
            drop = cum <= (1 - self.p_topp)
            drop[..., -1:] = False
            lg = lg.masked_fill(drop.scatter(1, idx, drop), -math.inf)
        probs = torch.softmax(lg, dim=-1)
        if greedy:
            tok = probs.argmax(dim=-1)
        else:
            race = torch.empty_like(probs).exponential_().clamp_min_(1e-30)
            tok = (probs / race).argmax(dim=-1)
        self.tok.copy_(tok)
        self.seen.index_fill_(0, tok, True)
        self.out.index_copy_(0, self.n, tok)
        self.n.add_(1)

    # ------------------------------------------------------------------ graphs

    def _run(self, key: Any, fn: Callable[[], None]) -> None:
        if not self.cuda_graph:
            fn()
            return
        g = self._graphs.get(key)
        if g is None:
            try:
                g = self._capture(fn)
            except Exception as exc:
                if self.compiled:  # retry once with the eager layer pieces before giving up on graphs
                    torch.cuda.synchronize()
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

    def _state(self) -> tuple[torch.Tensor, ...]:
        return (self.tok, self.pos, self.spos, self.n, self.logits, self.seen, self.out)

    def _capture(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        # the warm-up and capture must not advance the device state: save it, run, restore
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
        with torch.cuda.graph(g, pool=self._pool):
            fn()
        for dst, src in zip(self._state(), state, strict=True):
            dst.copy_(src)
        with contextlib.suppress(RuntimeError):  # else only the first call's seed-to-draw mapping changes
            torch.cuda.set_rng_state(rng)
        return g

    def decode_step(self, cur_pos: int) -> None:
        bucket = min(self.max_len, (cur_pos // BUCKET + 1) * BUCKET)
        self._run(("decode", bucket), lambda: self._decode(bucket))

    def sample_step(self, greedy: bool, use_top_p: bool) -> None:
        self._run(("sample", greedy, use_top_p), lambda: self._sample(greedy, use_top_p))

    def capture_all(self, up_to: int | None = None) -> int:
        """Capture the decode graphs of every KV bucket up to ``up_to`` slots and the sample graphs now,
        so that no capture lands inside a timed or latency-critical call. Returns the number of graphs."""
        if not self.cuda_graph:
            return 0
        top = min(self.max_len, up_to or self.max_len)
        with torch.inference_mode():
            for b in range(BUCKET, top + BUCKET, BUCKET):
                self.decode_step(min(b, self.max_len) - 1)
            for greedy in (False, True):
                self.sample_step(greedy, False)
        return len(self._graphs)

    # ------------------------------------------------------------------ public API

    @torch.inference_mode()
    def prefix_embeds(self, t3_cond: Any, text_tokens: torch.Tensor, cfg_weight: float) -> torch.Tensor:
        """Upstream's prefix (B=2): ``prepare_input_embeds`` + the BOS embedding at speech position 0."""
        t3 = self.t3
        text_tokens = torch.atleast_2d(text_tokens).to(dtype=torch.long, device=self.device)
        if text_tokens.shape[0] != 2:
            raise ValueError("fast T3 decodes the CFG pair: text_tokens must hold 2 rows (cfg_weight > 0)")
        initial = t3.hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, _ = t3.prepare_input_embeds(
            t3_cond=t3_cond, text_tokens=text_tokens, speech_tokens=initial, cfg_weight=cfg_weight
        )
        bos = torch.tensor([[self.start_token]], dtype=torch.long, device=self.device)
        bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
        return torch.cat([embeds, torch.cat([bos_embed, bos_embed])], dim=1)

    def _reset(self, embeds: torch.Tensor, params: SamplingParams) -> None:
        self._prefill(embeds)
        self.pos.fill_(self.prefix_len)
        self.spos.fill_(1)
        self.n.zero_()
        self.seen.zero_()
        self.seen[self.start_token] = True  # upstream's generated_ids start with BOS
        self.p_cfg.fill_(params.cfg_weight)
        self.p_pen.fill_(float(params.repetition_penalty))
        self.p_temp.fill_(params.temperature if params.temperature != 1.0 else 1.0)
        self.p_minp.fill_(params.min_p)
        self.p_topp.fill_(params.top_p)

    @torch.inference_mode()
    def iter_tokens(
        self,
        t3_cond: Any,
        text_tokens: torch.Tensor,
        max_new_tokens: int,
        params: SamplingParams,
        chunk_sizes: tuple[int, ...] = (),
    ) -> Iterator[torch.Tensor]:
        """Yield the speech tokens (1-D, incl. a final EOS if drawn) as they become known.

        ``chunk_sizes``: yield once after each of these token counts (e.g. ``(25,)`` for a first chunk), then
        the rest at the end. Every yield is a new tensor holding only the tokens since the last yield.
        """
        embeds = self.prefix_embeds(t3_cond, text_tokens, params.cfg_weight)
        L = embeds.shape[1]
        max_new = min(int(max_new_tokens), self.max_len - L - 1)
        self._reset(embeds, params)
        use_top_p = params.top_p < 1.0
        marks = sorted({c for c in chunk_sizes if 0 < c < max_new})
        emitted = 0
        checked = 0
        for i in range(max_new):
            self.sample_step(params.greedy, use_top_p)
            self.decode_step(L + i)
            done = i + 1
            at_mark = bool(marks) and done == marks[0]
            if at_mark or done % self.check_every == 0 or done == max_new:
                new = self.out[checked:done].cpu()
                stop = (new == self.stop_token).nonzero()
                if stop.numel():
                    end = checked + int(stop[0, 0]) + 1
                    yield self.out[emitted:end].clone()
                    return
                checked = done
                if at_mark:
                    marks.pop(0)
                    yield self.out[emitted:done].clone()
                    emitted = done
        if emitted < max_new:
            yield self.out[emitted:max_new].clone()

    def generate(
        self, t3_cond: Any, text_tokens: torch.Tensor, max_new_tokens: int, params: SamplingParams
    ) -> torch.Tensor:
        """Like ``T3.inference``: (1, n) speech tokens (n ≤ max_new_tokens, a drawn EOS included)."""
        parts = list(self.iter_tokens(t3_cond, text_tokens, max_new_tokens, params))
        return torch.cat(parts).view(1, -1)

    @torch.inference_mode()
    def teacher_forced_logits(
        self, t3_cond: Any, text_tokens: torch.Tensor, tokens: torch.Tensor, cfg_weight: float
    ) -> torch.Tensor:
        """Raw logits (n+1, 2, V): after the prefix, then after feeding each of ``tokens`` in turn."""
        embeds = self.prefix_embeds(t3_cond, text_tokens, cfg_weight)
        L = embeds.shape[1]
        self._reset(embeds, SamplingParams(cfg_weight=cfg_weight))
        out = [self.logits.clone()]
        for i, t in enumerate(tokens.view(-1).tolist()):
            self.tok.fill_(int(t))
            self.decode_step(L + i)
            out.append(self.logits.clone())
        return torch.stack(out)
