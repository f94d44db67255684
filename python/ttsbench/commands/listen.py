"""``ttsbench listen RUN_DIR``: blind A/B identity rating in the browser (loopback) or the terminal."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listen", help="blind A/B listening page (127.0.0.1, random port) → scores/ratings.json"
    )
    p.add_argument("run_dir")
    p.add_argument("--systems", help="two system ids, comma-separated (default: the run's two systems)")
    p.add_argument(
        "--seed", type=int, help="seed of the per-item A/B order (default: random, kept on resume)"
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: random free port)")
    p.add_argument("--terminal", action="store_true", help="rate in the terminal instead of a browser")
    p.add_argument(
        "--player",
        choices=["auto", "aplay", "play", "none"],
        default="auto",
        help="terminal mode: how to play clips (none: print paths)",
    )
    p.add_argument("--force", action="store_true", help="rate again, replacing scores/ratings.json")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from ttsbench.runcheck import load_valid_run
    from ttsbench.scoring.listen.session import Session, pick_systems
    from ttsbench.scoring.rundoc import RunDir

    load_valid_run(args.run_dir)  # validation first: an invalid run folder writes nothing
    run = RunDir.open(args.run_dir)
    session = Session(run, pick_systems(run, args.systems), seed=args.seed, force=args.force)
    if session.resumed:
        print(f"resuming: {len(session.answers)}/{len(session.items)} items already rated")
    if args.terminal:
        from ttsbench.scoring.listen.terminal import find_player, run_terminal

        done = run_terminal(session, sys.stdin, lambda s: print(s, flush=True), find_player(args.player))
        return 0 if done else 1

    import threading

    from ttsbench.scoring.listen.server import make_server

    server = make_server(session, args.port)
    host, port = server.server_address[:2]
    print(
        f"listening page: http://{host}:{port}/  (Ctrl-C stops; ratings are saved after every item)",
        flush=True,
    )

    def stop_after_submit() -> None:
        while session.submitted is None:
            threading.Event().wait(0.5)
        threading.Event().wait(2.0)
        server.shutdown()

    threading.Thread(target=stop_after_submit, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    if session.submitted:
        print(f"ratings written to {run.scores_dir / 'ratings.json'}")
        return 0
    return 1
