"""Benchmark: Blackwell STFT patch (DFT matmul) vs native torch.stft/istft (HiFT config) + a synthesis.

Run inside the chatterbox venv on a GPU host::

    python benchmarks/stft_patch_bench.py --out docs/benchmarks/stft-patch.json [--checkpoint DIR]

Cases: 1 s, 10 s, 60 s of 24 kHz audio through HiFT's stft -> istft (n_fft 16, hop 4, hann, center), each
timed as the median of N runs after warm-up with CUDA synchronisation; rel_err = ||patched - native|| /
||native|| of the stft output. Both methods are timed (``matmul_ms``, ``conv_ms``); ``patched_ms`` /
``rel_err`` are those of the method the default ``auto`` picks for that n_fft (conv <= 512 < matmul). Then the
tokenizer (400/160) and S3Gen mel (1920/480) stft alone, 10 s. Then full
ChatterboxTTS.generate (random-init weights, capped tokens, fixed seed), native and patched runs
interleaved, with the time split into T3 (token sampling, untouched by the patch) and S3Gen (flow + HiFT),
HiFT alone on the captured mel, and run-to-run / TF32 baselines that show what rel_err of a whole synthesis
means. Target: patched not slower than native (recorded, not asserted).

Device runs get the checkout itself; only the wheels travel in ``.whl/`` (git-ignored), e.g.::

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:python python benchmarks/stft_patch_bench.py --checkpoint /tmp/ckpt --out $OUT/stft-patch.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from ttsbench.atomic import write_json_atomic
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


def _as_default(case: dict, n_fft: int) -> dict:
    """Measured as patched (= matmul) and conv; report patched_* as the method ``auto`` uses for n_fft."""
    use_conv = stft_patch._use_conv(None, n_fft)
    for d in (case, case.get("hift_only")):
        if not d:
            continue
        d["matmul_ms"] = d.pop("patched_ms")
        for k in ("rel_err", "istft_rel_err"):
            if k in d:
                d[f"matmul_{k}"] = d.pop(k)
        d["patched_method"] = "conv" if use_conv else "matmul"
        d["patched_ms"] = d["conv_ms"] if use_conv else d["matmul_ms"]
        d["rel_err"] = d.get("conv_rel_err") if use_conv else d.get("matmul_rel_err")
    return case


def stft_cases(device: str, seconds: list[float], warmup: int, reps: int) -> list[dict]:
    win = torch.hann_window(N_FFT, periodic=True, device=device)
    cases = []
    for s in seconds:
        x = torch.randn(1, int(s * SR), device=device)

        def native(x=x):
            spec = torch.stft(x, N_FFT, HOP, N_FFT, window=win, return_complex=True)
            return spec, torch.istft(spec, N_FFT, HOP, N_FFT, window=win)

        def patched(x=x, method=None):
            spec = stft_patch.stft(x, N_FFT, HOP, N_FFT, window=win, return_complex=True, method=method)
            return spec, stft_patch.istft(spec, N_FFT, HOP, N_FFT, window=win, method=method)

        try:
            n_spec, n_y = native()
            native_ms: float | None = _time(native, device, warmup, reps)
            native_err = None
        except Exception as exc:  # the failure the patch exists for; keep measuring the patch
            n_spec = n_y = None
            native_ms, native_err = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
        p_spec, p_y = patched()
        patched_ms = _time(patched, device, warmup, reps)
        c_spec, c_y = patched(method="conv")
        conv_ms = _time(lambda: patched(method="conv"), device, warmup, reps)
        case = {
            "audio_s": s,
            "native_ms": native_ms,
            "patched_ms": patched_ms,
            "rel_err": _rel(p_spec, n_spec) if n_spec is not None else None,
            "istft_rel_err": _rel(p_y, n_y) if n_y is not None else None,
            "roundtrip_rel_err": _rel(p_y, x[:, : p_y.shape[-1]]),
            "conv_ms": conv_ms,
            "conv_rel_err": _rel(c_spec, n_spec) if n_spec is not None else None,
            "conv_istft_rel_err": _rel(c_y, n_y) if n_y is not None else None,
            "what": "stft+istft, n_fft 16, hop 4, hann, center (HiFTGenerator)",
            "median_of": reps,
        }
        if native_err:
            case["native_error"] = native_err
        cases.append(case)
        print(
            f"{s:>6.1f} s  native {native_ms if native_ms is None else round(native_ms, 3)} ms  "
            f"patched {patched_ms:.3f} ms  conv {conv_ms:.3f} ms  rel_err {case['rel_err']} "
            f"conv_rel_err {case['conv_rel_err']}"
        )
    return cases


def mel_stft_cases(device: str, warmup: int, reps: int) -> list[dict]:
    """The tokenizer's and S3Gen's mel STFTs (stft only), 10 s of audio at their sample rates."""
    cases = []
    for n_fft, hop, center, sr, who in ((400, 160, True, 16000, "s3tokenizer"), (1920, 480, False, 24000, "S3Gen mel")):
        x = torch.randn(1, 10 * sr, device=device)
        win = torch.hann_window(n_fft, device=device)
        ref = torch.stft(x, n_fft, hop, window=win, center=center, return_complex=True)
        case: dict = {"audio_s": 10.0, "what": f"stft only, n_fft {n_fft}, hop {hop} ({who})", "median_of": reps}
        args = (x, n_fft, hop)
        kw = {"window": win, "center": center, "return_complex": True}
        case["native_ms"] = _time(lambda a=args, k=kw: torch.stft(*a, **k), device, warmup, reps)
        for method, key in (("matmul", "patched"), ("conv", "conv")):

            def f(a=args, k=kw, method=method):
                return stft_patch.stft(*a, **k, method=method)

            out = f()
            case[f"{key}_ms"] = _time(f, device, warmup, reps)
            case["rel_err" if key == "patched" else "conv_rel_err"] = _rel(out, ref)
        print(
            f"{who}: native {case['native_ms']:.3f} patched {case['patched_ms']:.3f} conv {case['conv_ms']:.3f} "
            f"rel_err {case['rel_err']:.2e} conv_rel_err {case['conv_rel_err']:.2e}"
        )
        cases.append(case)
    return cases


def synthesis_case(device: str, checkpoint: Path, max_tokens: int, reps: int) -> dict:
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.runner import cap_tokens

    model = ChatterboxTTS.from_local(checkpoint, device)
    cap_tokens(model, max_tokens)
    text = "Your appointment is on Tuesday, March 4th, at 3:45 PM."
    stage: dict[str, float] = {}
    captured: dict[str, torch.Tensor] = {}

    def timed(name: str, fn):
        def inner(*a, **k):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            r = fn(*a, **k)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            stage[name] = (time.perf_counter() - t0) * 1000.0
            return r

        return inner

    hift_inference = model.s3gen.mel2wav.inference

    def capture(*a, **k):
        captured.setdefault("mel", (k.get("speech_feat") if "speech_feat" in k else a[0]).detach().clone())
        return hift_inference(*a, **k)

    model.t3.inference = timed("t3", model.t3.inference)
    model.s3gen.inference = timed("s3gen", model.s3gen.inference)
    model.s3gen.mel2wav.inference = capture

    def gen():
        torch.manual_seed(0)
        return model.generate(text, exaggeration=0.3, cfg_weight=0.3, temperature=0.6).squeeze(0).cpu()

    modes = ("native", "matmul", "conv")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    wavs: dict[str, list[torch.Tensor]] = {m: [] for m in modes}

    def one(mode: str) -> None:
        state = stft_patch.apply("off" if mode == "native" else "on", device)
        old = stft_patch.DEFAULT_METHOD
        stft_patch.DEFAULT_METHOD = mode if mode != "native" else old
        try:
            t0 = time.perf_counter()
            wav = gen()
            ms = (time.perf_counter() - t0) * 1000.0
        finally:
            stft_patch.DEFAULT_METHOD = old
            state.restore()
        runs[mode].append({"total_ms": ms, "t3_ms": stage["t3"], "s3gen_ms": stage["s3gen"]})
        wavs[mode].append(wav)

    for mode in modes:  # warm-up, each mode once
        one(mode)
    for m in modes:
        runs[m].clear()
        wavs[m].clear()
    for _ in range(reps):  # interleaved, so drift hits every mode alike
        for mode in modes:
            one(mode)

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    native_wav, patched_wav = wavs["native"][0], wavs["matmul"][0]
    same_shape = native_wav.shape == patched_wav.shape
    out: dict = {
        "audio_s": patched_wav.shape[-1] / SR,
        "what": f"full ChatterboxTTS.generate, random-init, {max_tokens} tokens; native/patched interleaved",
        "median_of": reps,
        "native_ms": med("native", "total_ms"),
        "patched_ms": med("matmul", "total_ms"),
        "conv_ms": med("conv", "total_ms"),
        "stages_ms": {m: {"t3": med(m, "t3_ms"), "s3gen": med(m, "s3gen_ms")} for m in modes},
        "runs": runs,
        "patched_modules": list(stft_patch.PATCH_TARGETS),
        "rel_err": _rel(patched_wav, native_wav) if same_shape else None,
        "max_abs_diff": float((native_wav - patched_wav).abs().max()) if same_shape else None,
        "conv_rel_err": _rel(wavs["conv"][0], native_wav) if wavs["conv"][0].shape == native_wav.shape else None,
        "native_vs_native_rel_err": _rel(wavs["native"][-1], native_wav),
    }
    # The whole-synthesis rel_err is dominated by cuDNN's TF32 convolutions downstream of the STFT (HiFT, flow):
    # 1e-7 input differences flip TF32 roundings. With TF32 off in cuDNN the same comparison shows the patch.
    if device.startswith("cuda"):
        prev = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            one("native")
            one("matmul")
        finally:
            torch.backends.cudnn.allow_tf32 = prev
        out["rel_err_cudnn_tf32_off_matmul"] = _rel(wavs["matmul"][-1], wavs["native"][-1])
    # HiFT alone on the mel the first synthesis produced: the part of S3Gen the patch touches.
    mel = captured["mel"]
    hift = model.s3gen.mel2wav

    def hift_run():
        torch.manual_seed(0)  # HiFT's sine source draws noise
        with torch.inference_mode():
            return hift.inference(speech_feat=mel)[0]

    h: dict = {"mel_frames": int(mel.shape[-1])}
    h_ref = hift_run()
    h["native_ms"] = _time(hift_run, device, 3, 20)
    for mode, key in (("matmul", "patched"), ("conv", "conv")):
        state = stft_patch.apply("on", device)
        old = stft_patch.DEFAULT_METHOD
        stft_patch.DEFAULT_METHOD = mode
        try:
            h_out = hift_run()
            h[f"{key}_ms"] = _time(hift_run, device, 3, 20)
        finally:
            stft_patch.DEFAULT_METHOD = old
            state.restore()
        h["rel_err" if key == "patched" else "conv_rel_err"] = _rel(h_out, h_ref)
    out["hift_only"] = h
    print(
        f"synthesis native {out['native_ms']:.1f} ms  patched {out['patched_ms']:.1f} ms  conv {out['conv_ms']:.1f} ms"
        f"  rel_err {out['rel_err']}  nat-nat {out['native_vs_native_rel_err']}  "
        f"tf32-off {out.get('rel_err_cudnn_tf32_off_matmul')}\n  stages {out['stages_ms']}\n  hift {h}"
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
    ap.add_argument("--checkpoint", type=Path, default=None, help="random-init checkpoint; skip synthesis if absent")
    ap.add_argument("--max-new-tokens", type=int, default=100)
    ap.add_argument("--synth-reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/stft-patch.json"))
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    cases = [
        _as_default(c, N_FFT)
        for c in stft_cases(args.device, [float(s) for s in args.seconds.split(",")], args.warmup, args.reps)
    ]
    cases += [
        _as_default(c, n) for c, n in zip(mel_stft_cases(args.device, args.warmup, args.reps), (400, 1920), strict=True)
    ]
    if args.checkpoint is not None:  # a synthesis calls the patch only in HiFT (n_fft 16)
        cases.append(
            _as_default(synthesis_case(args.device, args.checkpoint, args.max_new_tokens, args.synth_reps), N_FFT)
        )
    doc = {
        "device": device_label(args.device),
        "host": platform.node(),
        "selftest_native": stft_patch.selftest(args.device) or "ok",
        "method": "median wall ms after warm-up, torch.cuda.synchronize around each run",
        "target": "patched_ms <= native_ms",
        "cases": cases,
    }
    write_json_atomic(args.out, doc)  # the project's one JSON writer
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
