"""Blackwell STFT patch: DFT matmul stft/istft vs torch's, on CPU (property-based), and apply/restore."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ttsbench.chatterbox import stft_patch  # noqa: E402

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


def test_one_dimensional_input_and_defaults():
    x = torch.randn(4000)
    ours = stft_patch.stft(x, 64, return_complex=True)
    ref = torch.stft(x, 64, return_complex=True)
    assert ours.shape == ref.shape and _rel(ours, ref) <= 1e-5
    assert _rel(stft_patch.istft(ref, 64), torch.istft(ref, 64)) <= 1e-5


def test_real_input_without_return_complex_is_rejected_like_torch():
    with pytest.raises(RuntimeError, match="return_complex"):
        stft_patch.stft(torch.randn(100), 16)


def test_apply_on_patches_call_sites_and_restores():
    pytest.importorskip("chatterbox")
    from chatterbox.models.s3gen import hifigan

    state = stft_patch.apply("on", "cpu")
    try:
        assert state.active and state.reason == "forced"
        assert "chatterbox.models.s3gen.hifigan" in state.patched_modules
        assert hifigan.torch.stft is stft_patch.stft
        assert hifigan.torch.istft is stft_patch.istft
        assert hifigan.torch.zeros is torch.zeros  # everything else is the real torch
        assert torch.stft is not stft_patch.stft  # the global torch is untouched
    finally:
        state.restore()
    assert hifigan.torch is torch
    assert state.as_dict() == {"mode": "on", "active": False, "reason": "forced", "patched_modules": []}


def test_auto_on_cpu_is_not_needed_and_off_is_off():
    assert stft_patch.apply("auto", "cpu").as_dict()["reason"] == "not_needed"
    off = stft_patch.apply("off", "cpu")
    assert (off.active, off.reason) == (False, "off")
    with pytest.raises(ValueError):
        stft_patch.apply("sometimes", "cpu")


def test_auto_turns_on_when_selftest_fails(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("nvrtc: error: invalid PTX")

    monkeypatch.setattr(torch, "stft", broken)
    state = stft_patch.apply("auto", "cpu", targets=())
    assert state.active
    assert state.reason.startswith("selftest_failed: RuntimeError: nvrtc")
