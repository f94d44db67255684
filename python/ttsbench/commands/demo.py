"""``ttsbench demo``: run the main job against the embedded rehearsal inventory and say where results are."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the rehearsal (main job on the embedded default inventory)")
    p.add_argument("--playbook", default="bench-chatterbox.yml")
    p.add_argument("-i", "--inventory", default="inventory/rehearsal")
    p.add_argument("-e", "--extra-var", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from ttsbench.commands.run import _parse_extravars
    from ttsbench.eta import RunClock, format_duration, format_left
    from ttsbench.runner import project_root, run_playbook

    console = Console()
    clock = RunClock.for_playbook(args.playbook)
    if clock.previous is not None:
        console.print(
            f"{args.playbook}: took {format_duration(clock.previous.total_s)} "
            f"last time ({clock.previous.source}); the first run on a machine takes longer (downloads, model builds)"
        )
    steps = 0

    def on_event(ev: dict) -> bool:
        nonlocal steps
        data = ev.get("event_data", {})
        if ev.get("event") == "playbook_on_task_start":
            task = str(data.get("task", ""))
            left = clock.task_started(str(data.get("play", "")), task)
            if task.startswith("Validating arguments against arg spec"):  # every role entry: counted, not shown
                return True
            steps += 1
            when = f"[cyan]{format_left(left):>13}[/cyan]" if left is not None else " " * 13
            console.print(f"[dim]{steps:>3}[/dim] {when} {task}", no_wrap=True, overflow="ellipsis")
        elif ev.get("event") in {"runner_on_failed", "runner_on_unreachable"} and not data.get("ignore_errors"):
            console.print(f"[red]failed[/red] {data.get('host')}: {data.get('task')}")
        return True

    res = run_playbook(args.playbook, args.inventory, _parse_extravars(args.extra_var), event_handler=on_event)
    console.print(f"{res.playbook}: {res.status} (changed per host: {res.changed_by_host()})")
    if res.ok:
        clock.save()
    runs = project_root() / "runs"
    latest = sorted(runs.glob("*/"), key=lambda p: p.stat().st_mtime)[-1:] if runs.is_dir() else []
    if latest:
        run_dir = Path(latest[0])
        report = run_dir / "report.html"
        console.print(f"run folder: {run_dir}")
        if report.exists():
            console.print(f"report: {report}")
    if not res.ok:
        for msg in res.failure_messages()[:10]:
            console.print(f"[red]{msg}[/red]")
        return 1
    return 0
