"""results.json schema + writer, utterance loader, audio helpers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from ttsbench import results
from ttsbench.audio import is_silent, leading_silence_s, read_wav, rms_dbfs, write_wav_atomic
from ttsbench.cli import main
from ttsbench.errors import UserError
from ttsbench.metrics import RTF_DEFINITION, RequestMetrics, percentile, summarize
from ttsbench.utterances import load_utterances

REPO = Path(__file__).resolve().parents[1]


def _doc() -> dict:
    rows = [
        RequestMetrics(
            "u01",
            "Hi.",
            ok=True,
            wav="wavs/x/h/u01.wav",
            http_status=200,
            ttfa_ms=100.0,
            t_first_nonsilent_ms=120.0,
            total_ms=400.0,
            audio_s=1.0,
            rtf=0.4,
            sample_rate=24000,
        ),
        RequestMetrics("u02", "Yo.", ok=False, error="HTTP 500: boom", http_status=500),
    ]
    doc = results.new_document("bench-http-20261124T101500Z", "bench-http")
    results.put_system(
        doc,
        {
            "system_id": "x@h",
            "engine": {"name": "x", "version": None, "install": None, "standin": True, "weights": "n/a"},
            "host": results.remote_host("h"),
            "config": {},
            "utterances": [r.to_dict() for r in rows],
            "summary": summarize(rows),
        },
    )
    return doc


def test_summary_keys_and_values():
    rows = [RequestMetrics(f"u{i}", "t", ok=True, ttfa_ms=float(i), rtf=i / 10, audio_s=1.0) for i in range(1, 101)]
    s = summarize([*rows, RequestMetrics("bad", "t", error="x")])
    assert (s["n"], s["n_ok"], s["n_error"]) == (101, 100, 1)
    assert s["p50_ttfa_ms"] == pytest.approx(50.5) and s["p99_ttfa_ms"] == pytest.approx(99.01)
    assert s["mean_rtf"] == pytest.approx(5.05) and s["rtf_definition"] == RTF_DEFINITION


def test_valid_document_round_trip(tmp_path):
    doc = _doc()
    results.write_results(tmp_path, doc)
    assert results.load_results(tmp_path) == doc
    assert main(["validate", str(tmp_path)]) == 0
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "breakit",
    [
        lambda d: d.pop("verdict"),
        lambda d: d.update(schema_version=2),
        lambda d: d.update(kind="bench-magic"),
        lambda d: d["systems"][0]["utterances"][0].update(ttfa_ms="fast"),
        lambda d: d["systems"][0]["utterances"][1].update(error=None),  # a failed row must say why
        lambda d: d["systems"][0]["summary"].pop("p99_rtf"),
        lambda d: d["systems"].append(copy.deepcopy(d["systems"][0])),  # duplicate system_id
        lambda d: d.update(gemma={"mode": "pause"}),
    ],
)
def test_invalid_documents_are_rejected_and_not_written(tmp_path, breakit, capsys):
    doc = _doc()
    breakit(doc)
    assert results.validation_errors(doc)
    with pytest.raises(UserError, match="does not match the results schema"):
        results.write_results(tmp_path, doc)
    assert not (tmp_path / "results.json").exists()
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert main(["validate", str(tmp_path)]) == 2  # invalid input: exit 2 (issue 18)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid" in err[0]


def test_repo_utterances():
    utts = load_utterances(REPO / "files" / "utterances.yaml")
    assert [u.utt_id for u in utts] == [f"u{i:02d}" for i in range(1, 11)]
    lengths = [len(u.text.split()) for u in utts]
    assert min(lengths) <= 2 and max(lengths) >= 40  # varied: "Okay." … a long compound sentence
    assert any("?" in u.text for u in utts) and any(c.isdigit() for u in utts for c in u.text)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("utterances:\n  - {id: a, text: one}\n  - {id: a, text: two}\n", "duplicate id 'a'"),
        ("utterances:\n  - {id: a, text: 5}\n", "'text' must be a string"),
        ("utterances:\n  - {id: 7, text: hi}\n", "'id' must be a string"),
        ("utterances:\n  - {id: a, text: '   '}\n", "empty or whitespace"),
        ("utterances:\n  - just a string\n", "expected a mapping"),
        ("utterances: []\n", "non-empty list"),
        ("utterances: [\n", "not valid YAML"),
    ],
)
def test_bad_utterance_files(tmp_path, body, match):
    f = tmp_path / "u.yaml"
    f.write_text(body)
    with pytest.raises(UserError, match=match):
        load_utterances(f)


def test_missing_utterance_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_utterances(tmp_path / "nope.yaml")


def test_audio_helpers(tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    x = np.concatenate([np.zeros(sr // 4), 0.5 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
    p = write_wav_atomic(tmp_path / "a" / "x.wav", x, sr)
    y, sr2 = read_wav(p)
    assert sr2 == sr and y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 32000)
    assert leading_silence_s(y, sr) == pytest.approx(0.25, abs=0.011)
    assert rms_dbfs(0.5 * np.sin(2 * np.pi * 440 * t)) == pytest.approx(-9.03, abs=0.05)
    assert is_silent(np.zeros(100)) and not is_silent(x)
    assert rms_dbfs(np.zeros(0)) == float("-inf")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(UserError, match="not a readable"):
        read_wav(tmp_path / "bad.wav")
    with pytest.raises(UserError, match="no such"):
        read_wav(tmp_path / "missing.wav")


def test_summary_from_dict_rows_matches_dataclass_rows_and_keeps_peaks():
    """The in-process chatterbox runner summarises plain dict rows through the same ``summarize``."""
    rows = [RequestMetrics(f"u{i}", "t", ok=True, ttfa_ms=float(i * i), rtf=1 / i, audio_s=1.0) for i in range(1, 8)]
    rows.append(RequestMetrics("bad", "t", error="x"))
    from_dicts = summarize([r.to_dict() for r in rows], 512.0, 256.0)
    assert from_dicts == {**summarize(rows), "peak_gpu_mem_mb": 512.0, "peak_proc_mem_mb": 256.0}


@pytest.mark.parametrize("q", [50, 90, 99])
def test_percentile_is_linear_interpolation_of_finite_values(q):
    values = [7.0, None, 1.0, float("nan"), 4.0, 10.0, float("inf")]
    xs = [1.0, 4.0, 7.0, 10.0]
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    assert percentile(values, q) == pytest.approx(xs[lo] + (xs[min(lo + 1, 3)] - xs[lo]) * (k - lo), rel=1e-12)
    assert percentile([None, float("nan")], q) is None and percentile([3.5], q) == 3.5
