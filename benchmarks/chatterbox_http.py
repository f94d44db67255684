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

Device run (the checkout travels; wheels in ``.whl/``, built by ``tools/device-wheels``, carried)::

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:python python benchmarks/chatterbox_http.py --checkpoint /tmp/ckpt --out $OUT/http.json
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable
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


# a level's headline numbers, as printed and summarised: first audio, RTF, throughput, and whether the streams
# played without gaps (a listener playing from the first audio on)
SUMMARY_KEYS = ("p50_first_audio_ms", "p50_rtf", "throughput_audio_s_per_s", "p90_stall_ms", "stalled_requests")


async def _level(url: str, utts: list, c: int, n: int, timeout_s: float = 300.0) -> dict[str, Any]:
    from ttsbench.httpbench import RunPlan, RunState, SpeechTarget, run_plan
    from ttsbench.metrics import percentile

    target = SpeechTarget(url=url + "/v1/audio/speech", response_format="wav", stream="audio", timeout_s=timeout_s)
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
        "requests": len(rows),
        "ok": len(ok),
        "errors": [r.error for r in rows if not r.ok][:3],
        "p50_first_audio_ms": med([r.ttfa_ms for r in ok]),
        "p90_first_audio_ms": percentile([r.ttfa_ms for r in ok], 90),
        "p50_rtf": med([r.rtf for r in ok]),
        "throughput_audio_s_per_s": audio / wall if wall > 0 else None,
        # a listener playing each stream from its first audio on: the time playback waited for audio
        "p90_stall_ms": percentile([r.stall_ms for r in ok], 90),
        "max_stall_ms": max((r.stall_ms or 0.0 for r in ok), default=None),
        "stalled_requests": sum((r.stall_ms or 0.0) >= 1.0 for r in ok),
        "audio_s": audio,
        "wall_s": wall,
        "rows": [
            {
                "utt": r.utt_id,
                "ttfa_ms": r.ttfa_ms,
                "rtf": r.rtf,
                "audio_s": r.audio_s,
                "total_ms": r.total_ms,
                "stall_ms": r.stall_ms,
            }
            for r in rows
        ],
    }


def run_server(
    python: str,
    ckpt: str,
    ref: Path,
    port: int,
    fast: str,
    levels: list[tuple[int, int]],
    utts: list,
    extra: list[str],
    log: Path,
    profile_dir: Path | None = None,
    timeout_s: float = 600.0,
    ready_timeout_s: float | None = None,
) -> dict[str, Any]:
    """Start ``serve-chatterbox``, run each (concurrency, requests) level against it, stop it. ``timeout_s``: the
    longest wait for any one request, and for it to get ready unless ``ready_timeout_s`` says otherwise. Should
    it not get ready, a level fail or a request fail, the server's stacks (py-spy dump, where installed) go to
    its log before it is stopped."""
    url = f"http://127.0.0.1:{port}"
    argv = [
        python,
        "-m",
        "ttsbench",
        "serve-chatterbox",
        "--weights",
        ckpt,
        "--weights-label",
        "random-init",
        "--reference",
        str(ref),
        "--port",
        str(port),
        "--fast",
        fast,
        "--tokens-per-char",
        f"{TOKENS_PER_CHAR:.6f}",
        *extra,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    t0 = time.perf_counter()
    log.write_text("")
    with log.open("a") as fh:  # O_APPEND: the server's lines and the stack dumps appended here never overwrite
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=False)
    out: dict[str, Any] = {"argv": argv[1:]}
    try:
        health = _wait_ready(url, proc, ready_timeout_s or timeout_s)
        out["ready_s"] = time.perf_counter() - t0
        out["fast_state"] = health.get("fast")
        seen: set[float] = set()
        for c, n in levels:
            out[f"c{c}"] = asyncio.run(_level(url, utts, c, n, timeout_s))
            out[f"c{c}"]["vocoder"] = vocoder_level(_health(url).get("fast") or {}, seen)
            if out[f"c{c}"]["errors"]:
                _dump_stacks(proc, log)
            print(
                json.dumps({"fast": fast, "c": c, **{k: v for k, v in out[f"c{c}"].items() if k != "rows"}}), flush=True
            )
            if profile_dir is not None and c > 1:
                out[f"c{c}_profile"] = profile_level(url, utts, c, n, proc.pid, profile_dir / f"{log.stem}-c{c}")
        out["fast_state_after"] = _health(url).get("fast")
    except BaseException:
        _dump_stacks(proc, log)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return out


def vocoder_level(fast_state: dict[str, Any], seen: set[float]) -> dict[str, Any] | None:
    """The vocoder thread's calls of one level, from the server's trace (``fast.vocoder.trace``; the calls
    not in ``seen``, which is updated): calls per batch size, nested (preempted) calls, and the p50/p90/max
    wait of first chunks and of later chunks from submission to their call's start. None without a trace."""
    from ttsbench.metrics import ms_dist

    vocoder = fast_state.get("vocoder") or {}
    trace = vocoder.get("trace")
    if trace is None:
        return None
    calls = [c for c in trace if c["t_ms"] not in seen]
    seen.update(c["t_ms"] for c in calls)
    waits: dict[str, list[float]] = {"first": [], "later": []}
    decode: list[float] = []  # a first chunk's request: decoding up to the chunk's submission
    batches: dict[str, int] = {}
    for c in calls:
        batches[str(c["b"])] = batches.get(str(c["b"]), 0) + 1
        # a call's rows: its first chunks come first in the batch (the head is the most urgent job)
        for i, w in enumerate(c["wait_ms"]):
            waits["first" if i < c["first"] else "later"].append(w)
        decode += [d for d in c.get("decode_ms", []) if d is not None]

    return {
        "calls": len(calls),
        "batches": dict(sorted(batches.items())),
        "nested": sum(bool(c.get("nested")) for c in calls),
        "call_ms_p50": round(statistics.median([c["ms"] for c in calls]), 1) if calls else None,
        "wait_ms": {k: ms_dist(v) for k, v in waits.items()},
        "first_chunk_decode_ms": ms_dist(decode),
        # calls of a first chunk, by batch size: what the vocoding itself took
        "first_call_ms_p50": round(statistics.median([c["ms"] for c in calls if c["first"]]), 1)
        if any(c["first"] for c in calls)
        else None,
        "later_call_ms_p50": round(statistics.median([c["ms"] for c in calls if not c["first"]]), 1)
        if any(not c["first"] for c in calls)
        else None,
        # the server keeps its last trace_max calls: when full, the level's earliest calls may be lost
        "trace_full": len(trace) >= vocoder.get("trace_max", len(trace) + 1),
    }


def run_ab(doc: dict[str, Any], name: str, flags: str, run: Callable[[], dict[str, Any]]) -> None:
    """One A/B server (``--ab NAME=FLAGS``) into ``doc["ab"][name]``: its c1/c4 summary and the server's record,
    or, should the server not start or a level fail, the error, so that the variants after it still run and
    the numbers measured before it stay (on 2026-12-07 a ``--s3-compile on`` server not ready within the
    timeout ended the whole run)."""
    entry: dict[str, Any] = {"flags": flags}
    doc.setdefault("ab", {})[name] = entry
    try:
        var = run()
    except Exception as exc:  # recorded in the document; the run goes on
        entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
        print(json.dumps({"ab": name, "error": entry["error"]}), flush=True)
        return
    summary = {c: {k: var[c].get(k) for k in SUMMARY_KEYS} for c in ("c1", "c4")}
    if summary["c1"]["throughput_audio_s_per_s"]:
        summary["c4"]["throughput_vs_c1"] = (
            summary["c4"]["throughput_audio_s_per_s"] / summary["c1"]["throughput_audio_s_per_s"]
        )
    entry.update(summary)
    entry["server"] = var


def machine() -> dict[str, Any]:
    """The machine a document was measured on: GPU, torch, CUDA, Python, CPU count."""
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "arch": platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info["gpu"] = props.name
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["sm"] = f"{props.major}{props.minor}"
    except ImportError:  # pragma: no cover - the benchmark needs torch anyway
        info["torch"] = None
    return info


def find_py_spy() -> str | None:
    """py-spy on PATH, else in the ``bin`` beside an import path entry: ``pip install --target /tmp/site`` (the
    device runs' wheels) puts the binary in ``/tmp/site/bin``, off PATH (so on 2026-12-07 a hung level's server
    left no stacks)."""
    import shutil

    found = shutil.which("py-spy")
    if found:
        return found
    for entry in sys.path:
        cand = Path(entry or ".") / "bin" / "py-spy"
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def _dump_stacks(proc: subprocess.Popen, log: Path) -> None:
    """Append the live server's stacks to its log: its own (SIGUSR1: faulthandler, needs no ptrace rights), then
    py-spy's Python and native stacks where py-spy is found (a thread stuck in a CUDA call shows in the native
    one); says so in the log where py-spy is missing."""
    if proc.poll() is not None:
        return
    with log.open("a") as fh:
        fh.write("\n--- SIGUSR1: the server's own stack dump (the run failed or timed out here) ---\n")
    proc.send_signal(signal.SIGUSR1)
    time.sleep(2.0)  # the server writes the dump to the same log
    spy = find_py_spy()
    if spy is None:
        with log.open("a") as fh:
            fh.write("\n--- no py-spy found (PATH, <import path>/bin): no native stacks ---\n")
        return
    for flags in ([], ["--native"]):
        with log.open("a") as fh:
            fh.write(f"\n--- py-spy dump {' '.join(flags)} ---\n")
            fh.flush()
            try:
                subprocess.run(
                    [spy, "dump", *flags, "--pid", str(proc.pid)], stdout=fh, stderr=subprocess.STDOUT, timeout=60
                )
            except subprocess.TimeoutExpired:
                fh.write("(py-spy dump timed out after 60 s)\n")


def profile_level(url: str, utts: list, c: int, n: int, pid: int, stem: Path) -> dict[str, Any]:
    """The level again, twice, with the server watched: py-spy samples of the threads holding the GIL, then
    of every thread that is not idle (collapsed stacks, ``<stem>-gil.txt`` / ``<stem>-threads.txt``), and the
    GPU's utilization from nvidia-smi every 50 ms. Says where a level's time goes: GIL-bound Python, GPU busy,
    or neither (waiting)."""
    import shutil

    out: dict[str, Any] = {}
    for mode, flags in (("gil", ["--gil"]), ("threads", [])):
        spy = find_py_spy()
        smi = shutil.which("nvidia-smi")
        rec = None
        if spy:
            rec = subprocess.Popen(
                [
                    spy,
                    "record",
                    "-p",
                    str(pid),
                    "--threads",
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    f"{stem}-{mode}.txt",
                    "--nonblocking",
                    *flags,
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(f"{stem}-{mode}.log", "w"),  # noqa: SIM115 - closed with the process
            )
        util = None
        if smi:
            util = subprocess.Popen(
                [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"],
                stdout=subprocess.PIPE,
                text=True,
            )
        time.sleep(1.0)
        lvl = asyncio.run(_level(url, utts, c, n))
        if util is not None:
            util.terminate()
            samples = [float(x) for x in (util.communicate()[0] or "").split() if x.replace(".", "").isdigit()]
            lvl["gpu_util_mean"] = statistics.mean(samples) if samples else None
            lvl["gpu_util_samples"] = len(samples)
        if rec is not None:
            rec.send_signal(signal.SIGINT)
            try:
                rec.wait(30)
            except subprocess.TimeoutExpired:
                rec.kill()
        out[mode] = {k: v for k, v in lvl.items() if k != "rows"}
        print(json.dumps({"profile": mode, "c": c, **out[mode]}), flush=True)
    return out


def s3_section(ckpt: str, reps: int = 10, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """In-process S3Gen per chunk with each HiFT mode (fast_hift.MODES), nothing else on the GPU: the vocode of
    the first-chunk shape (12 tokens) and the steady shape (8 + 50 tokens, batch 1 and 4) — whole call, flow
    (encoder + 10 CFM steps) and HiFT apart — and each mode's samples against upstream's for the same seed
    (max_abs; 0 = bit-equal). Runs on the CPU too (a smoke run of this code)."""
    import torch
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox import fast_hift
    from ttsbench.chatterbox.fast import FastChatterbox

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: a smoke run of this code
    model = ChatterboxTTS.from_local(ckpt, dev.type)
    fc = FastChatterbox(model, max_len=256)
    fc.euler.max_cached = 12
    fc.s3graphs.widen(12)
    s3 = model.s3gen
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    shapes = {
        "n12_b1": torch.randint(0, 6561, (1, 12), generator=g),
        "n58_b1": torch.randint(0, 6561, (1, 58), generator=g),
        "n58_b4": torch.randint(0, 6561, (4, 58), generator=g),
    }
    shapes = {k: v.to(dev) for k, v in shapes.items()}
    out = {} if out is None else out  # filled as it goes: a watchdog (guarded) writes what is there
    out |= {"reps": reps, "modes": {}}
    ref: dict[str, Any] = {}
    graphed = None

    for mode in fast_hift.MODES:
        if mode == "sync-free":
            graphed = fast_hift.GraphedHift(s3.mel2wav, dev, max_cached=12)  # installs sync-free in place
        fc.s3graphs.hift = graphed if mode == "graph" else None
        res: dict[str, Any] = {}
        out["modes"][mode] = res
        for name, toks in shapes.items():
            for _ in range(3):  # graphs: first sight warms up, the second captures
                fc.vocode(toks)
            torch.manual_seed(0)
            wav = fc.vocode(toks)
            sync()
            if mode == "upstream":
                ref[name] = wav
            row: dict[str, Any] = {"max_abs_vs_upstream": float((wav - ref[name]).abs().max())}
            times, flow_t, hift_t = [], [], []
            for _ in range(reps):
                sync()
                t0 = time.perf_counter()
                fc.vocode(toks)
                sync()
                times.append(time.perf_counter() - t0)
                f, h = flow_and_hift_s(fc, toks)
                flow_t.append(f)
                hift_t.append(h)
            row |= {
                "ms_per_call": statistics.median(times) * 1000,
                "flow_ms": statistics.median(flow_t) * 1000,
                "hift_ms": statistics.median(hift_t) * 1000,
            }
            res[name] = row
        res["graphs"] = graphed.state() if graphed is not None and mode == "graph" else None
    audio = next(iter(ref.values()))[0].float().cpu().numpy()
    wm = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fc._watermark(audio)
        wm.append(time.perf_counter() - t0)
    out["watermark_ms_first_chunk"] = statistics.median(wm) * 1000
    return out


def flow_and_hift_s(fc: Any, toks: Any) -> tuple[float, float]:
    """One S3Gen call's two halves timed apart, with the graphs ``fc.vocode`` installs: flow (encoder + CFM), HiFT."""
    import torch

    s3 = fc.model.s3gen
    sync = torch.cuda.synchronize if fc.device.type == "cuda" else (lambda: None)
    s3.flow.decoder.solve_euler = fc.euler
    try:
        with fc.s3graphs.installed():
            sync()
            t0 = time.perf_counter()
            mel = s3.flow_inference(toks, ref_dict=fc.model.conds.gen, finalize=True)
            sync()
            t1 = time.perf_counter()
            s3.hift_inference(mel.to(s3.dtype), None)
            sync()
            return t1 - t0, time.perf_counter() - t1
    finally:
        s3.flow.decoder.__dict__.pop("solve_euler", None)


def record(doc: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    """``doc[key] = fn()``; a failure is recorded there (with its traceback) and the run goes on."""
    try:
        doc[key] = fn()
    except Exception as exc:
        doc[key] = {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-2000:]}


def guarded(doc: dict[str, Any], key: str, fn: Callable[[dict[str, Any]], Any], out: Path, timeout_s: float) -> None:
    """:func:`record` under a watchdog. ``fn(partial)`` may fill ``partial`` as it goes. A section still running
    after ``timeout_s`` — a hung CUDA call cannot be interrupted from Python — has every thread's stack printed
    to stderr and the document written with what ``partial`` holds by then, and the process exits 3: the later
    sections are lost, not the numbers so far nor where it hung. (Measured need: a probe whose
    ``torch.cuda.synchronize`` never returned took two whole device runs on 2026-12-07 with nothing written.)"""
    from ttsbench.atomic import write_json_atomic

    partial: dict[str, Any] = {}

    def expire() -> None:
        print(f"section {key!r} still running after {timeout_s:.0f} s; stacks:", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        doc[key] = {**partial, "error": f"timed out after {timeout_s:.0f} s (every thread's stack is in the log)"}
        write_json_atomic(out, doc)
        os._exit(3)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(timeout_s + 60, exit=True)  # should the timer thread never get the GIL
    try:
        record(doc, key, lambda: fn(partial))
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
    write_json_atomic(out, doc)


def compile_section(ckpt: str, reps: int) -> dict[str, Any]:
    """The compile probe alone (its own model load): see :func:`_compile_probe`."""
    import torch
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.fast import FastChatterbox

    model = ChatterboxTTS.from_local(ckpt, "cuda")
    fc = FastChatterbox(model, max_len=256)
    g = torch.Generator().manual_seed(0)
    shapes = {
        "n12_b1": torch.randint(0, 6561, (1, 12), generator=g).cuda(),
        "n58_b1": torch.randint(0, 6561, (1, 58), generator=g).cuda(),
    }
    return _compile_probe(fc, shapes, reps)


def _compile_probe(fc: Any, shapes: dict[str, Any], reps: int) -> dict[str, Any]:
    """The flow per shape with the eager estimator in the step graphs, then with the served opt-in
    (fast_s3.CompiledEstimator: torch.compile, dynamic shapes, checked against eager) — time and mel distance."""
    import torch

    from ttsbench.chatterbox.fast_s3 import CompiledEstimator, seeded, sync_free_chunk_mask

    s3 = fc.model.s3gen
    cfm = s3.flow.decoder
    sync = torch.cuda.synchronize

    def mel_and_ms(toks: Any) -> tuple[Any, float]:
        s3.flow.decoder.solve_euler = fc.euler
        try:
            with sync_free_chunk_mask(), fc.s3graphs.installed():
                for _ in range(3):
                    s3.flow_inference(toks, ref_dict=fc.model.conds.gen, finalize=True)
                times = []
                for _ in range(reps):
                    sync()
                    t0 = time.perf_counter()
                    s3.flow_inference(toks, ref_dict=fc.model.conds.gen, finalize=True)
                    sync()
                    times.append(time.perf_counter() - t0)
                # the mel compared: same noise for eager and compiled (the CFM starts from torch.randn_like)
                mel = seeded(lambda: s3.flow_inference(toks, ref_dict=fc.model.conds.gen, finalize=True))
            return mel.clone(), statistics.median(times) * 1000
        finally:
            s3.flow.decoder.__dict__.pop("solve_euler", None)

    eager = {k: mel_and_ms(t) for k, t in shapes.items()}
    first = next(iter(shapes.values()))
    ce = CompiledEstimator(cfm)
    t0 = time.perf_counter()
    ce.check(lambda: s3.flow_inference(first, ref_dict=fc.model.conds.gen, finalize=True))
    out: dict[str, Any] = {"check": ce.state(), "check_s": time.perf_counter() - t0}
    if not ce.active:
        return out
    # A fresh step-graph cache for the compiled estimator, the eager one kept alive: destroying a graph frees the
    # cuBLAS workspace that the other graphs captured on the same stream still use (pytorch/pytorch#193402).
    eager_graphs = fc.euler
    fc.euler = type(eager_graphs)(cfm, max_cached=eager_graphs.max_cached)
    try:
        for k, toks in shapes.items():
            t0 = time.perf_counter()
            mel, ms = mel_and_ms(toks)
            err = (mel - eager[k][0]).float()
            out[k] = {
                "flow_ms_graphed": eager[k][1],
                "flow_ms_compiled": ms,
                "first_calls_s": time.perf_counter() - t0,
                "mel_max_abs": float(err.abs().max()),
                "mel_rel_rms": float(err.pow(2).mean().sqrt() / eager[k][0].float().pow(2).mean().sqrt()),
            }
        out["euler_error"] = fc.euler.error
    finally:
        cfm.estimator = ce.eager
        fc.euler = eager_graphs  # the compiled graphs go when this returns: nothing is replayed after that
    return out


def t3_section(ckpt: str, utts: list, slots: int = 4, steps: int = 150) -> dict[str, Any]:
    """In-process T3 on this GPU, same run: upstream ``T3.inference`` vs the fast path's one-request decode vs
    ``slots`` requests decoded together (aggregate tokens/s), plus greedy tokens batched vs alone."""
    import threading

    import torch
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox import fast_equiv as fe
    from ttsbench.chatterbox.fast import FastChatterbox
    from ttsbench.chatterbox.fast_batch import BatchT3, T3Scheduler
    from ttsbench.chatterbox.fast_t3 import FastT3, SamplingParams

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = ChatterboxTTS.from_local(ckpt, dev)
    p = SamplingParams(temperature=0.6, cfg_weight=0.3)
    greedy = SamplingParams(temperature=0.6, cfg_weight=0.3, greedy=True)
    fc = FastChatterbox(model, max_len=1024)
    fc._prepare(0.3)
    conds = model.conds.t3
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    picks = [u for u in utts if u.utt_id in ("u02", "u10", "u05")] or utts[:2]
    fc.t3.capture_all()
    # the same decoder with the eager decode attention, for the fused kernel's A/B (fast_attn.py)
    eager_attn = FastT3(model.t3, max_len=1024, attn=False)
    eager_attn.capture_all()
    out: dict[str, Any] = {
        "steps": steps,
        "utterances": [u.utt_id for u in picks],
        "fused_attn": fc.t3.fused_attn,
        "attn_error": fc.t3.attn_error,
    }
    up, fa, fe_tok = [], [], []
    for u in picks:
        tt = fc.text_tokens(u.text)
        torch.manual_seed(0)
        fe.upstream_tokens(model, tt, 8, p)  # warm
        sync()
        t0 = time.perf_counter()
        n = fe.upstream_tokens(model, tt, steps, p).numel()
        sync()
        up.append(n / (time.perf_counter() - t0))
        fc.t3.generate(conds, tt, 8, p)
        sync()
        t0 = time.perf_counter()
        n = fc.t3.generate(conds, tt, steps, p).numel()
        sync()
        fa.append(n / (time.perf_counter() - t0))
        eager_attn.generate(conds, tt, 8, p)
        sync()
        t0 = time.perf_counter()
        n = eager_attn.generate(conds, tt, steps, p).numel()
        sync()
        fe_tok.append(n / (time.perf_counter() - t0))
    out["upstream_tok_s"] = statistics.median(up)
    out["fast_tok_s"] = statistics.median(fa)
    out["fast_vs_upstream"] = out["fast_tok_s"] / out["upstream_tok_s"]
    # a request's path to its first chunk's tokens (c=1, in-process): the prefix embeddings (upstream's
    # conditioning encoder + text embeddings), then prefill + 12 decode steps + the one read-back
    embeds_ms, first12_ms = [], []
    for u in picks:
        tt = fc.text_tokens(u.text)
        for _ in range(2):  # the second is timed
            sync()
            t0 = time.perf_counter()
            fc.t3.prefix_embeds(conds, tt, p.cfg_weight)
            sync()
            t1 = time.perf_counter()
            it = fc.t3.iter_tokens(conds, tt, steps, p, chunk_sizes=(12,))
            next(it)
            t2 = time.perf_counter()
            it.close()
        embeds_ms.append((t1 - t0) * 1e3)
        first12_ms.append((t2 - t1) * 1e3)
    out["prefix_embeds_ms"] = statistics.median(embeds_ms)
    out["first_12_tokens_ms"] = statistics.median(first12_ms)
    out["prefill_ms_estimate"] = out["first_12_tokens_ms"] - out["prefix_embeds_ms"] - 12e3 / statistics.median(fa)
    out["fast_eager_attn_tok_s"] = statistics.median(fe_tok)
    out["fused_vs_eager_attn"] = out["fast_tok_s"] / out["fast_eager_attn_tok_s"]
    # equivalence of the decoder measured above against upstream (teacher-forced logits, greedy tokens)
    u = picks[0]
    forced = fc.t3.generate(conds, fc.text_tokens(u.text), 100, p).view(-1)
    forced = forced[forced < fc.t3.stop_token].tolist()
    out["equivalence"] = {
        "utt": u.utt_id,
        "logits_vs_upstream": fe.logits_check(model, fc.t3, u.text, forced, cfg_weight=p.cfg_weight),
        "logits_eager_attn_vs_upstream": fe.logits_check(model, eager_attn, u.text, forced, cfg_weight=p.cfg_weight),
        "greedy_vs_upstream": fe.greedy_check(model, fc.t3, u.text, 100, p),
    }
    # the two attention forms against each other, decode steps only (the worst row above can be the prefill's,
    # which both share)
    tt = fc.text_tokens(u.text)
    forced_t = torch.tensor(forced)
    a = fc.t3.teacher_forced_logits(conds, tt, forced_t, p.cfg_weight)[1:]
    b = eager_attn.teacher_forced_logits(conds, tt, forced_t, p.cfg_weight)[1:]
    out["equivalence"]["decode_logits_fused_vs_eager"] = fe.rel_err(a.cpu(), b.cpu())
    del eager_attn
    batch = BatchT3(fc.t3, slots=slots)
    out["batch_graphs"] = batch.capture_all(1024)
    out["batch_graph_error"] = batch.graph_error
    sched = T3Scheduler(batch, poll=4)
    try:

        def run(k: int, params: SamplingParams, res: dict) -> None:
            u = picks[k % len(picks)]
            res[k] = torch.cat(list(sched.tokens(conds, fc.text_tokens(u.text), steps, params))).tolist()

        for params, key in ((p, "sampled"), (greedy, "greedy")):
            res: dict = {}
            threads = [threading.Thread(target=run, args=(k, params, res)) for k in range(slots)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            out[f"batch{slots}_{key}_aggregate_tok_s"] = sum(len(v) for v in res.values()) / wall
            if key == "greedy":
                same = []
                for k in range(slots):
                    u = picks[k % len(picks)]
                    alone = fc.t3.generate(conds, fc.text_tokens(u.text), steps, greedy).view(-1).tolist()
                    m = min(len(alone), len(res[k]))
                    first = next((i for i in range(m) if alone[i] != res[k][i]), None)
                    same.append(
                        {
                            "utt": u.utt_id,
                            "steps": m,
                            "first_diff": first,
                            "match": sum(a == b for a, b in zip(alone, res[k], strict=False)) / max(m, 1),
                        }
                    )
                out["greedy_batched_vs_alone"] = same
        out["scheduler_width_steps"] = dict(sched.width_steps)
        # c=1 through the scheduler (the server's T3 path): submit -> the first 12 tokens delivered
        sched_ms = []
        for u in picks:
            tt = fc.text_tokens(u.text)
            for _ in range(2):  # the second is timed
                t0 = time.perf_counter()
                got = 0
                with sched.submit(conds, tt, steps, p) as ts:
                    for part in ts:
                        got += len(part)
                        if got >= 12:
                            break
                t1 = time.perf_counter()
            sched_ms.append((t1 - t0) * 1e3)
        out["scheduler_first_12_tokens_ms"] = statistics.median(sched_ms)
    finally:
        sched.close()
    out["batch_aggregate_vs_upstream"] = out[f"batch{slots}_sampled_aggregate_tok_s"] / out["upstream_tok_s"]
    record(out, "vocoder", lambda: vocoder_section(fc, p, slots))  # a failure keeps the T3 numbers
    record(out, "stream_path", lambda: stream_path_section(fc, p, picks, slots, steps))
    return out


def stream_path_section(fc: Any, params: Any, picks: list, slots: int, steps: int = 150) -> dict[str, Any]:
    """The server's streaming path in-process, without HTTP (``enable_batching`` as serve-chatterbox sets it up,
    ``stream(..., tokens=scheduler.tokens)``), c=1: first chunk time, and the vocoder trace's split of it
    (decoding up to the first chunk, then its vocoder call). ``marks_ms``: host times from the stream's start
    (p50 over the requests) at which the request thread asked for tokens (text tokenized), the scheduler
    thread began and ended the prefill launch and each poll of steps (ending in its host sync), and the request
    thread received each part of tokens: where the path to the first chunk spends the time that the bare
    scheduler (``scheduler_first_12_tokens_ms``) does not."""
    from ttsbench.metrics import ms_dist

    fc.enable_batching(slots, vocoder_preempt=True, vocoder_yield=True)
    fc.freeze_graphs()
    first: list[float] = []
    runs: list[dict[str, Any]] = []
    marks: dict[str, Any] = {}
    sched, batch = fc.scheduler, fc.batch
    admit, run_steps = batch.admit, sched._run_steps

    def timed_admit(*a: Any, **k: Any) -> Any:  # instance attributes shadow the methods: a probe, not a patch
        marks.setdefault("admit", []).append(time.perf_counter())
        try:
            return admit(*a, **k)
        finally:
            marks["admit"].append(time.perf_counter())

    def timed_steps() -> None:
        t = time.perf_counter()
        run_steps()
        marks.setdefault("polls", []).append((t, time.perf_counter()))

    def tokens(*a: Any, **k: Any) -> Any:
        marks["tokens_called"] = time.perf_counter()
        for part in sched.tokens(*a, **k):
            marks.setdefault("parts", []).append((time.perf_counter(), len(part)))
            yield part

    batch.admit, sched._run_steps = timed_admit, timed_steps
    try:
        for u in picks:
            for _ in range(2):
                marks.clear()
                it = fc.stream(u.text, params, max_new_tokens=steps, tokens=tokens)
                t0 = time.perf_counter()
                next(it)
                t1 = time.perf_counter()
                first.append((t1 - t0) * 1e3)
                m = dict(marks)  # the marks up to the first chunk

                def rel(t: float, t0: float = t0) -> float:
                    return round((t - t0) * 1e3, 2)

                got, part12 = 0, None
                for t, n in m.get("parts", []):
                    got += n
                    if got >= 12 and part12 is None:
                        part12 = rel(t)
                runs.append(
                    {
                        "tokens_called": rel(m["tokens_called"]) if "tokens_called" in m else None,
                        "admit": [rel(t) for t in m.get("admit", [])[:2]],
                        "polls": [[rel(a), rel(b)] for a, b in m.get("polls", [])[:4]],
                        "parts": [rel(t) for t, _ in m.get("parts", [])[:4]],
                        "part_with_12th_token": part12,
                        "first_chunk": rel(t1),
                    }
                )
                for _ in it:
                    pass
        trace = fc.vocoder.state()["trace"]
        firsts = [c for c in trace if c["first"]]

        def p50(get: Callable[[dict], Any]) -> float | None:
            xs = [v for r in runs if (v := get(r)) is not None]
            return statistics.median(xs) if xs else None

        return {
            "hift": fc.hift,
            "first_chunk_ms": ms_dist(first),
            "first_chunk_decode_ms": ms_dist([d for c in firsts for d in c["decode_ms"] if d is not None]),
            "first_call_ms": ms_dist([c["ms"] for c in firsts]),
            "marks_ms": {
                "tokens_called": p50(lambda r: r["tokens_called"]),
                "admit_start": p50(lambda r: r["admit"][0] if r["admit"] else None),
                "admit_end": p50(lambda r: r["admit"][1] if len(r["admit"]) > 1 else None),
                **{
                    f"poll{i + 1}_{edge}": p50(lambda r, i=i, j=j: r["polls"][i][j] if len(r["polls"]) > i else None)
                    for i in range(3)
                    for j, edge in enumerate(("start", "end"))
                },
                **{
                    f"part{i + 1}": p50(lambda r, i=i: r["parts"][i] if len(r["parts"]) > i else None) for i in range(3)
                },
                "part_with_12th_token": p50(lambda r: r["part_with_12th_token"]),
                "first_chunk": p50(lambda r: r["first_chunk"]),
            },
            "runs": runs,
        }
    finally:
        batch.__dict__.pop("admit", None)
        sched.__dict__.pop("_run_steps", None)
        fc.scheduler.close()
        fc.vocoder.close()


def vocoder_section(fc: Any, params: Any, slots: int, reps: int = 10) -> dict[str, Any]:
    """In-process S3Gen per call, nothing else on the GPU: batch 1..slots of the first-chunk and steady shapes
    through :class:`VocodeBatcher.run` (graphs captured first), flow (CFM + encoder) and HiFT timed apart."""
    import torch

    from ttsbench.chatterbox.fast_vocoder import VocodeBatcher

    sync = torch.cuda.synchronize if fc.device.type == "cuda" else (lambda: None)
    fc.warmup(params, exaggeration=0.3)
    fc.euler.max_cached = 4 * slots
    fc.s3graphs.widen(4 * slots)
    vb = VocodeBatcher(fc, max_batch=slots)
    out: dict[str, Any] = {"reps": reps}
    try:
        out["warmup"] = vb.warmup((12, fc.CONTEXT_TOKENS + fc.CHUNK_TOKENS))
        for n in (12, fc.CONTEXT_TOKENS + fc.CHUNK_TOKENS):
            for b in sorted({1, 2, slots}):
                toks = torch.randint(0, 6561, (b, n), device=fc.device)
                times, flow_t, hift_t = [], [], []
                for _ in range(reps):
                    sync()
                    t0 = time.perf_counter()
                    vb.run(toks)
                    times.append(time.perf_counter() - t0)
                    f, h = flow_and_hift_s(fc, toks)  # the same call's two halves, apart (same graphs)
                    flow_t.append(f)
                    hift_t.append(h)
                med = statistics.median(times)
                out[f"n{n}_b{b}"] = {
                    "ms_per_call": med * 1000,
                    "ms_per_chunk": med * 1000 / b,
                    "audio_s_per_s": b * n / 25 / med,
                    "flow_ms": statistics.median(flow_t) * 1000,
                    "hift_ms": statistics.median(hift_t) * 1000,
                }
    finally:
        vb.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="random-init checkpoint dir (built there if missing)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=18772)
    ap.add_argument("--c4-requests", type=int, default=20)
    ap.add_argument("--skip-upstream", action="store_true")
    ap.add_argument(
        "--vocoder-ab",
        action="store_true",
        help="also run the fast server with --vocoder-batching off (c1, c4): the batched vocoder's A/B, same run",
    )
    ap.add_argument(
        "--ab",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="also run the fast server with these extra serve-chatterbox flags (c1, c4), same run; repeatable, "
        "e.g. --ab 'chunk100=--chunk-tokens 100'",
    )
    ap.add_argument("--skip-t3", action="store_true", help="skip the in-process T3 section")
    ap.add_argument(
        "--hift",
        action="store_true",
        help="in-process: S3Gen per chunk with each HiFT mode (upstream, sync-free, graph): equality and time",
    )
    ap.add_argument(
        "--probe-compile",
        action="store_true",
        help="after the servers: time the flow with the CFM estimator through torch.compile (and its error)",
    )
    ap.add_argument("--no-http", action="store_true", help="only the in-process sections (--hift, --probe-compile)")
    ap.add_argument(
        "--s3-reps", type=int, default=10, help="timed calls per shape in the --hift/--probe-compile sections"
    )
    ap.add_argument("--t3-steps", type=int, default=150)
    ap.add_argument(
        "--section-timeout",
        type=float,
        default=300.0,
        help="seconds an in-process section (--hift, --probe-compile, T3) may run (past it, every thread's stack "
        "and the numbers so far are written and the run exits 3), and the longest wait for a server to get ready "
        "or for one request (past it, the server's stacks go to its log)",
    )
    ap.add_argument(
        "--ready-timeout",
        type=float,
        default=None,
        help="seconds a server may take to get ready (default: --section-timeout); --s3-compile servers compile "
        "for over a minute before their warm-up",
    )
    ap.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        help="seconds one request may wait before it fails and the server's stacks are dumped (default: "
        "--section-timeout); short, to find where a hung level waits",
    )
    ap.add_argument("--extra", default="--fast-max-len 1024", help="extra serve-chatterbox flags (fast path)")
    ap.add_argument("--only", default=None, help="comma-separated utterance ids (default: all 10)")
    ap.add_argument("--cap", type=int, default=None, help="--max-new-tokens for both servers (CPU smoke runs)")
    ap.add_argument("--logs", default=None, help="folder for the server logs (default: next to --out)")
    ap.add_argument(
        "--profile-dir",
        default=None,
        help="after the fast server's c4 level, run it twice more under py-spy (GIL holders, busy threads) and "
        "nvidia-smi; collapsed stacks land here",
    )
    args = ap.parse_args(argv)
    if not args.section_timeout > 0:
        ap.error(f"--section-timeout {args.section_timeout}: give a number of seconds above 0")
    if args.request_timeout is not None and not args.request_timeout > 0:
        ap.error(f"--request-timeout {args.request_timeout}: give a number of seconds above 0")
    if args.ready_timeout is not None and not args.ready_timeout > 0:
        ap.error(f"--ready-timeout {args.ready_timeout}: give a number of seconds above 0")

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
    if args.profile_dir:
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
    import soundfile as sf

    ref = logs / "reference.wav"  # the checkpoint's own default voice: the same synthetic 3 s reference
    sf.write(str(ref), checkpoint._reference_wav(seed=0), 24000, subtype="PCM_16")
    doc: dict[str, Any] = {"machine": machine(), "tokens_per_char": TOKENS_PER_CHAR, "utterances": len(utts)}
    out, timeout = Path(args.out), args.section_timeout
    req_timeout = args.request_timeout or timeout
    if args.hift:
        guarded(doc, "hift", lambda p: s3_section(str(path), args.s3_reps, p), out, timeout)
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()  # the in-process model is dropped before the servers load theirs
    if args.no_http:  # the in-process sections only (short device time)
        if args.probe_compile:
            guarded(doc, "compile_probe", lambda p: compile_section(str(path), args.s3_reps), out, timeout)
        doc["wall_s"] = time.perf_counter() - t0
        write_json_atomic(out, doc)
        print(json.dumps({k: doc.get(k) for k in ("hift", "compile_probe")}), flush=True)
        return 0
    fast = run_server(
        sys.executable,
        str(path),
        ref,
        args.port,
        "on",
        [(1, len(utts)), (4, args.c4_requests)],
        utts,
        [*args.extra.split(), *cap],
        logs / "server-fast.log",
        Path(args.profile_dir) if args.profile_dir else None,
        timeout_s=req_timeout,
        ready_timeout_s=args.ready_timeout,
    )
    doc["fast"] = fast
    doc["c1"] = {k: fast["c1"].get(k) for k in SUMMARY_KEYS}
    doc["c4"] = {k: fast["c4"].get(k) for k in SUMMARY_KEYS}
    if fast["c1"]["throughput_audio_s_per_s"]:
        doc["c4"]["throughput_vs_c1"] = fast["c4"]["throughput_audio_s_per_s"] / fast["c1"]["throughput_audio_s_per_s"]
    write_json_atomic(out, doc)
    if args.vocoder_ab:
        off = run_server(
            sys.executable,
            str(path),
            ref,
            args.port + 2,
            "on",
            [(1, len(utts)), (4, args.c4_requests)],
            utts,
            [*args.extra.split(), *cap, "--vocoder-batching", "off"],
            logs / "server-fast-vocoder-off.log",
            timeout_s=req_timeout,
            ready_timeout_s=args.ready_timeout,
        )
        doc["fast_vocoder_off"] = off
        doc["vocoder_off"] = {c: {k: off[c].get(k) for k in SUMMARY_KEYS} for c in ("c1", "c4")}
        write_json_atomic(out, doc)
    for i, spec in enumerate(args.ab):
        name, _, flags = spec.partition("=")
        run_ab(
            doc,
            name,
            flags,
            lambda flags=flags, i=i, name=name: run_server(
                sys.executable,
                str(path),
                ref,
                args.port + 10 + i,
                "on",
                [(1, len(utts)), (4, args.c4_requests)],
                utts,
                [*args.extra.split(), *cap, *flags.split()],
                logs / f"server-fast-{name}.log",
                timeout_s=req_timeout,
                ready_timeout_s=args.ready_timeout,
            ),
        )
        write_json_atomic(out, doc)
    if not args.skip_upstream:
        up = run_server(
            sys.executable,
            str(path),
            ref,
            args.port + 1,
            "off",
            [(1, len(utts))],
            utts,
            cap,
            logs / "server-upstream.log",
            timeout_s=req_timeout,
            ready_timeout_s=args.ready_timeout,
        )
        doc["upstream"] = up
        doc["upstream_c1"] = {k: up["c1"].get(k) for k in SUMMARY_KEYS}
    if not args.skip_t3:
        guarded(doc, "t3", lambda p: t3_section(str(path), utts, steps=args.t3_steps), out, timeout)
    if args.probe_compile:
        guarded(doc, "compile_probe", lambda p: compile_section(str(path), args.s3_reps), out, timeout)
    doc["targets_met"] = {
        "c1_first_audio_le_150ms": (doc["c1"]["p50_first_audio_ms"] or 1e9) <= 150,
        "c1_rtf_le_0.1": (doc["c1"]["p50_rtf"] or 1e9) <= 0.1,
        "c4_first_audio_le_300ms": (doc["c4"]["p50_first_audio_ms"] or 1e9) <= 300,
        "c4_throughput_ge_3x_c1": (doc["c4"].get("throughput_vs_c1") or 0) >= 3,
        "t3_ge_10x_upstream": (doc.get("t3", {}).get("fast_vs_upstream") or 0) >= 10,
    }
    doc["wall_s"] = time.perf_counter() - t0
    write_json_atomic(out, doc)
    t3 = {k: v for k, v in doc.get("t3", {}).items() if not isinstance(v, (list, dict))}
    print(
        json.dumps(
            {k: doc[k] for k in ("c1", "c4", "targets_met")}
            | {"vocoder_off": doc.get("vocoder_off"), "upstream_c1": doc.get("upstream_c1"), "t3": t3}
            | {"ab": {k: {c: v[c] for c in ("c1", "c4")} for k, v in doc.get("ab", {}).items()}}
            | {"hift": doc.get("hift"), "compile_probe": doc.get("compile_probe")}
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
