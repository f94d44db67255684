"""One decode step's attention for one layer as one Triton kernel: the KV-cache write and the masked attention.

Why: the eager form of a decode step's attention (two ``index_copy_`` writes, then ``k * q``, a sum, the scale,
the mask bias, a softmax, the cast, ``p * v`` and a sum) is nine small kernels per layer, 270 per T3 step. In a
CUDA graph each still costs a few microseconds on the GPU, about as much as the layer's four weight GEMVs
together, so the T3 step is bound by kernel count, not by weight bandwidth (see
``docs/benchmarks/chatterbox-fast-path.json``, ``bandwidth_floor``). Here one program per (row, head):

* stores the row's new key and value at its cache slot ``pos[row]``;
* attends over slots ``[0, pos[row])`` from the cache plus the new key/value from registers (online softmax,
  fp32 accumulation), i.e. the slots ``<= pos`` that the eager mask keeps; the loop scans the KV bucket with
  the slots from ``pos`` on masked (masked loads read no memory). The bucket is a compile-time constant (one
  kernel per bucket, compiled while the graphs are captured): Triton's CPU interpreter, which the tests use,
  cannot loop to a runtime bound under numpy 2.

Exactness: the same softmax attention summed in a different order (fp32 throughout; the eager bf16 path
rounds the probabilities to bf16 first), i.e. rounding-level differences; ``FastT3`` checks the kernel
against the eager form at start-up and keeps the eager form when it is unavailable or differs. Triton is
imported on first use only; without it (CPU hosts) :func:`load` says why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

DecodeAttn = Callable[..., torch.Tensor]
_OP: list[DecodeAttn] = []


def _build() -> DecodeAttn:
    import triton
    import triton.language as tl

    @triton.jit
    def _kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        kc_ptr,
        vc_ptr,
        pos_ptr,
        o_ptr,
        s_qr,
        s_qh,
        s_kr,
        s_kh,
        s_vr,
        s_vh,
        s_cr,
        s_ch,
        s_cl,
        s_pos,
        H,
        scale,
        SPAN: tl.constexpr,
        D: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        r = pid // H
        h = pid % H
        d = tl.arange(0, D)
        p = tl.load(pos_ptr + r * s_pos)
        q = tl.load(q_ptr + r * s_qr + h * s_qh + d).to(tl.float32)
        kn = tl.load(k_ptr + r * s_kr + h * s_kh + d)
        vn = tl.load(v_ptr + r * s_vr + h * s_vh + d)
        base = r * s_cr + h * s_ch
        tl.store(kc_ptr + base + p * s_cl + d, kn)
        tl.store(vc_ptr + base + p * s_cl + d, vn)
        # the new slot first (it is never masked), then the cached slots before it
        m = tl.sum(kn.to(tl.float32) * q, axis=0) * scale
        den = tl.zeros_like(m) + 1.0
        acc = vn.to(tl.float32)
        for j0 in range(0, SPAN, BLOCK):  # SPAN > pos: the caller's KV bucket (masked from pos on)
            j = j0 + tl.arange(0, BLOCK)
            keep = j < p
            off = base + j[:, None] * s_cl + d[None, :]
            kb = tl.load(kc_ptr + off, mask=keep[:, None], other=0.0).to(tl.float32)
            s = tl.sum(kb * q[None, :], axis=1) * scale
            s = tl.where(keep, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=0))
            alpha = tl.exp(m - m_new)
            e = tl.exp(s - m_new)
            vb = tl.load(vc_ptr + off, mask=keep[:, None], other=0.0).to(tl.float32)
            acc = acc * alpha + tl.sum(e[:, None] * vb, axis=0)
            den = den * alpha + tl.sum(e, axis=0)
            m = m_new
        tl.store(o_ptr + (r * H + h) * D + d, (acc / den).to(o_ptr.dtype.element_ty))

    def decode_attn(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        pos: torch.Tensor,
        span: int,
    ) -> torch.Tensor:
        """``q, k, v``: (R, H, 1, D), any strides (copied where the last dim is not contiguous);
        ``k_cache, v_cache``: one layer's (>= R, H, L, D) cache, contiguous; ``pos``: (R,) long, the cache slot of
        each row's new key/value (a stride-0 view is fine); ``span``: slots to scan, more than ``max(pos)`` (the
        KV bucket; one compiled kernel per value). Writes the new keys/values into the cache; returns
        (R, H, 1, D)."""
        R, H, _, D = q.shape
        q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
        if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
            raise ValueError("decode_attn: the KV cache must be contiguous")
        o = torch.empty(R, H, 1, D, device=q.device, dtype=q.dtype)
        _kernel[(R * H,)](
            q,
            k,
            v,
            k_cache,
            v_cache,
            pos,
            o,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            v.stride(0),
            v.stride(1),
            k_cache.stride(0),
            k_cache.stride(1),
            k_cache.stride(2),
            pos.stride(0),
            H,
            D**-0.5,
            SPAN=span,
            D=D,
            BLOCK=64,
            num_warps=4,
        )
        return o

    return decode_attn


def load() -> tuple[DecodeAttn | None, str | None]:
    """The fused decode attention, or (None, why it is unavailable)."""
    if _OP:
        return _OP[0], None
    try:
        op = _build()
    except Exception as exc:  # no triton (CPU wheels)
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    _OP.append(op)
    return op, None


def mask_bias(pos: torch.Tensor, span: int, dtype: torch.dtype) -> torch.Tensor:
    """(R, 1, span): 0 for the slots up to each row's ``pos``, -inf after (the eager form's mask)."""
    slots = torch.arange(span, device=pos.device)
    bias = torch.zeros(pos.shape[0], span, device=pos.device, dtype=dtype)
    return bias.masked_fill_(slots[None] > pos[:, None], float("-inf")).view(-1, 1, span)


def eager(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    pos: torch.Tensor,
    span: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The eager decode attention (the math of SDPA for one query per row), same arguments and result as the
    kernel: per-row cache writes, scores over the first ``span`` slots with those after ``pos`` masked
    (``bias``: :func:`mask_bias`, computed once per step by callers running every layer), softmax in fp32."""
    R, D = q.shape[0], q.shape[-1]
    rows = torch.arange(R, device=q.device)
    k_cache[rows, :, pos] = k[:, :, 0]
    v_cache[rows, :, pos] = v[:, :, 0]
    kk, vv = k_cache[:R, :, :span], v_cache[:R, :, :span]  # (R, H, span, D)
    if bias is None:
        bias = mask_bias(pos, span, q.dtype)
    s = (kk * q).sum(-1) * D**-0.5 + bias  # (R, H, span)
    p = torch.softmax(s.float(), dim=-1).to(vv.dtype)
    return (p.unsqueeze(-1) * vv).sum(-2, keepdim=True)  # (R, H, 1, D)
