"""Benchmark + GPU equivalence: upstream Chatterbox (0.1.7) vs the fast path (ttsbench.chatterbox.fast).

Run inside the chatterbox venv on a GPU host (random-init weights; built into --checkpoint when missing)::

    python benchmarks/chatterbox_fast_path.py --checkpoint /tmp/ckpt --out docs/benchmarks/chatterbox-fast-path.json

One process, one GPU, side by side: for each of the 10 canonical utterances (files/utterances.yaml), speech
tokens capped at 25 per estimated speech second (text length / 14 chars per second), seed 0, production tuning
(cfg_weight 0.3, exaggeration 0.3, temperature 0.6):

* upstream ``ChatterboxTTS.generate`` — T3 and S3Gen timed separately (CUDA-synchronized wrappers);
* fast, whole utterance (``FastChatterbox.synthesize``) — same split;
* fast, streaming (``FastChatterbox.stream``) — time to the first audio chunk, total time;
* fast bf16 T3 tokens/s.

first_audio_ms: upstream is not streaming, so its first audio is the whole waveform; fast = first chunk.
Medians over the utterances. Equivalence (GPU): teacher-forced T3 logits (fp32, bf16) rel err, greedy speech
tokens for 200 steps (3 utterances), S3Gen/HiFT graph-stepped vs upstream on the same tokens and seed, and
sampled audio statistics (duration, RMS) fast vs upstream with the same seed. The bandwidth floor is the
bytes of T3 weights one decode step reads divided by the GPU's bandwidth (H100 SXM ≈ 3.35 TB/s).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttsbench.atomic import write_json_atomic
from ttsbench.chatterbox import fast_equiv as fe
from ttsbench.chatterbox.fast import FastChatterbox, StreamTimings
from ttsbench.chatterbox.fast_t3 import FastT3, SamplingParams

SR = 24000
CHARS_PER_S = 14.0
TOKENS_PER_S = 25.0
FIRST = 12  # first streamed chunk: valid speech tokens
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def sync() -> None:
    torch.cuda.synchronize()


def cap_for(text: str) -> int:
    return max(10, round(TOKENS_PER_S * max(1.0, len(text) / CHARS_PER_S)))


def load_utts(path: Path) -> list[tuple[str, str]]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [(u["id"], u["text"]) for u in data["utterances"]]


def upstream_run(model: Any, text: str, cap: int, p: SamplingParams, seed: int) -> dict:
    stage: dict[str, float] = {}
    ntok: list[int] = []
    t3_inf, s3_inf = model.t3.inference, model.s3gen.inference

    def t3_wrapped(*a: Any, **kw: Any) -> Any:
        kw["max_new_tokens"] = min(int(kw.get("max_new_tokens") or cap), cap)
        sync()
        t0 = time.perf_counter()
        out = t3_inf(*a, **kw)
        sync()
        stage["t3"] = time.perf_counter() - t0
        ntok.append(out.shape[-1])
        return out

    def s3_wrapped(*a: Any, **kw: Any) -> Any:
        sync()
        t0 = time.perf_counter()
        out = s3_inf(*a, **kw)
        sync()
        stage["s3gen"] = time.perf_counter() - t0
        return out

    model.t3.inference, model.s3gen.inference = t3_wrapped, s3_wrapped
    try:
        torch.manual_seed(seed)
        sync()
        t0 = time.perf_counter()
        wav = model.generate(text, exaggeration=0.3, cfg_weight=p.cfg_weight, temperature=p.temperature)
        sync()
        total = time.perf_counter() - t0
    finally:
        del model.t3.inference, model.s3gen.inference
    audio = wav.squeeze(0).float().numpy()
    audio_s = len(audio) / SR
    return {
        "tokens": ntok[0],
        "t3_s": stage["t3"],
        "s3gen_s": stage["s3gen"],
        "total_s": total,
        "audio_s": audio_s,
        "rtf": total / audio_s,
        "t3_tok_s": ntok[0] / stage["t3"],
        "s3gen_ms_per_audio_s": 1000 * stage["s3gen"] / audio_s,
        "first_audio_ms": 1000 * total,
        "rms": float(np.sqrt(np.mean(audio**2))),
    }


def fast_run(fc: FastChatterbox, text: str, cap: int, p: SamplingParams, seed: int) -> dict:
    tm = StreamTimings()
    torch.manual_seed(seed)
    sync()
    t0 = time.perf_counter()
    audio = fc.synthesize(text, p, cap, exaggeration=0.3, timings=tm)
    sync()
    total = time.perf_counter() - t0
    audio_s = len(audio) / SR
    st = StreamTimings()
    torch.manual_seed(seed)
    sync()
    t1 = time.perf_counter()
    chunks = list(fc.stream(text, p, cap, exaggeration=0.3, first_chunk_tokens=FIRST, timings=st))
    stream_total = time.perf_counter() - t1
    stream_audio_s = sum(len(c) for c in chunks) / SR
    return {
        "tokens": tm.t3_tokens,
        "t3_s": tm.t3_s,
        "s3gen_s": tm.s3gen_s,
        "watermark_s": tm.watermark_s,
        "total_s": total,
        "audio_s": audio_s,
        "rtf": total / audio_s,
        "t3_tok_s": tm.t3_tokens / tm.t3_s,
        "s3gen_ms_per_audio_s": 1000 * tm.s3gen_s / audio_s,
        "rms": float(np.sqrt(np.mean(audio**2))),
        "first_audio_ms": 1000 * (st.first_chunk_s or stream_total),
        "stream_total_s": stream_total,
        "stream_rtf": stream_total / max(stream_audio_s, 1e-9),
        "stream_chunks": len(chunks),
        "stream_audio_s": stream_audio_s,
    }


def t3_only(fast: FastT3, model: Any, text: str, cap: int, p: SamplingParams, seed: int) -> dict:
    torch.manual_seed(seed)
    tt = fe.text_tokens_for(model, text)
    sync()
    t0 = time.perf_counter()
    toks = fast.generate(model.conds.t3, tt, cap, p)
    sync()
    dt = time.perf_counter() - t0
    return {"tokens": toks.shape[-1], "t3_s": dt, "t3_tok_s": toks.shape[-1] / dt}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--utterances", type=Path, default=Path(__file__).resolve().parent.parent / "files/utterances.yaml")
    ap.add_argument("--greedy-steps", type=int, default=200)
    ap.add_argument("--greedy-utts", default="u01,u04,u10")
    ap.add_argument("--logit-steps", type=int, default=48)
    ap.add_argument("--only", default=None)
    ap.add_argument("--skip-upstream", action="store_true")
    args = ap.parse_args()

    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.checkpoint import make_random_checkpoint

    t_start = time.perf_counter()
    ckpt, built = make_random_checkpoint(args.checkpoint, seed=0)
    dev = "cuda"
    model = ChatterboxTTS.from_local(ckpt, dev)
    utts = load_utts(args.utterances)
    if args.only:
        keep = set(args.only.split(","))
        utts = [u for u in utts if u[0] in keep]
    p = SamplingParams(temperature=0.6, cfg_weight=0.3, repetition_penalty=1.2, min_p=0.05, top_p=1.0)
    name = torch.cuda.get_device_name(0)
    bw = next((v for k, v in BANDWIDTH.items() if k in name), 3.35e12)
    doc: dict[str, Any] = {
        "device": f"{name} (sm_{''.join(map(str, torch.cuda.get_device_capability(0)))}), torch {torch.__version__}",
        "host": platform.node(),
        "weights": "random-init (seed 0)",
        "checkpoint_built_here": built,
        "tuning": {
            "cfg_weight": 0.3,
            "exaggeration": 0.3,
            "temperature": 0.6,
            "min_p": 0.05,
            "top_p": 1.0,
            "repetition_penalty": 1.2,
            "seed": 0,
        },
        "token_cap": f"round(25 * max(1, len(text) / {CHARS_PER_S}))",
        "first_audio_definition": "upstream: whole waveform (no streaming); fast: first streamed chunk "
        "(first 12 valid speech tokens decoded + vocoded + watermarked)",
        "rtf_definition": "wall seconds / audio seconds (whole-utterance call, watermark included)",
    }
    t0 = time.perf_counter()
    fc = FastChatterbox(model, max_len=1024)
    doc["fast_config"] = {
        "dtype": "fp32",
        "max_len": 1024,
        "kv_bucket": 128,
        "check_every": fc.t3.check_every,
        "first_chunk_tokens": FIRST,
        "chunk_tokens": 50,
        "context_tokens": 8,
        "crossfade_ms": 10,
        "compiled_layers": fc.t3.compiled,
        "compile_error": fc.t3.compile_error,
        "gemv": fc.t3.gemv,
        "gemv_error": fc.t3.gemv_error,
        "init_s": time.perf_counter() - t0,
    }
    # warm-up (cuDNN/cuBLAS autotune, caches) for both paths; the fast one captures its graphs here
    upstream_run(model, "Sure, I can help with that.", 20, p, 0)
    doc["fast_config"]["warmup"] = fc.warmup(p, exaggeration=0.3, first_chunk_tokens=FIRST)
    fast_run(fc, "Sure, I can help with that.", 30, p, 0)
    doc["fast_config"]["graph_error"] = fc.t3.graph_error
    print(f"setup {time.perf_counter() - t_start:.1f}s {json.dumps(doc['fast_config'])}", flush=True)

    # ---------------- equivalence on the GPU
    eq: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    forced = [int(x) for x in rng.integers(0, 6561, args.logit_steps)]
    eq["logits_fp32"] = [fe.logits_check(model, fc.t3, t, forced) for uid, t in utts if uid in ("u01", "u10")]
    fb = FastT3(model.t3, dtype=torch.bfloat16, max_len=1024)
    doc["fast_config"]["bf16_compiled_layers"] = fb.compiled
    doc["fast_config"]["bf16_gemv"] = fb.gemv
    fb.capture_all()
    eq["logits_bf16"] = [fe.logits_check(model, fb, t, forced) for uid, t in utts if uid in ("u01", "u10")]
    gu = set(args.greedy_utts.split(","))
    eq["greedy_fp32"] = {uid: fe.greedy_check(model, fc.t3, t, args.greedy_steps, p) for uid, t in utts if uid in gu}
    eq["greedy_bf16"] = {uid: fe.greedy_check(model, fb, t, args.greedy_steps, p) for uid, t in utts if uid in gu}
    toks = torch.tensor(forced[:100], device=dev)
    toks = toks[toks < 6561]
    torch.manual_seed(1)
    ref = model.s3gen.inference(speech_tokens=toks, ref_dict=model.conds.gen)[0].float()
    torch.manual_seed(1)
    got = fc.vocode(toks).float()  # new shape: step 0 eager, then capture + replays
    torch.manual_seed(1)
    got2 = fc.vocode(toks).float()  # same shape again: every step replays the cached graph
    eq["s3gen"] = {
        "tokens": int(toks.numel()),
        "max_abs": float((got - ref).abs().max()),
        "rel_err": float((got - ref).norm() / ref.norm()),
        "cached_graph_max_abs": float((got2 - ref).abs().max()),
        "graphed_calls": fc.euler.graphed_calls,
        "captures": fc.euler.captures,
        "graph_error": fc.euler.error,
        "s3_graphs": fc.s3graphs.state(),
    }
    # the first streamed chunk's vocoding (prompt + FIRST tokens): CFM-step graph only vs + flow-encoder graph
    first = toks[:FIRST]
    outs, ms = {}, {}
    for label, on in (("cfm_graph_only", False), ("cfm_and_encoder_graphs", True)):
        fc.graph_s3 = on
        times = []
        for i in range(12):
            torch.manual_seed(2)
            torch.cuda.synchronize()
            t = time.perf_counter()
            w = fc.vocode(first)
            torch.cuda.synchronize()
            if i >= 2:
                times.append(1000 * (time.perf_counter() - t))
        outs[label], ms[label] = w.float(), med(times)
    fc.graph_s3 = True
    a, b = outs["cfm_graph_only"], outs["cfm_and_encoder_graphs"]
    eq["first_chunk_s3_graphs"] = {
        "tokens": FIRST,
        "max_abs": float((b - a).abs().max()),
        "rel_err": float((b - a).norm() / a.norm()),
    }
    doc["first_chunk_vocode_ms"] = ms
    doc["equivalence"] = eq
    print(json.dumps(eq)[:3000], flush=True)

    # ---------------- timing, side by side
    rows = []
    peak: dict[str, float] = {}
    for uid, text in utts:
        cap = cap_for(text)
        row: dict[str, Any] = {"utt_id": uid, "chars": len(text), "token_cap": cap}
        if not args.skip_upstream:
            torch.cuda.reset_peak_memory_stats()
            row["upstream"] = upstream_run(model, text, cap, p, 0)
            peak["upstream"] = max(peak.get("upstream", 0.0), torch.cuda.max_memory_allocated() / 2**20)
        torch.cuda.reset_peak_memory_stats()
        row["fast"] = fast_run(fc, text, cap, p, 0)
        peak["fast"] = max(peak.get("fast", 0.0), torch.cuda.max_memory_allocated() / 2**20)
        row["fast_bf16_t3"] = t3_only(fb, model, text, cap, p, 0)
        rows.append(row)
        print(
            uid,
            json.dumps(
                {
                    k: (
                        v
                        if not isinstance(v, dict)
                        else {kk: round(vv, 4) if isinstance(vv, float) else vv for kk, vv in v.items()}
                    )
                    for k, v in row.items()
                }
            ),
            flush=True,
        )
    doc["utterances"] = rows

    def summary(key: str) -> dict:
        rs = [r[key] for r in rows if key in r]
        keys = ("rtf", "t3_tok_s", "first_audio_ms", "s3gen_ms_per_audio_s", "audio_s", "total_s", "t3_s")
        out = {k: med([r.get(k) for r in rs]) for k in keys}
        out["peak_gpu_mem_mb"] = peak.get(key)
        return out

    doc["fast"] = summary("fast")
    doc["fast"]["stream_rtf"] = med([r["fast"]["stream_rtf"] for r in rows])
    doc["fast"]["watermark_ms"] = med([1000 * r["fast"]["watermark_s"] for r in rows])
    doc["fast_bf16"] = {"t3_tok_s": med([r["fast_bf16_t3"]["t3_tok_s"] for r in rows])}
    if not args.skip_upstream:
        doc["upstream"] = summary("upstream")
        doc["speedup"] = {
            k: (doc["upstream"][k] / doc["fast"][k]) if k != "t3_tok_s" else doc["fast"][k] / doc["upstream"][k]
            for k in ("rtf", "t3_tok_s", "first_audio_ms")
        }
        dur = [abs(r["fast"]["audio_s"] / r["upstream"]["audio_s"] - 1) for r in rows]
        rms = [abs(r["fast"]["rms"] / r["upstream"]["rms"] - 1) for r in rows]
        tot_dur = sum(r["fast"]["audio_s"] for r in rows) / sum(r["upstream"]["audio_s"] for r in rows) - 1
        mean_rms = statistics.mean
        tot_rms = mean_rms(r["fast"]["rms"] for r in rows) / mean_rms(r["upstream"]["rms"] for r in rows) - 1
        doc["equivalence"]["sampled_audio_stats"] = {
            "what": "same seed, sampling on; |fast/upstream - 1| of duration and RMS",
            "median_duration_rel": med(dur),
            "median_rms_rel": med(rms),
            "total_duration_rel": tot_dur,
            "mean_rms_rel": tot_rms,
        }
    wb = fc.t3.weight_bytes_per_step()
    wb16 = fb.weight_bytes_per_step()
    floor_ms = 1000 * wb / bw
    floor16_ms = 1000 * wb16 / bw
    doc["bandwidth_floor"] = {
        "bandwidth_bytes_s": bw,
        "t3_weight_bytes_per_step_fp32": wb,
        "t3_weight_bytes_per_step_bf16": wb16,
        "floor_ms_per_token_fp32": floor_ms,
        "floor_ms_per_token_bf16": floor16_ms,
        "fast_ms_per_token_fp32": 1000 / doc["fast"]["t3_tok_s"],
        "fast_ratio_to_floor_fp32": (1000 / doc["fast"]["t3_tok_s"]) / floor_ms,
        "fast_ratio_to_floor_bf16": (1000 / doc["fast_bf16"]["t3_tok_s"]) / floor16_ms,
        "note": "a step is one CFG pair (batch 2); the floor counts weights only (KV cache reads are extra)",
    }
    if "upstream" in doc:
        doc["bandwidth_floor"]["upstream_ratio_to_floor"] = (1000 / doc["upstream"]["t3_tok_s"]) / floor_ms
    doc["fast_config"]["final_state"] = {
        "compiled_layers": fc.t3.compiled,
        "compile_error": fc.t3.compile_error,
        "graph_error": fc.t3.graph_error,
        "gemv": fc.t3.gemv,
        "gemv_error": fc.t3.gemv_error,
        "t3_graphs": len(fc.t3._graphs),
        "cfm_captures": fc.euler.captures,
        "cfm_uncached": fc.euler.uncached,
        "cfm_error": fc.euler.error,
        "s3_graphs": fc.s3graphs.state(),
    }
    doc["targets"] = {"rtf": 0.1, "first_audio_ms": 150, "t3_tok_s_speedup": 10}
    doc["wall_s"] = time.perf_counter() - t_start
    write_json_atomic(args.out, doc)  # the project's one JSON writer
    print(
        json.dumps(
            {k: doc.get(k) for k in ("device", "upstream", "fast", "fast_bf16", "speedup", "bandwidth_floor")}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
