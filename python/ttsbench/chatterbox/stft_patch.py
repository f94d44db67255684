"""The "Blackwell STFT patch": chatterbox's spectral path with no complex tensor and no cuFFT.

On SM_12x (Blackwell) GPUs what fails is a runtime-compiled kernel — PyTorch's jiterator compiles the kernels
of complex-number ops (``.abs()``/``angle`` of a complex tensor) with NVRTC at first use (``nvrtc: invalid value
for --gpu-architecture`` / invalid PTX on GB10) — and, for spectral ops, cuFFT. With the patch on, every spectral
call site of the Chatterbox pipeline computes with :mod:`ttsbench.chatterbox.realdft` instead (real GEMM/conv
DFTs, sqrt, atan2, sin/cos). The call sites (chatterbox-tts 0.1.7, s3tokenizer 0.3.0, torchaudio's kaldi,
resemble-perth 1.0.1), found by reading those packages, and what each gets:

* ``chatterbox.models.s3gen.hifigan`` — HiFT ``_stft`` (stft -> view_as_real) and ``_istft`` (torch.complex ->
  istft), n_fft 16: the module's global ``torch`` becomes a proxy (below).
* ``chatterbox.models.s3gen.utils.mel`` — the S3Gen mel (stft -> view_as_real), n_fft 1920: proxy ``torch``.
* ``chatterbox.models.s3tokenizer.s3tokenizer`` / ``s3tokenizer.utils`` — the tokenizer log-mel (stft ->
  ``[..., :-1].abs() ** 2``), n_fft 400: proxy ``torch``.
* ``chatterbox.models.s3gen.xvector`` — the CAMPPlus speaker embedding's ``Kaldi.fbank`` (``torch.fft.rfft(...)
  .abs()``, n 512): the module's ``Kaldi`` becomes a copy of ``torchaudio.compliance.kaldi`` whose functions see
  the proxy ``torch`` (same code, only the rFFT differs).
* ``perth.perth_net.perth_net_implicit.audio_processor.AudioProcessor`` — the watermark's magnitude/phase split
  and its inverse (torchaudio ``Spectrogram``/``InverseSpectrogram``, n_fft 2048, ``torch.angle``, ``abs``,
  ``exp(1j*phase)``): ``signal_to_magphase``/``magphase_to_signal`` are replaced by real-valued equivalents.
  Upstream runs the watermarker on the CPU; the fast path moves it to the GPU.

The proxy ``torch`` is the real ``torch`` except ``stft``/``istft``/``view_as_real``/``complex``/``angle``/``abs``
and ``fft.rfft``, which return/accept :class:`~ttsbench.chatterbox.realdft.RealComplex` where torch would make a
complex tensor. Nothing else in the process changes; :meth:`PatchState.restore` puts every original back.

Not replaced: s3tokenizer's rotary table ``freqs_cis`` (complex64, built on the host by ``torch.polar`` at model
load) is copied to the device and viewed as real there — a copy and views, no kernel is compiled or run on a
complex tensor (the benchmark's complex-op audit lists it).

``auto`` turns the patch on when the device's compute capability is >= 12, or when a device self-test of the ops
that fail (complex ``abs``/``angle``/``exp``, ``rfft``, ``stft``/``istft``) raises; :attr:`PatchState.decided_by`
says which check decided.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ttsbench.chatterbox import realdft
from ttsbench.chatterbox.realdft import RealComplex, clear_caches, istft, stft  # noqa: F401 (re-exported)

_PROXY_TORCH_MODULES = (
    "chatterbox.models.s3gen.hifigan",
    "chatterbox.models.s3gen.utils.mel",
    "chatterbox.models.s3tokenizer.s3tokenizer",
    "s3tokenizer.utils",
)
_XVECTOR = "chatterbox.models.s3gen.xvector"
_PERTH_AP = "perth.perth_net.perth_net_implicit.audio_processor"

#: every module the patch touches (chatterbox-tts 0.1.7, s3tokenizer 0.3.0, resemble-perth 1.0.1)
PATCH_TARGETS: tuple[str, ...] = (*_PROXY_TORCH_MODULES, _XVECTOR, _PERTH_AP)


# --------------------------------------------------------------------------- the proxy torch


def _p_stft(
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
) -> Any:
    if return_complex is None:
        raise RuntimeError("stft requires the return_complex parameter be given for real inputs")
    ri = realdft.stft_ri(input, n_fft, hop_length, win_length, window, center, pad_mode, normalized, onesided)
    return RealComplex.from_ri(ri) if return_complex else ri


def _p_istft(
    input: Any,
    n_fft: int,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    normalized: bool = False,
    onesided: bool | None = None,
    length: int | None = None,
    return_complex: bool = False,
) -> torch.Tensor:
    if isinstance(input, RealComplex):
        if onesided is False or return_complex:
            raise RuntimeError("patched istft: only the one-sided, real-output inverse is supported")
        return realdft.istft_ri(
            input.real, input.imag, n_fft, hop_length, win_length, window, center, normalized, length
        )
    return realdft.istft(
        input, n_fft, hop_length, win_length, window, center, normalized, onesided, length, return_complex
    )


def _p_view_as_real(x: Any) -> torch.Tensor:
    return x.as_real() if isinstance(x, RealComplex) else torch.view_as_real(x)


def _p_complex(real: torch.Tensor, imag: torch.Tensor) -> RealComplex:
    return RealComplex(real, imag)


def _p_angle(x: Any, **kw: Any) -> torch.Tensor:
    return x.angle() if isinstance(x, RealComplex) else torch.angle(x, **kw)


def _p_abs(x: Any, **kw: Any) -> torch.Tensor:
    return x.abs() if isinstance(x, RealComplex) else torch.abs(x, **kw)


def _p_rfft(input: torch.Tensor, n: int | None = None, dim: int = -1, norm: str | None = None) -> RealComplex:
    return RealComplex.from_ri(realdft.rfft_ri(input, n, dim, norm))


class _FftProxy(types.ModuleType):
    """``torch.fft`` with ``rfft`` real-valued."""

    def __init__(self) -> None:
        super().__init__("torch.fft")
        self.rfft = _p_rfft

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.fft, name)


class _SpectralTorch(types.ModuleType):
    """``torch`` as the patched modules see it: the real one except the spectral/complex entry points."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.stft = _p_stft
        self.istft = _p_istft
        self.view_as_real = _p_view_as_real
        self.complex = _p_complex
        self.angle = _p_angle
        self.abs = _p_abs
        self.fft = _FftProxy()

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


_PROXY = _SpectralTorch()


def _rebound_module(module: types.ModuleType, torch_proxy: types.ModuleType) -> types.ModuleType:
    """A copy of ``module`` whose own functions resolve ``torch`` to ``torch_proxy`` (same code objects)."""
    clone = types.ModuleType(module.__name__, module.__doc__)
    ns = clone.__dict__
    ns.update({k: v for k, v in vars(module).items() if k not in ("__name__", "__doc__")})
    ns["torch"] = torch_proxy
    for name, obj in list(ns.items()):
        if isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__:
            fn = types.FunctionType(obj.__code__, ns, obj.__name__, obj.__defaults__, obj.__closure__)
            fn.__kwdefaults__ = obj.__kwdefaults__
            fn.__qualname__ = obj.__qualname__
            fn.__doc__ = obj.__doc__
            ns[name] = fn
    return clone


# --------------------------------------------------------------------------- perth (watermark)


def _spec_norms(normalized: Any) -> tuple[bool, bool]:
    """torchaudio.functional's ``_get_spec_norms``: (frame_length_norm, window_norm)."""
    if isinstance(normalized, str):
        if normalized not in ("frame_length", "window"):
            raise ValueError(f"Invalid normalized parameter: {normalized}")
        return normalized == "frame_length", normalized == "window"
    return False, bool(normalized)


def spectrogram_rc(transform: Any, waveform: torch.Tensor) -> RealComplex:
    """``torchaudio.transforms.Spectrogram(power=None)(waveform)`` as a :class:`RealComplex` (same steps)."""
    if transform.power is not None:
        raise RuntimeError("spectrogram_rc: only power=None (complex spectrogram) is patched")
    if transform.pad > 0:
        waveform = torch.nn.functional.pad(waveform, (transform.pad, transform.pad), "constant")
    frame_length_norm, window_norm = _spec_norms(transform.normalized)
    shape = waveform.size()
    ri = realdft.stft_ri(
        waveform.reshape(-1, shape[-1]),
        transform.n_fft,
        transform.hop_length,
        transform.win_length,
        transform.window,
        transform.center,
        transform.pad_mode,
        frame_length_norm,
        transform.onesided,
    )
    ri = ri.reshape(shape[:-1] + ri.shape[-3:])
    if window_norm:
        ri = ri / transform.window.pow(2.0).sum().sqrt()
    return RealComplex.from_ri(ri)


def inverse_spectrogram_ri(
    transform: Any, real: torch.Tensor, imag: torch.Tensor, length: int | None = None
) -> torch.Tensor:
    """``torchaudio.transforms.InverseSpectrogram(...)(real + i*imag, length)`` from the real parts (same steps)."""
    frame_length_norm, window_norm = _spec_norms(transform.normalized)
    if window_norm:
        scale = transform.window.pow(2.0).sum().sqrt()
        real, imag = real * scale, imag * scale
    shape = real.size()
    pad = transform.pad
    wav = realdft.istft_ri(
        real.reshape(-1, shape[-2], shape[-1]),
        imag.reshape(-1, shape[-2], shape[-1]),
        transform.n_fft,
        transform.hop_length,
        transform.win_length,
        transform.window,
        transform.center,
        frame_length_norm,
        length + 2 * pad if length is not None else None,
    )
    if length is not None and pad > 0:
        wav = wav[:, pad:-pad]
    return wav.reshape(shape[:-2] + wav.shape[-1:])


def _perth_signal_to_magphase(self: Any, signal: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """perth 1.0.1 ``AudioProcessor.signal_to_magphase`` (+ ``cx_to_magphase``) without a complex tensor."""
    import numpy as np
    from perth.perth_net.perth_net_implicit import utils as perth_utils

    if isinstance(signal, np.ndarray):
        signal = torch.from_numpy(signal.copy())
    spec = spectrogram_rc(self.spectrogram, signal.float())
    phase = spec.angle()
    mag = 20 * torch.log10(spec.abs().clip(self.hp.stft_magnitude_min))
    return perth_utils.normalize(self.hp, mag), phase


def _perth_magphase_to_signal(self: Any, mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """perth 1.0.1 ``AudioProcessor.magphase_to_signal`` (+ ``magphase_to_cx``): mag*(cos + i sin), real parts."""
    from perth.perth_net.perth_net_implicit import utils as perth_utils

    magspec = perth_utils.denormalize_spectrogram(self.hp, mag)
    magspec = 10.0 ** ((magspec / 20).clip(max=10))
    return inverse_spectrogram_ri(self.inv_spectrogram, magspec * torch.cos(phase), magspec * torch.sin(phase))


# --------------------------------------------------------------------------- sites, state, apply


@dataclass(frozen=True)
class _Site:
    module: str  # importable module that holds the attribute
    owner: str | None  # None: the module itself; else a class in it
    attr: str
    make: Callable[[Any], Any]  # original -> replacement


_SITES: tuple[_Site, ...] = (
    *(_Site(m, None, "torch", lambda _orig: _PROXY) for m in _PROXY_TORCH_MODULES),
    _Site(_XVECTOR, None, "Kaldi", lambda orig: _rebound_module(orig, _PROXY)),
    _Site(_PERTH_AP, "AudioProcessor", "signal_to_magphase", lambda _orig: _perth_signal_to_magphase),
    _Site(_PERTH_AP, "AudioProcessor", "magphase_to_signal", lambda _orig: _perth_magphase_to_signal),
)


@dataclass
class PatchState:
    """What :func:`apply` decided; ``as_dict()`` goes into results ``config.stft_patch``."""

    mode: str
    active: bool
    reason: str
    decided_by: str = ""
    selftest: dict[str, str] = field(default_factory=dict)
    patched_modules: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _saved: list[tuple[Any, str, Any]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "active": self.active,
            "reason": self.reason,
            "decided_by": self.decided_by,
            "selftest": dict(self.selftest),
            "patched_modules": list(self.patched_modules),
            "skipped": list(self.skipped),
        }

    def restore(self) -> None:
        """Put every original back (in reverse order of patching)."""
        for obj, attr, original in reversed(self._saved):
            setattr(obj, attr, original)
        self._saved.clear()
        self.patched_modules.clear()
        self.active = False

    def __enter__(self) -> PatchState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _check_complex_abs(dev: torch.device) -> None:
    z = torch.complex(torch.randn(64, device=dev), torch.randn(64, device=dev))
    float(z.abs().sum())


def _check_complex_angle(dev: torch.device) -> None:
    z = torch.complex(torch.randn(64, device=dev), torch.randn(64, device=dev))
    float(z.angle().sum())


def _check_complex_exp(dev: torch.device) -> None:  # perth's exp(1j * phase) * magnitude
    z = torch.exp(1.0j * torch.randn(64, device=dev)) * torch.rand(64, device=dev)
    float(torch.view_as_real(z).sum())


def _check_rfft(dev: torch.device) -> None:  # kaldi fbank's rfft (n 512); view_as_real: cuFFT alone
    float(torch.view_as_real(torch.fft.rfft(torch.randn(4, 512, device=dev))).sum())


def _check_stft_istft(dev: torch.device) -> None:
    x = torch.randn(1, 256, device=dev)
    win = torch.hann_window(16, device=dev)
    y = torch.istft(torch.stft(x, 16, 4, 16, window=win, return_complex=True), 16, 4, 16, window=win)
    if not bool(torch.isfinite(y).all()):
        raise RuntimeError("non-finite istft output")


#: name -> check; each raises when NVRTC (jiterator) or cuFFT cannot run that op on the device
SELFTEST_CHECKS: dict[str, Callable[[torch.device], None]] = {
    "complex_abs": _check_complex_abs,
    "complex_angle": _check_complex_angle,
    "complex_exp": _check_complex_exp,
    "rfft": _check_rfft,
    "stft_istft": _check_stft_istft,
}


def selftest_checks(device: torch.device | str) -> dict[str, str]:
    """Run every check on the device: name -> ``"ok"`` or the first line of the error it raised."""
    dev = torch.device(device)
    out: dict[str, str] = {}
    for name, check in SELFTEST_CHECKS.items():
        try:
            check(dev)
            _sync(dev)
            out[name] = "ok"
        except Exception as exc:  # any failure of the native path is the signal we look for
            out[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return out


def selftest(device: torch.device | str) -> str | None:
    """``"check: error"`` of the first failing self-test check on the device, else None."""
    for name, result in selftest_checks(device).items():
        if result != "ok":
            return f"{name}: {result}"
    return None


def decide(mode: str, device: torch.device | str) -> tuple[bool, str, str, dict[str, str]]:
    """(active, reason, decided_by, selftest results) for ``mode`` on ``device``."""
    if mode == "off":
        return False, "off", "mode", {}
    if mode == "on":
        return True, "forced", "mode", {}
    if mode != "auto":
        raise ValueError(f"stft patch mode must be auto, on or off, not {mode!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(dev)
        if major >= 12:
            return True, f"sm_{major}{minor}", "compute_capability", {}
    checks = selftest_checks(dev)
    for name, result in checks.items():
        if result != "ok":
            return True, f"selftest_failed: {name}: {result}", f"selftest:{name}", checks
    return False, "not_needed", "selftest", checks


def apply(mode: str, device: torch.device | str, targets: tuple[str, ...] = PATCH_TARGETS) -> PatchState:
    """Decide (auto/on/off) and, when on, patch every spectral call site whose module is in ``targets``.

    Modules that are not importable (or lack the attribute) are listed in ``skipped``. Reversible:
    ``state.restore()``, or use the returned state as a context manager."""
    active, reason, decided_by, checks = decide(mode, device)
    state = PatchState(mode=mode, active=active, reason=reason, decided_by=decided_by, selftest=checks)
    if not active:
        return state
    for site in _SITES:
        if site.module not in targets:
            continue
        try:
            module = importlib.import_module(site.module)
        except ImportError as exc:
            state.skipped.append(f"{site.module}: {type(exc).__name__}: {exc}".splitlines()[0])
            continue
        owner = module if site.owner is None else getattr(module, site.owner, None)
        original = getattr(owner, site.attr, None) if owner is not None else None
        if original is None:
            state.skipped.append(f"{site.module}: no {site.owner + '.' if site.owner else ''}{site.attr}")
            continue
        state._saved.append((owner, site.attr, original))
        setattr(owner, site.attr, site.make(original))
        if site.module not in state.patched_modules:
            state.patched_modules.append(site.module)
    return state
