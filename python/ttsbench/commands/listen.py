"""``ttsbench listen RUN_DIR``: blind A/B identity rating in the browser (loopback) or the terminal."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listen", help="blind A/B listening page (127.0.0.1, random port) → scores/raters/, scores/ratings.json"
    )
    p.add_argument("run_dir")
    p.add_argument("--systems", help="two system ids, comma-separated (default: the run's two systems)")
    p.add_argument(
        "--rater",
        action="append",
        help="rater id (repeat for several raters, each gets its own page address; default: a random id)",
    )
    p.add_argument(
        "--new-session", action="store_true", help="let a rater who already submitted rate again (newest counts)"
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: random free port)")
    p.add_argument("--terminal", action="store_true", help="rate in the terminal instead of a browser (one rater)")
    p.add_argument(
        "--player",
        choices=["auto", "aplay", "play", "none"],
        default="auto",
        help="terminal mode: how to play clips (none: print the paths and play them yourself)",
    )
    p.add_argument("--force", action="store_true", help="replace imported ratings in scores/ratings.json")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from ttsbench.errors import UserError
    from ttsbench.runcheck import load_valid_run
    from ttsbench.scoring.listen.session import Session, pick_systems
    from ttsbench.scoring.rundoc import RunDir

    load_valid_run(args.run_dir)  # validation first: an invalid run folder writes nothing
    run = RunDir.open(args.run_dir)
    systems = pick_systems(run, args.systems)
    raters = args.rater or [None]
    if len(set(raters)) != len(raters):
        raise UserError("--rater: each rater id once")
    if args.terminal:
        if len(raters) > 1:
            raise UserError("--terminal rates for one rater; run it once per rater")
        from ttsbench.scoring.listen.terminal import find_player, run_terminal

        player = find_player(args.player)
        session = Session(run, systems, rater=raters[0], new_session=args.new_session, force=args.force)
        print(f"rater: {session.rater}")
        done = run_terminal(session, sys.stdin, lambda s: print(s, flush=True), player)
        return 0 if done else 1

    import threading

    from ttsbench.scoring.listen.server import make_server

    sessions = [Session(run, systems, rater=r, new_session=args.new_session, force=args.force) for r in raters]
    server = make_server(sessions, args.port)
    print("blind listening — one address per rater (the part after # is that rater's key; keep it private):")
    for s in sessions:
        print(f"  {s.rater}: {server.url(s)}", flush=True)
    print("Ctrl-C stops; progress is kept while this runs; each rater submits once.", flush=True)

    def stop_after_submit() -> None:
        while not server.all_submitted():
            threading.Event().wait(0.5)
        threading.Event().wait(2.0)
        server.shutdown()

    threading.Thread(target=stop_after_submit, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    done = [s for s in sessions if s.submitted]
    for s in done:
        flag = " (flagged by check trials)" if s.submitted["unreliable"] else ""
        print(f"{s.rater}: {s.submitted['session_file']}{flag}")
    if done:
        print(f"aggregate: {run.scores_dir / 'ratings.json'}")
    return 0 if len(done) == len(sessions) else 1
