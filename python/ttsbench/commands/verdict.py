"""``ttsbench verdict RUN_DIR [--rules FILE]``: apply a pre-committed decision rule → verdict.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verdict", help="decide by a pre-committed rule file → verdict.json")
    p.add_argument("run_dir")
    p.add_argument("--rules", help="rule file (default: files/decision-rules/<by run kind>.yaml)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ttsbench.runcheck import load_valid_run
    from ttsbench.runner import project_root
    from ttsbench.scoring.rules import load_rules
    from ttsbench.scoring.rundoc import RunDir
    from ttsbench.scoring.verdict import decide, default_rule_file, write_verdict

    load_valid_run(args.run_dir)  # validation first: an invalid run folder writes nothing
    run = RunDir.open(args.run_dir)
    path = Path(args.rules) if args.rules else default_rule_file(run, project_root() / "files" / "decision-rules")
    rules = load_rules(path)
    v = decide(rules, run)
    out = write_verdict(run, v)
    print(f"verdict: {v['outcome']}")
    for r in v["reasons"]:
        print(f"  - {r}")
    for w in v.get("would_change", []):
        print(f"  would change: {w}")
    print(f"wrote {out}")
    return 0
