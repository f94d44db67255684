"""``ttsbench doctor``: what the controller has; non-zero exit when something required is missing."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the controller's tools and say how to install what is missing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ttsbench.doctor import run_checks

    checks = run_checks()
    table = Table(title="ttsbench doctor — controller")
    table.add_column("component")
    table.add_column("status")
    table.add_column("detail")
    for c in checks:
        status = "ok" if c.ok else ("MISSING" if c.required else "optional, missing")
        table.add_row(c.name, status, c.detail)
    console = Console()
    console.print(table)
    missing = [c for c in checks if c.required and not c.ok]
    for c in checks:
        if not c.ok:
            kind = "required" if c.required else "optional"
            console.print(f"{kind}: {c.name} is missing — install with: {c.fix}")
    if missing:
        console.print(f"doctor: {len(missing)} required component(s) missing: {', '.join(c.name for c in missing)}")
        return 1
    return 0
