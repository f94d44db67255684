"""``ttsbench report RUN_DIR``: self-contained report.html + report.md for a pull request."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write report.html (self-contained) and report.md into the run folder")
    p.add_argument("run_dir")
    p.add_argument(
        "--embed-audio",
        action="store_true",
        help="embed the labelled clips even before human ratings exist (un-blinds a listening test)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ttsbench.runcheck import load_valid_run
    from ttsbench.scoring.report import build
    from ttsbench.scoring.rundoc import RunDir, write_text_atomic

    load_valid_run(args.run_dir)  # validation first: an invalid run folder writes nothing
    run = RunDir.open(args.run_dir)
    for s in run.system_ids():
        run.clips(s)  # missing WAVs: clear error before anything is written
    html, md = build(run, embed_audio=args.embed_audio)
    write_text_atomic(run.root / "report.html", html)
    write_text_atomic(run.root / "report.md", md)
    print(f"report: {run.root / 'report.html'}")
    print(f"summary: {run.root / 'report.md'}")
    return 0
