"""``ttsbench run PLAYBOOK``: run a playbook through ansible-runner and summarise its stats."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a playbook of this project through ansible-runner")
    p.add_argument("playbook", help="e.g. bench-chatterbox.yml (looked up under playbooks/)")
    p.add_argument("-i", "--inventory", default=None, help="inventory path (default: inventory/rehearsal)")
    p.add_argument("-e", "--extra-var", action="append", default=[], metavar="KEY=VALUE|@FILE")
    p.add_argument("--check", action="store_true", help="ansible --check: change nothing on any host")
    p.add_argument("--limit", default=None)
    p.add_argument("--private-data-dir", default=None, help="ansible-runner artifacts go here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run)


def _parse_extravars(items: list[str]) -> dict:
    import yaml

    from ttsbench.errors import UserError

    out: dict = {}
    for item in items:
        if item.startswith("@"):
            from ttsbench.yamlload import load_yaml

            data = load_yaml(item[1:], "extra-vars file", ansible=True) or {}
            if not isinstance(data, dict):
                raise UserError(f"{item[1:]}: extra-vars file must hold a mapping")
            out.update(data)
        elif "=" in item:
            k, v = item.split("=", 1)
            out[k] = yaml.safe_load(v) if v else ""
        else:
            raise UserError(f"-e {item!r}: expected KEY=VALUE or @FILE")
    return out


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ttsbench.runner import run_playbook

    console = Console(stderr=True)

    def on_event(ev: dict) -> bool:
        data = ev.get("event_data", {})
        if ev.get("event") == "playbook_on_task_start" and not args.json:
            console.print(f"[dim]task[/dim] {data.get('task')}")
        elif ev.get("event") in {"runner_on_failed", "runner_on_unreachable"} and not data.get("ignore_errors"):
            console.print(f"[red]failed[/red] {data.get('host')}: {data.get('task')}")
        return True

    res = run_playbook(
        args.playbook,
        args.inventory,
        _parse_extravars(args.extra_var),
        check=args.check,
        limit=args.limit,
        private_data_dir=args.private_data_dir,
        event_handler=on_event,
    )
    summary = {
        "playbook": res.playbook,
        "status": res.status,
        "rc": res.rc,
        "changed": res.changed_by_host(),
        "failed_hosts": res.failed_hosts,
        "artifact_dir": str(res.artifact_dir),
        "failures": res.failure_messages()[:20],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(summary)
    return 0 if res.ok else 1
