"""Drive Ansible through ansible-runner and read its events, stats and artifacts (never scraped stdout)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError


def project_root() -> Path:
    """The source tree holding ansible.cfg, playbooks/ and roles/ (``TTSBENCH_HOME`` overrides)."""
    env = os.environ.get("TTSBENCH_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "ansible.cfg").is_file() and (parent / "playbooks").is_dir():
            return parent
    raise UserError(
        "cannot find the ttsbench project tree (ansible.cfg + playbooks/); "
        "run from a checkout or set TTSBENCH_HOME to it"
    )


@dataclass
class PlaybookResult:
    """What one ansible-playbook run did, from ansible-runner's stats and events."""

    playbook: str
    rc: int
    status: str
    artifact_dir: Path
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.status == "successful"

    def count(self, key: str) -> int:
        return sum(self.stats.get(key, {}).values())

    @property
    def changed(self) -> int:
        return self.count("changed")

    def changed_by_host(self) -> dict[str, int]:
        return dict(self.stats.get("changed", {}))

    @property
    def failed_hosts(self) -> list[str]:
        hosts = set(self.stats.get("failures", {})) | set(self.stats.get("dark", {}))
        return sorted(h for h in hosts if self.stats.get("failures", {}).get(h, 0) or h in self.stats.get("dark", {}))

    def task_results(self, task_name: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        """``runner_on_ok``/``runner_on_failed`` event data, optionally filtered by task name and host."""
        out = []
        for ev in self.events:
            if ev.get("event") not in {"runner_on_ok", "runner_on_failed", "runner_on_skipped"}:
                continue
            data = ev.get("event_data", {})
            if task_name is not None and data.get("task") != task_name:
                continue
            if host is not None and data.get("host") != host:
                continue
            out.append(data)
        return out

    def failure_messages(self) -> list[str]:
        msgs = []
        for ev in self.events:
            if ev.get("event") in {"runner_on_failed", "runner_on_unreachable"}:
                data = ev.get("event_data", {})
                if data.get("ignore_errors"):
                    continue
                res = data.get("res", {})
                msg = res.get("msg") or res.get("stderr") or res
                msgs.append(f"{data.get('host')}: {data.get('task')}: {msg}")
        return msgs


def run_playbook(
    playbook: str | Path,
    inventory: str | Path | None = None,
    extravars: Mapping[str, Any] | None = None,
    *,
    check: bool = False,
    limit: str | None = None,
    tags: Sequence[str] = (),
    private_data_dir: str | Path | None = None,
    envvars: Mapping[str, str] | None = None,
    event_handler: Callable[[dict[str, Any]], bool] | None = None,
    quiet: bool = True,
    timeout: int | None = None,
) -> PlaybookResult:
    """Run one playbook of this project through ansible-runner and return its stats and events."""
    import ansible_runner

    root = project_root()
    pb = Path(playbook)
    if not pb.is_absolute():
        pb = (root / "playbooks" / pb) if not (root / pb).exists() else (root / pb)
    if not pb.is_file():
        raise UserError(f"playbook not found: {pb}")
    inv = Path(inventory) if inventory else root / "inventory" / "rehearsal"
    if not inv.is_absolute():
        inv = (root / inv) if (root / inv).exists() else inv.resolve()
    if not inv.exists():
        raise UserError(f"inventory not found: {inv} (pass -i PATH)")
    from ttsbench.inventory import check_inventory

    check_inventory(inv)  # duplicate keys, tabs: FILE:LINE:COL before Ansible starts (it only warns)
    pdd = Path(private_data_dir) if private_data_dir else Path(tempfile.mkdtemp(prefix="ttsbench-runner-"))
    pdd.mkdir(parents=True, exist_ok=True)
    bindir = str(Path(sys.executable).parent)
    env = {
        "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_FORCE_COLOR": "0",
        "TTSBENCH_HOME": str(root),
    }
    if envvars:
        env.update(envvars)
    cmdline_parts = []
    if check:
        cmdline_parts.append("--check")
    if tags:
        cmdline_parts.append(f"--tags={','.join(tags)}")
    kwargs: dict[str, Any] = {
        "private_data_dir": str(pdd),
        "project_dir": str(root),
        "playbook": str(pb),
        "inventory": str(inv),
        "extravars": dict(extravars or {}),
        "envvars": env,
        "quiet": quiet,
        "limit": limit,
        "cmdline": " ".join(cmdline_parts) or None,
        "event_handler": event_handler,
    }
    if timeout:
        kwargs["timeout"] = timeout
    r = ansible_runner.run(**kwargs)
    events = list(r.events)
    return PlaybookResult(
        playbook=pb.name,
        rc=int(r.rc if r.rc is not None else -1),
        status=str(r.status),
        artifact_dir=Path(r.config.artifact_dir),
        stats=dict(r.stats or {}),
        events=events,
    )
