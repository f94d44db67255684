#!/usr/bin/env python3
"""Print the slowest tests and the time per pass from pytest's junit XML files (end of `make test`).

Usage: durations.py [--top N] REPORT.xml...
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def read(report: Path) -> tuple[float, list[tuple[float, str, str]]]:
    """(wall seconds of the pass, [(seconds, outcome, test id)]) from one junit XML file."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    wall = sum(float(s.get("time", 0)) for s in suites)
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = tag
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append((float(case.get("time", 0)), outcome, name))
    return wall, cases


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("reports", nargs="+", type=Path)
    args = ap.parse_args(argv)
    rows: list[tuple[float, str, str]] = []
    passes: list[str] = []
    for report in args.reports:
        if not report.is_file():
            passes.append(f"  {report.stem:<12} missing (the pass did not finish)")
            continue
        wall, cases = read(report)
        passes.append(f"  {report.stem:<12} {wall:7.0f} s  {len(cases)} tests")
        rows += [(t, o, f"[{report.stem}] {n}") for t, o, n in cases]
    # slowest first, then per module, then the passes: a CI log's tail keeps the totals
    print(f"== slowest {args.top} tests (seconds, outcome; tests in one xdist pass overlap)")
    for t, outcome, name in sorted(rows, reverse=True)[: args.top]:
        print(f"  {t:7.1f}  {outcome:<8} {name}")
    modules: dict[str, list[float]] = {}
    for t, _, name in rows:
        modules.setdefault(name.split("::")[0], []).append(t)
    print("== seconds per test module (tests)")
    for name, times in sorted(modules.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"  {sum(times):7.0f}  {name} ({len(times)})")
    print("== test passes (wall time)")
    print("\n".join(passes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
