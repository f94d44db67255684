"""Skinny linear layer (``y = x @ w.T`` for at most 2 rows of ``x``) as one Triton kernel, for the T3 decode step.

Why: a decode step is one CFG pair (2 rows). cuBLAS runs fp32 M=2 GEMMs as gemmSN kernels at ~1.4 TB/s on an
H100; this kernel streams each weight row once (contiguous along K) with fp32 accumulation for both rows, so
the step is closer to the weight-bandwidth floor. Exactness: the same products summed in a different order
(fp32 accumulator), i.e. rounding-level differences only; ``FastT3`` checks it against ``F.linear`` at start-up
and falls back to ``F.linear`` when it is unavailable or differs.

The kernel is registered once as the custom op ``ttsbench::gemv`` (opaque to ``torch.compile``, capturable in a
CUDA graph). Triton is imported on first use only; without it (CPU hosts) :func:`load` says why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

_OP: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = []


def _build() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    import triton
    import triton.language as tl

    @triton.jit
    def _kernel(
        x_ptr,
        w_ptr,
        y_ptr,
        N,
        stride_w,
        K: tl.constexpr,
        TWO: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        acc0 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        acc1 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            w = tl.load(
                w_ptr + offs_n[:, None] * stride_w + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0
            ).to(tl.float32)
            x0 = tl.load(x_ptr + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            acc0 += w * x0[None, :]
            if TWO:
                x1 = tl.load(x_ptr + K + offs_k, mask=mask_k, other=0.0).to(tl.float32)
                acc1 += w * x1[None, :]
        tl.store(y_ptr + offs_n, tl.sum(acc0, axis=1).to(y_ptr.dtype.element_ty), mask=mask_n)
        if TWO:
            tl.store(y_ptr + N + offs_n, tl.sum(acc1, axis=1).to(y_ptr.dtype.element_ty), mask=mask_n)

    @torch.library.custom_op("ttsbench::gemv", mutates_args=())
    def gemv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        K = x.shape[-1]
        rows = x.reshape(-1, K).contiguous()
        M, N = rows.shape[0], w.shape[0]
        y = torch.empty(M, N, device=x.device, dtype=x.dtype)
        # enough programs to cover the SMs several times over: 4 rows of W per program for N=1024, 16 for 8192
        block_n = 4
        while block_n < 32 and N // (block_n * 2) >= 264:
            block_n *= 2
        block_k = max(64, 2048 // block_n)
        _kernel[(triton.cdiv(N, block_n),)](
            rows, w, y, N, w.stride(0), K=K, TWO=M == 2, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4
        )
        return y.view(*x.shape[:-1], N)

    @gemv.register_fake
    def _(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x.new_empty(*x.shape[:-1], w.shape[0])

    return gemv


def load() -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None, str | None]:
    """The ``ttsbench::gemv`` op, or (None, why it is unavailable)."""
    if _OP:
        return _OP[0], None
    try:
        op = _build()
    except Exception as exc:  # no triton (CPU wheels), or an op already registered by another loader
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    _OP.append(op)
    return op, None


def make_linear(op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None) -> Callable[..., torch.Tensor]:
    """``F.linear`` that takes the GEMV kernel for ≤ 2 contiguous CUDA rows, ``F.linear`` otherwise."""

    def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if op is None or not x.is_cuda or x.numel() > 2 * x.shape[-1] or not w.is_contiguous():
            return F.linear(x, w, b)
        y = op(x, w)
        return y if b is None else y + b

    return linear
