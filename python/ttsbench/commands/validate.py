"""``ttsbench validate RUN_DIR``: the run-folder validation (ttsbench.runcheck) as a command; exit 2 if invalid."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="check RUN_DIR/results.json: schema, unique ids, finite numbers, paths inside the folder"
    )
    p.add_argument("run_dir", help="run folder (or a results.json file)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ttsbench.runcheck import InvalidRun, all_problems, load_valid_run

    f, problems = all_problems(args.run_dir)
    if problems:
        more = f" (+{len(problems) - 1} more: {'; '.join(problems[1:4])}{' …' if len(problems) > 4 else ''})" \
            if len(problems) > 1 else ""
        raise InvalidRun(f"{f}: invalid: {problems[0]}{more}")
    _root, doc = load_valid_run(args.run_dir)  # score files too
    n = sum(len(s.get("utterances", [])) for s in doc.get("systems", []))
    print(
        f"{f}: valid (schema v{doc['schema_version']}, {len(doc['systems'])} system(s), {n} row(s), "
        f"complete={str(doc['complete']).lower()})"
    )
    return 0
