"""Client overhead of bench-http: measured TTFA − injected first-chunk delay, at concurrency 1, 4, 16.

Not a test. Starts the espeak-ng stand-in with a fixed first-chunk delay, warms its cache, then times
requests through ``ttsbench.httpbench.synthesize_once`` exactly as ``bench-http`` does. The overhead
includes the stand-in's own scheduling (it is the floor of what bench-http can resolve on this machine).

    .venv/bin/python benchmarks/client_overhead.py [--requests 200] [--delay-ms 100] [--realtime]

Writes docs/benchmarks/client-overhead.json. --realtime runs server and client under SCHED_FIFO
(`chrt -f 50`, root only) so that other jobs on a small box do not add scheduler delays.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.standin_helpers import standin  # noqa: E402

from ttsbench.httpbench import SpeechTarget, endpoint_url, synthesize_once  # noqa: E402
from ttsbench.metrics import percentile  # noqa: E402
from ttsbench.results import utc_now, write_json_atomic  # noqa: E402
from ttsbench.utterances import Utterance  # noqa: E402

LEVELS = (1, 4, 16)
UTT = Utterance("u07", "Okay.")


async def measure(url: str, delay_ms: float, c: int, n: int) -> list[float]:
    target = SpeechTarget(url=endpoint_url(url))
    limits = httpx.Limits(max_connections=c + 2, max_keepalive_connections=c + 2)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(max(3, c)):  # warm connections and the stand-in's synthesis cache
            await synthesize_once(client, target, UTT)
        sem = asyncio.Semaphore(c)

        async def one(i: int) -> float:
            async with sem:
                m, _ = await synthesize_once(client, target, UTT, c, i)
            if not m.ok or m.ttfa_ms is None:
                raise RuntimeError(f"request failed: {m.error}")
            return m.ttfa_ms - delay_ms

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    distro = (
        platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
        if hasattr(platform, "freedesktop_os_release")
        else platform.system()
    )
    return f"{distro}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="timed requests per concurrency level")
    ap.add_argument("--delay-ms", type=float, default=100.0)
    ap.add_argument("--realtime", action="store_true", help="SCHED_FIFO for stand-in and client (root)")
    ap.add_argument("--machine-note", default="", help="appended to the machine description")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "client-overhead.json"))
    args = ap.parse_args()
    if args.realtime:
        subprocess.run(["chrt", "-f", "-p", "50", str(os.getpid())], check=True, capture_output=True)
    table: dict[str, dict[str, float]] = {}
    with standin("tts", "--first-chunk-delay-ms", str(args.delay_ms), realtime=args.realtime) as url:
        for c in LEVELS:
            over = asyncio.run(measure(url, args.delay_ms, c, args.requests))
            table[str(c)] = {
                "p50_overhead_ms": round(percentile(over, 50), 3),
                "p99_overhead_ms": round(percentile(over, 99), 3),
                "min_overhead_ms": round(min(over), 3),
                "max_overhead_ms": round(max(over), 3),
                "n": len(over),
            }
    print(f"{'concurrency':>11}  {'p50 ms':>8}  {'p99 ms':>8}  {'min ms':>8}  {'max ms':>8}")
    for c, row in table.items():
        print(
            f"{c:>11}  {row['p50_overhead_ms']:8.3f}  {row['p99_overhead_ms']:8.3f}  "
            f"{row['min_overhead_ms']:8.3f}  {row['max_overhead_ms']:8.3f}"
        )
    target_ok = table["1"]["p99_overhead_ms"] <= 1.0
    print(f"target p99 <= 1 ms at c=1: {'met' if target_ok else 'NOT met'}")
    doc = {
        "machine": _machine() + (f"; {args.machine_note}" if args.machine_note else ""),
        "measured_at": utc_now(),
        "method": (
            f"bench-http client (httpx.AsyncClient) against the espeak-ng stand-in on 127.0.0.1 with "
            f"--first-chunk-delay-ms {args.delay_ms:g}; overhead = measured TTFA - injected delay; "
            f"{args.requests} timed requests per level after warm-up; "
            f"{'SCHED_FIFO (chrt -f 50) for server and client' if args.realtime else 'normal priority'}"
        ),
        "target": {"p99_overhead_ms_at_c1": 1.0, "met": target_ok},
        "concurrency": table,
    }
    write_json_atomic(args.out, doc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
