"""Helpers for the network-namespace SSH test hosts made by ``tests/hosts/testhosts``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "hosts" / "testhosts"
INVENTORY = ROOT / "inventory" / "testhosts"
HOST_IPS: dict[str, str] = {"titan": "10.231.7.11", "panda": "10.231.7.12"}
NETNS_PREFIX = "ttsb-"
BRIDGE = "ttsb-br0"
# tool -> Debian package, the same list the script checks before touching anything
REQUIRED_TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "sshd": "openssh-server",
    "unshare": "util-linux",
    "flock": "util-linux",
    "mount": "mount",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "sudo": "sudo",
    "useradd": "passwd",
}


def state_dir() -> Path:
    return Path(os.environ.get("TTSBENCH_TESTHOSTS_STATE") or "/tmp/ttsbench-testhosts")


@dataclass(frozen=True)
class NamespaceHosts:
    """What the ``testhosts`` fixture yields."""

    inventory: Path
    hosts: dict[str, str]
    key: Path
    state_dir: Path
    script: Path


def missing_prerequisites() -> list[str]:
    """Why the test hosts cannot be made here (empty when they can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root privileges")
    for tool, package in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            problems.append(f"{tool} (apt-get install {package})")
    return problems


def run_script(
    command: str, env: Mapping[str, str] | None = None, timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else None,
    )


def up() -> NamespaceHosts:
    res = run_script("up")
    if res.returncode != 0:
        raise RuntimeError(f"tests/hosts/testhosts up failed ({res.returncode}): {res.stderr.strip()}")
    state = state_dir()
    return NamespaceHosts(INVENTORY, dict(HOST_IPS), state / "id_ed25519", state, SCRIPT)


def down() -> None:
    res = run_script("down")
    if res.returncode != 0:
        raise RuntimeError(f"tests/hosts/testhosts down failed ({res.returncode}): {res.stderr.strip()}")


def our_netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def our_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [line.split(":", 2)[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n.startswith(NETNS_PREFIX)]


def sshd_pids(state: Path | None = None) -> dict[str, int]:
    """PIDs named in the hosts' sshd pid files (only those files that exist)."""
    state = state or state_dir()
    out = {}
    for host in HOST_IPS:
        pidfile = state / host / "sshd.pid"
        if pidfile.is_file():
            out[host] = int(pidfile.read_text().split()[0])
    return out


def process_running(pid: int) -> bool:
    """True for a live process; a zombie (dead, waiting to be reaped) counts as not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_using(path: str) -> list[int]:
    """Live PIDs whose command line mentions PATH (e.g. an sshd config of ours)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in cmdline and process_running(int(proc.name)):
            pids.append(int(proc.name))
    return pids


@dataclass
class AdhocResult:
    """One ad-hoc ansible module run, read from ansible-runner events and stats."""

    status: str
    rc: int
    stats: dict[str, dict[str, int]]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)

    def hosts_with(self, outcome: str) -> set[str]:
        return {h for h, o in self.outcome.items() if o == outcome}


def run_module(
    pattern: str,
    module: str,
    module_args: str,
    private_data_dir: Path,
    inventory: Path = INVENTORY,
    become: bool = False,
) -> AdhocResult:
    """Run one module ad hoc through ansible-runner with the project's ansible.cfg (as the inventory's SSH user,
    ttsb-ops; ``become``: as root through its sudo)."""
    import ansible_runner

    bindir = str(Path(sys.executable).parent)
    private_data_dir.mkdir(parents=True, exist_ok=True)
    r = ansible_runner.run(
        private_data_dir=str(private_data_dir),
        host_pattern=pattern,
        module=module,
        module_args=module_args,
        inventory=str(inventory),
        envvars={
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "ANSIBLE_FORCE_COLOR": "0",
        },
        quiet=True,
        timeout=300,
        cmdline="--become" if become else None,
    )
    outcome_of = {
        "runner_on_ok": "ok",
        "runner_on_failed": "failed",
        "runner_on_unreachable": "unreachable",
        "runner_on_skipped": "skipped",
    }
    res = AdhocResult(status=str(r.status), rc=int(r.rc if r.rc is not None else -1), stats=dict(r.stats or {}))
    for ev in r.events:
        kind = outcome_of.get(ev.get("event", ""))
        if kind is None:
            continue
        data = ev.get("event_data", {})
        res.outcome[data["host"]] = kind
        res.results[data["host"]] = data.get("res", {})
    return res
