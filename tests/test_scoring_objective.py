"""Objective metrics on real espeak-ng speech; skipped metrics named when optional modules are missing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.cli import main
from ttsbench.errors import UserError
from ttsbench.scoring.objective import Backends, basic_metrics, score_run
from ttsbench.scoring.registry import METRICS
from ttsbench.scoring.rundoc import RunDir

pytestmark = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")


def _no_optional(name):
    raise ImportError(f"No module named {name!r}")


def test_basic_metrics_detect_silence_and_clipping():
    sr = 16000
    y = np.concatenate([np.zeros(sr // 2), 1.2 * np.sin(np.linspace(0, 400 * np.pi, sr))]).clip(-1, 1)
    m = basic_metrics(y.astype(np.float32), sr, "ab")
    assert m["leading_silence_s"] == pytest.approx(0.5, abs=0.021)
    assert 0.3 < m["silence_ratio"] < 0.4
    assert m["clipping_rate"] > 0.1
    assert m["s_per_char"] == pytest.approx(0.75, abs=0.01)


def test_score_without_metrics_extra_names_every_skipped_metric(tmp_path, capsys):
    run = make_run(tmp_path)
    doc = score_run(RunDir.open(run), backends=Backends.probe(importer=_no_optional))
    skipped = {s["metric"]: s["reason"] for s in doc["skipped"]}
    needs = {n for n, d in METRICS.items() if d.needs}
    assert set(skipped) == needs
    assert "resemblyzer not installed" in skipped["speaker_similarity"]
    assert "pip install -e '.[metrics]'" in skipped["speaker_similarity"]
    sysm = doc["per_system"]["chatterbox@panda"]
    assert sysm["n_clips"] == 3
    assert sysm["mean_duration_s"] > 1.0
    assert "mean_speaker_similarity" not in sysm
    assert doc["pairs"] == []
    # slower espeak voice → more seconds per character than the faster one
    assert sysm["mean_s_per_char"] > doc["per_system"]["chatterbox@titan"]["mean_s_per_char"]


def test_missing_wav_is_a_clear_error_and_writes_nothing(tmp_path):
    run = make_run(tmp_path)
    (run / "wavs/chatterbox/panda/u02.wav").unlink()
    rc = main(["score", str(run)])
    assert rc == 2
    assert not (run / "scores" / "objective.json").exists()
    with pytest.raises(UserError, match=r"missing, first: wavs/chatterbox/panda/u02\.wav"):
        score_run(RunDir.open(run), backends=Backends.probe(importer=_no_optional))


def test_score_with_metrics_extra_full(tmp_path):
    pytest.importorskip("resemblyzer")
    pytest.importorskip("speechmos")
    pytest.importorskip("pyworld")
    run = make_run(tmp_path)
    assert main(["score", str(run)]) == 0
    doc = json.loads((run / "scores" / "objective.json").read_text())
    assert doc["skipped"] == []
    for sid in ("chatterbox@titan", "chatterbox@panda"):
        s = doc["per_system"][sid]
        assert 0.3 < s["mean_speaker_similarity"] <= 1.0
        assert 1.0 <= s["mean_dnsmos_ovrl"] <= 5.0
        assert -40 < s["mean_loudness_lufs"] < -5
    # titan uses the reference's voice (en-us) — closer than panda's en-gb, pitched-up voice
    assert (
        doc["per_system"]["chatterbox@titan"]["mean_speaker_similarity"]
        > doc["per_system"]["chatterbox@panda"]["mean_speaker_similarity"]
    )
    pair = doc["pairs"][0]
    assert pair["n_items"] == 3
    assert pair["mean_mcd_db"] > 1.0
    assert pair["mean_f0_rmse_hz"] > 5.0  # panda's voice is pitched up (-p 70)
    assert 0.0 <= pair["mean_voicing_error"] <= 1.0
    res = json.loads((run / "results.json").read_text())
    assert res["scores"]["objective"]["path"] == "scores/objective.json"


def test_pair_metrics_identical_clips_are_zero(tmp_path):
    pytest.importorskip("pyworld")
    from scoring_runs import speak
    from ttsbench.scoring.objective import ANALYSIS_SR, load_mono, pair_metrics

    p = tmp_path / "a.wav"
    speak(p, "Identical clips have no distortion.", ["-v", "en-us"])
    y = load_mono(p, ANALYSIS_SR)[0]
    m = pair_metrics(Backends.probe(), y, y)
    assert m["mcd_db"] == pytest.approx(0.0, abs=1e-6)
    assert m["f0_rmse_hz"] == pytest.approx(0.0, abs=1e-6)
    assert m["voicing_error"] == 0.0
