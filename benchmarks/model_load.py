"""How long loading a Chatterbox checkpoint takes: upstream ``from_local`` vs ttsbench's load that skips the random
init the checkpoint overwrites (python/ttsbench/chatterbox/loading.py). Every smoke test, in-process benchmark and
server start (a failover's standby included) pays this load.

Prints a table and writes docs/benchmarks/model-load.json with the machine it ran on.
usage: chatterbox-venv python benchmarks/model_load.py CHECKPOINT_DIR [--device cpu] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cpu_machine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch
    from chatterbox.tts import ChatterboxTTS

    sys.path.insert(0, str(ROOT / "python"))
    from ttsbench.chatterbox.loading import load_skipping_random_init

    def upstream() -> object:
        return ChatterboxTTS.from_local(args.checkpoint, args.device)

    def skipping() -> object:
        model, missing = load_skipping_random_init(upstream)
        assert missing == [], missing
        return model

    times: dict[str, list[float]] = {"upstream from_local": [], "random init skipped": []}
    for _ in range(args.repeats):  # alternated, so page cache and allocator state favour neither
        for label, load in (("upstream from_local", upstream), ("random init skipped", skipping)):
            t0 = time.perf_counter()
            model = load()
            times[label].append(time.perf_counter() - t0)
            del model
    rows = [
        {"load": k, "median_s": round(statistics.median(v), 2), "runs_s": [round(x, 2) for x in v]}
        for k, v in times.items()
    ]
    doc = {
        "machine": cpu_machine.machine(torch),
        "device": args.device,
        "checkpoint": str(args.checkpoint),
        "rows": rows,
    }
    for r in rows:
        print(f"{r['load']:<22} median {r['median_s']:6.2f} s   runs {r['runs_s']}")
    cpu_machine.write("model-load", doc)


if __name__ == "__main__":
    main()
