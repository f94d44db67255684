"""The namespace SSH test hosts: real sshd per host, private /srv, clean up/down, clear refusals."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

import _testhosts
from _pathdir import path_without

pytestmark = pytest.mark.testhosts


def _routed_via_us(ip: str) -> bool:
    """Does the controller still route IP into one of our links? (Port probes are no proof:
    a network outside may accept any TCP connection once our route is gone.)"""
    out = subprocess.run(["ip", "-o", "route", "get", ip], capture_output=True, text=True, check=False)
    return f" dev {_testhosts.NETNS_PREFIX}" in out.stdout


def test_ansible_ping_reaches_both_hosts_over_ssh(testhosts, tmp_path):
    res = _testhosts.run_module("titan:panda", "ansible.builtin.ping", "", tmp_path / "ping")
    assert res.status == "successful", res.results
    assert res.hosts_with("ok") == {"titan", "panda"}
    assert all(res.results[h]["ping"] == "pong" for h in ("titan", "panda"))
    assert sum(res.stats.get("dark", {}).values()) == 0

    # Each host is its own network namespace: its eth0 carries exactly its inventory address.
    addr = _testhosts.run_module(
        "titan:panda", "ansible.builtin.command", "ip -o -4 addr show dev eth0", tmp_path / "addr"
    )
    assert addr.hosts_with("ok") == {"titan", "panda"}, addr.results
    for host, ip in testhosts.hosts.items():
        assert f" {ip}/24 " in addr.results[host]["stdout"]


def test_srv_is_private_to_each_host(testhosts, tmp_path):
    name = f"probe-{uuid.uuid4().hex}.txt"
    path = f"/srv/{name}"
    wrote = _testhosts.run_module(
        "titan",
        "ansible.builtin.copy",
        f"dest={path} content=written-on-titan mode=0644",
        tmp_path / "w",
        become=True,  # /srv is root's; the inventory logs in as ttsb-ops
    )
    assert wrote.hosts_with("ok") == {"titan"}, wrote.results
    assert wrote.results["titan"]["changed"] is True
    try:
        seen = _testhosts.run_module("titan:panda", "ansible.builtin.stat", f"path={path}", tmp_path / "s")
        assert seen.hosts_with("ok") == {"titan", "panda"}, seen.results
        assert seen.results["titan"]["stat"]["exists"] is True
        assert seen.results["panda"]["stat"]["exists"] is False
        assert not Path(path).exists(), "titan's /srv leaked onto the controller"
        assert (testhosts.state_dir / "titan" / "srv" / name).read_text() == "written-on-titan"
        assert not (testhosts.state_dir / "panda" / "srv" / name).exists()
    finally:
        _testhosts.run_module(
            "titan", "ansible.builtin.file", f"path={path} state=absent", tmp_path / "rm", become=True
        )


def _copy_script_for_others() -> tuple[Path, Path]:
    """A copy of the script in a world-readable temp dir (the checkout may not be)."""
    tmp = Path(tempfile.mkdtemp(prefix="ttsbench-testhosts-bad-"))
    tmp.chmod(0o755)
    script = tmp / "testhosts"
    shutil.copy2(_testhosts.SCRIPT, script)
    script.chmod(0o755)
    return tmp, script


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_up_as_non_root_is_refused_before_touching_anything():
    tmp, script = _copy_script_for_others()
    state = tmp / "state"
    try:
        res = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(script), "up"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), "TTSBENCH_TESTHOSTS_STATE": str(state)},
        )
    finally:
        made_state = state.exists()
        shutil.rmtree(tmp)
    assert res.returncode != 0
    assert "root" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not made_state


def test_up_without_ip_names_it_and_its_package(testhosts, tmp_path):
    env = {
        "PATH": path_without(tmp_path / "bin", ["ip"]),
        "TTSBENCH_TESTHOSTS_STATE": str(tmp_path / "state"),
    }
    res = _testhosts.run_script("up", env=env)
    assert res.returncode != 0
    assert "ip (apt-get install iproute2)" in res.stderr
    assert "sshd" not in res.stderr, "only the missing tool should be named"
    assert not (tmp_path / "state").exists()
    # Nothing was touched: the session's hosts still answer.
    assert _testhosts.run_script("status").returncode == 0


# Keep this test last in the file: it takes the hosts down and brings them back up for later tests.
def test_up_twice_is_idempotent_and_down_leaves_nothing(testhosts, tmp_path):
    state = testhosts.state_dir
    watched = [state / h / "sshd_config" for h in testhosts.hosts]
    watched += [state / "known_hosts", state / "authorized_keys", state / "id_ed25519"]
    try:
        first = _testhosts.run_script("up")
        assert first.returncode == 0, first.stderr
        pids = _testhosts.sshd_pids()
        mtimes = {p: p.stat().st_mtime_ns for p in watched}
        second = _testhosts.run_script("up")
        assert second.returncode == 0, second.stderr
        assert _testhosts.sshd_pids() == pids, "a second up restarted sshd"
        assert {p: p.stat().st_mtime_ns for p in watched} == mtimes, "a second up rewrote files"
        assert set(pids) == {"titan", "panda"}
        assert all(_testhosts.process_running(pid) for pid in pids.values())
        assert all(_routed_via_us(ip) for ip in testhosts.hosts.values())

        down = _testhosts.run_script("down")
        assert down.returncode == 0, down.stderr
        assert _testhosts.our_netns() == []
        assert _testhosts.our_links() == []
        assert not any(_testhosts.process_running(pid) for pid in pids.values())
        assert _testhosts.sshd_pids() == {}
        for host in testhosts.hosts:
            assert _testhosts.processes_using(str(state / host / "sshd_config")) == []
        assert not any(_routed_via_us(ip) for ip in testhosts.hosts.values())
        assert _testhosts.run_script("down").returncode == 0, "down must succeed when nothing is up"
        assert _testhosts.run_script("status").returncode != 0

        # A failing up (titan's host key is garbage, so its sshd cannot start) removes what it made.
        bad_state = tmp_path / "bad-state"
        bad_key = bad_state / "titan" / "ssh_host_ed25519_key"
        bad_key.parent.mkdir(parents=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(bad_key)], check=True)
        bad_key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n")
        failed = _testhosts.run_script("up", env={**os.environ, "TTSBENCH_TESTHOSTS_STATE": str(bad_state)})
        assert failed.returncode != 0
        assert "sshd of titan did not start" in failed.stderr
        assert _testhosts.our_netns() == []
        assert _testhosts.our_links() == []
        assert _testhosts.sshd_pids(bad_state) == {}
        for host in testhosts.hosts:
            assert _testhosts.processes_using(str(bad_state / host / "sshd_config")) == []
    finally:
        _testhosts.up()


def test_non_root_user_manages_a_root_service_through_sudo(testhosts, tmp_path):
    """service_control over real SSH as non-root users: with passwordless sudo the root-only service is stopped
    and started as root; where sudo wants a password that is not given, it is refused before anything stops."""
    from ttsbench.runner import run_playbook

    pb = _testhosts.ROOT / "tests" / "playbooks" / "become_cycle.yml"
    ok = run_playbook(
        pb, _testhosts.INVENTORY, {"become_cycle_hosts": "panda_sudo"}, private_data_dir=tmp_path / "sudo", timeout=600
    )
    assert ok.ok, ok.failure_messages()
    user = ok.task_results("Record who the SSH user is and who started the service", host="panda_sudo")
    assert user[0]["res"]["stdout"] == "ttsb-ops"
    slurp = ok.task_results("Read who started it", host="panda_sudo")[0]["res"]["content"]
    assert base64.b64decode(slurp).decode().strip() == "0"  # the service's start ran as root (uid 0)
    stopped = ok.task_results("Stop the service", host="panda_sudo")
    assert stopped and stopped[0]["res"]["changed"] is True

    refused = run_playbook(
        pb,
        _testhosts.INVENTORY,
        {"become_cycle_hosts": "panda_nosudo"},
        private_data_dir=tmp_path / "nosudo",
        timeout=600,
    )
    assert not refused.ok
    msgs = " ".join(refused.failure_messages())
    assert "needs root on panda_nosudo (become)" in msgs and "Nothing was stopped" in msgs, msgs
    assert "password" in msgs, msgs
    assert not refused.task_results("Stop the service")  # never reached (the check fails first)
    still = _testhosts.run_module("panda", "ansible.builtin.stat", "path=/srv/become-probe", tmp_path / "st")
    assert still.results["panda"]["stat"]["exists"] is True
