"""roles/gemma_guard/files/gemma_watchdog.py on its own (no Ansible), with short timeouts.

The 'LLM' is python's http.server serving a folder with a `health` file (GET /health = 200), started detached
by a start command like a real one; the 'Voxtral server' is a sleeping process registered as started by the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from roles_helpers import ROOT, healthy, wait_until
from ttsbench.httpserve import free_port

SCRIPT = ROOT / "roles" / "gemma_guard" / "files" / "gemma_watchdog.py"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"  # the host's python, as on a host

pytestmark = pytest.mark.timing


def wd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, str(SCRIPT), *args], capture_output=True, text=True, check=check, timeout=60)


class Host:
    """A state folder, a stand-in LLM start command and a stand-in Voxtral server."""

    def __init__(self, tmp: Path, fail_first: int = 0) -> None:
        self.tmp = tmp
        self.state = tmp / "gemma_guard"
        self.state.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/health"
        www = tmp / "www"
        www.mkdir()
        (www / "health").write_text("ok")
        self.llm_pid = tmp / "llm.pid"
        self.vox_pid = tmp / "vox.pid"
        self.attempts = tmp / "attempts"
        # Fails its first FAIL_FIRST calls; refuses to start while the Voxtral stand-in still runs (memory first).
        self.start_argv = [
            "/bin/sh",
            "-c",
            f"n=$(($(cat {self.attempts} 2>/dev/null || echo 0) + 1)); echo $n > {self.attempts};"
            f' v=$(cat {self.vox_pid} 2>/dev/null); if [ -n "$v" ] && [ -r /proc/$v/stat ]'
            f' && ! grep -q ") Z" /proc/$v/stat;'  # a zombie holds no memory (PID 1 here may not reap)
            f' then echo "voxtral still holds the memory" >&2; exit 7; fi;'
            f' [ $n -le {fail_first} ] && {{ echo "first start fails on purpose" >&2; exit 3; }};'
            f" setsid nohup {PYTHON} -m http.server {self.port} --bind 127.0.0.1 --directory {www}"
            f" >/dev/null 2>&1 < /dev/null & echo $! > {self.llm_pid}",
        ]
        self.voxtral: int | None = None

    def config(self, run_id: str = "run-a", **over: float) -> Path:
        cfg = {
            "run_id": run_id,
            "state_dir": str(self.state),
            "start_argv": self.start_argv,
            "health_url": self.url,
            "lease_timeout_s": 1.5,
            "max_pause_s": 60,
            "poll_s": 0.1,
            "start_attempts": 3,
            "backoff_s": 0.3,
            "health_wait_s": 5,
            "stop_grace_s": 2,
        }
        cfg.update(over)
        path = self.tmp / f"{run_id}.json"
        path.write_text(json.dumps(cfg))
        return path

    def start_voxtral(self, run_id: str = "run-a") -> int:
        # detached like a served model (not our child: no zombie left for `kill -0` to see)
        subprocess.run(
            ["/bin/sh", "-c", f"setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $! > {self.vox_pid}"], check=True
        )
        self.voxtral = int(self.vox_pid.read_text())
        wd(
            "register",
            "--state-dir",
            str(self.state),
            "--run-id",
            run_id,
            "--name",
            "voxtral",
            "--pidfile",
            str(self.vox_pid),
        )
        return self.voxtral

    def voxtral_stopped(self) -> bool:
        return self.voxtral is not None and not running(self.voxtral)

    def state_json(self) -> dict:
        return json.loads((self.state / "state.json").read_text())

    def lock(self) -> dict | None:
        p = self.state / "lock.json"
        return json.loads(p.read_text()) if p.exists() else None

    def cleanup(self) -> None:
        lock = self.lock()
        if lock and lock.get("pid"):
            with_suppress(lambda: os.kill(lock["pid"], signal.SIGKILL))
        if self.llm_pid.exists():
            with_suppress(lambda: os.kill(int(self.llm_pid.read_text()), signal.SIGTERM))
        if self.voxtral and running(self.voxtral):
            with_suppress(lambda: os.kill(self.voxtral, signal.SIGKILL))


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def with_suppress(fn) -> None:
    with contextlib.suppress(OSError, ValueError):
        fn()


@pytest.fixture
def host(tmp_path: Path):
    h = Host(tmp_path)
    yield h
    h.cleanup()


@pytest.fixture
def flaky_host(tmp_path: Path):
    h = Host(tmp_path, fail_first=1)
    yield h
    h.cleanup()


def arm(host: Host, run_id: str = "run-a", **over: float) -> dict:
    res = wd("arm", "--config", str(host.config(run_id, **over)))
    return json.loads(res.stdout)


def test_expired_lease_stops_voxtral_then_starts_llm(host):
    host.start_voxtral()
    # a PID file left by an earlier run (older than the registration): its PID may be anyone's by now
    other = subprocess.Popen(["sleep", "60"])
    stale = host.tmp / "stale.pid"
    stale.write_text(f"{other.pid}\n")
    os.utime(stale, (time.time() - 600, time.time() - 600))
    wd(
        "register",
        "--state-dir",
        str(host.state),
        "--run-id",
        "run-a",
        "--name",
        "old-server",
        "--pidfile-at-stop",
        str(stale),
    )
    armed = arm(host)
    assert armed["armed"] and host.lock()["pid"] == armed["pid"] and host.lock()["run_id"] == "run-a"
    t0 = time.monotonic()
    assert not healthy(host.url)
    back = wait_until(lambda: healthy(host.url), 10, step=0.05)
    assert back is not None, (host.state / "watchdog.log").read_text()
    # lease timeout 1.5 s + a poll + the stand-in's start; far below max pause (60 s)
    assert time.monotonic() - t0 < 1.5 + 3
    assert host.voxtral_stopped()
    assert wait_until(lambda: host.lock() is None, 5) is not None, "the lock was not released"
    st = host.state_json()
    assert st["outcome"] == "resumed" and "lease" in st["reason"] and st["run_id"] == "run-a"
    assert [s["name"] for s in st["stopped"]] == ["old-server", "voxtral"]
    assert "left alone" in st["stopped"][0]["pidfile"] and other.poll() is None, "killed a stale PID file's process"
    other.kill()
    other.wait()
    assert st["stopped"][1]["outcome"] == "terminated"
    assert len(st["attempts"]) == 1 and st["attempts"][0]["rc"] == 0
    log = (host.state / "watchdog.log").read_text()
    assert log.index("stopped voxtral") < log.index("start attempt 1")
    assert not list((host.state / "run.d").glob("*.json"))
    # the LLM it started stops on SIGTERM like one started by hand (no signal dispositions inherited)
    llm = int(host.llm_pid.read_text())
    os.kill(llm, signal.SIGTERM)
    assert wait_until(lambda: not running(llm), 5) is not None, "the restarted LLM ignores SIGTERM"


def test_renewed_lease_holds_until_max_pause(host):
    host.start_voxtral()
    arm(host, lease_timeout_s=1.0, max_pause_s=3.0)
    t0 = time.monotonic()
    renewer = subprocess.Popen(
        [PYTHON, str(SCRIPT), "renew", "--lease", str(host.state / "lease"), "--stdin"],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        while time.monotonic() - t0 < 2.5:  # past the lease timeout twice over: renewals keep it paused
            renewer.stdin.write("beat\n")
            renewer.stdin.flush()
            assert not healthy(host.url), "fired although the lease was renewed"
            time.sleep(0.2)
        while not healthy(host.url) and time.monotonic() - t0 < 8:
            renewer.stdin.write("beat\n")
            renewer.stdin.flush()
            time.sleep(0.1)
    finally:
        renewer.stdin.close()
        renewer.wait()
    assert healthy(host.url)
    assert 3.0 <= time.monotonic() - t0 < 3.0 + 3
    assert wait_until(lambda: host.state_json().get("outcome") != "running", 5) is not None
    st = host.state_json()
    assert "max pause" in st["reason"] and st["outcome"] == "resumed" and host.voxtral_stopped()


def test_first_start_failing_is_retried_with_backoff(flaky_host):
    h = flaky_host
    arm(h)
    assert wait_until(lambda: healthy(h.url), 12, step=0.05) is not None, (h.state / "watchdog.log").read_text()
    assert wait_until(lambda: h.state_json().get("outcome") == "resumed", 5) is not None
    attempts = h.state_json()["attempts"]
    assert [a["rc"] for a in attempts] == [3, 0]
    assert "fails on purpose" in attempts[0]["stderr"] and attempts[0]["backoff_s"] == pytest.approx(0.3)


def test_llm_that_never_comes_back_is_reported_failed(host):
    host.start_argv = ["/bin/sh", "-c", "echo no GPU memory >&2; exit 1"]
    arm(host, start_attempts=3, backoff_s=0.1)
    assert wait_until(lambda: host.lock() is None, 10) is not None
    st = host.state_json()
    assert st["outcome"] == "failed" and [a["rc"] for a in st["attempts"]] == [1, 1, 1]
    assert [a.get("backoff_s") for a in st["attempts"]] == [pytest.approx(0.1), pytest.approx(0.2), None]
    rep = json.loads(wd("report", "--state-dir", str(host.state), "--ack").stdout)
    assert rep["last_firing"]["outcome"] == "failed" and rep["last_firing"]["reported"] is False
    assert host.state_json()["reported"] is True


def test_second_run_refused_then_stale_lock_taken_over(host):
    first = arm(host, "run-a", lease_timeout_s=30)
    # the same run arming again (pause.yml included twice): the watchdog it has, no second one
    again = arm(host, "run-a", lease_timeout_s=30)
    assert again["already"] and again["pid"] == first["pid"] and again["lease_mtime"] > 0
    time.sleep(1.1)
    res = wd("arm", "--config", str(host.config("run-b", lease_timeout_s=30)), check=False)
    assert res.returncode == 75
    assert "run run-a paused the LLM" in res.stderr and any(f"{s} s ago" in res.stderr for s in (1, 2, 3))
    assert host.lock()["run_id"] == "run-a"
    # the owner dies without disarming (kill -9 of the watchdog): its lock is stale and is taken over
    os.kill(first["pid"], signal.SIGKILL)
    assert wait_until(lambda: not running(first["pid"]), 5) is not None
    second = json.loads(wd("arm", "--config", str(host.config("run-b", lease_timeout_s=30))).stdout)
    assert second["took_over"] == "run-a" and host.lock()["run_id"] == "run-b"
    assert "taking over the stale lock of run run-a" in (host.state / "watchdog.log").read_text()
    wd("disarm", "--state-dir", str(host.state), "--run-id", "run-b")


def test_disarm_ends_watchdog_without_firing_and_frees_memory(host):
    host.start_voxtral()
    armed = arm(host, lease_timeout_s=2)
    out = json.loads(wd("disarm", "--state-dir", str(host.state), "--run-id", "run-a", "--stop-registered").stdout)
    assert out["watchdog"] == "ended" and out["stopped"][0]["name"] == "voxtral"
    assert host.voxtral_stopped() and host.lock() is None
    assert not running(armed["pid"])
    time.sleep(2.5)
    assert not healthy(host.url) and not (host.state / "state.json").exists() and not host.attempts.exists()
    # disarming someone else's lock leaves it alone
    arm(host, "run-c", lease_timeout_s=30)
    out = json.loads(wd("disarm", "--state-dir", str(host.state), "--run-id", "run-a").stdout)
    assert "run-c" in out["watchdog"] and host.lock()["run_id"] == "run-c"
    wd("disarm", "--state-dir", str(host.state), "--run-id", "run-c")


KEEPER = ROOT / "roles" / "gemma_guard" / "files" / "lease_keeper.py"


def test_lease_keeper_owner_is_the_program_not_a_mention():
    spec = importlib.util.spec_from_file_location("lease_keeper", KEEPER)
    keeper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(keeper)
    assert keeper.runs(["/usr/bin/python3", "/venv/bin/ansible-playbook", "-i", "inv", "p.yml"], "ansible-playbook")
    assert keeper.runs(["ansible-playbook", "p.yml"], "ansible-playbook")
    # these may outlive the playbook (a shell loop, a screen session): a lease kept for them never expires
    assert not keeper.runs(["/bin/sh", "-c", "ansible-playbook -i inv p.yml"], "ansible-playbook")
    assert not keeper.runs(["SCREEN", "-S", "bench", "ansible-playbook", "p.yml"], "ansible-playbook")
    assert not keeper.runs(["python3", "-m", "pytest", "-k", "ansible-playbook"], "ansible-playbook")


def test_lease_keeper_renews_until_its_controller_dies(tmp_path):
    lease = tmp_path / "lease"
    owner = subprocess.Popen(["sleep", "60"])  # stands for ansible-playbook on the controller
    keeper = subprocess.Popen(
        [
            PYTHON,
            str(KEEPER),
            "--interval",
            "0.2",
            "--max-s",
            "60",
            "--owner-pid",
            str(owner.pid),
            "--pidfile",
            str(tmp_path / "keeper.pid"),
            "--",
            PYTHON,
            str(SCRIPT),
            "renew",
            "--lease",
            str(lease),
            "--stdin",
        ]
    )
    try:
        assert wait_until(lease.exists, 5) is not None
        first = lease.stat().st_mtime
        assert wait_until(lambda: lease.stat().st_mtime > first + 0.3, 5) is not None, "the lease is not renewed"
        owner.kill()
        owner.wait()
        keeper.wait(timeout=5)  # ends on its own when the controller is gone
        assert not (tmp_path / "keeper.pid").exists()
        last = lease.stat().st_mtime
        time.sleep(0.6)
        assert lease.stat().st_mtime == last, "something still renews the lease"
    finally:
        for p in (owner, keeper):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_lease_keeper_reconnects_a_dropped_session_and_refuses_without_owner(tmp_path):
    lease = tmp_path / "lease"
    # a session that drops after each renewal (like an SSH connection that keeps failing): renewed on reconnect
    flaky = ["/bin/sh", "-c", f"read line && touch {lease}"]
    owner = subprocess.Popen(["sleep", "60"])
    keeper = subprocess.Popen(
        [
            PYTHON,
            str(KEEPER),
            "--interval",
            "0.2",
            "--max-s",
            "60",
            "--owner-pid",
            str(owner.pid),
            "--pidfile",
            str(tmp_path / "keeper.pid"),
            "--",
            *flaky,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lease.exists, 5) is not None
        first = lease.stat().st_mtime
        assert wait_until(lambda: lease.stat().st_mtime > first + 0.3, 5) is not None
        keeper.send_signal(signal.SIGTERM)  # normal resume
        keeper.wait(timeout=5)
        assert "reconnecting" in keeper.stderr.read()
    finally:
        for p in (owner, keeper):
            if p.poll() is None:
                p.kill()
                p.wait()
    # started outside ansible-playbook and without --owner-pid: refuses (nobody would end it)
    res = subprocess.run(
        [PYTHON, str(KEEPER), "--max-s", "5", "--pidfile", str(tmp_path / "k2.pid"), "--", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and "ansible-playbook" in res.stderr


def test_arm_under_a_launcher_that_returns_at_once(host):
    """Like systemd-run: the launcher exits and the watchdog runs elsewhere; arm waits for its PID in the lock."""
    launcher = ["/bin/sh", "-c", '"$@" > /dev/null 2>&1 < /dev/null & exit 0', "launcher"]
    res = wd("arm", "--config", str(host.config(lease_timeout_s=30)), "--launcher", json.dumps(launcher))
    armed = json.loads(res.stdout)
    assert running(armed["pid"]) and host.lock()["pid"] == armed["pid"]
    out = json.loads(wd("disarm", "--state-dir", str(host.state), "--run-id", "run-a").stdout)
    assert out["watchdog"] == "ended" and host.lock() is None and not running(armed["pid"])
