"""gemma_guard around a benchmark, on localhost with the stand-in LLM managed by the command backend."""

from __future__ import annotations

import contextlib
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
MAX_PAUSE = 120
HEARTBEAT_TIMEOUT = 4

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
        "gemma_guard_heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "gemma_guard_heartbeat_interval": 1,
        "gemma_guard_start_backoff": 1,
        "gemma_guard_controller_dir": str(tmp_path / "controller"),
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
    lock = root / "gemma_guard" / "lock.json"
    pids = [json.loads(lock.read_text()).get("pid")] if lock.is_file() else []
    for pf in [*(tmp_path / "controller").glob("*.pid"), pidfile, root / "voxtral-standin.pid"]:
        if pf.is_file():
            pids.append(pf.read_text().strip())
    for pid in pids:
        with contextlib.suppress(TypeError, ValueError, ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)


def _start_llm(env: dict) -> None:
    """The agent venv may not exist yet (a cycle run installs it): start with the controller's ttsbench."""
    ttsbench = Path(sys.executable).with_name("ttsbench")
    subprocess.run(
        ["/bin/sh", "-c", env["start"].replace(f"{agent_venv()}/bin/ttsbench", str(ttsbench))], check=True
    )
    assert wait_until(lambda: healthy(env["url"] + "/health"), 20) is not None


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
    assert rec["watchdog_fired"] is None
    # Normal resume stopped the Voxtral stand-in, disarmed the watchdog, released the lock, stopped the lease keeper.
    state = guarded["root"] / "gemma_guard"
    assert not (state / "lock.json").exists() and not list((guarded["tmp"] / "controller").glob("*.pid"))
    assert "disarmed by run" in (state / "watchdog.log").read_text()
    assert not _running(int((guarded["root"] / "voxtral-standin.pid").read_text()))
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


# ---------------------------------------------------------------- fault matrix (short heartbeat timeout)
# Each case kills the controller (SIGKILL to ansible-playbook's process group) at one point of the cycle, or
# breaks something, and asserts: the LLM answers healthy again within the heartbeat timeout + its start time,
# the Voxtral stand-in the run started is stopped, and the watchdog's state file says what it did.
START_S = 6  # the stand-in LLM's start + the watchdog's poll, generous on a loaded 2-core box


def _spawn_cycle(guarded, extravars: dict) -> subprocess.Popen:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        TTSBENCH_HOME=str(ROOT),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    argv = ["ansible-playbook", "-i", str(guarded["inventory"]), str(PLAYBOOK)]
    for k, v in extravars.items():
        argv += ["-e", json.dumps({k: v})]
    log = open(guarded["tmp"] / "ansible.log", "w")  # noqa: SIM115 - the child writes it; closed by the OS
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_controller_when(guarded, extravars: dict, moment) -> float:
    proc = _spawn_cycle(guarded, extravars)
    try:
        hit = wait_until(moment, 240, step=0.05)
        assert hit is not None, (guarded["tmp"] / "ansible.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.monotonic()


def _voxtral_pid(guarded) -> int | None:
    try:
        return int((guarded["root"] / "voxtral-standin.pid").read_text())
    except (OSError, ValueError):
        return None


def _assert_watchdog_resumed(guarded, killed_at: float, voxtral_started: bool = True, backoff_s: float = 0) -> dict:
    state = guarded["root"] / "gemma_guard"
    back = wait_until(lambda: healthy(guarded["url"] + "/health"), HEARTBEAT_TIMEOUT + START_S + backoff_s + 10)
    assert back is not None, (state / "watchdog.log").read_text() if (state / "watchdog.log").exists() else "no log"
    took = time.monotonic() - killed_at
    assert took <= HEARTBEAT_TIMEOUT + START_S + backoff_s, f"the LLM came back {took:.1f} s after the kill"
    if voxtral_started:
        assert not _running(_voxtral_pid(guarded)), "the Voxtral stand-in still runs"
    assert wait_until(lambda: not (state / "lock.json").exists(), 10) is not None, "the host lock was not released"
    fired = json.loads((state / "state.json").read_text())
    assert fired["outcome"] == "resumed" and "lease not renewed" in fired["reason"]
    # the lease keeper died with the controller (nothing renews the lease any more)
    assert not any(_running(int(p.read_text())) for p in (guarded["tmp"] / "controller").glob("*.pid"))
    return fired


def _ack_reported_by_next_preflight(guarded, fired: dict) -> None:
    """The next run reports the firing (once) and can pause the host again."""
    res = run_playbook(PLAYBOOK, inventory=guarded["inventory"], extravars={"gg_test_bench_seconds": 1})
    assert res.ok, res.failure_messages()
    shown = [e["res"].get("msg", "") for e in res.task_results("Report the watchdog's firing in an earlier run")]
    assert any(fired["run_id"] in m and "outcome resumed" in m for m in shown), shown
    rec = json.loads(guarded["record"].read_text())
    assert rec["previous_firing"]["run_id"] == fired["run_id"]


@pytest.mark.timing
def test_fault_controller_killed_during_pause(guarded):
    _start_llm(guarded)
    state = guarded["root"] / "gemma_guard"
    killed = _kill_controller_when(guarded, {"gg_test_serve_seconds": 60}, lambda: (state / "lock.json").exists())
    _assert_watchdog_resumed(guarded, killed, voxtral_started=False)


@pytest.mark.timing
def test_fault_controller_killed_during_serve_start(guarded):
    _start_llm(guarded)
    killed = _kill_controller_when(
        guarded, {"gg_test_serve_seconds": 60}, lambda: _running(_voxtral_pid(guarded) or 0)
    )
    fired = _assert_watchdog_resumed(guarded, killed)
    assert [s["name"] for s in fired["stopped"]] == ["voxtral-standin"]
    log = (guarded["root"] / "gemma_guard" / "watchdog.log").read_text()
    assert log.index("stopped voxtral-standin") < log.index("start attempt 1")
    _ack_reported_by_next_preflight(guarded, fired)


@pytest.mark.timing
def test_fault_controller_killed_during_benchmark_first_start_fails(guarded):
    _start_llm(guarded)
    # the LLM's first start after the pause fails (e.g. memory not yet returned); the watchdog retries
    marker = guarded["tmp"] / "first-start-failed"
    flaky = f"[ -e {marker} ] || {{ touch {marker}; echo first start fails >&2; exit 1; }}; {guarded['start']}"
    results = guarded["root"] / "results.jsonl"
    killed = _kill_controller_when(
        guarded,
        {"gg_test_bench_seconds": 600, "gemma_guard_start_command": flaky},
        lambda: results.exists() and len(results.read_text().splitlines()) >= 2,
    )
    fired = _assert_watchdog_resumed(guarded, killed, backoff_s=1)
    assert [a["rc"] for a in fired["attempts"]] == [1, 0], fired["attempts"]
    assert fired["attempts"][0]["backoff_s"] == 1


@pytest.mark.timing
def test_fault_controller_killed_during_resume(guarded):
    _start_llm(guarded)

    def resuming() -> bool:  # resume has stopped the Voxtral stand-in; the LLM is not started yet
        pid = _voxtral_pid(guarded)
        return pid is not None and not _running(pid) and not guarded["pidfile"].exists()

    killed = _kill_controller_when(guarded, {"gg_test_bench_seconds": 2}, resuming)
    _assert_watchdog_resumed(guarded, killed)


def test_fault_disk_full_while_writing_results(guarded):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    _start_llm(guarded)
    full = guarded["tmp"] / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], check=True)
    try:
        results = full / "results.jsonl"
        res = run_playbook(
            PLAYBOOK,
            inventory=guarded["inventory"],
            extravars={"gg_test_bench_seconds": 60, "gg_test_results": str(results), "gg_test_result_pad": 4000},
        )
        assert not res.ok
        assert healthy(guarded["url"] + "/health")
        assert not _running(_voxtral_pid(guarded))
        assert not (guarded["root"] / "gemma_guard" / "lock.json").exists()
        rec = json.loads(guarded["record"].read_text())
        assert rec["post_p50_ms"] > 0 and rec["watchdog_fired"] is None
        # the results written before the disk filled are kept, each line whole
        lines = [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]
        assert [r["i"] for r in lines[:2]] == [0, 1]
    finally:
        subprocess.run(["umount", str(full)], check=False)


@pytest.mark.timing
def test_second_run_refused_while_host_paused_then_ctrl_c(guarded):
    _start_llm(guarded)
    proc = _spawn_cycle(guarded, {"gg_test_bench_seconds": 600})
    state = guarded["root"] / "gemma_guard"
    try:
        assert wait_until(lambda: (state / "lock.json").exists() and not guarded["pidfile"].exists(), 240) is not None
        first = json.loads((state / "lock.json").read_text())
        res = run_playbook(PLAYBOOK, inventory=guarded["inventory"])
        assert not res.ok
        msgs = res.failure_messages()
        assert any(f"run {first['run_id']} paused the LLM" in m and "s ago" in m for m in msgs), msgs
        # the second run left the first run's pause alone
        assert json.loads((state / "lock.json").read_text())["run_id"] == first["run_id"]
        assert not healthy(guarded["url"] + "/health") and not res.task_results("Start the service")
        assert wait_until(lambda: _running(_voxtral_pid(guarded) or 0), 60) is not None
        # Ctrl-C in the first run's terminal (SIGINT to its foreground process group; Ansible's task workers and
        # the lease keeper run in sessions of their own): no `always:` runs, the keeper sees ansible-playbook end,
        # the lease expires and the watchdog brings the LLM back
        os.killpg(proc.pid, signal.SIGINT)
        interrupted = time.monotonic()
        assert wait_until(lambda: proc.poll() is not None, 30) is not None, "ansible-playbook ignored Ctrl-C"
        fired = _assert_watchdog_resumed(guarded, interrupted, voxtral_started=True)
        assert fired["run_id"] == first["run_id"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
