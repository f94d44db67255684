"""``ttsbench doctor``: what the controller has; non-zero exit when something required is missing."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check the controller's tools (and with -i every host, read-only) and say how to fix what is missing",
    )
    p.add_argument(
        "-i",
        "--inventory",
        default=None,
        help="also check every host of this inventory without changing anything: SSH, become, docker, "
        "systemd, GPU, disk, Voxtral weights, ports, the configured services, the primary TTS",
    )
    p.add_argument("--no-probe", action="store_true", help="with -i: do not send the primary TTS a speech request")
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
    if args.inventory:
        return _hosts(console, args.inventory, not args.no_probe)
    return 0


def _hosts(console: object, inventory: str, probe: bool) -> int:
    from rich.table import Table

    from ttsbench.hostdoctor import run

    findings = run(inventory, probe_primary=probe)
    table = Table(title=f"ttsbench doctor — hosts of {inventory} (nothing was changed)")
    for col in ("host", "check", "status", "detail", "what to fix"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(f.host, f.check, {True: "ok", False: "FIX", None: "info"}[f.ok], f.detail, f.fix)
    console.print(table)  # type: ignore[attr-defined]
    bad = [f for f in findings if f.ok is False]
    if bad:
        console.print(
            f"doctor: {len(bad)} thing(s) to fix: "  # type: ignore[attr-defined]
            + ", ".join(f"{f.host}/{f.check}" for f in bad)
        )
        return 1
    return 0
