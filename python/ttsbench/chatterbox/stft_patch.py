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

Both directions are one matrix product each, with everything that does not depend on the signal built once
in float64 on the host and cached on the device (stft: the window is applied on the device, no host copy;
istft: keyed by the window's values, n_fft, hop, device, dtype):

* ``stft``: reflect pad (``F.pad``), frames by ``Tensor.unfold``, one GEMM against the windowed real-DFT basis
  whose columns interleave ``cos`` and ``-sin``, so the product *is* the complex spectrum's memory: the result
  is a ``view_as_complex`` view laid out exactly like ``torch.stft``'s (no stack, no copy).
* ``istft``: one GEMM with the windowed inverse basis gives the frames already in ``fold``'s layout, one
  ``F.fold`` overlap-adds them, one multiply by the cached reciprocal window envelope normalises.

That is the ``matmul`` method. The ``conv`` method does the same with one ``conv1d`` (frames x windowed basis,
re/im channels) and one ``conv_transpose1d`` (synthesis + overlap-add) through cuDNN; ``auto`` (default) takes
conv for n_fft <= 512 and matmul above, the faster on an H100 per call site. Both stay exact in fp32: cuDNN's
TF32 default (``cudnn.allow_tf32``, which made whole-synthesis outputs differ by ~5e-4) and a lowered
``float32_matmul_precision`` are switched off around the products only.
"""

from __future__ import annotations

import importlib
import math
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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

#: "auto", "matmul" (unfold/fold + cuBLAS GEMM) or "conv" (conv1d/conv_transpose1d via cuDNN, TF32 off).
#: auto = conv up to n_fft 512 (HiFT 16, tokenizer 400), matmul above (S3Gen mel 1920): the faster of the two
#: for each call site on an H100 (docs/benchmarks/stft-patch.json).
DEFAULT_METHOD = "auto"
CONV_MAX_N_FFT = 512


def _use_conv(method: str | None, n_fft: int) -> bool:
    m = method or DEFAULT_METHOD
    if m == "auto":
        return n_fft <= CONV_MAX_N_FFT
    if m not in ("conv", "matmul"):
        raise ValueError(f"stft patch method must be auto, conv or matmul, not {m!r}")
    return m == "conv"


class _Cache:
    """A small LRU dict: per-(signal-independent key) device tensors."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple, build: Any) -> Any:
        hit = self.data.get(key)
        if hit is not None:
            self.data.move_to_end(key)
            return hit
        value = build()
        self.data[key] = value
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return value


_BASES = _Cache(32)
_ENVELOPES = _Cache(64)


def clear_caches() -> None:
    """Drop every cached basis and envelope (frees their device memory)."""
    _BASES.data.clear()
    _ENVELOPES.data.clear()


@contextmanager
def _exact_fp32(device: torch.device, conv: bool) -> Iterator[None]:
    """fp32 products stay fp32: no TF32 in cuBLAS (and in cuDNN for the conv method) inside the block."""
    if device.type != "cuda":
        yield
        return
    matmul_prec = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32 if conv else False
    if matmul_prec != "highest":
        torch.set_float32_matmul_precision("highest")
    if cudnn_tf32:
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        if matmul_prec != "highest":
            torch.set_float32_matmul_precision(matmul_prec)
        if cudnn_tf32:
            torch.backends.cudnn.allow_tf32 = True


def _window64(window: torch.Tensor | None, win_length: int, n_fft: int) -> tuple[torch.Tensor, tuple]:
    """The window as float64 on the host, zero-padded (centred) to n_fft, and a hashable key of its values.

    A window on the GPU costs one small device-to-host copy here; everything built from it is cached."""
    if window is None:
        w = torch.ones(win_length, dtype=torch.float64)
        key: tuple = ("ones", win_length)
    else:
        w = window.detach().to(device="cpu", dtype=torch.float64)
        if w.dim() != 1 or w.shape[0] != win_length:
            raise RuntimeError(f"stft: expected a 1D window of length {win_length}, got {tuple(window.shape)}")
        key = ("w", w.numpy().tobytes())
    if win_length > n_fft:
        raise RuntimeError(f"stft: win_length ({win_length}) must be <= n_fft ({n_fft})")
    if win_length < n_fft:  # torch centres a shorter window inside n_fft
        left = (n_fft - win_length) // 2
        w = F.pad(w, (left, n_fft - win_length - left))
    return w, key


def _device_window(
    window: torch.Tensor | None, win_length: int, n_fft: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    """The window on the signal's device, zero-padded (centred) to n_fft; None for a rectangular window."""
    if win_length > n_fft:
        raise RuntimeError(f"stft: win_length ({win_length}) must be <= n_fft ({n_fft})")
    if window is None:
        if win_length == n_fft:
            return None
        w = torch.ones(win_length, device=device, dtype=dtype)
    else:
        if window.dim() != 1 or window.shape[0] != win_length:
            raise RuntimeError(f"stft: expected a 1D window of length {win_length}, got {tuple(window.shape)}")
        w = window.detach().to(device=device, dtype=dtype)
    if win_length < n_fft:  # torch centres a shorter window inside n_fft
        left = (n_fft - win_length) // 2
        w = F.pad(w, (left, n_fft - win_length - left))
    return w


def _angles(n_fft: int, n_bins: int) -> torch.Tensor:
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_bins, dtype=torch.float64)
    # reduce k*n modulo n_fft before scaling: keeps the angle small, so cos/sin stay exact for large n_fft
    return 2.0 * math.pi * torch.remainder(torch.outer(n, k), n_fft) / n_fft  # (n_fft, n_bins)


def _forward_basis(w64: torch.Tensor, n_fft: int, n_bins: int, normalized: bool) -> torch.Tensor:
    """(n_fft, 2*n_bins) float64: column 2k = w*cos, 2k+1 = -w*sin (interleaved re/im)."""
    ang = _angles(n_fft, n_bins)
    scale = (1.0 / math.sqrt(n_fft)) if normalized else 1.0
    basis = torch.stack([torch.cos(ang), -torch.sin(ang)], dim=-1).reshape(n_fft, 2 * n_bins)
    return basis * (w64 * scale).unsqueeze(1)


def _inverse_basis(w64: torch.Tensor, n_fft: int, normalized: bool) -> torch.Tensor:
    """(n_fft, 2*n_bins) float64 synthesis matrix: frame[n] = w[n]/N sum_k c_k (Re X_k cos - Im X_k sin).

    Columns [0, n_bins) multiply Re X, [n_bins, 2 n_bins) Im X; c_k = 2 except 1 for DC and (even) Nyquist."""
    n_bins = n_fft // 2 + 1
    ang = _angles(n_fft, n_bins)
    coef = torch.full((n_bins,), 2.0, dtype=torch.float64)
    coef[0] = 1.0
    if n_fft % 2 == 0:
        coef[-1] = 1.0
    scale = (1.0 / math.sqrt(n_fft)) if normalized else (1.0 / n_fft)
    inv = torch.cat([torch.cos(ang), -torch.sin(ang)], dim=1) * (coef * scale).repeat(2)
    return inv * w64.unsqueeze(1)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


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
    method: str | None = None,
    **_ignored: Any,
) -> torch.Tensor:
    """Same contract as :func:`torch.stft` for real 1-D/2-D input; output (B?, n_freq, n_frames)."""
    if input.is_complex():
        return _NATIVE_STFT(
            input, n_fft, hop_length, win_length, window, center, pad_mode, normalized, onesided, return_complex
        )
    if return_complex is None:
        raise RuntimeError("stft requires the return_complex parameter be given for real inputs")
    hop = hop_length if hop_length is not None else n_fft // 4
    win_len = win_length if win_length is not None else n_fft
    squeeze = input.dim() == 1
    x = input.unsqueeze(0) if squeeze else input
    if x.dim() != 2:
        raise RuntimeError(f"stft: expected a 1D or 2D tensor, got {input.dim()}D")
    dtype = _work_dtype(x.dtype)
    x = x.to(dtype)
    batch = x.shape[0]
    if center:
        pad = n_fft // 2
        x = F.pad(x.unsqueeze(1), (pad, pad), mode=pad_mode).squeeze(1)
    if x.shape[-1] < n_fft:
        raise RuntimeError(f"stft: input of {x.shape[-1]} samples is shorter than n_fft={n_fft}")
    n_bins = n_fft // 2 + 1 if (onesided is None or onesided) else n_fft
    use_conv = _use_conv(method, n_fft)
    # The signal-independent DFT basis is cached per device; the window is applied on the device with one
    # multiply, so no call ever copies the window to the host (that copy is a GPU sync per STFT).
    key = ("fwd-trig", use_conv, n_fft, n_bins, normalized, x.device, dtype)

    def build() -> torch.Tensor:
        basis = _forward_basis(torch.ones(n_fft, dtype=torch.float64), n_fft, n_bins, normalized)
        if use_conv:  # (2*n_bins, 1, n_fft) conv weight, channels interleaved re/im
            basis = basis.T.reshape(2 * n_bins, 1, n_fft)
        return basis.to(device=x.device, dtype=dtype).contiguous()

    basis = _BASES.get(key, build)
    w = _device_window(window, win_len, n_fft, x.device, dtype)
    if w is not None:
        basis = basis * (w.view(1, 1, n_fft) if use_conv else w.view(n_fft, 1))
    with _exact_fp32(x.device, use_conv):
        if use_conv:
            spec = F.conv1d(x.unsqueeze(1), basis, stride=hop)  # (B, 2*n_bins, n_frames)
            spec = spec.view(batch, n_bins, 2, -1).transpose(2, 3)  # (B, n_bins, n_frames, 2)
            out = torch.view_as_complex(spec.contiguous())
        else:
            frames = x.unfold(-1, n_fft, hop)  # (B, n_frames, n_fft), a view
            prod = torch.matmul(frames, basis)  # (B, n_frames, 2*n_bins) = interleaved complex
            out = torch.view_as_complex(prod.view(batch, -1, n_bins, 2)).transpose(1, 2)
    if not return_complex:
        out = torch.view_as_real(out)
    return out.squeeze(0) if squeeze else out


def _inv_envelope(
    w64: torch.Tensor, wkey: tuple, n_fft: int, hop: int, n_frames: int, start: int, end: int, device, dtype
) -> torch.Tensor:
    """1 / (sum of squared, shifted windows) over [start, end), cached; raises when NOLA fails there."""
    key = (wkey, n_fft, hop, n_frames, start, end, device, dtype)

    def build() -> torch.Tensor:
        total = n_fft + hop * (n_frames - 1)
        sq = (w64 * w64).reshape(1, n_fft, 1).expand(1, n_fft, n_frames)
        env = F.fold(sq, output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop)).reshape(total)
        kept = env[start:end]
        if kept.numel() and bool((kept.abs() < 1e-11).any()):
            raise RuntimeError("istft: window overlap-add is zero somewhere (NOLA condition fails)")
        return (1.0 / kept).to(device=device, dtype=dtype)

    return _ENVELOPES.get(key, build)


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
    method: str | None = None,
    **_ignored: Any,
) -> torch.Tensor:
    """Same contract as :func:`torch.istft` for a one-sided complex spectrum (B?, n_fft//2+1, n_frames)."""
    n_bins = n_fft // 2 + 1
    if (
        onesided is False
        or return_complex
        or not input.is_complex()
        or input.dim() not in (2, 3)
        or input.shape[-2] != n_bins
    ):
        return _NATIVE_ISTFT(
            input, n_fft, hop_length, win_length, window, center, normalized, onesided, length, return_complex
        )
    hop = hop_length if hop_length is not None else n_fft // 4
    win_len = win_length if win_length is not None else n_fft
    squeeze = input.dim() == 2
    spec = input.unsqueeze(0) if squeeze else input
    dtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
    if spec.dtype not in (torch.complex64, torch.complex128):
        spec = spec.to(torch.complex64)
    batch, _, n_frames = spec.shape
    device = spec.device
    w64, wkey = _window64(window, win_len, n_fft)
    use_conv = _use_conv(method, n_fft)
    key = ("inv", use_conv, n_fft, normalized, wkey, device, dtype)

    def build() -> torch.Tensor:
        inv = _inverse_basis(w64, n_fft, normalized)  # (n_fft, 2*n_bins)
        if use_conv:  # conv_transpose1d weight (in=2*n_bins, out=1, n_fft)
            inv = inv.T.reshape(2 * n_bins, 1, n_fft)
        return inv.to(device=device, dtype=dtype).contiguous()

    inv = _BASES.get(key, build)
    expected_len = n_fft + hop * (n_frames - 1)
    start = n_fft // 2 if center else 0
    default_end = expected_len - n_fft // 2 if center else expected_len
    end = start + length if length is not None else default_end
    end_c = min(end, expected_len)
    inv_env = _inv_envelope(w64, wkey, n_fft, hop, n_frames, start, end_c, device, dtype)
    stacked = torch.cat([spec.real, spec.imag], dim=1)  # (B, 2*n_bins, n_frames), one copy
    with _exact_fp32(device, use_conv):
        if use_conv:
            y = F.conv_transpose1d(stacked, inv, stride=hop).view(batch, expected_len)
        else:
            frames = torch.matmul(inv, stacked)  # (B, n_fft, n_frames): fold's layout
            y = F.fold(frames, output_size=(1, expected_len), kernel_size=(1, n_fft), stride=(1, hop)).view(
                batch, expected_len
            )
    y = y[:, start:end_c] * inv_env
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
