"""``ttsbench ratings import RUN_DIR FILE``: human ratings done elsewhere (CSV/YAML) → scores/ratings.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ratings", help="import human ratings (CSV or YAML) into a run folder")
    rsub = p.add_subparsers(dest="ratings_command", metavar="ACTION", required=True)
    imp = rsub.add_parser("import", help="FILE rows: utt_id (or item), system, score 1–5, note")
    imp.add_argument("run_dir", help="run folder")
    imp.add_argument("file", help="ratings file (.csv or .yaml)")
    imp.add_argument("--force", action="store_true", help="replace an existing scores/ratings.json")
    imp.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ttsbench.runcheck import load_valid_run
    from ttsbench.scoring.ratings import import_ratings, load_ratings
    from ttsbench.scoring.rundoc import RunDir

    load_valid_run(args.run_dir)  # validation first: an invalid run folder writes nothing
    run = RunDir.open(args.run_dir)
    out = import_ratings(run, Path(args.file), force=args.force)
    for sid, st in load_ratings(run)["stats"]["per_system"].items():
        lo, hi = st["ci95"]
        ci = f" (95% CI {lo:.2f}–{hi:.2f})" if lo is not None else ""
        print(f"{sid}: mean {st['mean']:.2f}{ci}, n={st['n']}")
    print(f"wrote {out}")
    return 0
