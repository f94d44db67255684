"""What a piece of PyTorch work did that the Blackwell hazard is about: complex tensors, cuFFT, NVRTC.

* :class:`ComplexOpAudit` — a ``TorchDispatchMode`` that counts every aten op that takes or returns a complex
  tensor (thread-local: it sees the ops of the thread that entered it). Ops that only move or view memory
  (copies, views, slices) are counted apart from ops that *compute* on complex values — the latter are the
  jiterator/cuFFT kernels that fail on SM_12x.
* :func:`cufft_kernels` — the cuFFT kernels in a ``torch.profiler`` run (kernel names containing ``fft``).
* :func:`spectral_op_names` — aten ops in a profiler run that make, take or transform complex spectra.
* :func:`jiterator_cache_files` / :func:`nvrtc_mapped` — NVRTC evidence: PyTorch writes every kernel its jiterator
  compiles with NVRTC into ``PYTORCH_KERNEL_CACHE_PATH``; ``/proc/self/maps`` shows whether libnvrtc is loaded.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: ops that move or view memory without computing on the values
VIEW_OR_COPY_OPS: frozenset[str] = frozenset(
    {
        "_to_copy",
        "copy_",
        "clone",
        "detach",
        "alias",
        "lift_fresh",
        "view",
        "_unsafe_view",
        "_reshape_alias",
        "view_as_real",
        "view_as_complex",
        "slice",
        "select",
        "unsqueeze",
        "squeeze",
        "expand",
        "t",
        "transpose",
        "permute",
        "as_strided",
        "contiguous",
        "transpose_",
        "t_",
        "empty_like",
        "empty",
        "empty_strided",
        "resize_",
        "set_",
        "unfold",
        "narrow",
        "to",
        "reshape",
        "split",
        "split_with_sizes",
        "unbind",
        "cat",
        "stack",
        "index_select",
        "_conj",
        "_neg_view",
    }
)

#: profiler op names that make, take or transform complex spectra
SPECTRAL_OPS: frozenset[str] = frozenset(
    {
        "aten::stft",
        "aten::istft",
        "aten::_fft_r2c",
        "aten::_fft_c2r",
        "aten::_fft_c2c",
        "aten::fft_rfft",
        "aten::fft_irfft",
        "aten::fft_fft",
        "aten::fft_ifft",
        "aten::view_as_complex",
        "aten::complex",
        "aten::polar",
        "aten::angle",
    }
)


def _is_complex(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.is_complex()
    if isinstance(x, (list, tuple)):
        return any(_is_complex(v) for v in x)
    if isinstance(x, dict):
        return any(_is_complex(v) for v in x.values())
    return False


def _device_of(x: Any) -> str | None:
    if isinstance(x, torch.Tensor) and x.is_complex():
        return x.device.type
    if isinstance(x, (list, tuple)):
        for v in x:
            d = _device_of(v)
            if d:
                return d
    return None


class ComplexOpAudit(TorchDispatchMode):
    """Counts aten ops with a complex input or output: ``ops["abs@cuda"]`` etc."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _is_complex(args) or _is_complex(kwargs) or _is_complex(out):
            dev = _device_of(out) or _device_of(list(args)) or "?"
            self.ops[f"{func.overloadpacket.__name__}@{dev}"] += 1
        return out

    def computed(self) -> dict[str, int]:
        """Ops that computed on complex values (not copies or views)."""
        return {k: v for k, v in sorted(self.ops.items()) if k.split("@")[0] not in VIEW_OR_COPY_OPS}

    def moved(self) -> dict[str, int]:
        """Ops that only copied or viewed complex tensors."""
        return {k: v for k, v in sorted(self.ops.items()) if k.split("@")[0] in VIEW_OR_COPY_OPS}


def _events(prof: Any) -> list[Any]:
    return list(prof.events() or [])


def cuda_kernel_names(prof: Any) -> Counter[str]:
    """Kernel launches on the GPU in a finished ``torch.profiler.profile`` run, by name."""
    names: Counter[str] = Counter()
    for evt in _events(prof):
        if str(getattr(evt, "device_type", "")).endswith("CUDA"):
            names[evt.name] += 1
    return names


def cufft_kernels(prof: Any) -> dict[str, int]:
    """cuFFT's kernels among them (``vector_fft_r2c<512>``, ``regular_fft``...)."""
    return {k: v for k, v in sorted(cuda_kernel_names(prof).items()) if "fft" in k.lower()}


def spectral_op_names(prof: Any) -> dict[str, int]:
    """Host-side aten ops of :data:`SPECTRAL_OPS` in the run."""
    ops: Counter[str] = Counter()
    for evt in _events(prof):
        if evt.name in SPECTRAL_OPS:
            ops[evt.name] += 1
    return dict(sorted(ops.items()))


def jiterator_cache_files(cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Kernels PyTorch's jiterator compiled with NVRTC and cached (``PYTORCH_KERNEL_CACHE_PATH``)."""
    d = Path(cache_dir or os.environ.get("PYTORCH_KERNEL_CACHE_PATH") or Path.home() / ".cache/torch/kernels")
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.rglob("*") if p.is_file())


def nvrtc_mapped() -> bool:
    """Whether this process has libnvrtc loaded (Linux)."""
    try:
        return "libnvrtc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False
