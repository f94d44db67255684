"""``ttsbench validate RUN_DIR``: check a run folder's results.json against the versioned schema;
``ttsbench validate --rules FILE``: check a decision rule file (the same check ``ttsbench verdict`` does)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="validate RUN_DIR/results.json against the results schema, or a rule file (--rules)"
    )
    p.add_argument("run_dir", nargs="?", help="run folder (or a results.json file)")
    p.add_argument("--rules", metavar="FILE", help="check this decision rule file (metric paths, conditions, types)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ttsbench.errors import UserError
    from ttsbench.results import RESULTS_NAME, validation_errors

    if args.rules:
        from ttsbench.scoring.rules import load_rules

        rs = load_rules(args.rules)
        print(
            f"{rs.path}: {rs.name} v{rs.rule_version}: valid ({len(rs.inputs)} input(s), "
            f"{len(rs.requires)} precondition(s), {len(rs.outcomes)} outcome(s), default {rs.default.outcome})"
        )
        if not args.run_dir:
            return 0
    if not args.run_dir:
        raise UserError("validate: give a RUN_DIR, or --rules FILE")
    p = Path(args.run_dir)
    f = p / RESULTS_NAME if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"{f}: no results.json here (is this a run folder?)")
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{f}: not valid JSON ({exc})") from exc
    errs = validation_errors(doc)
    if errs:
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise UserError(f"{f}: invalid: {errs[0]}{more}", exit_code=1)
    n = sum(len(s.get("utterances", [])) for s in doc.get("systems", []))
    print(
        f"{f}: valid (schema v{doc['schema_version']}, {len(doc['systems'])} system(s), {n} row(s), "
        f"complete={str(doc['complete']).lower()})"
    )
    return 0
