#!/usr/bin/env python3
"""gemma_guard lease keeper: runs on the CONTROLLER while production is paused and renews the host's lease.

It keeps one session to the host open (the argv after `--`, e.g. `ssh host python3 gemma_watchdog.py renew
--stdin ...`) and writes a line to it every --interval seconds; each line renews the lease on the host. It
reconnects when that session drops, and ends — so the lease expires and the host's watchdog resumes the LLM —
when the controller's ansible-playbook process (--owner) is gone, after --max-s, or on SIGTERM (normal resume).
Standard library only; started detached by roles/gemma_guard, its PID in --pidfile.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def runs(argv: list[str], name: str) -> bool:
    """True when ARGV is the program NAME itself (`NAME ...` or `pythonX NAME ...`), not a process that only
    mentions it (`sh -c "NAME ..."`, `screen NAME ...`: those may outlive it)."""
    names = [os.path.basename(a) for a in argv[:2]]
    return bool(names) and (names[0] == name or (names[0].startswith("python") and names[1:] == [name]))


def owner_pid(name: str) -> int:
    """The outermost ancestor that runs NAME (ansible-playbook's main process: the forked task workers in
    between run the same command line but end after each task)."""
    pid, found = os.getppid(), 0
    while pid > 1:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        if runs([a for a in argv if a], name):
            found = pid
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--max-s", type=float, required=True)
    p.add_argument(
        "--owner",
        default="ansible-playbook",
        help="program whose end ends the keeper (the outermost ancestor that runs it)",
    )
    p.add_argument("--owner-pid", type=int, default=0, help="watch this PID instead of looking for --owner")
    p.add_argument("--pidfile", required=True)
    p.add_argument("session", nargs=argparse.REMAINDER, help="-- argv that renews the lease once per stdin line")
    args = p.parse_args()
    session_argv = args.session[1:] if args.session[:1] == ["--"] else args.session
    owner = args.owner_pid or owner_pid(args.owner)
    if not owner:
        sys.stderr.write(f"no {args.owner} process among my ancestors: refusing to keep a lease nobody owns\n")
        return 2
    Path(args.pidfile).write_text(f"{os.getpid()}\n")
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    deadline = time.monotonic() + args.max_s
    session: subprocess.Popen[str] | None = None
    next_beat = 0.0
    next_connect = 0.0
    try:
        while not stop and alive(owner) and time.monotonic() < deadline:
            if session is None or session.poll() is not None:
                if time.monotonic() < next_connect:  # an unreachable host: one attempt per interval, not a spin
                    time.sleep(min(0.2, args.interval / 4))
                    continue
                if session is not None:
                    sys.stderr.write(f"lease session ended (rc {session.returncode}); reconnecting\n")
                session = subprocess.Popen(session_argv, stdin=subprocess.PIPE, text=True)
                next_connect = time.monotonic() + args.interval
                next_beat = 0.0  # renew at once on a new session
            if time.monotonic() >= next_beat:
                try:
                    session.stdin.write("renew\n")
                    session.stdin.flush()
                except (BrokenPipeError, OSError):
                    session.kill()
                next_beat = time.monotonic() + args.interval
            time.sleep(min(0.2, args.interval / 4))
    finally:
        if session is not None and session.poll() is None:
            with_suppress(session.stdin.close)
            try:
                session.wait(timeout=5)
            except subprocess.TimeoutExpired:
                session.kill()
        with_suppress(lambda: Path(args.pidfile).unlink())
    return 0


def with_suppress(fn) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(OSError):
        fn()


if __name__ == "__main__":
    sys.exit(main())
