"""Benchmark: Blackwell STFT patch (DFT matmul) vs native torch.stft/istft (HiFT config) + a synthesis.

Run inside the chatterbox venv on a GPU host::

    python benchmarks/stft_patch_bench.py --out docs/benchmarks/stft-patch.json [--checkpoint DIR]

Cases: 1 s, 10 s, 60 s of 24 kHz audio through HiFT's stft -> istft (n_fft 16, hop 4, hann, center), each
timed as the median of N runs after warm-up with CUDA synchronisation; rel_err = ||patched - native|| /
||native|| of the stft output. Then one full ChatterboxTTS.generate (random-init weights, capped tokens,
fixed seed) with the patch off and on. Target: patched not slower than native (recorded, not asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ttsbench.chatterbox import stft_patch

SR = 24000
N_FFT, HOP = 16, 4


def _time(fn, device: str, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a = torch.view_as_real(a) if a.is_complex() else a
    b = torch.view_as_real(b) if b.is_complex() else b
    return float((a.double() - b.double()).norm() / b.double().norm())


def stft_cases(device: str, seconds: list[float], warmup: int, reps: int) -> list[dict]:
    win = torch.hann_window(N_FFT, periodic=True, device=device)
    cases = []
    for s in seconds:
        x = torch.randn(1, int(s * SR), device=device)

        def native(x=x):
            spec = torch.stft(x, N_FFT, HOP, N_FFT, window=win, return_complex=True)
            return spec, torch.istft(spec, N_FFT, HOP, N_FFT, window=win)

        def patched(x=x):
            spec = stft_patch.stft(x, N_FFT, HOP, N_FFT, window=win, return_complex=True)
            return spec, stft_patch.istft(spec, N_FFT, HOP, N_FFT, window=win)

        try:
            n_spec, n_y = native()
            native_ms: float | None = _time(native, device, warmup, reps)
            native_err = None
        except Exception as exc:  # the failure the patch exists for; keep measuring the patch
            n_spec = n_y = None
            native_ms, native_err = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
        p_spec, p_y = patched()
        patched_ms = _time(patched, device, warmup, reps)
        case = {
            "audio_s": s,
            "native_ms": native_ms,
            "patched_ms": patched_ms,
            "rel_err": _rel(p_spec, n_spec) if n_spec is not None else None,
            "istft_rel_err": _rel(p_y, n_y) if n_y is not None else None,
            "roundtrip_rel_err": _rel(p_y, x[:, : p_y.shape[-1]]),
            "what": "stft+istft, n_fft 16, hop 4, hann, center (HiFTGenerator)",
            "median_of": reps,
        }
        if native_err:
            case["native_error"] = native_err
        cases.append(case)
        print(
            f"{s:>6.1f} s  native {native_ms if native_ms is None else round(native_ms, 3)} ms  "
            f"patched {patched_ms:.3f} ms  rel_err {case['rel_err']}"
        )
    return cases


def synthesis_case(device: str, checkpoint: Path, max_tokens: int, reps: int) -> dict:
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.runner import cap_tokens

    model = ChatterboxTTS.from_local(checkpoint, device)
    cap_tokens(model, max_tokens)
    text = "Your appointment is on Tuesday, March 4th, at 3:45 PM."

    def gen():
        torch.manual_seed(0)
        return model.generate(text, exaggeration=0.3, cfg_weight=0.3, temperature=0.6).squeeze(0).cpu()

    out: dict = {
        "audio_s": None,
        "what": f"full ChatterboxTTS.generate, random-init, {max_tokens} tokens",
        "median_of": reps,
    }
    native_wav = None
    try:
        native_wav = gen()
        out["native_ms"] = _time(gen, device, 1, reps)
    except Exception as exc:
        out["native_ms"], out["native_error"] = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
    state = stft_patch.apply("on", device)
    try:
        patched_wav = gen()
        out["patched_ms"] = _time(gen, device, 1, reps)
    finally:
        state.restore()
    out["audio_s"] = patched_wav.shape[-1] / SR
    out["patched_modules"] = state.as_dict()["patched_modules"] or stft_patch.PATCH_TARGETS
    if native_wav is not None and native_wav.shape == patched_wav.shape:
        diff = (native_wav - patched_wav).abs()
        out["rel_err"] = _rel(patched_wav, native_wav)
        out["max_abs_diff"] = float(diff.max())
    else:
        out["rel_err"] = None
    print(
        f"synthesis native {out.get('native_ms')} ms  patched {out['patched_ms']:.1f} ms  "
        f"rel_err {out['rel_err']}"
    )
    return out


def device_label(device: str) -> str:
    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
        return f"{name} (sm_{major}{minor}), torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", default="1,10,60")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--checkpoint", type=Path, default=None, help="random-init checkpoint; skip synthesis if absent"
    )
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--synth-reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/stft-patch.json"))
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    cases = stft_cases(args.device, [float(s) for s in args.seconds.split(",")], args.warmup, args.reps)
    if args.checkpoint is not None:
        cases.append(synthesis_case(args.device, args.checkpoint, args.max_new_tokens, args.synth_reps))
    doc = {
        "device": device_label(args.device),
        "host": platform.node(),
        "selftest_native": stft_patch.selftest(args.device) or "ok",
        "method": "median wall ms after warm-up, torch.cuda.synchronize around each run",
        "target": "patched_ms <= native_ms",
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
