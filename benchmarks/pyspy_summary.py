"""Where a profiled server's threads spent their samples: py-spy's raw (collapsed) output, summarized.

    python benchmarks/pyspy_summary.py PROFILE.txt [PROFILE.txt ...] [--seconds S --rate HZ] [--out JSON]

For each file (``py-spy record --threads -f raw``; ``--gil`` runs keep only samples of the thread holding the
GIL) it prints each thread's share of the samples and its top frames (the deepest ttsbench / chatterbox frame
and the leaf). With ``--seconds`` and ``--rate`` it also says how many threads were busy on average (or, for a
``--gil`` file, how much of the time the GIL was held). Not a test; written for issue 20's c=4 profile.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

OWN = ("ttsbench/", "chatterbox/models")


def _thread(frame: str) -> str:
    name = re.sub(r"\(\d+\)", "", frame).strip()
    return name.split(":", 1)[1].strip() if name.startswith("thread") and ":" in name else name


def summarize(path: Path, top: int = 6) -> dict[str, Any]:
    threads: Counter[str] = Counter()
    frames: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        th = _thread(parts[0])
        own = [p for p in parts if any(o in p for o in OWN)]
        key = (own[-1].split(" (")[0] if own else "-") + " > " + parts[-1].split(" (")[0]
        threads[th] += n
        frames[th][key] += n
        total += n
    return {
        "file": path.name,
        "samples": total,
        "threads": [
            {
                "thread": th,
                "samples": n,
                "share": round(n / total, 4) if total else None,
                "top": [{"frame": k, "samples": v} for k, v in frames[th].most_common(top)],
            }
            for th, n in threads.most_common()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profiles", nargs="+", type=Path)
    ap.add_argument("--seconds", type=float, default=None, help="how long the recording ran")
    ap.add_argument("--rate", type=float, default=200.0, help="py-spy's sampling rate (-r)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    docs = []
    for path in args.profiles:
        doc = summarize(path)
        if args.seconds:
            doc["busy_threads_or_gil_held_mean"] = round(doc["samples"] / (args.seconds * args.rate), 3)
        docs.append(doc)
        print(f"{path.name}: {doc['samples']} samples", end="")
        print(f", {doc['busy_threads_or_gil_held_mean']} busy on average" if args.seconds else "")
        for t in doc["threads"][:6]:
            print(f"  {t['samples']:6d} {100 * (t['share'] or 0):5.1f}%  {t['thread']}")
            for f in t["top"][:4]:
                print(f"           {f['samples']:6d}  {f['frame'][:110]}")
    if args.out:
        args.out.write_text(json.dumps(docs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
