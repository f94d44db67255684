"""gemma_guard around a benchmark, on localhost with the stand-in LLM managed by the command backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from roles_helpers import ROOT, agent_venv, free_port, healthy, wait_until
from ttsbench.runner import run_playbook

PLAYBOOK = ROOT / "tests" / "playbooks" / "gemma_guard_cycle.yml"
MAX_PAUSE = 8

pytestmark = pytest.mark.slow  # each test runs a playbook (not in make test-fast)


@pytest.fixture
def guarded(tmp_path: Path):
    """Inventory for one local 'guarded' host whose LLM is `ttsbench standin llm`."""
    root = tmp_path / "host"
    root.mkdir()
    port = free_port()
    pidfile = root / "standin-llm.pid"
    venv = agent_venv()
    start = (
        f"setsid nohup {venv}/bin/ttsbench standin llm --host 127.0.0.1 --port {port} --latency-ms 20"
        f" > {root}/standin-llm.log 2>&1 < /dev/null & echo $! > {pidfile}"
    )
    hostvars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ttsbench_root": str(root),
        "ttsbench_python": "/usr/bin/python3",
        "ttsbench_agent_venv": str(venv),
        "ttsbench_agent_pip_extra_args": ["--no-compile"],  # .pyc on first import: a cold install is faster
        "gemma_guard_backend": "command",
        "gemma_guard_mode": "pause",
        "gemma_guard_standin": True,
        "gemma_guard_url": f"http://127.0.0.1:{port}",
        "gemma_guard_health_retries": 20,
        "gemma_guard_health_delay": 1,
        "gemma_guard_max_pause": MAX_PAUSE,
        "gemma_guard_record_path": str(tmp_path / "run" / "gemma" / "drift.json"),
        "gemma_guard_start_command": start,
        "gemma_guard_stop_command": f'kill "$(cat {pidfile})" && rm -f {pidfile}',
        "gemma_guard_status_command": f'kill -0 "$(cat {pidfile} 2>/dev/null)" 2>/dev/null',
    }
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"guarded": hostvars}}}))
    env = {
        "url": f"http://127.0.0.1:{port}",
        "root": root,
        "pidfile": pidfile,
        "inventory": inv,
        "record": Path(hostvars["gemma_guard_record_path"]),
        "start": start,
        "tmp": tmp_path,
    }
    yield env
    deadman = root / "gemma_guard" / "deadman.pid"
    for pf, group in ((deadman, True), (pidfile, False)):
        if pf.is_file():
            try:
                pid = int(pf.read_text().strip())
                os.killpg(pid, signal.SIGTERM) if group else os.kill(pid, signal.SIGTERM)
            except (ValueError, ProcessLookupError, PermissionError):
                pass


def _start_llm(env: dict) -> None:
    """The agent venv may not exist yet (a cycle run installs it): start with the controller's ttsbench."""
    ttsbench = Path(sys.executable).with_name("ttsbench")
    subprocess.run(
        ["/bin/sh", "-c", env["start"].replace(f"{agent_venv()}/bin/ttsbench", str(ttsbench))], check=True
    )
    assert wait_until(lambda: healthy(env["url"] + "/health"), 20) is not None


def test_benchmark_failure_still_resumes_and_records_drift(guarded):
    _start_llm(guarded)
    res = run_playbook(PLAYBOOK, inventory=guarded["inventory"], extravars={"gg_test_bench_fail": True})
    assert not res.ok
    assert any("benchmark step failed on purpose" in m for m in res.failure_messages())
    # The LLM came back and the drift was recorded after the failure.
    assert healthy(guarded["url"] + "/health")
    rec = json.loads(guarded["record"].read_text())
    assert rec["mode"] == "pause" and rec["backend"] == "command" and rec["standin"] is True
    assert rec["post_p50_ms"] > 0 and rec["baseline_p50_ms"] > 0
    assert rec["drift"] == pytest.approx(rec["post_p50_ms"] / rec["baseline_p50_ms"], abs=1e-3)
    assert rec["gate"] == ("pass" if rec["drift"] <= rec["max_drift"] else "fail")
    assert rec["paused_s"] is not None and rec["paused_s"] >= 1
    # Normal resume disarmed the dead-man's switch.
    assert not (guarded["root"] / "gemma_guard" / "deadman.pid").exists()
    # started again through roles/service_control (the one service-control mechanism)
    resumed = [e for e in res.task_results("Start the service") if e.get("res", {}).get("changed")]
    assert resumed, "resume did not start the LLM"


def test_drift_over_the_gate_fails_after_resuming(guarded):
    _start_llm(guarded)
    # Slow the stand-in down from the benchmark step, so post-flight p50 drifts far beyond 1.2x baseline.
    # (The stand-in restarts on resume with its start latency, so change latency in the start command.)
    slow = guarded["start"].replace("--latency-ms 20", "--latency-ms 120")
    res = run_playbook(
        PLAYBOOK, inventory=guarded["inventory"], extravars={"gemma_guard_start_command": slow}
    )
    assert not res.ok
    rec = json.loads(guarded["record"].read_text())
    assert rec["gate"] == "fail" and rec["drift"] > 1.2
    assert any("gemma_guard_max_drift" in m for m in res.failure_messages())
    assert healthy(guarded["url"] + "/health")


@pytest.mark.timing  # asserts the restart within MAX_PAUSE + 5 s of the kill
def test_sigkilled_controller_deadman_restarts_llm(guarded):
    _start_llm(guarded)
    # Make sure the agent venv exists before the timed part (a no-op when it is already installed).
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        TTSBENCH_HOME=str(ROOT),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = open(guarded["tmp"] / "ansible.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            "ansible-playbook",
            "-i",
            str(guarded["inventory"]),
            str(PLAYBOOK),
            "-e",
            "gg_test_bench_seconds=600",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        down = wait_until(
            lambda: not guarded["pidfile"].exists() and not healthy(guarded["url"] + "/health"), 180
        )
        assert down is not None, (guarded["tmp"] / "ansible.log").read_text()[-3000:]
        assert (guarded["root"] / "gemma_guard" / "deadman.pid").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    killed_at = time.monotonic()
    back = wait_until(lambda: healthy(guarded["url"] + "/health"), MAX_PAUSE + 15)
    assert back is not None, "dead-man's switch did not restart the LLM"
    # Armed before the stop, so it fires within max_pause of the kill (+ the stand-in's start-up).
    assert time.monotonic() - killed_at <= MAX_PAUSE + 5
    assert "dead-man's switch fired" in (guarded["root"] / "gemma_guard" / "deadman.log").read_text()
    assert not (guarded["root"] / "gemma_guard" / "deadman.pid").exists()


@pytest.mark.parametrize(
    ("extravars", "variable"),
    [
        ({"gemma_guard_backend": "podman"}, "gemma_guard_backend"),
        ({"gemma_guard_backend": "docker", "gemma_guard_container": "no-such-llm"}, "gemma_guard_container"),
        ({"gemma_guard_backend": "systemd", "gemma_guard_unit": "no-such-llm.service"}, "gemma_guard_unit"),
        ({"gemma_guard_url": "http://127.0.0.1:9", "gemma_guard_health_retries": 2}, "gemma_guard_url"),
        ({"gemma_guard_abort_ms": 1}, "gemma_guard_abort_ms"),
    ],
)
def test_bad_input_stops_before_pausing(guarded, extravars, variable):
    _start_llm(guarded)
    res = run_playbook(PLAYBOOK, inventory=guarded["inventory"], extravars=extravars)
    assert not res.ok
    assert any(variable in m for m in res.failure_messages()), res.failure_messages()
    assert healthy(guarded["url"] + "/health")
    assert not res.task_results("Stop the service")
    assert not guarded["record"].exists()
