"""Blackwell STFT patch on CPU: every replaced op equals torch's (property-based), every call site is patched and
restored, ``auto`` decides from the right check, and the whole pipeline computes on no complex tensor."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ttsbench.chatterbox import realdft, stft_patch  # noqa: E402
from ttsbench.chatterbox.realdft import RealComplex  # noqa: E402
from ttsbench.chatterbox.spectral_audit import ComplexOpAudit  # noqa: E402

pytestmark = pytest.mark.chatterbox

# (n_fft, hop, center, pad_mode): HiFT (16, 4), s3tokenizer (400, 160), S3Gen mel (1920, 480, center False)
CONFIGS = [(16, 4, True), (400, 160, True), (1920, 480, False), (1024, 256, True), (15, 5, True)]


def _rel(a, b) -> float:
    a = torch.view_as_real(a) if a.is_complex() else a
    b = torch.view_as_real(b) if b.is_complex() else b
    return float((a.double() - b.double()).norm() / b.double().norm())


@settings(max_examples=25, deadline=None)
@given(
    cfg=st.sampled_from(CONFIGS),
    extra=st.integers(0, 3000),
    batch=st.integers(1, 2),
    seed=st.integers(0, 2**16),
    complex_out=st.booleans(),
)
def test_stft_matches_torch(cfg, extra, batch, seed, complex_out):
    n_fft, hop, center = cfg
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_fft + extra, generator=g)
    win = torch.hann_window(n_fft)
    ours = stft_patch.stft(x, n_fft, hop, window=win, center=center, return_complex=complex_out)
    ref = torch.stft(x, n_fft, hop, window=win, center=center, pad_mode="reflect", return_complex=complex_out)
    assert ours.shape == ref.shape
    assert _rel(ours, ref) <= 1e-5


@settings(max_examples=25, deadline=None)
@given(
    cfg=st.sampled_from([c for c in CONFIGS if c[2]]),
    extra=st.integers(0, 3000),
    seed=st.integers(0, 2**16),
    give_length=st.booleans(),
)
def test_istft_matches_torch_and_round_trips(cfg, extra, seed, give_length):
    n_fft, hop, _ = cfg
    x = torch.randn(1, n_fft + extra, generator=torch.Generator().manual_seed(seed))
    win = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=win, return_complex=True)
    length = x.shape[-1] if give_length else None
    ours = stft_patch.istft(spec, n_fft, hop, window=win, length=length)
    ref = torch.istft(spec, n_fft, hop, window=win, length=length)
    assert ours.shape == ref.shape
    assert _rel(ours, ref) <= 1e-5
    # round trip through the patched pair
    back = stft_patch.istft(
        stft_patch.stft(x, n_fft, hop, window=win, return_complex=True),
        n_fft,
        hop,
        window=win,
        length=x.shape[-1],
    )
    assert _rel(back, x) <= 1e-5


@pytest.mark.parametrize("method", ["conv", "matmul"])
@pytest.mark.parametrize("n_fft,hop,center", [(16, 4, True), (400, 160, True), (1920, 480, False)])
def test_both_methods_match_torch(method, n_fft, hop, center):
    x = torch.randn(2, 9000, generator=torch.Generator().manual_seed(n_fft))
    win = torch.hann_window(n_fft)
    ref = torch.stft(x, n_fft, hop, window=win, center=center, return_complex=True)
    ours = stft_patch.stft(x, n_fft, hop, window=win, center=center, return_complex=True, method=method)
    assert ours.shape == ref.shape and _rel(ours, ref) <= 1e-5
    if center:
        y = stft_patch.istft(ref, n_fft, hop, window=win, length=x.shape[-1], method=method)
        assert _rel(y, torch.istft(ref, n_fft, hop, window=win, length=x.shape[-1])) <= 1e-5


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        stft_patch.stft(torch.randn(64), 16, 4, return_complex=True, method="fft")


def test_one_dimensional_input_and_defaults():
    x = torch.randn(4000)
    ours = stft_patch.stft(x, 64, return_complex=True)
    ref = torch.stft(x, 64, return_complex=True)
    assert ours.shape == ref.shape and _rel(ours, ref) <= 1e-5
    assert _rel(stft_patch.istft(ref, 64), torch.istft(ref, 64)) <= 1e-5


def test_real_input_without_return_complex_is_rejected_like_torch():
    with pytest.raises(RuntimeError, match="return_complex"):
        stft_patch.stft(torch.randn(100), 16)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(7,), (3, 64), (2, 3, 33), (5, 512)]),
    n=st.one_of(st.none(), st.integers(1, 600)),
    dim=st.integers(-1, 2),
    norm=st.sampled_from([None, "backward", "ortho", "forward"]),
    seed=st.integers(0, 2**16),
)
def test_rfft_matches_torch(shape, n, dim, norm, seed):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    dim = min(dim, x.dim() - 1)
    ours = realdft.rfft_ri(x, n, dim, norm)
    ref = torch.view_as_real(torch.fft.rfft(x, n, dim, norm))
    assert ours.shape == ref.shape and not ours.is_complex()
    assert _rel(ours, ref) <= 1e-5


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(9,), (4, 17), (2, 3, 5)]),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-6, 1.0, 1e3]),
)
def test_real_complex_abs_angle_index_match_torch(shape, seed, scale):
    g = torch.Generator().manual_seed(seed)
    re, im = torch.randn(*shape, generator=g) * scale, torch.randn(*shape, generator=g) * scale
    z = torch.complex(re, im)
    rc = RealComplex(re, im)
    assert _rel(rc.abs(), z.abs()) <= 1e-5
    assert _rel(rc.angle(), z.angle()) <= 1e-5
    assert _rel(rc[..., :-1].abs(), z[..., :-1].abs()) <= 1e-5
    assert torch.equal(rc.as_real(), torch.view_as_real(z))
    assert rc.shape == z.shape
    with pytest.raises(AttributeError):
        rc.exp()  # nothing but what the call sites use


@settings(max_examples=20, deadline=None)
@given(cfg=st.sampled_from([c for c in CONFIGS if c[2]]), extra=st.integers(0, 3000), seed=st.integers(0, 2**16))
def test_proxy_stft_complex_istft_match_torch(cfg, extra, seed):
    """What HiFT does: stft -> view_as_real; complex(re, im) -> istft — through the proxy torch, no complex."""
    n_fft, hop, _ = cfg
    proxy = stft_patch._PROXY
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, n_fft + extra, generator=g)
    win = torch.hann_window(n_fft)
    with ComplexOpAudit() as audit:
        ri = proxy.view_as_real(proxy.stft(x, n_fft, hop, n_fft, window=win, return_complex=True))
        mag, phase = (
            torch.rand(2, n_fft // 2 + 1, ri.shape[-2], generator=g),
            torch.randn(2, n_fft // 2 + 1, ri.shape[-2], generator=g),
        )
        y = proxy.istft(proxy.complex(mag * torch.cos(phase), mag * torch.sin(phase)), n_fft, hop, n_fft, window=win)
    assert audit.ops == {}
    assert _rel(ri, torch.view_as_real(torch.stft(x, n_fft, hop, n_fft, window=win, return_complex=True))) <= 1e-5
    ref = torch.istft(torch.polar(mag, phase), n_fft, hop, n_fft, window=win)
    assert y.shape == ref.shape and _rel(y, ref) <= 1e-5


@settings(max_examples=15, deadline=None)
@given(seconds=st.floats(0.3, 2.0), seed=st.integers(0, 2**16), bins=st.sampled_from([40, 80]))
def test_kaldi_fbank_rebound_matches_torchaudio(seconds, seed, bins):
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    wav = torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(seed)) * 0.1
    patched = stft_patch._rebound_module(kaldi, stft_patch._PROXY)
    assert patched.fbank is not kaldi.fbank and kaldi.torch is torch
    with ComplexOpAudit() as audit:
        ours = patched.fbank(wav, num_mel_bins=bins)
    assert audit.ops == {}
    ref = kaldi.fbank(wav, num_mel_bins=bins)
    assert ours.shape == ref.shape and _rel(ours, ref) <= 1e-5


@settings(max_examples=10, deadline=None)
@given(seconds=st.floats(0.2, 1.5), seed=st.integers(0, 2**16))
@example(seconds=1.0, seed=17649)  # a bin near a spectral null (CI 2026-12-02): see the dB comment below
def test_perth_magphase_round_trip_matches_perth(seconds, seed):
    pytest.importorskip("perth")
    from perth.perth_net.perth_net_implicit.audio_processor import AudioProcessor
    from perth.perth_net.perth_net_implicit.config import default_hp

    ap = AudioProcessor(default_hp)
    sig = (torch.randn(int(seconds * 32000), generator=torch.Generator().manual_seed(seed)) * 0.1).numpy()
    mag_ref, phase_ref = ap.signal_to_magphase(sig)
    with ComplexOpAudit() as audit:
        mag, phase = stft_patch._perth_signal_to_magphase(ap, sig)
        back = stft_patch._perth_magphase_to_signal(ap, mag, phase)
    assert audit.ops == {}
    # The DFT's fp32 error is relative to the whole spectrum, so the linear magnitudes match to 1e-5; perth's
    # dB scale (20·log10) magnifies it at bins near a spectral null (seed 17649: one bin 3700× below the typical
    # magnitude is 0.7 dB off), so the normalised dB spectrogram as a whole is held to 1e-4.
    from perth.perth_net.perth_net_implicit import utils as perth_utils

    def linear(m: torch.Tensor) -> torch.Tensor:
        return 10.0 ** (perth_utils.denormalize_spectrogram(default_hp, m.double()) / 20)

    assert _rel(linear(mag), linear(mag_ref)) <= 1e-5
    assert _rel(mag, mag_ref) <= 1e-4
    # phase is ill-conditioned where the magnitude is ~0: compare the spectra themselves, |X|·(cos φ, sin φ)
    for part in (torch.cos, torch.sin):
        assert _rel(linear(mag) * part(phase.double()), linear(mag_ref) * part(phase_ref.double())) <= 1e-5
    ref = ap.magphase_to_signal(mag_ref, phase_ref)
    assert back.shape == ref.shape and _rel(back, ref) <= 1e-5


def test_call_sites_match_native_and_compute_no_complex():
    """Each patched chatterbox/s3tokenizer call site against itself unpatched, on the same input."""
    pytest.importorskip("chatterbox")
    from chatterbox.models.s3gen import xvector
    from chatterbox.models.s3gen.hifigan import HiFTGenerator
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram
    from s3tokenizer.utils import log_mel_spectrogram

    g = torch.Generator().manual_seed(3)
    wav24, wav16 = torch.randn(1, 24000, generator=g) * 0.1, torch.randn(16000, generator=g) * 0.1
    hift = HiFTGenerator().eval()
    excite = torch.randn(1, 4000, generator=g)
    mag, phase = torch.rand(1, 9, 1001, generator=g), torch.randn(1, 9, 1001, generator=g)

    def run():
        with torch.inference_mode():
            return [
                mel_spectrogram(wav24),
                log_mel_spectrogram(wav16),
                *hift._stft(excite),
                hift._istft(mag, phase),
                xvector.extract_feature([wav16])[0],
            ]

    native = run()
    with stft_patch.apply("on", "cpu") as state, ComplexOpAudit() as audit:
        patched = run()
    assert state.skipped == []
    assert audit.ops == {}
    for a, b in zip(patched, native, strict=True):
        assert a.shape == b.shape and _rel(a, b) <= 1e-5


def test_apply_patches_every_site_and_restore_puts_back_the_originals():
    pytest.importorskip("chatterbox")
    from chatterbox.models.s3gen import hifigan, xvector
    from perth.perth_net.perth_net_implicit.audio_processor import AudioProcessor

    kaldi, s2m, m2s = xvector.Kaldi, AudioProcessor.signal_to_magphase, AudioProcessor.magphase_to_signal
    state = stft_patch.apply("on", "cpu")
    try:
        assert state.active and state.reason == "forced" and state.decided_by == "mode"
        assert state.patched_modules == list(stft_patch.PATCH_TARGETS) and state.skipped == []
        assert hifigan.torch is stft_patch._PROXY and hifigan.torch.zeros is torch.zeros
        assert xvector.Kaldi is not kaldi and xvector.Kaldi.fbank.__code__ is kaldi.fbank.__code__
        assert AudioProcessor.signal_to_magphase is stft_patch._perth_signal_to_magphase
        assert torch.stft is realdft._NATIVE_STFT  # the global torch is untouched
    finally:
        state.restore()
    assert hifigan.torch is torch and xvector.Kaldi is kaldi
    assert (AudioProcessor.signal_to_magphase, AudioProcessor.magphase_to_signal) == (s2m, m2s)
    d = state.as_dict()
    assert d["active"] is False and d["patched_modules"] == [] and d["mode"] == "on"


def test_auto_on_cpu_runs_every_check_and_off_is_off():
    auto = stft_patch.apply("auto", "cpu").as_dict()
    assert auto["reason"] == "not_needed" and auto["decided_by"] == "selftest"
    assert auto["selftest"] == dict.fromkeys(stft_patch.SELFTEST_CHECKS, "ok")
    off = stft_patch.apply("off", "cpu")
    assert (off.active, off.reason, off.selftest) == (False, "off", {})
    with pytest.raises(ValueError):
        stft_patch.apply("sometimes", "cpu")


def test_auto_turns_on_when_stft_fails(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("cuFFT error: CUFFT_INTERNAL_ERROR")

    monkeypatch.setattr(torch, "stft", broken)
    state = stft_patch.apply("auto", "cpu", targets=())
    assert state.active and state.decided_by == "selftest:stft_istft"
    assert state.reason == "selftest_failed: stft_istft: RuntimeError: cuFFT error: CUFFT_INTERNAL_ERROR"


def test_auto_turns_on_when_complex_abs_needs_nvrtc(monkeypatch):
    """The failure measured with libnvrtc gone: stft/istft still work, a complex .abs() raises."""
    real_abs = torch.Tensor.abs

    def abs_without_nvrtc(self, *a, **k):
        if self.is_complex():
            raise RuntimeError("Error in dlopen for library libnvrtc.so.13and libnvrtc-d833c4f3.so.13")
        return real_abs(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "abs", abs_without_nvrtc)
    state = stft_patch.apply("auto", "cpu", targets=())
    assert state.active and state.decided_by == "selftest:complex_abs"
    assert state.selftest["stft_istft"] == "ok" and state.selftest["complex_abs"].startswith("RuntimeError: Error")


def test_auto_turns_on_for_compute_capability_12_without_selftest(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _dev=None: (12, 1))
    monkeypatch.setattr(stft_patch, "selftest_checks", lambda _dev: pytest.fail("self-test must not run"))
    state = stft_patch.apply("auto", "cuda", targets=())
    assert (state.active, state.reason, state.decided_by) == (True, "sm_121", "compute_capability")


def test_audit_reads_cufft_kernels_spectral_ops_and_jiterator_cache(tmp_path):
    """The benchmark's hazard counters, on a real CPU profile plus named kernel events (no GPU here)."""
    from types import SimpleNamespace

    from ttsbench.chatterbox import spectral_audit as sa

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.stft(torch.randn(1, 400), 64, 16, window=torch.hann_window(64), return_complex=True).abs()
    assert sa.spectral_op_names(prof).get("aten::stft") == 1 and sa.cufft_kernels(prof) == {}
    fake = SimpleNamespace(
        events=lambda: [
            SimpleNamespace(
                name="void vector_fft_r2c<512u, EPT<8u>>(kernel_arguments_t<unsigned int>)",
                device_type="DeviceType.CUDA",
            ),
            SimpleNamespace(name="void at::native::vectorized_elementwise_kernel<4>", device_type="DeviceType.CUDA"),
            SimpleNamespace(name="aten::_fft_r2c", device_type="DeviceType.CPU"),
        ]
    )
    assert sa.cufft_kernels(fake) == {"void vector_fft_r2c<512u, EPT<8u>>(kernel_arguments_t<unsigned int>)": 1}
    assert sa.jiterator_cache_files(tmp_path / "none") == []
    (tmp_path / "abs_kernel_vectorized2_arch9.0_nvrtc13.0_sass").write_bytes(b"x")
    assert sa.jiterator_cache_files(tmp_path) == ["abs_kernel_vectorized2_arch9.0_nvrtc13.0_sass"]
