"""Benchmark: Chatterbox over HTTP — ``serve-chatterbox`` answering bench-http's client over loopback.

What a phone daemon sees: streamed first audio and RTF per request, the fast path at concurrency 1 and 4
(batched T3 decoding across requests, ``--batch-slots 4``) and upstream (``--fast off``) at concurrency 1.
Same GPU, same process tree, random-init checkpoint (seed 0), the 10 canonical utterances, the production
tuning (cfg 0.3, exaggeration 0.3, temperature 0.6), speech tokens capped per sentence at
``max(25, round(25/14 * chars))`` (``--tokens-per-char``; random-init weights never stop by themselves).

Per level: 2 warm-up requests (excluded), then the timed requests through ``ttsbench.httpbench.run_plan``
(bench-http's own client and metrics): c=1 one request per utterance; c=4 ``--c4-requests`` (default 20, each
utterance twice) with at most 4 in flight. ``first_audio_ms`` = bench-http's ttfa (first audio sample byte
after the WAV header), ``rtf`` = request wall time / audio seconds, ``throughput_audio_s_per_s`` = audio
seconds of all timed requests / wall seconds of the level.

Device run (the checkout travels; wheels in ``.whl/``)::

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:python python benchmarks/chatterbox_http.py --checkpoint /tmp/ckpt --out $OUT/http.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOKENS_PER_CHAR = 25 / 14


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                doc = json.loads(r.read())
                if doc.get("model_loaded"):
                    return doc
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout_s} s")


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        return json.loads(r.read())


async def _level(url: str, utts: list, c: int, n: int) -> dict[str, Any]:
    from ttsbench.httpbench import RunPlan, RunState, SpeechTarget, run_plan

    target = SpeechTarget(url=url + "/v1/audio/speech", response_format="wav", stream="audio", timeout_s=300)
    await run_plan(target, utts, RunPlan(requests=0, warmup=2, concurrency=(c,)), RunState())
    state = RunState()
    t0 = time.perf_counter()
    await run_plan(target, utts, RunPlan(requests=n, warmup=0, concurrency=(c,)), state)
    wall = time.perf_counter() - t0
    rows = state.rows
    ok = [r for r in rows if r.ok]
    audio = sum(r.audio_s or 0.0 for r in ok)

    def med(xs: list) -> float | None:
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    return {
        "requests": len(rows), "ok": len(ok),
        "errors": [r.error for r in rows if not r.ok][:3],
        "p50_first_audio_ms": med([r.ttfa_ms for r in ok]),
        "p90_first_audio_ms": (sorted(r.ttfa_ms for r in ok)[int(0.9 * (len(ok) - 1))] if ok else None),
        "p50_rtf": med([r.rtf for r in ok]),
        "throughput_audio_s_per_s": audio / wall if wall > 0 else None,
        "audio_s": audio, "wall_s": wall,
        "rows": [{"utt": r.utt_id, "ttfa_ms": r.ttfa_ms, "rtf": r.rtf, "audio_s": r.audio_s, "total_ms": r.total_ms}
                 for r in rows],
    }


def run_server(python: str, ckpt: str, port: int, fast: str, levels: list[tuple[int, int]], utts: list,
               extra: list[str], log: Path) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    argv = [python, "-m", "ttsbench", "serve-chatterbox", "--weights", ckpt, "--weights-label", "random-init",
            "--port", str(port), "--fast", fast, "--tokens-per-char", f"{TOKENS_PER_CHAR:.6f}", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=False)
    out: dict[str, Any] = {"argv": argv[1:]}
    try:
        health = _wait_ready(url, proc, 600)
        out["ready_s"] = time.perf_counter() - t0
        out["fast_state"] = health.get("fast")
        for c, n in levels:
            out[f"c{c}"] = asyncio.run(_level(url, utts, c, n))
            print(json.dumps({"fast": fast, "c": c, **{k: v for k, v in out[f"c{c}"].items() if k != "rows"}}),
                  flush=True)
        out["fast_state_after"] = _health(url).get("fast")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="random-init checkpoint dir (built there if missing)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=18772)
    ap.add_argument("--c4-requests", type=int, default=20)
    ap.add_argument("--skip-upstream", action="store_true")
    ap.add_argument("--extra", default="--fast-max-len 1024", help="extra serve-chatterbox flags (fast path)")
    ap.add_argument("--only", default=None, help="comma-separated utterance ids (default: all 10)")
    ap.add_argument("--cap", type=int, default=None, help="--max-new-tokens for both servers (CPU smoke runs)")
    ap.add_argument("--logs", default=None, help="folder for the server logs (default: next to --out)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "python"))
    from ttsbench.atomic import write_json_atomic
    from ttsbench.chatterbox import checkpoint
    from ttsbench.utterances import load_utterances

    t0 = time.perf_counter()
    path, _ = checkpoint.make_random_checkpoint(Path(args.checkpoint), seed=0)
    utts = load_utterances(ROOT / "files" / "utterances.yaml")
    if args.only:
        utts = [u for u in utts if u.utt_id in args.only.split(",")]
    cap = ["--max-new-tokens", str(args.cap)] if args.cap else []
    logs = Path(args.logs or Path(args.out).parent)
    logs.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"tokens_per_char": TOKENS_PER_CHAR, "utterances": len(utts)}
    fast = run_server(sys.executable, str(path), args.port, "on", [(1, len(utts)), (4, args.c4_requests)], utts,
                      [*args.extra.split(), *cap], logs / "server-fast.log")
    doc["fast"] = fast
    doc["c1"] = {k: fast["c1"][k] for k in ("p50_first_audio_ms", "p50_rtf", "throughput_audio_s_per_s")}
    doc["c4"] = {k: fast["c4"][k] for k in ("p50_first_audio_ms", "p50_rtf", "throughput_audio_s_per_s")}
    if fast["c1"]["throughput_audio_s_per_s"]:
        doc["c4"]["throughput_vs_c1"] = fast["c4"]["throughput_audio_s_per_s"] / fast["c1"]["throughput_audio_s_per_s"]
    write_json_atomic(Path(args.out), doc)
    if not args.skip_upstream:
        up = run_server(sys.executable, str(path), args.port + 1, "off", [(1, len(utts))], utts, cap,
                        logs / "server-upstream.log")
        doc["upstream"] = up
        doc["upstream_c1"] = {k: up["c1"][k] for k in ("p50_first_audio_ms", "p50_rtf", "throughput_audio_s_per_s")}
    doc["targets_met"] = {
        "c1_first_audio_le_150ms": (doc["c1"]["p50_first_audio_ms"] or 1e9) <= 150,
        "c1_rtf_le_0.1": (doc["c1"]["p50_rtf"] or 1e9) <= 0.1,
        "c4_first_audio_le_300ms": (doc["c4"]["p50_first_audio_ms"] or 1e9) <= 300,
        "c4_throughput_ge_3x_c1": (doc["c4"].get("throughput_vs_c1") or 0) >= 3,
    }
    doc["wall_s"] = time.perf_counter() - t0
    write_json_atomic(Path(args.out), doc)
    print(json.dumps({k: doc[k] for k in ("c1", "c4", "targets_met")} | {"upstream_c1": doc.get("upstream_c1")}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
