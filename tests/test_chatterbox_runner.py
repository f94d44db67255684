"""In-process Chatterbox runner on CPU with random-init weights (checkpoint cached, ≈3 GB, built once)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ttsbench.errors import UserError

torch = pytest.importorskip("torch")
pytest.importorskip("chatterbox")
np = pytest.importorskip("numpy")
sf = pytest.importorskip("soundfile")

from ttsbench.chatterbox import checkpoint, runner, stft_patch  # noqa: E402
from ttsbench.chatterbox.hostfacts import parse_compute_apps  # noqa: E402

pytestmark = pytest.mark.chatterbox
TOKENS = 6


@pytest.fixture(scope="session")
def ckpt() -> Path:
    d = Path(os.environ.get("TTSBENCH_TEST_CHECKPOINT", Path.home() / ".cache/ttsbench/test-checkpoint"))
    path, _ = checkpoint.make_random_checkpoint(d, seed=0)
    return path


@pytest.fixture()
def utts(tmp_path: Path) -> Path:
    p = tmp_path / "utterances.yaml"
    p.write_text("utterances:\n  - id: u01\n    text: Sure, I can help.\n  - id: u07\n    text: Okay.\n")
    return p


def test_checkpoint_is_complete_and_idempotent(ckpt: Path):
    assert checkpoint.missing_files(ckpt) == []
    assert json.loads((ckpt / "weights.json").read_text())["weights"] == "random-init"
    before = (ckpt / "t3_cfg.safetensors").stat().st_mtime_ns
    _, built = checkpoint.make_random_checkpoint(ckpt, seed=0)
    assert not built and (ckpt / "t3_cfg.safetensors").stat().st_mtime_ns == before


def test_synthesis_same_with_and_without_stft_patch(ckpt: Path, tmp_path: Path):
    """Reference conditioning (CAMPPlus kaldi fbank, tokenizer and S3Gen mels), T3, S3Gen/HiFT and the watermark:
    with the patch on, no aten op computes on a complex tensor; conditionals and audio equal native's."""
    from chatterbox.tts import ChatterboxTTS

    from _chatterbox_env import reference_wav
    from ttsbench.chatterbox.spectral_audit import ComplexOpAudit

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from ttsbench.chatterbox.loading import load_skipping_random_init

    model = ChatterboxTTS.from_local(ckpt, "cpu")
    # what runner/server/smoke load (random init skipped) is upstream's model, parameter for parameter
    quick, missing = load_skipping_random_init(lambda: ChatterboxTTS.from_local(ckpt, "cpu"))
    assert missing == []
    for key in ("t3", "s3gen", "ve"):
        ours, theirs = getattr(quick, key).state_dict(), getattr(model, key).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs), key
    del quick
    runner.cap_tokens(model, TOKENS)
    ref = reference_wav(tmp_path / "ref.wav", 2.0)

    def synth():
        torch.manual_seed(0)
        model.prepare_conditionals(str(ref), exaggeration=0.3)
        wav = model.generate("Okay.", exaggeration=0.3, cfg_weight=0.3, temperature=0.6)
        return wav.squeeze(0).numpy(), model.conds

    with ComplexOpAudit() as native_audit:
        native, n_conds = synth()
    with stft_patch.apply("on", "cpu") as state, ComplexOpAudit() as audit:
        assert "chatterbox.models.s3gen.hifigan" in state.patched_modules and state.skipped == []
        patched, p_conds = synth()
    # the audit sees the hazard natively (kaldi rfft + abs, tokenizer stft + abs, HiFT complex/istft, perth angle)
    assert {"_fft_r2c@cpu", "abs@cpu", "angle@cpu", "complex@cpu"} <= set(native_audit.computed())
    assert audit.computed() == {}
    # left: s3tokenizer's host-built rotary table (complex64) is viewed as real — no computation on complex values
    assert {op.split("@")[0] for op in audit.moved()} <= {"view_as_real", "slice", "to", "_to_copy", "alias"}
    assert torch.equal(p_conds.t3.cond_prompt_speech_tokens, n_conds.t3.cond_prompt_speech_tokens)
    # log-mel features (S3Gen prompt mel, kaldi fbank -> speaker embedding): the log turns the DFTs' ~1e-7
    # absolute error into a larger relative one in near-silent bins (measured 7e-5 for prompt_feat)
    errs = {}
    for key in ("prompt_feat", "embedding"):
        a, b = p_conds.gen[key].double(), n_conds.gen[key].double()
        errs[key] = float((a - b).norm() / b.norm())
    assert native.shape == patched.shape and native.size > 0
    assert np.isfinite(patched).all()
    errs["audio_max_abs"] = float(np.max(np.abs(native - patched)))
    assert errs["prompt_feat"] <= 5e-4 and errs["embedding"] <= 5e-4, errs
    assert errs["audio_max_abs"] <= 1e-4, errs


def test_runner_writes_wavs_and_results(ckpt: Path, utts: Path, tmp_path: Path):
    out = tmp_path / "run"
    cfg = runner.RunnerConfig(
        weights=str(ckpt),
        device="cpu",
        out=out,
        host_name="testhost",
        utterances=utts,
        only=["u07"],
        warmup=1,
        max_new_tokens=TOKENS,
    )
    runner.run(cfg)
    doc = json.loads((out / "results.json").read_text())
    assert doc["kind"] == "chatterbox-inprocess" and doc["complete"] is True and doc["schema_version"] == 1
    for key in ("run_id", "started_at", "finished_at", "gemma", "scores", "verdict"):
        assert key in doc
    (system,) = doc["systems"]
    assert system["system_id"] == "chatterbox@testhost"
    assert system["engine"]["weights"] == "random-init"
    assert system["config"]["max_new_tokens"] == TOKENS and system["config"]["warmup"] == 1
    assert system["config"]["cfg_weight"] == 0.3 and system["config"]["temperature"] == 0.6
    assert system["config"]["stft_patch"]["reason"] == "not_needed"
    (row,) = system["utterances"]
    assert row["ok"] and row["wav"] == "wavs/chatterbox/testhost/u07.wav"
    audio, sr = sf.read(out / row["wav"])
    assert sr == 24000 and audio.size > 0 and np.isfinite(audio).all()
    assert row["audio_s"] == pytest.approx(audio.size / 24000, rel=1e-6)
    assert row["rtf"] == pytest.approx(row["total_ms"] / 1000 / row["audio_s"])
    assert system["summary"]["n_ok"] == 1 and system["summary"]["peak_proc_mem_mb"] > 0
    try:
        from ttsbench.results import validation_errors  # measurement core's schema, when merged
    except ImportError:
        return
    assert validation_errors(doc) == []


def test_missing_weights_file_is_named(ckpt: Path, tmp_path: Path):
    d = tmp_path / "weights"
    d.mkdir()
    (d / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError, match=r"ve\.safetensors"):
        checkpoint.require_complete(d)


def test_reference_checks(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        runner.prepare_reference(tmp_path / "nope.wav", tmp_path)
    txt = tmp_path / "notes.wav"
    txt.write_text("not audio at all")
    with pytest.raises(UserError, match="not a readable audio file"):
        runner.prepare_reference(txt, tmp_path)
    flac = tmp_path / "voice.flac"
    sf.write(flac, np.zeros(48000, dtype="float32") + 0.1, 48000, format="FLAC")
    with pytest.raises(UserError, match="must be a WAV"):
        runner.prepare_reference(flac, tmp_path)
    short = tmp_path / "short.wav"
    sf.write(short, np.full(12000, 0.1, dtype="float32"), 24000)
    with pytest.raises(UserError, match="at least 1 s"):
        runner.prepare_reference(short, tmp_path)
    odd = tmp_path / "odd.wav"
    sf.write(odd, 0.1 * np.sin(np.arange(22050 * 2) / 5.0).astype("float32"), 22050)
    fixed = runner.prepare_reference(odd, tmp_path)
    info = sf.info(fixed)
    assert info.samplerate == 24000 and abs(info.frames - 48000) <= 2


def test_parse_compute_apps_handles_na():
    assert parse_compute_apps("123, 4000\n456, 10\n", 123) == (4000.0, False)
    assert parse_compute_apps("123, [N/A]\n", 123) == (None, True)
    assert parse_compute_apps("999, 10\n", 123) == (None, False)
