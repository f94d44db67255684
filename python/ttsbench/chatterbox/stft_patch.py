"""The "Blackwell STFT patch": torch.stft/torch.istft rebuilt from matmul with a real DFT basis.

On SM_12x (Blackwell) GPUs the cuFFT/NVRTC path behind ``torch.stft``/``torch.istft`` has failed for
similar vocoders (``nvrtc: invalid PTX``). Chatterbox calls them in four places:

* ``chatterbox.models.s3gen.hifigan``  — HiFTGenerator ``_stft``/``_istft`` (n_fft 16, hop 4, hann, center)
* ``chatterbox.models.s3gen.utils.mel`` — the S3Gen mel (n_fft 1920, hop 480, reflect pre-pad, center False)
* ``chatterbox.models.s3tokenizer.s3tokenizer`` — the tokenizer's log-mel (n_fft 400, hop 160, hann)
* ``s3tokenizer.utils`` — the upstream S3 tokenizer's ``log_mel_spectrogram`` (n_fft 400, hop 160)

Each of those modules reaches the function as ``torch.stft``/``torch.istft`` through its own global name
``torch``. :func:`apply` swaps that global, in those modules only, for a proxy of ``torch`` whose ``stft`` and
``istft`` are the functions below; every other attribute is the real ``torch``. Nothing else in the process
changes, and :meth:`PatchState.restore` puts the real module back.

Framing uses ``Tensor.unfold`` + ``matmul`` and overlap-add uses ``nn.functional.fold``: no FFT library and no
runtime compilation is touched, and no cuDNN convolution (whose TF32 default would cost accuracy).
"""

from __future__ import annotations

import importlib
import math
import types
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

#: modules that call ``torch.stft``/``torch.istft`` in chatterbox-tts 0.1.7 and s3tokenizer 0.3.0
PATCH_TARGETS: tuple[str, ...] = (
    "chatterbox.models.s3gen.hifigan",
    "chatterbox.models.s3gen.utils.mel",
    "chatterbox.models.s3tokenizer.s3tokenizer",
    "s3tokenizer.utils",
)

_NATIVE_STFT = torch.stft
_NATIVE_ISTFT = torch.istft


@lru_cache(maxsize=32)
def _dft_basis(
    n_fft: int, n_bins: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and -sin bases, shape (n_fft, n_bins), built in float64, then cast."""
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_bins, dtype=torch.float64)
    # reduce k*n modulo n_fft before scaling: keeps the angle small, so cos/sin stay exact for large n_fft
    ang = 2.0 * math.pi * torch.remainder(torch.outer(n, k), n_fft) / n_fft
    return torch.cos(ang).to(device=device, dtype=dtype), (-torch.sin(ang)).to(device=device, dtype=dtype)


@lru_cache(maxsize=32)
def _inverse_basis(n_fft: int, normalized: bool, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(2*n_bins, n_fft) inverse real DFT: x[n] = 1/N sum_k c_k (Re X_k cos - Im X_k sin).

    c_k = 2, except 1 for DC and (even n_fft) Nyquist."""
    n_bins = n_fft // 2 + 1
    cos_b, sin_b = _dft_basis(n_fft, n_bins, torch.device("cpu"), torch.float64)
    coef = torch.full((n_bins,), 2.0, dtype=torch.float64)
    coef[0] = 1.0
    if n_fft % 2 == 0:
        coef[-1] = 1.0
    scale = (1.0 / math.sqrt(n_fft)) if normalized else (1.0 / n_fft)
    inv = torch.cat([cos_b.T, sin_b.T], dim=0) * (coef * scale).repeat(2).unsqueeze(1)
    return inv.to(device=device, dtype=dtype)


def _full_window(
    window: torch.Tensor | None, win_length: int, n_fft: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    if window is None:
        window = torch.ones(win_length, device=device, dtype=dtype)
    else:
        window = window.to(device=device, dtype=dtype)
    if window.shape[-1] != win_length:
        raise RuntimeError(f"stft: expected a window of length {win_length}, got {window.shape[-1]}")
    if win_length < n_fft:  # torch centres a shorter window inside n_fft
        left = (n_fft - win_length) // 2
        window = F.pad(window, (left, n_fft - win_length - left))
    return window


def stft(
    input: torch.Tensor,
    n_fft: int,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    pad_mode: str = "reflect",
    normalized: bool = False,
    onesided: bool | None = None,
    return_complex: bool | None = None,
    **_ignored: Any,
) -> torch.Tensor:
    """Same contract as :func:`torch.stft` for real 1-D/2-D input; output (B?, n_freq, n_frames)."""
    if input.is_complex():
        return _NATIVE_STFT(
            input,
            n_fft,
            hop_length,
            win_length,
            window,
            center,
            pad_mode,
            normalized,
            onesided,
            return_complex,
        )
    if return_complex is None:
        raise RuntimeError("stft requires the return_complex parameter be given for real inputs")
    hop = hop_length if hop_length is not None else n_fft // 4
    win_len = win_length if win_length is not None else n_fft
    squeeze = input.dim() == 1
    x = input.unsqueeze(0) if squeeze else input
    if x.dim() != 2:
        raise RuntimeError(f"stft: expected a 1D or 2D tensor, got {input.dim()}D")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dtype)
    if center:
        pad = n_fft // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode=pad_mode).squeeze(1)
    if x.shape[-1] < n_fft:
        raise RuntimeError(f"stft: input of {x.shape[-1]} samples is shorter than n_fft={n_fft}")
    win = _full_window(window, win_len, n_fft, x.device, dtype)
    n_bins = n_fft // 2 + 1 if (onesided is None or onesided) else n_fft
    cos_b, sin_b = _dft_basis(n_fft, n_bins, x.device, dtype)
    frames = x.unfold(-1, n_fft, hop)  # (B, n_frames, n_fft), a view
    w = win.unsqueeze(1)
    basis = torch.cat([cos_b * w, sin_b * w], dim=1)  # (n_fft, 2*n_bins)
    spec = torch.matmul(frames, basis).transpose(1, 2)  # (B, 2*n_bins, n_frames)
    if normalized:
        spec = spec * (1.0 / math.sqrt(n_fft))
    real, imag = spec[:, :n_bins], spec[:, n_bins:]
    out = torch.complex(real, imag) if return_complex else torch.stack([real, imag], dim=-1)
    return out.squeeze(0) if squeeze else out


def istft(
    input: torch.Tensor,
    n_fft: int,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    normalized: bool = False,
    onesided: bool | None = None,
    length: int | None = None,
    return_complex: bool = False,
    **_ignored: Any,
) -> torch.Tensor:
    """Same contract as :func:`torch.istft` for a one-sided complex spectrum (B?, n_fft//2+1, n_frames)."""
    n_bins = n_fft // 2 + 1
    if onesided is False or return_complex or not input.is_complex() or input.shape[-2] != n_bins:
        return _NATIVE_ISTFT(
            input, n_fft, hop_length, win_length, window, center, normalized, onesided, length, return_complex
        )
    hop = hop_length if hop_length is not None else n_fft // 4
    win_len = win_length if win_length is not None else n_fft
    squeeze = input.dim() == 2
    spec = input.unsqueeze(0) if squeeze else input
    dtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
    real, imag = spec.real.to(dtype), spec.imag.to(dtype)
    batch, _, n_frames = spec.shape
    win = _full_window(window, win_len, n_fft, spec.device, dtype)
    inv = _inverse_basis(n_fft, normalized, spec.device, dtype) * win.unsqueeze(0)  # synthesis window
    stacked = torch.cat([real, imag], dim=1).transpose(1, 2)  # (B, n_frames, 2*n_bins)
    frames = torch.matmul(stacked, inv)  # (B, n_frames, n_fft), windowed
    expected_len = n_fft + hop * (n_frames - 1)
    y = F.fold(
        frames.transpose(1, 2), output_size=(1, expected_len), kernel_size=(1, n_fft), stride=(1, hop)
    ).reshape(batch, expected_len)
    env_frames = (win * win).reshape(1, n_fft, 1).expand(1, n_fft, n_frames)
    env = F.fold(env_frames, output_size=(1, expected_len), kernel_size=(1, n_fft), stride=(1, hop)).reshape(
        expected_len
    )
    start = n_fft // 2 if center else 0
    default_end = expected_len - n_fft // 2 if center else expected_len
    end = start + length if length is not None else default_end
    end_c = min(end, expected_len)
    env_kept = env[start:end_c]
    if env_kept.numel() and bool((env_kept.abs() < 1e-11).any()):
        raise RuntimeError("istft: window overlap-add is zero somewhere (NOLA condition fails)")
    y = y[:, start:end_c] / env_kept
    if length is not None and y.shape[-1] < length:
        y = F.pad(y, (0, length - y.shape[-1]))
    return y.squeeze(0) if squeeze else y


class _TorchWithDftStft(types.ModuleType):
    """``torch`` as the patched modules see it: everything real except ``stft``/``istft``."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.stft = stft
        self.istft = istft

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


@dataclass
class PatchState:
    """What :func:`apply` decided; ``as_dict()`` goes into results ``config.stft_patch``."""

    mode: str
    active: bool
    reason: str
    patched_modules: list[str] = field(default_factory=list)
    _saved: dict[str, Any] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "active": self.active,
            "reason": self.reason,
            "patched_modules": list(self.patched_modules),
        }

    def restore(self) -> None:
        """Put the real ``torch`` back into every module this state patched."""
        for name, original in self._saved.items():
            module = importlib.import_module(name)
            module.torch = original
        self._saved.clear()
        self.patched_modules.clear()
        self.active = False

    def __enter__(self) -> PatchState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def selftest(device: torch.device | str) -> str | None:
    """Run a tiny torch.stft/istft on the device; the error text if it raises, else None."""
    try:
        dev = torch.device(device)
        x = torch.randn(1, 256, device=dev)
        win = torch.hann_window(16, device=dev)
        spec = torch.stft(x, 16, 4, 16, window=win, return_complex=True)
        y = torch.istft(spec, 16, 4, 16, window=win)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if not bool(torch.isfinite(y).all()):
            return "non-finite istft output"
    except Exception as exc:  # any failure of the native path is the signal we look for
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return None


def _decide(mode: str, device: torch.device | str) -> tuple[bool, str]:
    if mode == "off":
        return False, "off"
    if mode == "on":
        return True, "forced"
    if mode != "auto":
        raise ValueError(f"stft patch mode must be auto, on or off, not {mode!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(dev)
        if major >= 12:
            return True, f"sm_{major}{minor}"
    err = selftest(dev)
    if err is not None:
        return True, f"selftest_failed: {err}"
    return False, "not_needed"


def apply(mode: str, device: torch.device | str, targets: tuple[str, ...] = PATCH_TARGETS) -> PatchState:
    """Decide (auto/on/off) and, when on, patch ``torch.stft``/``torch.istft`` inside ``targets``.

    Modules of ``targets`` that are not importable are skipped. Reversible: ``state.restore()``, or use
    the returned state as a context manager.
    """
    active, reason = _decide(mode, device)
    state = PatchState(mode=mode, active=active, reason=reason)
    if not active:
        return state
    proxy = _TorchWithDftStft()
    for name in targets:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "torch", None) is None:
            continue
        state._saved[name] = module.torch
        module.torch = proxy
        state.patched_modules.append(name)
    return state
