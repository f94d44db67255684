"""Spectral ops without complex tensors: STFT, inverse STFT and rFFT as real matrix products (cuBLAS/cuDNN).

This is the arithmetic of the "Blackwell STFT patch" (:mod:`ttsbench.chatterbox.stft_patch`). On SM_12x GPUs the
two pieces behind PyTorch's spectral ops can fail: cuFFT (``torch.stft``/``istft``/``torch.fft``) and NVRTC, which
PyTorch's jiterator uses to compile complex-number kernels (``.abs()``/``angle`` of a complex tensor) at first
use. Nothing here makes a complex tensor or calls cuFFT:

* :func:`stft_ri` — frames x windowed real-DFT basis, one product, result in ``torch.view_as_real(torch.stft(...))``
  layout ``(B?, n_bins, n_frames, 2)``: reflect pad (``F.pad``), then either ``Tensor.unfold`` + one GEMM
  (``matmul``) or one ``conv1d`` (``conv``) against a basis whose columns interleave ``cos`` and ``-sin``.
* :func:`istft_ri` — real and imaginary parts in, one GEMM with the windowed inverse basis + one ``F.fold``
  overlap-add (or one ``conv_transpose1d``), one multiply by the cached reciprocal window envelope.
* :func:`rfft_ri` — ``torch.fft.rfft`` along the last dimension as one GEMM, ``(..., n//2+1, 2)``.
* :class:`RealComplex` — what a call site that expects a complex tensor gets instead: real/imag parts with
  exactly the operations chatterbox's call sites use (indexing, ``abs`` = sqrt(re²+im²), ``angle`` = atan2).

Signal-independent bases are built once in float64 on the host and cached per device/dtype; windows are
applied on the device (no host copy per call, except istft's envelope key). ``DEFAULT_METHOD`` ``auto`` takes
``conv`` for n_fft <= 512 and ``matmul`` above (the faster on an H100 per call site). fp32 stays fp32: TF32 in
cuBLAS (and cuDNN for ``conv``) is switched off around the products only (TF32 made whole-synthesis outputs
differ by ~5e-4). :func:`stft`/:func:`istft` are the same ops under torch's complex contract (for tests and
drop-in use).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

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


def stft_ri(
    input: torch.Tensor,
    n_fft: int,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    pad_mode: str = "reflect",
    normalized: bool = False,
    onesided: bool | None = None,
    method: str | None = None,
) -> torch.Tensor:
    """``torch.view_as_real(torch.stft(..., return_complex=True))`` for real 1-D/2-D input, with no complex tensor.

    Output (B?, n_bins, n_frames, 2), float32 (float64 for float64 input)."""
    if input.is_complex():
        raise TypeError("stft_ri takes a real signal")
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
            out = spec.view(batch, n_bins, 2, -1).transpose(2, 3)  # (B, n_bins, n_frames, 2)
        else:
            frames = x.unfold(-1, n_fft, hop)  # (B, n_frames, n_fft), a view
            prod = torch.matmul(frames, basis)  # (B, n_frames, 2*n_bins) = interleaved re/im
            out = prod.view(batch, -1, n_bins, 2).transpose(1, 2)  # (B, n_bins, n_frames, 2)
    return out.squeeze(0) if squeeze else out


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
    """Same contract as :func:`torch.stft` for real 1-D/2-D input (the complex result is a view of :func:`stft_ri`)."""
    if input.is_complex():
        return _NATIVE_STFT(
            input, n_fft, hop_length, win_length, window, center, pad_mode, normalized, onesided, return_complex
        )
    if return_complex is None:
        raise RuntimeError("stft requires the return_complex parameter be given for real inputs")
    ri = stft_ri(input, n_fft, hop_length, win_length, window, center, pad_mode, normalized, onesided, method)
    if not return_complex:
        return ri
    if ri.stride(-1) != 1 or any(s % 2 for s in ri.stride()[:-1]):
        ri = ri.contiguous()
    return torch.view_as_complex(ri)


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


def istft_ri(
    real: torch.Tensor,
    imag: torch.Tensor,
    n_fft: int,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    normalized: bool = False,
    length: int | None = None,
    method: str | None = None,
) -> torch.Tensor:
    """:func:`torch.istft` of the one-sided spectrum ``real + i*imag``, each (B?, n_fft//2+1, n_frames), real only."""
    n_bins = n_fft // 2 + 1
    if real.shape != imag.shape or real.dim() not in (2, 3) or real.shape[-2] != n_bins:
        raise RuntimeError(
            f"istft: expected real/imag parts of shape (B?, {n_bins}, frames), got {tuple(real.shape)} and "
            f"{tuple(imag.shape)}"
        )
    hop = hop_length if hop_length is not None else n_fft // 4
    win_len = win_length if win_length is not None else n_fft
    squeeze = real.dim() == 2
    re = real.unsqueeze(0) if squeeze else real
    im = imag.unsqueeze(0) if squeeze else imag
    dtype = torch.float64 if torch.float64 in (re.dtype, im.dtype) else torch.float32
    batch, _, n_frames = re.shape
    device = re.device
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
    stacked = torch.cat([re.to(dtype), im.to(dtype)], dim=1)  # (B, 2*n_bins, n_frames), one copy
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
    spec = input if input.dtype in (torch.complex64, torch.complex128) else input.to(torch.complex64)
    return istft_ri(spec.real, spec.imag, n_fft, hop_length, win_length, window, center, normalized, length, method)


def rfft_ri(input: torch.Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> torch.Tensor:
    """``torch.view_as_real(torch.fft.rfft(input, n, dim, norm))`` for real input as one GEMM: (..., n//2+1, 2)."""
    if input.is_complex():
        raise TypeError("rfft_ri takes a real signal")
    last = dim % input.dim() == input.dim() - 1
    x = input if last else input.movedim(dim, -1)
    size = x.shape[-1] if n is None else n
    if size < 1:
        raise RuntimeError(f"rfft: invalid number of data points ({size})")
    if x.shape[-1] > size:
        x = x[..., :size]
    elif x.shape[-1] < size:
        x = F.pad(x, (0, size - x.shape[-1]))
    dtype = _work_dtype(x.dtype)
    x = x.to(dtype)
    n_bins = size // 2 + 1
    scale = {None: 1.0, "backward": 1.0, "ortho": 1.0 / math.sqrt(size), "forward": 1.0 / size}
    if norm not in scale:
        raise ValueError(f"rfft: invalid norm {norm!r}")
    key = ("rfft", size, norm, x.device, dtype)

    def build() -> torch.Tensor:
        basis = _forward_basis(torch.ones(size, dtype=torch.float64), size, n_bins, False) * scale[norm]
        return basis.to(device=x.device, dtype=dtype).contiguous()

    basis = _BASES.get(key, build)
    with _exact_fp32(x.device, False):
        out = torch.matmul(x, basis)  # (..., 2*n_bins) interleaved re/im
    out = out.view(*out.shape[:-1], n_bins, 2)
    if not last:
        out = out.movedim(-2, dim % input.dim())
    return out


class RealComplex:
    """A complex tensor kept as its real and imaginary parts (real tensors), for call sites that expect complex.

    It offers exactly what chatterbox's, s3tokenizer's and torchaudio's kaldi call sites do with an STFT/rFFT
    result: ``x[idx]``, ``x.abs()`` (= sqrt(re² + im²)), ``x.angle()`` (= atan2(im, re)), ``.real``/``.imag``,
    :meth:`as_real` (= ``torch.view_as_real``), ``shape``/``device``. Any other use raises AttributeError or
    TypeError — a loud failure rather than a complex tensor made behind the patch's back."""

    __slots__ = ("_ri", "imag", "real")

    def __init__(self, real: torch.Tensor, imag: torch.Tensor, ri: torch.Tensor | None = None) -> None:
        if real.is_complex() or imag.is_complex():
            raise TypeError("RealComplex holds real tensors")
        self.real, self.imag, self._ri = real, imag, ri

    @classmethod
    def from_ri(cls, ri: torch.Tensor) -> RealComplex:
        """From the ``view_as_real`` layout (..., 2); the parts are views of ``ri``."""
        return cls(ri[..., 0], ri[..., 1], ri)

    def as_real(self) -> torch.Tensor:
        """``torch.view_as_real`` of the complex value: (..., 2)."""
        return self._ri if self._ri is not None else torch.stack((self.real, self.imag), dim=-1)

    @property
    def shape(self) -> torch.Size:
        return self.real.shape

    @property
    def device(self) -> torch.device:
        return self.real.device

    def dim(self) -> int:
        return self.real.dim()

    def size(self, d: int | None = None) -> Any:
        return self.real.size() if d is None else self.real.size(d)

    def __getitem__(self, idx: Any) -> RealComplex:
        return RealComplex(self.real[idx], self.imag[idx])

    def abs(self) -> torch.Tensor:
        return torch.sqrt(self.real * self.real + self.imag * self.imag)

    __abs__ = abs

    def angle(self) -> torch.Tensor:
        return torch.atan2(self.imag, self.real)

    def __repr__(self) -> str:
        return f"RealComplex(shape={tuple(self.shape)}, dtype={self.real.dtype}, device={self.device})"
