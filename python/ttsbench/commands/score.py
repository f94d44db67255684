"""``ttsbench score RUN_DIR``: offline objective metrics → scores/objective.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="objective metrics of a run folder (offline) → scores/objective.json")
    p.add_argument("run_dir")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ttsbench.runcheck import load_valid_run
    from ttsbench.scoring.objective import score_run
    from ttsbench.scoring.rundoc import RunDir, write_json_atomic

    load_valid_run(args.run_dir)  # validation first: an invalid run folder writes nothing
    console = Console(stderr=True)
    run = RunDir.open(args.run_dir)
    with console.status("scoring…") as status:
        doc = score_run(run, progress=lambda msg: status.update(f"scoring {msg}"))
    out = write_json_atomic(run.scores_dir / "objective.json", doc)
    scores = dict(run.doc.get("scores") or {})
    scores["objective"] = {
        "path": "scores/objective.json",
        "per_system": doc["per_system"],
        "skipped": doc["skipped"],
    }
    run.update_slot("scores", scores)
    for s in doc["skipped"]:
        print(f"skipped {s['metric']}: {s['reason']}")
    print(f"wrote {out}")
    return 0
