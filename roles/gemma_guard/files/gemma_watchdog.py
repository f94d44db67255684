#!/usr/bin/env python3
"""gemma_guard watchdog: brings the paused production LLM back when the controller stops renewing its lease.

Runs on the GPU host with the system python3 (standard library only). Installed by roles/gemma_guard.

  arm      take the host's pause lock (refuses when another live run holds it, takes over a stale one),
           renew the lease and start the watchdog detached (setsid, or under a launcher such as systemd-run)
  run      the watchdog itself: resume production when the lease is older than lease_timeout_s or when
           max_pause_s has passed since arming, whichever comes first
  renew    touch the lease (--stdin: once per line read, until end of input — one SSH session per pause)
  register record a process the run started (--pid, or a --stop argv) so a firing stops it before the LLM starts
  stop-registered  normal resume, first step: stop what the run registered (the watchdog stays armed)
  disarm   normal resume, last step: end the watchdog without firing, stop what is still registered, release
           the lock
  report   print the last firing (state.json) as JSON; --ack marks it as reported

Resume order when it fires: stop everything registered (newest first: SIGTERM, then SIGKILL after a grace
period, or the registered stop argv), then start the LLM, wait for its health URL, retry with exponential
back-off up to start_attempts times; every step goes to watchdog.log and the outcome to state.json.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_BUSY = 75  # EX_TEMPFAIL: another run holds the host
LOCK = "lock.json"
LOCK_GUARD = "lock.guard"
LEASE = "lease"
STATE = "state.json"
LOG = "watchdog.log"
REGISTRY = "run.d"
CONFIG = "watchdog.json"

DEFAULTS: dict[str, Any] = {
    "lease_timeout_s": 60.0,
    "max_pause_s": 3600.0,
    "poll_s": 1.0,
    "start_attempts": 3,
    "backoff_s": 5.0,
    "health_wait_s": 300.0,
    "health_timeout_s": 5.0,
    "start_timeout_s": 600.0,
    "stop_grace_s": 20.0,
    "stop_timeout_s": 120.0,
}


def now() -> float:
    return time.time()


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader sees the old or the new file, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def log(state_dir: Path, message: str) -> None:
    line = f"{iso(now())} [{os.getpid()}] {message}\n"
    try:
        with open(state_dir / LOG, "a") as fh:
            fh.write(line)
    except OSError:
        pass  # a full disk must not stop the LLM from coming back
    # stderr is watchdog.out on the same disk when run detached: a failed flush there must not end the watchdog
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line)
        sys.stderr.flush()


def proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): tells a process from a later one with its PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def alive(pid: int | None, start_time: str | None = None) -> bool:
    if not pid or pid <= 0:
        return False
    st = proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


@contextlib.contextmanager
def guard(state_dir: Path) -> Iterator[None]:
    """Serialises lock changes between runs (flock on a side file; the lock itself is lock.json)."""
    with open(state_dir / LOCK_GUARD, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_owner_alive(lock: dict) -> bool:
    return alive(lock.get("pid"), lock.get("pid_start"))


def lease_age(state_dir: Path) -> float:
    try:
        return now() - (state_dir / LEASE).stat().st_mtime
    except OSError:
        return float("inf")


def touch(path: Path) -> None:
    with open(path, "a"):
        pass
    os.utime(path, None)


# ---------------------------------------------------------------- registry of what the run started


def register(
    state_dir: Path, name: str, pid: int | None, stop: list[str] | None, run_id: str, pidfile: str | None = None
) -> Path:
    """pid: a process that runs now. pidfile: read when stopping (registered before the process starts, so a
    controller killed between starting it and registering it leaves nothing behind). stop: an argv."""
    reg = state_dir / REGISTRY
    reg.mkdir(exist_ok=True)
    entry = {
        "name": name,
        "run_id": run_id,
        "pid": pid,
        "pid_start": proc_start_time(pid) if pid else None,
        "pidfile": pidfile,
        "stop": stop,
        "registered": now(),
    }
    if pid and entry["pid_start"] is None:
        raise SystemExit(f"register: process {pid} ({name}) does not run; register it after it started")
    path = reg / f"{int(now() * 1000):015d}-{name.replace('/', '_')}.json"
    write_json(path, entry)
    return path


def stop_registered(state_dir: Path, grace_s: float, timeout_s: float) -> list[dict]:
    """Stop every registered process, newest first; returns what was done (for the log and the state)."""
    reg = state_dir / REGISTRY
    done: list[dict] = []
    if not reg.is_dir():
        return done
    for path in sorted(reg.glob("*.json"), reverse=True):
        entry = read_json(path) or {}
        name = entry.get("name", path.stem)
        result: dict[str, Any] = {"name": name}
        if entry.get("stop"):
            try:
                rc = subprocess.run(
                    entry["stop"], timeout=timeout_s, check=False, stdin=subprocess.DEVNULL, capture_output=True
                ).returncode
                result.update(how="stop command", rc=rc)
            except (OSError, subprocess.TimeoutExpired) as exc:
                result.update(how="stop command", error=str(exc))
        pid = entry.get("pid")
        if not pid and entry.get("pidfile"):
            pid = pid_from_file(Path(entry["pidfile"]), float(entry.get("registered") or 0), result)
        if pid:
            result["pid"] = pid
            result["outcome"] = kill_process(pid, entry.get("pid_start"), grace_s)
        log(state_dir, f"stopped {name}: {json.dumps(result, sort_keys=True)}")
        done.append(result)
        with contextlib.suppress(OSError):
            path.unlink()
    return done


def pid_from_file(pidfile: Path, registered: float, result: dict[str, Any]) -> int | None:
    """The PID in a file registered before its process started. A file older than the registration was left by an
    earlier process (its PID may belong to an unrelated process by now): not trusted."""
    try:
        mtime = pidfile.stat().st_mtime
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        result["pidfile"] = "absent"
        return None
    if mtime < registered - 1:
        result["pidfile"] = f"older than the registration ({pid}, not started by this run): left alone"
        return None
    return pid


def kill_process(pid: int, pid_start: str | None, grace_s: float) -> str:
    if not alive(pid, pid_start):
        return "not running"
    try:
        pgid = os.getpgid(pid)
    except OSError:
        pgid = None

    def send(sig: int) -> None:
        with contextlib.suppress(OSError):
            # its own group (setsid-started server): stop the whole group, children included
            if pgid == pid:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = now() + grace_s
    while now() < deadline:
        if not alive(pid, pid_start):
            return "terminated"
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = now() + 5
    while now() < deadline and alive(pid, pid_start):
        time.sleep(0.05)
    return "killed" if not alive(pid, pid_start) else "still running"


# ---------------------------------------------------------------- bringing the LLM back


def healthy(url: str, timeout_s: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def start_llm(cfg: dict, state_dir: Path) -> tuple[bool, list[dict]]:
    attempts: list[dict] = []
    if healthy(cfg["health_url"], float(cfg["health_timeout_s"])):  # killed before it was stopped
        log(state_dir, "the LLM answers healthy already: not starting it")
        return True, [{"attempt": 0, "at": iso(now()), "healthy": True, "already": True}]
    for i in range(int(cfg["start_attempts"])):
        attempt: dict[str, Any] = {"attempt": i + 1, "at": iso(now())}
        try:
            res = subprocess.run(
                cfg["start_argv"],
                timeout=cfg["start_timeout_s"],
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            )
            attempt["rc"] = res.returncode
            if res.returncode != 0:
                attempt["stderr"] = res.stderr.strip()[-500:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            attempt["error"] = str(exc)
        deadline = now() + float(cfg["health_wait_s"])
        ok = False
        while attempt.get("rc") == 0:
            if healthy(cfg["health_url"], float(cfg["health_timeout_s"])):
                ok = True
                break
            if now() >= deadline:
                break
            time.sleep(min(1.0, float(cfg["poll_s"])))
        attempt["healthy"] = ok
        log(state_dir, f"start attempt {i + 1}: {json.dumps(attempt, sort_keys=True)}")
        attempts.append(attempt)
        if ok:
            return True, attempts
        if i + 1 < int(cfg["start_attempts"]):
            delay = float(cfg["backoff_s"]) * (2**i)
            attempt["backoff_s"] = delay
            time.sleep(delay)
    return False, attempts


def fire(cfg: dict, state_dir: Path, reason: str) -> dict:
    fired = now()
    log(state_dir, f"firing ({reason}): stopping what run {cfg['run_id']} started, then starting the LLM")
    state: dict[str, Any] = {
        "run_id": cfg["run_id"],
        "reason": reason,
        "fired_at": iso(fired),
        "armed_at": iso(cfg["armed_at"]),
        "outcome": "running",
        "reported": False,
    }
    with contextlib.suppress(OSError):
        write_json(state_dir / STATE, state)
    state["stopped"] = stop_registered(state_dir, float(cfg["stop_grace_s"]), float(cfg["stop_timeout_s"]))
    ok, attempts = start_llm(cfg, state_dir)
    state.update(
        attempts=attempts,
        outcome="resumed" if ok else "failed",
        finished_at=iso(now()),
        seconds=round(now() - fired, 1),
    )
    log(state_dir, f"outcome: {state['outcome']} after {len(attempts)} start attempt(s)")
    with contextlib.suppress(OSError):
        write_json(state_dir / STATE, state)
    return state


# ---------------------------------------------------------------- commands


def load_config(path: Path) -> dict:
    cfg = dict(DEFAULTS)
    cfg.update(json.loads(path.read_text()))
    for key in ("run_id", "start_argv", "health_url", "state_dir"):
        if not cfg.get(key):
            raise SystemExit(f"{path}: '{key}' is missing")
    return cfg


def cmd_arm(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config))
    state_dir = Path(cfg["state_dir"])
    state_dir.mkdir(parents=True, exist_ok=True)
    with guard(state_dir):
        lock = read_json(state_dir / LOCK)
        if lock and lock.get("run_id") != cfg["run_id"] and lock_owner_alive(lock):
            age = now() - float(lock.get("since", now()))
            sys.stderr.write(
                f"another run holds this host: run {lock.get('run_id')} paused the LLM {age:.0f} s ago "
                f"(watchdog pid {lock.get('pid')}); wait for it to finish, or end it with "
                f"`{sys.argv[0]} disarm --state-dir {state_dir} --run-id {lock.get('run_id')}`\n"
            )
            return EXIT_BUSY
        if lock and lock.get("run_id") == cfg["run_id"] and lock_owner_alive(lock):
            lease = state_dir / LEASE
            print(
                json.dumps(
                    {
                        "armed": True,
                        "pid": lock["pid"],
                        "already": True,
                        "run_id": cfg["run_id"],
                        "lease_mtime": lease.stat().st_mtime if lease.exists() else 0.0,
                    }
                )
            )
            return 0
        taken_over = lock.get("run_id") if lock else None
        if taken_over:
            log(state_dir, f"taking over the stale lock of run {taken_over} (watchdog pid {lock.get('pid')} gone)")
        cfg["armed_at"] = now()
        write_json(state_dir / CONFIG, cfg)
        # what this run will start, registered before it starts (entries: name + pidfile and/or stop argv)
        for item in cfg.get("registered", []):
            register(state_dir, item["name"], None, item.get("stop"), cfg["run_id"], item.get("pidfile"))
        touch(state_dir / LEASE)
        launcher = json.loads(args.launcher) if args.launcher else []
        argv = [*launcher, sys.executable, os.path.abspath(__file__), "run", "--config", str(state_dir / CONFIG)]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=open(state_dir / "watchdog.out", "a"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        write_json(
            state_dir / LOCK,
            {"run_id": cfg["run_id"], "since": cfg["armed_at"], "pid": None, "pid_start": None, "starting": proc.pid},
        )
    # the watchdog writes its own PID into the lock (under a launcher like systemd-run it is not proc.pid)
    deadline = now() + 15
    while now() < deadline:
        lock = read_json(state_dir / LOCK) or {}
        if lock.get("pid") and lock_owner_alive(lock):
            print(
                json.dumps(
                    {
                        "armed": True,
                        "pid": lock["pid"],
                        "took_over": taken_over,
                        "run_id": cfg["run_id"],
                        "armed_at": cfg["armed_at"],
                        "lease_mtime": (state_dir / LEASE).stat().st_mtime,
                    }
                )
            )
            return 0
        # without a launcher the watchdog is proc itself; a launcher (systemd-run) returns 0 at once when it worked
        if proc.poll() is not None and (not launcher or proc.returncode != 0):
            break
        time.sleep(0.05)
    sys.stderr.write(f"the watchdog did not start; see {state_dir / 'watchdog.out'}\n")
    with guard(state_dir), contextlib.suppress(OSError):
        (state_dir / LOCK).unlink()
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config))
    state_dir = Path(cfg["state_dir"])
    cfg.setdefault("armed_at", now())
    with guard(state_dir):
        lock = read_json(state_dir / LOCK) or {}
        if lock.get("run_id") != cfg["run_id"]:
            log(state_dir, f"lock belongs to run {lock.get('run_id')}, not {cfg['run_id']}: not watching")
            return 1
        lock.update(pid=os.getpid(), pid_start=proc_start_time(os.getpid()))
        write_json(state_dir / LOCK, lock)
    disarmed = False

    def on_term(_sig: int, _frame: Any) -> None:
        nonlocal disarmed
        disarmed = True

    def ignore(_sig: int, _frame: Any) -> None:
        pass

    # handlers, never SIG_IGN: an ignored signal is inherited by the LLM the watchdog starts (exec resets handlers)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, ignore)
    log(
        state_dir,
        f"watching run {cfg['run_id']}: lease timeout {cfg['lease_timeout_s']} s, max pause {cfg['max_pause_s']} s",
    )
    reason = None
    while not disarmed:
        age = lease_age(state_dir)
        if age > float(cfg["lease_timeout_s"]):
            reason = f"lease not renewed for {age:.1f} s (limit {cfg['lease_timeout_s']} s)"
        elif now() - float(cfg["armed_at"]) >= float(cfg["max_pause_s"]):
            reason = f"max pause {cfg['max_pause_s']} s reached"
        if reason:
            break
        time.sleep(float(cfg["poll_s"]))
    if reason and not disarmed:
        signal.signal(signal.SIGTERM, ignore)  # a late disarm must not cut a resume short
        fire(cfg, state_dir, reason)
    else:
        log(state_dir, f"disarmed by run {cfg['run_id']}")
    release(state_dir, cfg["run_id"], os.getpid())
    return 0


def release(state_dir: Path, run_id: str, pid: int | None = None) -> bool:
    with guard(state_dir):
        lock = read_json(state_dir / LOCK)
        if not lock or lock.get("run_id") != run_id or (pid and lock.get("pid") not in (pid, None)):
            return False
        with contextlib.suppress(OSError):
            (state_dir / LOCK).unlink()
    return True


def cmd_disarm(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    lock = read_json(state_dir / LOCK)
    result: dict[str, Any] = {"run_id": args.run_id, "watchdog": "not armed"}
    if lock and lock.get("run_id") == args.run_id:
        pid, start = lock.get("pid"), lock.get("pid_start")
        if lock_owner_alive(lock):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            deadline = now() + 10 + float(args.wait_s)
            while now() < deadline and alive(pid, start):
                time.sleep(0.05)
            result["watchdog"] = "ended" if not alive(pid, start) else "still running"
        else:
            result["watchdog"] = "gone"
        if result["watchdog"] != "still running":  # a watchdog still firing releases the lock itself
            release(state_dir, args.run_id)
    elif lock:
        result["watchdog"] = f"lock held by run {lock.get('run_id')}: left alone"
        print(json.dumps(result))
        return 0
    state = read_json(state_dir / STATE)
    if state and state.get("run_id") == args.run_id:
        result["fired"] = state
    if args.stop_registered:
        result["stopped"] = stop_registered(state_dir, float(args.grace_s), DEFAULTS["stop_timeout_s"])
    with contextlib.suppress(OSError):
        (state_dir / LEASE).unlink()
    print(json.dumps(result))
    return 0


def cmd_stop_registered(args: argparse.Namespace) -> int:
    print(
        json.dumps({"stopped": stop_registered(Path(args.state_dir), float(args.grace_s), DEFAULTS["stop_timeout_s"])})
    )
    return 0


def cmd_renew(args: argparse.Namespace) -> int:
    lease = Path(args.lease)
    touch(lease)
    if args.stdin:
        for _line in sys.stdin:
            touch(lease)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    pid = args.pid
    if args.pidfile:
        try:
            pid = int(Path(args.pidfile).read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise SystemExit(f"register: cannot read a PID from {args.pidfile}: {exc}") from exc
    stop = json.loads(args.stop) if args.stop else None
    if not pid and not stop and not args.pidfile_at_stop:
        raise SystemExit("register: give --pid, --pidfile, --pidfile-at-stop or --stop")
    path = register(Path(args.state_dir), args.name, pid, stop, args.run_id, args.pidfile_at_stop)
    print(json.dumps({"registered": str(path), "pid": pid}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    state = read_json(state_dir / STATE)
    lock = read_json(state_dir / LOCK)
    out: dict[str, Any] = {"last_firing": state, "lock": None}
    if lock:
        out["lock"] = dict(
            lock, age_s=round(now() - float(lock.get("since", now())), 1), owner_alive=lock_owner_alive(lock)
        )
    print(json.dumps(out))
    if args.ack and state and not state.get("reported") and state.get("outcome") != "running":
        state["reported"] = True
        write_json(state_dir / STATE, state)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("arm")
    a.add_argument("--config", required=True)
    a.add_argument("--launcher", default="", help="JSON argv put before the watchdog (e.g. systemd-run ...)")
    r = sub.add_parser("run")
    r.add_argument("--config", required=True)
    n = sub.add_parser("renew")
    n.add_argument("--lease", required=True)
    n.add_argument("--stdin", action="store_true")
    g = sub.add_parser("register")
    g.add_argument("--state-dir", required=True)
    g.add_argument("--run-id", required=True)
    g.add_argument("--name", required=True)
    g.add_argument("--pid", type=int)
    g.add_argument("--pidfile")
    g.add_argument("--pidfile-at-stop", help="PID file read when stopping (may not exist yet)")
    g.add_argument("--stop", help="JSON argv that stops it")
    d = sub.add_parser("disarm")
    d.add_argument("--state-dir", required=True)
    d.add_argument("--run-id", required=True)
    d.add_argument("--stop-registered", action="store_true")
    d.add_argument("--grace-s", type=float, default=DEFAULTS["stop_grace_s"])
    d.add_argument("--wait-s", type=float, default=0, help="extra wait for a watchdog that is firing")
    t = sub.add_parser("stop-registered", help="stop what the run registered (normal resume, before the LLM)")
    t.add_argument("--state-dir", required=True)
    t.add_argument("--grace-s", type=float, default=DEFAULTS["stop_grace_s"])
    s = sub.add_parser("report")
    s.add_argument("--state-dir", required=True)
    s.add_argument("--ack", action="store_true")
    args = p.parse_args(argv)
    return {
        "arm": cmd_arm,
        "run": cmd_run,
        "renew": cmd_renew,
        "register": cmd_register,
        "disarm": cmd_disarm,
        "stop-registered": cmd_stop_registered,
        "report": cmd_report,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
