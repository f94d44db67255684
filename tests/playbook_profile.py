"""Where a playbook run spent its time: per-task wall time from ansible-runner's job events.

usage: python tests/playbook_profile.py PRIVATE_DATA_DIR_OR_ARTIFACTS [--top N]

Reads every ``job_events/*.json`` below the folder (ansible-runner artifacts; the e2e tests keep them under the
test's tmp folder), pairs each task's ``*_on_start`` event with its end events per host, and prints the slowest
tasks and each playbook run's total. A development aid for keeping the suite fast (issue 12); no test needs it.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path

END_EVENTS = {
    "runner_on_ok",
    "runner_on_failed",
    "runner_on_skipped",
    "runner_on_unreachable",
    "runner_item_on_ok",
    "runner_item_on_failed",
}


def _events(job_events: Path) -> list[dict]:
    out = []
    for f in job_events.glob("*.json"):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return out


def profile(job_events: Path) -> tuple[float, list[tuple[float, str]]]:
    """(run wall seconds, [(seconds, 'host: task (role file:line)')] slowest first)."""
    events = _events(job_events)
    if not events:
        return 0.0, []
    times = [datetime.fromisoformat(e["created"]) for e in events]
    starts: dict[tuple[str, str], datetime] = {}
    spent: dict[str, float] = defaultdict(float)
    for e in sorted(events, key=lambda e: e["counter"]):
        data = e.get("event_data", {})
        key = (data.get("task_uuid", ""), data.get("host", ""))
        if e["event"] == "runner_on_start":
            starts[key] = datetime.fromisoformat(e["created"])
        elif e["event"] in END_EVENTS and key in starts and not e["event"].startswith("runner_item"):
            label = f"{data.get('host')}: {data.get('task')} ({data.get('task_path', '').split('/')[-1]})"
            spent[label] += (datetime.fromisoformat(e["created"]) - starts.pop(key)).total_seconds()
    rows = sorted(((s, t) for t, s in spent.items()), reverse=True)
    return (max(times) - min(times)).total_seconds(), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    for job_events in sorted(args.folder.rglob("job_events")):
        total, rows = profile(job_events)
        print(f"== {job_events.parent}: {total:.1f} s")
        for s, t in rows[: args.top]:
            print(f"  {s:7.1f}  {t}")


if __name__ == "__main__":
    main()
