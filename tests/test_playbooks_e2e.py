"""The three playbooks end to end: rehearsal (local hosts) and testhosts (namespace hosts over SSH).

Real Chatterbox (random-init weights, CPU), Voxtral = fixture repo serving the espeak-ng stand-in, Gemma =
`ttsbench standin llm`. Each run must leave a complete run folder whose results.json validates and whose
WAVs decode to non-silent audio; a re-run must leave the first folder untouched; the failover drill must
record a recovery time and leave primary + consumer config as before; --check must change nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ttsbench import results, runfolder
from ttsbench.runner import PlaybookResult, project_root, run_playbook

pytestmark = [pytest.mark.slow, pytest.mark.chatterbox]

HOME = Path.home()
REHEARSAL_ROOTS = [HOME / ".cache/ttsbench/rehearsal/titan", HOME / ".cache/ttsbench/rehearsal/panda"]


def _env() -> dict[str, str]:
    env = {}
    ckpt = os.environ.get("TTSBENCH_RANDOM_CHECKPOINT") or str(HOME / ".cache/ttsbench/test-checkpoint")
    if Path(ckpt, "weights.json").is_file():
        env["TTSBENCH_RANDOM_CHECKPOINT"] = ckpt
    return env


def _run(
    playbook: str, inventory: str, runs_root: Path, tmp: Path, check: bool = False, **extra: object
) -> PlaybookResult:
    ev = {"ttsbench_runs_root": str(runs_root), **extra}
    res = run_playbook(
        playbook, inventory, ev, check=check, envvars=_env(), private_data_dir=tmp / "runner", timeout=3000
    )
    assert res.ok, f"{playbook} on {inventory}: {res.status}\n" + "\n".join(res.failure_messages()[:10])
    return res


def _only_run_dir(runs_root: Path, before: set[Path] | None = None) -> Path:
    new = sorted(set(runs_root.iterdir()) - (before or set()))
    assert len(new) == 1, f"expected exactly one new run folder, got {new}"
    return new[0]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _check_run(run_dir: Path, kind: str, systems: set[str]) -> dict:
    doc = json.loads((run_dir / "results.json").read_text())
    assert results.validation_errors(doc) == []
    assert doc["kind"] == kind and doc["run_id"] == run_dir.name
    assert doc["complete"] is True and doc["finished_at"]
    assert {s["system_id"] for s in doc["systems"]} == systems
    assert runfolder.check_run(run_dir) == []
    for s in doc["systems"]:
        assert s["summary"]["n_ok"] == s["summary"]["n"] > 0, s["system_id"]
        for row in s["utterances"]:
            if row["ok"]:
                assert (run_dir / row["wav"]).is_file()
                assert row["wav"].startswith(f"wavs/{s['engine']['name']}/{s['host']['name']}/")
    return doc


@pytest.fixture(scope="module")
def rehearsal_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


def test_bench_chatterbox_rehearsal_and_rerun(rehearsal_runs: Path, tmp_path: Path) -> None:
    root = rehearsal_runs / "chatterbox"
    _run("bench-chatterbox.yml", "inventory/rehearsal", root, tmp_path / "a")
    first = _only_run_dir(root)
    doc = _check_run(first, "bench-chatterbox", {"chatterbox@titan", "chatterbox@panda"})
    for s in doc["systems"]:
        assert s["engine"]["weights"] == "random-init" and s["engine"]["standin"] is False
    native = next(s for s in doc["systems"] if s["system_id"] == "chatterbox@titan")
    assert native["config"]["install_ok"] is True and native["summary"]["p50_rtf"] > 0
    assert doc["gemma"]["standin"] is True and doc["gemma"]["mode"] == "parallel"
    assert doc["gemma"]["gate"] == "pass" and doc["gemma"]["during_p50_ms"] is not None
    assert (first / "gemma/drift.json").is_file() and (first / "reference/voice.wav").is_file()
    verdict = json.loads((first / "verdict.json").read_text())
    # nobody has rated: pending, naming the missing ratings and (rehearsal has < 10 utterances) the count clause
    assert verdict["outcome"] == "pending_human_ratings", verdict["reasons"]
    assert "titan_mean" in verdict["reasons"][0] and "panda_mean" in verdict["reasons"][0]
    if native["summary"]["n"] < 10:
        assert any("`titan_n >= 10` is false" in r for r in verdict["reasons"]), verdict["reasons"]
    assert (first / "report.html").is_file()  # a failing score/verdict/report fails the play (gate.yml)
    runbook = (first / "runbook.md").read_text()
    assert f"{native['summary']['p50_rtf']:.3f}" in runbook and "STFT patch" in runbook
    assert any((first / "logs/panda").glob("*.log"))

    snap = _snapshot(first)
    # the rerun measures one utterance (what it checks: a new run folder, the first left as it was, installs kept)
    res = _run("bench-chatterbox.yml", "inventory/rehearsal", root, tmp_path / "b", ttsbench_utterance_ids=["u01"])
    second = _only_run_dir(root, {first})
    assert second != first and second.name.startswith("bench-chatterbox-")
    rerun = _check_run(second, "bench-chatterbox", {"chatterbox@titan", "chatterbox@panda"})
    assert all([u["utt_id"] for u in s["utterances"]] == ["u01"] for s in rerun["systems"])
    # nothing reinstalled: the venvs and packages were already there
    for task in (
        "Create the venv",
        "Install chatterbox-tts without its dependencies",
        "Install the inference dependencies under the torch constraints",
    ):
        done = res.task_results(task)
        assert done and not any(d.get("res", {}).get("changed") for d in done), task
    assert _snapshot(first) == snap, "the first run folder changed when the playbook ran again"


def test_check_mode_changes_nothing(rehearsal_runs: Path, tmp_path: Path) -> None:
    root = rehearsal_runs / "check"
    root.mkdir()
    before = {str(r): _listing(r) for r in REHEARSAL_ROOTS}
    res = _run("bench-chatterbox.yml", "inventory/rehearsal", root, tmp_path, check=True)
    assert res.changed == 0, res.changed_by_host()
    assert list(root.iterdir()) == []
    assert {str(r): _listing(r) for r in REHEARSAL_ROOTS} == before


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    skip = ("/standin-llm/", "/logs/", "/gemma_guard/")
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and not any(s in str(p) for s in skip)
    }


def test_bench_voxtral_rehearsal(rehearsal_runs: Path, tmp_path: Path) -> None:
    root = rehearsal_runs / "voxtral"
    _run("bench-voxtral.yml", "inventory/rehearsal", root, tmp_path)
    run = _only_run_dir(root)
    doc = _check_run(run, "bench-voxtral", {"voxtral@titan", "chatterbox@panda"})
    vox = next(s for s in doc["systems"] if s["system_id"] == "voxtral@titan")
    assert vox["engine"]["standin"] is True and len(vox["engine"]["version"]) == 40
    # the fixture follows the real release's contract: Voxtral streams PCM (24 kHz), never WAV, on 0.30.0;
    # the role read script, config style and per-stage values from the installed (fixture) release
    assert vox["config"]["response_format"] == "pcm" and vox["config"]["pcm_sample_rate"] == 24000
    build = vox["config"]["vllm_omni"]
    assert build["versions"]["vllm_omni"] == "0.30.0" and build["versions"]["vllm"] == "0.30.0"
    assert build["script"] == "vllm-omni" and build["config_style"] == "deploy"
    assert build["serve_argv"][1:2] == ["serve"] and "--deploy-config" in build["serve_argv"]
    assert build["stages"]["0"] == {"gpu_memory_utilization": 0.8, "max_num_seqs": 32}
    assert doc["gemma"]["mode"] == "pause" and doc["gemma"]["standin"] is True
    assert json.loads((run / "verdict.json").read_text())["rule"]["name"] == "voxtral"
    assert (run / "logs/titan/server.log").is_file()


def test_failover_drill_rehearsal(rehearsal_runs: Path, tmp_path: Path) -> None:
    root = rehearsal_runs / "failover"
    consumer = REHEARSAL_ROOTS[1] / "consumer/phone-daemon.env"
    restarts = REHEARSAL_ROOTS[1] / "consumer/restarts.log"
    # an earlier drill killed after switching the consumer (its backup next to the config) is undone first
    original = b"# rehearsal consumer (phone daemon stand-in)\nTTS_URL=http://127.0.0.1:18775\nVOICE=production\n"
    consumer.parent.mkdir(parents=True, exist_ok=True)
    backup = consumer.with_name(consumer.name + ".ttsbench-drill-backup")
    backup.write_bytes(original)
    consumer.write_bytes(original.replace(b":18775", b":18773"))
    n_restarts = len(restarts.read_text().splitlines()) if restarts.exists() else 0
    _run("failover-drill.yml", "inventory/rehearsal", root, tmp_path, drill_confirm="yes")
    run = _only_run_dir(root)
    report = json.loads((run / "failover/drill.json").read_text())
    assert report["passed"] is True
    assert report["restored"]["interrupted_drill_undone_first"] is True and not backup.exists()
    assert "had been interrupted" in (run / "failover/drill.md").read_text()
    assert 0 < float(report["recovery_s"]) < 900
    assert report["outage_observed"]["ok"] is False
    assert report["restored"]["consumer_config_restored"] is True and report["restored"]["primary_good_audio"]
    assert "recovery time" in (run / "failover/drill.md").read_text()
    assert consumer.read_bytes() == original
    # the primary is a stand-in production server (command backend, its own {"text": ...} request shape):
    # stopped by the drill, spoken to through the homelab request template, running again afterwards
    assert "127.0.0.1:18775" in consumer.read_text()
    assert report["primary_service"]["backend"] == "command"
    assert report["primary_request_template"].endswith("example-homelab/templates/panda-tts.yml")
    assert "No such process" not in report["outage_observed"].get("error", "")
    assert len(restarts.read_text().splitlines()) == n_restarts + 3  # undo the interrupted one + switch + fail back
    doc = _check_run(run, "failover-drill", {"standin-production@panda", "chatterbox@titan"})
    rows = {s["system_id"]: [u["utt_id"] for u in s["utterances"]] for s in doc["systems"]}
    # the outage probe's expected error is in drill.json only, never counted against the engine
    assert rows == {
        "standin-production@panda": ["primary-before", "primary-after"],
        "chatterbox@titan": ["standby-first-good"],
    }
    primary = next(s for s in doc["systems"] if s["system_id"] == "standin-production@panda")
    assert primary["engine"]["standin"] is True
    assert primary["config"]["request_template"]["body"] == {"text": "{text}"}


def test_failover_drill_needs_confirmation(rehearsal_runs: Path, tmp_path: Path) -> None:
    root = rehearsal_runs / "unconfirmed"
    res = run_playbook(
        "failover-drill.yml",
        "inventory/rehearsal",
        {"ttsbench_runs_root": str(root)},
        private_data_dir=tmp_path,
        envvars=_env(),
    )
    assert not res.ok
    assert any("drill_confirm=yes" in m for m in res.failure_messages())
    assert not root.exists() or list(root.iterdir()) == []


@pytest.fixture(scope="session")
def testhosts_wheelhouses() -> Path:
    """The namespace hosts have no internet: wheels for the ttsbench agent and for roles/chatterbox."""
    import subprocess
    import sys
    import tomllib

    cache = HOME / ".cache/ttsbench/wheelhouse"
    agent = cache / "agent"
    deps = tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]["dependencies"]
    stamp = agent / ".deps.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != deps:
        agent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "-d",
                str(agent),
                "setuptools",
                "wheel",
                *deps,
            ],
            check=True,
        )
        stamp.write_text(json.dumps(deps))
    host_torch = os.environ.get("TTSBENCH_HOST_TORCH_PYTHON") or str(HOME / ".cache/ttsbench/host-torch/bin/python")
    subprocess.run(
        [sys.executable, str(project_root() / "tests/chatterbox_wheelhouse.py"), str(cache / "chatterbox"), host_torch],
        check=True,
    )
    return cache


@pytest.mark.testhosts
@pytest.mark.parametrize(
    "playbook,kind,systems,extra",
    [
        ("bench-chatterbox.yml", "bench-chatterbox", {"chatterbox@titan", "chatterbox@panda"}, {}),
        ("bench-voxtral.yml", "bench-voxtral", {"voxtral@titan", "chatterbox@panda"}, {}),
        ("failover-drill.yml", "failover-drill", {"chatterbox@titan", "chatterbox@panda"}, {"drill_confirm": "yes"}),
    ],
)
def test_playbooks_over_ssh(
    testhosts: object,
    testhosts_wheelhouses: Path,
    tmp_path: Path,
    playbook: str,
    kind: str,
    systems: set[str],
    extra: dict,
) -> None:
    root = tmp_path / "runs"
    _run(playbook, "inventory/testhosts", root, tmp_path, **extra)
    run = _only_run_dir(root)
    _check_run(run, kind, systems)
    if kind == "failover-drill":
        report = json.loads((run / "failover/drill.json").read_text())
        assert report["passed"] and float(report["recovery_s"]) > 0


def test_project_root_has_the_playbooks() -> None:
    for name in ("bench-chatterbox.yml", "bench-voxtral.yml", "failover-drill.yml"):
        assert (project_root() / "playbooks" / name).is_file()
