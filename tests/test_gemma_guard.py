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

from roles_helpers import ROOT, agent_venv, healthy, wait_until
from ttsbench.httpserve import free_port
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
    subprocess.run(["/bin/sh", "-c", env["start"].replace(f"{agent_venv()}/bin/ttsbench", str(ttsbench))], check=True)
    assert wait_until(lambda: healthy(env["url"] + "/health"), 20) is not None


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_benchmark_failure_still_resumes_and_records_drift(guarded):
    _start_llm(guarded)
    # check mode first (on a host the watchdog was never installed on): it pauses nothing, arms nothing
    res = run_playbook(PLAYBOOK, inventory=guarded["inventory"], check=True)
    assert res.ok, res.failure_messages()
    assert healthy(guarded["url"] + "/health") and guarded["pidfile"].exists()
    assert not (guarded["root"] / "gemma_guard").exists() and not guarded["record"].exists()
    assert not list((guarded["tmp"] / "controller").glob("*.pid"))

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
    res = run_playbook(PLAYBOOK, inventory=guarded["inventory"], extravars={"gemma_guard_start_command": slow})
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
# One host, the cases one after the other (shared set-up; each run's pre-flight also shows the previous run's
# firing). Each case ends the controller (SIGKILL to ansible-playbook's process group, or Ctrl-C) at one point
# of the cycle and asserts: the LLM answers healthy again within the heartbeat timeout + its start time, the
# Voxtral stand-in the run started is stopped, the lock is released and the watchdog's state file says what it did.
START_S = 6  # the stand-in LLM's start + the watchdog's poll, generous on a loaded 2-core box


def _spawn_cycle(guarded, extravars: dict) -> subprocess.Popen:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",  # a message stays on one line of the log
        TTSBENCH_HOME=str(ROOT),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    argv = ["ansible-playbook", "-i", str(guarded["inventory"]), str(PLAYBOOK)]
    for k, v in extravars.items():
        argv += ["-e", json.dumps({k: v})]
    log = open(guarded["tmp"] / "ansible.log", "w")  # noqa: SIM115 - the child writes it; closed by the OS
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _ansible_log(guarded) -> str:
    return (guarded["tmp"] / "ansible.log").read_text()


def _kill_controller_when(guarded, extravars: dict, moment) -> float:
    proc = _spawn_cycle(guarded, extravars)
    try:
        hit = wait_until(moment, 240, step=0.05)
        assert hit is not None, _ansible_log(guarded)[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.monotonic()


def _voxtral_pid(guarded) -> int | None:
    try:
        return int((guarded["root"] / "voxtral-standin.pid").read_text())
    except (OSError, ValueError):
        return None


def _assert_watchdog_resumed(
    guarded, killed_at: float, voxtral_started: bool = True, backoff_s: float = 0, previous: dict | None = None
) -> dict:
    state = guarded["root"] / "gemma_guard"
    back = wait_until(lambda: healthy(guarded["url"] + "/health"), HEARTBEAT_TIMEOUT + START_S + backoff_s + 10)
    assert back is not None, (state / "watchdog.log").read_text() if (state / "watchdog.log").exists() else "no log"
    took = time.monotonic() - killed_at
    assert took <= HEARTBEAT_TIMEOUT + START_S + backoff_s, f"the LLM came back {took:.1f} s after the kill"
    if voxtral_started:
        assert not _running(_voxtral_pid(guarded)), "the Voxtral stand-in still runs"
    assert wait_until(lambda: not (state / "lock.json").exists(), 10) is not None, "the host lock was not released"
    assert wait_until(lambda: json.loads((state / "state.json").read_text())["outcome"] != "running", 10) is not None
    fired = json.loads((state / "state.json").read_text())
    assert fired["outcome"] == "resumed" and "lease not renewed" in fired["reason"], fired
    assert previous is None or fired["run_id"] != previous["run_id"]
    # the lease keeper ended with the controller (nothing renews the lease any more)
    assert not any(_running(int(p.read_text())) for p in (guarded["tmp"] / "controller").glob("*.pid"))
    if previous is not None:  # this run's pre-flight reported the previous run's firing (once)
        shown = f"the watchdog resumed the LLM for run {previous['run_id']} at {previous['fired_at']}"
        assert shown in _ansible_log(guarded) and "outcome resumed" in _ansible_log(guarded)
    # the next case starts from a host without the last run's Voxtral PID file (its moments read that file)
    (guarded["root"] / "voxtral-standin.pid").unlink(missing_ok=True)
    return fired


@pytest.mark.timing
def test_fault_matrix(guarded):
    _start_llm(guarded)
    state = guarded["root"] / "gemma_guard"
    wlog = state / "watchdog.log"

    # 1. SIGKILL while pausing (the host's lock is taken, the LLM about to stop, Voxtral not started)
    killed = _kill_controller_when(guarded, {"gg_test_serve_seconds": 60}, lambda: (state / "lock.json").exists())
    fired = _assert_watchdog_resumed(guarded, killed, voxtral_started=False)
    once = {"gg_test_install": False}  # the first run installed ttsbench on the host

    # 2. SIGKILL while the Voxtral stand-in loads; meanwhile a second run is refused with the first run's id and age
    #    and leaves its pause alone
    proc = _spawn_cycle(guarded, {"gg_test_serve_seconds": 600, **once})
    try:
        assert wait_until(lambda: _running(_voxtral_pid(guarded) or 0), 240, step=0.05) is not None, _ansible_log(
            guarded
        )[-3000:]
        first = json.loads((state / "lock.json").read_text())
        res = run_playbook(PLAYBOOK, inventory=guarded["inventory"], extravars=once)
        assert not res.ok
        msgs = res.failure_messages()
        assert any(f"run {first['run_id']} paused the LLM" in m and "s ago" in m for m in msgs), msgs
        assert json.loads((state / "lock.json").read_text())["run_id"] == first["run_id"]
        assert not healthy(guarded["url"] + "/health") and not res.task_results("Start the service")
        assert _running(_voxtral_pid(guarded))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    fired = _assert_watchdog_resumed(guarded, time.monotonic(), previous=fired)
    assert [s["name"] for s in fired["stopped"]] == ["voxtral-standin"]
    assert wlog.read_text().rindex("stopped voxtral-standin") < wlog.read_text().rindex("start attempt 1")

    # 3. SIGKILL during the benchmark, and the LLM's first start after it fails (memory not yet back): retried
    marker = guarded["tmp"] / "first-start-failed"
    flaky = f"[ -e {marker} ] || {{ touch {marker}; echo first start fails >&2; exit 1; }}; {guarded['start']}"
    results = guarded["root"] / "results.jsonl"
    killed = _kill_controller_when(
        guarded,
        {"gg_test_bench_seconds": 600, "gemma_guard_start_command": flaky, **once},
        lambda: results.exists() and len(results.read_text().splitlines()) >= 2,
    )
    fired = _assert_watchdog_resumed(guarded, killed, backoff_s=1, previous=fired)
    assert [a["rc"] for a in fired["attempts"]] == [1, 0], fired["attempts"]
    assert fired["attempts"][0]["backoff_s"] == 1

    # 4. SIGKILL during the resume: it stopped the Voxtral stand-in, the LLM is not started yet
    def resuming() -> bool:
        pid = _voxtral_pid(guarded)
        return pid is not None and not _running(pid) and not guarded["pidfile"].exists()

    killed = _kill_controller_when(guarded, {"gg_test_bench_seconds": 2, **once}, resuming)
    fired = _assert_watchdog_resumed(guarded, killed, previous=fired)

    # 5. Ctrl-C during the benchmark (SIGINT to ansible-playbook's foreground process group; its task workers and
    #    the lease keeper run in sessions of their own): no `always:` runs, the keeper sees ansible-playbook end.
    #    Its own results file: the benchmark step of case 3 outlives its killed controller and still writes.
    results = guarded["root"] / "results-ctrl-c.jsonl"
    proc = _spawn_cycle(guarded, {"gg_test_bench_seconds": 600, "gg_test_results": str(results), **once})
    try:
        started = wait_until(lambda: results.exists() and len(results.read_text().splitlines()) >= 2, 240, step=0.05)
        assert started is not None, _ansible_log(guarded)[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        interrupted = time.monotonic()
        assert wait_until(lambda: proc.poll() is not None, 30) is not None, "ansible-playbook ignored Ctrl-C"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    fired = _assert_watchdog_resumed(guarded, interrupted, previous=fired)

    # 6. the disk fills while the benchmark writes its results (root: a 16 KiB tmpfs): the run fails, what was
    #    written is kept, the LLM is resumed normally and the record carries the previous run's firing
    full = guarded["tmp"] / "full"
    full.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)], check=False).returncode == 0
    )
    try:
        res = run_playbook(
            PLAYBOOK,
            inventory=guarded["inventory"],
            extravars={
                "gg_test_bench_seconds": 60 if mounted else 1,
                "gg_test_results": str(full / "results.jsonl"),
                "gg_test_result_pad": 4000,
                **once,
            },
        )
        assert res.ok is not mounted, res.failure_messages()
        shown = [e["res"].get("msg", "") for e in res.task_results("Report the watchdog's firing in an earlier run")]
        assert any(fired["run_id"] in m and "outcome resumed" in m for m in shown), shown
        assert healthy(guarded["url"] + "/health")
        assert not _running(_voxtral_pid(guarded))
        assert not (state / "lock.json").exists()
        rec = json.loads(guarded["record"].read_text())
        assert rec["post_p50_ms"] > 0 and rec["watchdog_fired"] is None
        assert rec["previous_firing"]["run_id"] == fired["run_id"]
        if mounted:  # the results written before the disk filled are kept, each line whole
            lines = [
                json.loads(line) for line in (full / "results.jsonl").read_text().splitlines() if line.endswith("}")
            ]
            assert [r["i"] for r in lines[:2]] == [0, 1]
    finally:
        if mounted:
            subprocess.run(["umount", str(full)], check=False)
    if not mounted:
        pytest.skip("cases 1-5 passed; the disk-full case needs root to mount a small tmpfs")
