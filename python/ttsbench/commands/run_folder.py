"""``ttsbench run-folder new|merge|gemma|finish|check``: the controller's run folder, driven by the playbooks."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run-folder", help="create a run folder, merge host parts into it, finish and check it")
    rs = p.add_subparsers(dest="run_folder_action", metavar="ACTION", required=True)

    new = rs.add_parser("new", help="make <root>/<kind>-<UTC stamp>/ (never reuses one) and print JSON")
    new.add_argument("--root", required=True, help="runs root folder")
    new.add_argument("--kind", required=True, help="bench-chatterbox | bench-voxtral | failover-drill")
    new.add_argument("--dry-run", action="store_true", help="print the folder it would make, make nothing")
    new.set_defaults(func=_new)

    merge = rs.add_parser("merge", help="merge a part (results.json + wavs/) into the run's results.json")
    merge.add_argument("run_dir")
    merge.add_argument("part_dir", help="folder with the part's results.json and wavs/")
    merge.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set engine fields, e.g. weights=random-init, standin=true (VALUE as JSON if it parses)",
    )
    merge.add_argument("--host", action="append", default=[], metavar="KEY=VALUE", help="set host fields")
    merge.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="set config fields")
    merge.set_defaults(func=_merge)

    gem = rs.add_parser("gemma", help="put gemma_guard drift records (gemma/<host>.json) into results.json")
    gem.add_argument("run_dir")
    gem.add_argument("records", nargs="*", help="drift record files; default: RUN_DIR/gemma/*.json")
    gem.set_defaults(func=_gemma)

    fin = rs.add_parser("finish", help="set finished_at and complete, validate; print JSON")
    fin.add_argument("run_dir")
    fin.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="SYSTEM_ID",
        help="a system the run must hold to count as complete",
    )
    fin.set_defaults(func=_finish)

    chk = rs.add_parser("check", help="schema + every ok WAV decodes to non-silent audio (exit 1 if not)")
    chk.add_argument("run_dir")
    chk.set_defaults(func=_check)


def _new(args: argparse.Namespace) -> int:
    import json

    from ttsbench import runfolder

    if args.dry_run:
        path = runfolder.planned_run_dir(args.root, args.kind)
    else:
        path = runfolder.create_run_dir(args.root, args.kind)
    print(json.dumps({"run_dir": str(path.resolve()), "run_id": path.name, "created": not args.dry_run}))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from ttsbench import runfolder

    ids = runfolder.merge_part(
        args.run_dir,
        args.part_dir,
        engine=runfolder.parse_assignments(args.engine, "--engine"),
        host=runfolder.parse_assignments(args.host, "--host"),
        config=runfolder.parse_assignments(args.config, "--config"),
    )
    print(f"merged {', '.join(ids)} into {args.run_dir}")
    return 0


def _gemma(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ttsbench import runfolder

    files = args.records or sorted(p for p in (Path(args.run_dir) / "gemma").glob("*.json") if p.name != "drift.json")
    rec = runfolder.record_gemma(args.run_dir, files)
    print(json.dumps(rec))
    return 0


def _finish(args: argparse.Namespace) -> int:
    import json

    from ttsbench import runfolder

    print(json.dumps(runfolder.finish(args.run_dir, args.expect)))
    return 0


def _check(args: argparse.Namespace) -> int:
    import sys

    from ttsbench import runfolder

    problems = runfolder.check_run(args.run_dir)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{args.run_dir}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
