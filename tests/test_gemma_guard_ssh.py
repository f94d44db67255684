"""gemma_guard fault matrix, the SSH case: the controller's link to the host drops mid-benchmark.

Real SSH to the namespace host titan: the lease keeper's session and the play hang, the watchdog on titan sees
the lease expire, stops the Voxtral stand-in the run started and brings the stand-in LLM back — while the
controller still cannot reach the host.
"""

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

import _testhosts
from roles_helpers import agent_venv, wait_until
from ttsbench.httpserve import free_port

PLAYBOOK = _testhosts.ROOT / "tests" / "playbooks" / "gemma_guard_cycle.yml"
HEARTBEAT_TIMEOUT = 4
START_S = 6

pytestmark = [pytest.mark.testhosts, pytest.mark.timing]


def _in_titan(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", "ttsb-titan", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def _healthy_in_titan(url: str) -> bool:
    code = "import sys,urllib.request; sys.exit(urllib.request.urlopen(sys.argv[1], timeout=2).status != 200)"
    return _in_titan("/usr/bin/python3", "-c", code, url).returncode == 0


def _running(pid: int | None) -> bool:
    try:
        return pid is not None and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ssh_dropped_mid_benchmark_watchdog_resumes_llm(testhosts, tmp_path):
    venv = agent_venv()
    if not (venv / "bin" / "ttsbench").exists():
        pytest.skip(f"the test agent venv {venv} is missing (tests/test_gemma_guard.py installs it)")
    root = tmp_path / "titan-root"  # /tmp is shared with the namespace hosts (only /srv is private)
    root.mkdir()
    port = free_port()
    pidfile = root / "standin-llm.pid"
    url = f"http://127.0.0.1:{port}"
    start = (
        f"setsid nohup {venv}/bin/ttsbench standin llm --host 127.0.0.1 --port {port} --latency-ms 20"
        f" > {root}/standin-llm.log 2>&1 < /dev/null & echo $! > {pidfile}"
    )
    host = {
        "ansible_host": _testhosts.HOST_IPS["titan"],
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_private_key_file": str(testhosts.key),
        "ttsbench_root": str(root),
        "ttsbench_python": "/usr/bin/python3",
        "ttsbench_agent_venv": str(venv),
        "gemma_guard_backend": "command",
        "gemma_guard_mode": "pause",
        "gemma_guard_standin": True,
        "gemma_guard_url": url,
        "gemma_guard_health_retries": 20,
        "gemma_guard_health_delay": 1,
        "gemma_guard_max_pause": 300,
        "gemma_guard_heartbeat_timeout": HEARTBEAT_TIMEOUT,
        "gemma_guard_heartbeat_interval": 1,
        "gemma_guard_start_backoff": 1,
        "gemma_guard_controller_dir": str(tmp_path / "controller"),
        "gemma_guard_start_command": start,
        "gemma_guard_stop_command": f'kill "$(cat {pidfile})" && rm -f {pidfile}',
        "gemma_guard_status_command": f'kill -0 "$(cat {pidfile} 2>/dev/null)" 2>/dev/null',
    }
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"guarded": host}}}))
    assert _in_titan("/bin/sh", "-c", start).returncode == 0
    assert wait_until(lambda: _healthy_in_titan(url + "/health"), 30) is not None

    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(_testhosts.ROOT / "ansible.cfg"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = open(tmp_path / "ansible.log", "w")  # noqa: SIM115 - the child writes it
    # ttsbench is already in the agent venv (checked above; the namespace hosts see the same path)
    proc = subprocess.Popen(
        [
            "ansible-playbook",
            "-i",
            str(inv),
            str(PLAYBOOK),
            "-e",
            "gg_test_bench_seconds=600",
            "-e",
            "gg_test_install=false",
        ],
        cwd=_testhosts.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    results = root / "results.jsonl"
    state = root / "gemma_guard"
    link = f"{_testhosts.NETNS_PREFIX}titan"
    try:
        bench = wait_until(lambda: results.exists() and len(results.read_text().splitlines()) >= 2, 240, step=0.1)
        assert bench is not None, (tmp_path / "ansible.log").read_text()[-3000:]
        voxtral = int((root / "voxtral-standin.pid").read_text())
        assert _running(voxtral) and not _healthy_in_titan(url + "/health")
        subprocess.run(["ip", "link", "set", "dev", link, "down"], check=True)  # the SSH connection drops
        dropped = time.monotonic()
        fired = wait_until(
            lambda: (
                (state / "state.json").exists()
                and json.loads((state / "state.json").read_text()).get("outcome") != "running"
            ),
            HEARTBEAT_TIMEOUT + START_S + 20,
        )
        assert fired is not None, (state / "watchdog.log").read_text()
        assert _healthy_in_titan(url + "/health"), (state / "watchdog.log").read_text()
        assert time.monotonic() - dropped <= HEARTBEAT_TIMEOUT + START_S
        st = json.loads((state / "state.json").read_text())
        assert st["outcome"] == "resumed" and "lease not renewed" in st["reason"]
        assert not _running(voxtral) and [s["name"] for s in st["stopped"]] == ["voxtral-standin"]
        assert proc.poll() is None  # the controller is still stuck on the dropped connection
    finally:
        subprocess.run(["ip", "link", "set", "dev", link, "up"], check=False)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        if pidfile.exists():
            _in_titan("/bin/sh", "-c", f'kill "$(cat {pidfile})"')
