"""``ttsbench validate RUN_DIR``: the run-folder validation (ttsbench.runcheck) as a command, exit 2 if invalid;
``ttsbench validate --rules FILE``: check a decision rule file (the same check ``ttsbench verdict`` does)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check RUN_DIR/results.json (schema, unique ids, finite numbers, paths inside the folder), "
        "or a rule file (--rules)",
    )
    p.add_argument("run_dir", nargs="?", help="run folder (or a results.json file)")
    p.add_argument("--rules", metavar="FILE", help="check this decision rule file (metric paths, conditions, types)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ttsbench.errors import UserError
    from ttsbench.runcheck import InvalidRun, all_problems, load_valid_run

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
    f, problems = all_problems(args.run_dir)
    if problems:
        more = (
            f" (+{len(problems) - 1} more: {'; '.join(problems[1:4])}{' …' if len(problems) > 4 else ''})"
            if len(problems) > 1
            else ""
        )
        raise InvalidRun(f"{f}: invalid: {problems[0]}{more}")
    _root, doc = load_valid_run(args.run_dir)  # score files too
    n = sum(len(s.get("utterances", [])) for s in doc.get("systems", []))
    print(
        f"{f}: valid (schema v{doc['schema_version']}, {len(doc['systems'])} system(s), {n} row(s), "
        f"complete={str(doc['complete']).lower()})"
    )
    return 0
