"""Run folder glue: never reuse a folder, merge parts (WAVs + systems), Gemma records, finish, check."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from ttsbench import results, runfolder
from ttsbench.audio import write_wav_atomic
from ttsbench.errors import UserError

NOW = datetime(2026, 11, 24, 10, 15, 0, tzinfo=UTC)


def _part(folder: Path, engine: str, host: str, n: int = 2, silent: bool = False) -> Path:
    doc = results.new_document("part", "bench-http")
    rows = []
    for i in range(n):
        utt = f"u0{i + 1}"
        wav = f"wavs/{engine}/{host}/{utt}.wav"
        t = np.arange(24000) / 24000
        write_wav_atomic(folder / wav, np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 220 * t), 24000)
        rows.append(
            {
                "utt_id": utt,
                "text": "x",
                "wav": wav,
                "ok": True,
                "error": None,
                "http_status": 200,
                "ttfa_ms": 100.0,
                "t_first_nonsilent_ms": 100.0,
                "total_ms": 500.0,
                "audio_s": 1.0,
                "rtf": 0.5,
                "sample_rate": 24000,
                "concurrency": 1,
            }
        )
    from ttsbench.metrics import RequestMetrics, summarize

    doc["systems"] = [
        {
            "system_id": f"{engine}@{host}",
            "engine": {"name": engine, "version": None, "install": None, "standin": False, "weights": "n/a"},
            "host": results.remote_host(host),
            "config": {},
            "utterances": rows,
            "summary": summarize([RequestMetrics(**r) for r in rows]),
        }
    ]
    results.write_results(folder, doc)
    return folder


def test_create_never_reuses_a_folder(tmp_path: Path) -> None:
    a = runfolder.create_run_dir(tmp_path, "bench-chatterbox", NOW)
    (a / "marker").write_text("first")
    b = runfolder.create_run_dir(tmp_path, "bench-chatterbox", NOW)
    c = runfolder.create_run_dir(tmp_path, "bench-chatterbox", NOW)
    assert a.name == "bench-chatterbox-20261124T101500Z"
    assert b.name == a.name + "-2" and c.name == a.name + "-3"
    assert (a / "marker").read_text() == "first"
    assert results.load_results(b)["run_id"] == b.name
    assert runfolder.planned_run_dir(tmp_path, "bench-chatterbox", NOW).name == a.name + "-4"


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        runfolder.create_run_dir(tmp_path, "bench-foo", NOW)


def test_merge_copies_wavs_and_applies_overrides(tmp_path: Path) -> None:
    run = runfolder.create_run_dir(tmp_path / "runs", "bench-voxtral", NOW)
    ids = runfolder.merge_part(
        run,
        _part(tmp_path / "p1", "voxtral", "titan"),
        engine={"weights": "n/a", "standin": "True"},
        host={"arch": "x86_64"},
        config={"gemma_mode": "pause"},
    )
    runfolder.merge_part(run, _part(tmp_path / "p2", "chatterbox", "panda"), engine={"weights": "random-init"})
    doc = results.load_results(run)
    assert ids == ["voxtral@titan"]
    vox = next(s for s in doc["systems"] if s["system_id"] == "voxtral@titan")
    assert vox["engine"]["standin"] is True and vox["host"]["arch"] == "x86_64"
    assert vox["config"]["gemma_mode"] == "pause"
    assert (run / "wavs/voxtral/titan/u01.wav").is_file() and (run / "wavs/chatterbox/panda/u02.wav").is_file()
    fin = runfolder.finish(run, ["voxtral@titan", "chatterbox@panda"])
    assert fin["complete"] is True
    assert runfolder.check_run(run) == []
    assert runfolder.finish(run, ["voxtral@titan", "chatterbox@gone"])["complete"] is False


def test_merge_refuses_a_part_with_missing_wavs(tmp_path: Path) -> None:
    run = runfolder.create_run_dir(tmp_path / "runs", "bench-voxtral", NOW)
    part = _part(tmp_path / "p", "voxtral", "titan")
    (part / "wavs/voxtral/titan/u02.wav").unlink()
    before = (run / "results.json").read_bytes()
    with pytest.raises(UserError, match="missing"):
        runfolder.merge_part(run, part)
    assert (run / "results.json").read_bytes() == before


def test_check_finds_silent_wavs(tmp_path: Path) -> None:
    run = runfolder.create_run_dir(tmp_path / "runs", "bench-voxtral", NOW)
    runfolder.merge_part(run, _part(tmp_path / "p", "voxtral", "titan", silent=True))
    problems = runfolder.check_run(run)
    assert len(problems) == 2 and all("silent" in p for p in problems)


def test_gemma_records_combine_worst_host(tmp_path: Path) -> None:
    run = runfolder.create_run_dir(tmp_path / "runs", "bench-chatterbox", NOW)
    g = run / "gemma"
    g.mkdir()
    base = {
        "mode": "parallel",
        "backend": "command",
        "standin": "True",
        "baseline_p50_ms": "100.0",
        "during_p50_ms": "None",
        "max_drift": "1.2",
        "paused_s": None,
    }
    (g / "titan.json").write_text(json.dumps({**base, "post_p50_ms": 110.0, "drift": 1.1, "gate": "pass"}))
    (g / "spark2.json").write_text(json.dumps({**base, "post_p50_ms": 150.0, "drift": 1.5, "gate": "fail"}))
    rec = runfolder.record_gemma(run, sorted(g.glob("*.json")))
    assert rec["gate"] == "fail" and rec["host"] == "spark2" and rec["drift"] == 1.5
    assert rec["standin"] is True and rec["during_p50_ms"] is None and rec["baseline_p50_ms"] == 100.0
    doc = results.load_results(run)
    assert doc["gemma"]["gate"] == "fail" and set(doc["gemma"]["hosts"]) == {"titan", "spark2"}
    assert json.loads((g / "drift.json").read_text())["gate"] == "fail"


def test_merge_brings_the_parts_reference_voice(tmp_path: Path) -> None:
    run = runfolder.create_run_dir(tmp_path / "runs", "bench-voxtral", NOW)
    part = _part(tmp_path / "p1", "voxtral", "titan")
    t = np.arange(24000) / 24000
    write_wav_atomic(part / "reference" / "voice.wav", 0.3 * np.sin(2 * np.pi * 180 * t), 24000)
    runfolder.merge_part(run, part)
    assert (run / "reference" / "voice.wav").read_bytes() == (part / "reference" / "voice.wav").read_bytes()
    other = _part(tmp_path / "p2", "chatterbox", "titan")
    write_wav_atomic(other / "reference" / "voice.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 24000)
    before = (run / "results.json").read_bytes()
    with pytest.raises(UserError, match="differs from the run's"):
        runfolder.merge_part(run, other)
    assert (run / "results.json").read_bytes() == before


@pytest.mark.parametrize(
    ("breakit", "needle"),
    [
        (lambda d: d["systems"][0]["utterances"][0].update(wav="../../outside.wav"), "must be a relative path"),
        (lambda d: d["systems"][0]["utterances"][0].update(wav="/etc/hostname"), "must be a relative path"),
        (lambda d: d["systems"][0]["utterances"][0].update(ttfa_ms="fast"), "'fast' is not of type"),
        (lambda d: d["systems"][0]["summary"].update(n="ten"), "'ten' is not of type"),
        (lambda d: d["systems"][0]["utterances"].append(dict(d["systems"][0]["utterances"][0])), "duplicate row"),
        (lambda d: d["systems"][0]["utterances"][0].update(total_ms=-3.0), "negative"),
    ],
)
@pytest.mark.parametrize(
    "command", [["run-folder", "check"], ["run-folder", "finish"], ["validate"], ["score"], ["verdict"], ["report"]]
)
def test_commands_refuse_an_invalid_run_folder_first(tmp_path: Path, capsys, breakit, needle, command) -> None:
    from ttsbench.cli import main

    run = _part(tmp_path / "run", "voxtral", "titan")
    doc = json.loads((run / "results.json").read_text())
    breakit(doc)
    (run / "results.json").write_text(json.dumps(doc))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main([*command, str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_symlink_out_of_the_run_folder_is_refused(tmp_path: Path, capsys) -> None:
    from ttsbench.cli import main

    run = _part(tmp_path / "run", "voxtral", "titan")
    secret = tmp_path / "secret.wav"
    (run / "wavs" / "voxtral" / "titan" / "u01.wav").rename(secret)
    (run / "wavs" / "voxtral" / "titan" / "u01.wav").symlink_to(secret)
    assert main(["report", str(run)]) == 2
    assert "leads outside the run folder" in capsys.readouterr().err
    assert not (run / "report.html").exists()


def test_nan_and_infinity_are_invalid(tmp_path: Path, capsys) -> None:
    from ttsbench.cli import main

    run = _part(tmp_path / "run", "voxtral", "titan")
    f = run / "results.json"
    f.write_text(f.read_text().replace('"ttfa_ms": 100.0', '"ttfa_ms": NaN', 1))
    assert main(["validate", str(run)]) == 2 and "NaN is not a JSON number" in capsys.readouterr().err
    f.write_text(f.read_text().replace('"ttfa_ms": NaN', '"ttfa_ms": 1e999', 1))
    assert main(["score", str(run)]) == 2 and "not a finite number" in capsys.readouterr().err


def test_bench_chatterbox_refuses_an_out_folder_with_results_before_loading_anything(tmp_path: Path) -> None:
    from ttsbench.chatterbox import runner

    out = _part(tmp_path / "out", "chatterbox", "titan")
    before = (out / "results.json").read_bytes()
    with pytest.raises(UserError, match=r"already holds a results\.json"):
        runner.run(runner.RunnerConfig(out=out))  # no torch here: the check comes first
    assert (out / "results.json").read_bytes() == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        runner.check_out(tmp_path / "file")
    runner.check_out(tmp_path / "new" / "run")  # a new folder is fine


def test_gemma_record_with_nan_is_an_error_not_a_traceback(tmp_path: Path, capsys) -> None:
    from ttsbench.cli import main

    run = runfolder.create_run_dir(tmp_path / "runs", "bench-voxtral", NOW)
    rec = tmp_path / "titan.json"
    rec.write_text(
        json.dumps(
            {
                "mode": "pause",
                "backend": "docker",
                "standin": False,
                "baseline_p50_ms": 190,
                "during_p50_ms": "nan",
                "post_p50_ms": 200,
                "drift": 1.05,
                "gate": "pass",
            }
        )
    )
    before = (run / "results.json").read_bytes()
    assert main(["run-folder", "gemma", str(run), str(rec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gemma/during_p50_ms: not a finite number" in err[0]
    assert (run / "results.json").read_bytes() == before and not (run / "gemma" / "drift.json").exists()
