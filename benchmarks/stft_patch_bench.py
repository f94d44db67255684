"""Benchmark: the Blackwell STFT patch on a GPU — speed, exactness, and the hazard itself (cuFFT and NVRTC).

Run inside the chatterbox venv (or with the wheels below) on a GPU host::

    python benchmarks/stft_patch_bench.py --checkpoint /tmp/ckpt --hazard --hide-nvrtc --out stft-patch.json

What one run records (``docs/benchmarks/stft-patch.json``):

* ``cases`` — HiFT's stft -> istft (n_fft 16, hop 4, hann, center) on 1/10/60 s of 24 kHz audio, the tokenizer
  (400/160) and S3Gen mel (1920/480) stft alone, each the median of N synchronized runs after warm-up, patched
  (``matmul`` and ``conv``; ``patched_*`` = what ``auto`` uses for that n_fft) vs native, rel_err against torch's;
  then a whole ``ChatterboxTTS.generate`` (random-init weights, capped tokens, seed 0, TF32 off), native and
  patched runs interleaved (medians), T3/S3Gen split, and HiFT alone on the captured mel.
* ``profile`` (``--hazard``) — one fresh process per patch mode (off, on), each running three segments under
  ``torch.profiler`` and a complex-op audit (:mod:`ttsbench.chatterbox.spectral_audit`): ``generate`` (reference
  conditioning from a WAV — CAMPPlus kaldi fbank, tokenizer and S3Gen mels — then upstream ``generate``, whose
  watermark runs on the CPU), ``fast`` (``FastChatterbox.synthesize`` + ``stream``, watermark on the GPU) and
  ``server`` (``serve-chatterbox``'s Engine loading with a reference, answering ``bench-http``). Per segment:
  cuFFT kernels, spectral aten ops, aten ops that computed on complex tensors, and the kernels PyTorch's
  jiterator compiled with NVRTC (new files in a per-process ``PYTORCH_KERNEL_CACHE_PATH``).
  ``cufft_kernels_with_patch`` / ``nvrtc_compilations_with_patch`` sum the patch-on segments.
* ``nvrtc_unavailable`` (``--hazard --hide-nvrtc``, needs write access to the libraries) — every ``libnvrtc*``
  found is moved away (a faithful stand-in for an NVRTC that cannot compile for the GPU) and restored after;
  then, in fresh processes: patch off -> the error of a reference-conditioned ``generate``; ``auto`` -> its
  decision, ``generate``, the fast path, and ``serve-chatterbox --stft-patch auto`` answering ``bench-http``.

Device runs get the checkout; the chatterbox wheels travel in ``.whl/`` (git-ignored; the image's torch and
transformers are used), e.g.::

    pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD/python
    python -c "from ttsbench.chatterbox import checkpoint; checkpoint.make_random_checkpoint('/tmp/ckpt', seed=0)"
    python benchmarks/stft_patch_bench.py --checkpoint /tmp/ckpt --hazard --hide-nvrtc --out $OUT/stft-patch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ttsbench.atomic import write_json_atomic
from ttsbench.chatterbox import realdft, stft_patch
from ttsbench.httpserve import free_port

SR = 24000
N_FFT, HOP = 16, 4
TEXT = "Your appointment is on Tuesday, March 4th, at 3:45 PM."
ROOT = Path(__file__).resolve().parent.parent


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
    use_conv = realdft._use_conv(None, n_fft)
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
            spec = realdft.stft(x, N_FFT, HOP, N_FFT, window=win, return_complex=True, method=method)
            return spec, realdft.istft(spec, N_FFT, HOP, N_FFT, window=win, method=method)

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
                return realdft.stft(*a, **k, method=method)

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
    """Whole ChatterboxTTS.generate, native vs patched (auto methods), interleaved; TF32 off in cuBLAS and cuDNN."""
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.runner import cap_tokens

    model = ChatterboxTTS.from_local(checkpoint, device)
    cap_tokens(model, max_tokens)
    stage: dict[str, float] = {}
    captured: dict[str, torch.Tensor] = {}

    def timed(name: str, fn):
        def inner(*a, **k):
            _sync(device)
            t0 = time.perf_counter()
            r = fn(*a, **k)
            _sync(device)
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
        return model.generate(TEXT, exaggeration=0.3, cfg_weight=0.3, temperature=0.6).squeeze(0).cpu()

    modes = ("native", "patched")
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    wavs: dict[str, list[torch.Tensor]] = {m: [] for m in modes}

    def one(mode: str) -> None:
        state = stft_patch.apply("off" if mode == "native" else "on", device)
        try:
            _sync(device)
            t0 = time.perf_counter()
            wav = gen()
            ms = (time.perf_counter() - t0) * 1000.0
        finally:
            state.restore()
        runs[mode].append(
            {
                "total_ms": ms,
                "t3_ms": stage["t3"],
                "s3gen_ms": stage["s3gen"],
                "watermark_and_rest_ms": ms - stage["t3"] - stage["s3gen"],
            }
        )
        wavs[mode].append(wav)

    prev = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for mode in modes:  # warm-up, each mode once
            one(mode)
        for m in modes:
            runs[m].clear()
            wavs[m].clear()
        for _ in range(reps):  # interleaved, so drift hits every mode alike
            for mode in modes:
                one(mode)
    finally:
        torch.backends.cudnn.allow_tf32 = prev

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    native_wav, patched_wav = wavs["native"][0], wavs["patched"][0]
    same_shape = native_wav.shape == patched_wav.shape
    out: dict = {
        "audio_s": patched_wav.shape[-1] / SR,
        "what": f"full ChatterboxTTS.generate, random-init, {max_tokens} tokens, TF32 off; native/patched interleaved",
        "median_of": reps,
        "native_ms": med("native", "total_ms"),
        "patched_ms": med("patched", "total_ms"),
        "patched_method": "auto (conv n_fft<=512, matmul above)",
        "stages_ms": {m: {k: med(m, f"{k}_ms") for k in ("t3", "s3gen", "watermark_and_rest")} for m in modes},
        "runs": runs,
        "patched_modules": list(stft_patch.PATCH_TARGETS),
        "rel_err": _rel(patched_wav, native_wav) if same_shape else None,
        "max_abs_diff": float((native_wav - patched_wav).abs().max()) if same_shape else None,
        "native_vs_native_rel_err": _rel(wavs["native"][-1], native_wav),
    }
    # HiFT alone on the mel the first synthesis produced: the part of S3Gen the patch touches.
    mel = captured["mel"]
    hift = model.s3gen.mel2wav

    def hift_run():
        torch.manual_seed(0)  # HiFT's sine source draws noise
        with torch.inference_mode():
            return hift.inference(speech_feat=mel)[0]

    h: dict = {"mel_frames": int(mel.shape[-1]), "cudnn_tf32": torch.backends.cudnn.allow_tf32}
    h_ref = hift_run()
    h["native_ms"] = _time(hift_run, device, 3, 20)
    for mode in ("matmul", "conv"):
        state = stft_patch.apply("on", device)
        old = realdft.DEFAULT_METHOD
        realdft.DEFAULT_METHOD = mode
        try:
            h_out = hift_run()
            h[f"{mode}_ms"] = _time(hift_run, device, 3, 20)
        finally:
            realdft.DEFAULT_METHOD = old
            state.restore()
        h[f"{mode}_rel_err"] = _rel(h_out, h_ref)
    h["patched_method"] = "conv" if realdft._use_conv(None, N_FFT) else "matmul"
    h["patched_ms"] = h[f"{h['patched_method']}_ms"]
    out["hift_only"] = h
    print(
        f"synthesis native {out['native_ms']:.1f} ms  patched {out['patched_ms']:.1f} ms  rel_err {out['rel_err']}  "
        f"nat-nat {out['native_vs_native_rel_err']}\n  stages {out['stages_ms']}\n  hift {h}",
        flush=True,
    )
    return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------- the hazard


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:400]


def reference_wav(path: Path, seconds: float = 3.0) -> Path:
    """A voiced-sounding 150 Hz reference (24 kHz, PCM16), as the tests use."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    sf.write(str(path), x.astype(np.float32), SR, subtype="PCM_16")
    return path


def _env() -> dict[str, str]:
    paths = [str(ROOT / "python"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONUNBUFFERED": "1"}


def bench_http(url: str, run_dir: Path, timeout_s: float = 300) -> dict:
    """``ttsbench bench-http`` (one utterance, no warm-up) against ``url``: rc, its summary line, ok."""
    argv = [
        sys.executable,
        "-m",
        "ttsbench",
        "bench-http",
        url,
        "--only",
        "u01",
        "--warmup",
        "0",
        "--run-dir",
        str(run_dir),
        "--engine",
        "chatterbox",
        "--host-label",
        "bench",
        "--no-progress",
        "--timeout",
        "240",
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=_env(), check=False)
    tail = (res.stdout + res.stderr).strip().splitlines()
    return {"rc": res.returncode, "ok": res.returncode == 0, "output": tail[-3:]}


def _segment(name: str, fn: Callable[[dict], None], kc_dir: Path, audit_too: bool = True) -> dict:
    """Run ``fn`` under the profiler (and the complex-op audit); what the hazard is about, per segment."""
    from ttsbench.chatterbox import spectral_audit as sa

    before = set(sa.jiterator_cache_files(kc_dir))
    rec: dict[str, Any] = {}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    audit = sa.ComplexOpAudit()
    prof = torch.profiler.profile(activities=activities)
    t0 = time.perf_counter()
    try:
        with prof:
            if audit_too:
                with audit:
                    fn(rec)
            else:
                fn(rec)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        rec["ok"] = True
    except Exception as exc:  # recorded: the run goes on with the next segment
        rec["ok"], rec["error"] = False, _err(exc)
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    try:
        rec["cufft_kernels"] = sa.cufft_kernels(prof)
        rec["spectral_ops"] = sa.spectral_op_names(prof)
    except Exception as exc:  # a profiler that failed to collect
        rec["profiler_error"] = _err(exc)
    rec["complex_ops_computed"] = audit.computed() if audit_too else "not audited (other threads)"
    rec["complex_ops_moved"] = audit.moved() if audit_too else None
    rec["nvrtc_compiled"] = sorted(set(sa.jiterator_cache_files(kc_dir)) - before)
    print(
        f"  [{name}] ok={rec['ok']} cufft={sum(rec.get('cufft_kernels', {}).values())} "
        f"nvrtc={len(rec['nvrtc_compiled'])} complex={rec['complex_ops_computed']} {rec.get('error', '')}",
        flush=True,
    )
    return rec


def _load(checkpoint: Path, device: str, tokens: int) -> Any:
    from chatterbox.tts import ChatterboxTTS

    from ttsbench.chatterbox.runner import cap_tokens

    model = ChatterboxTTS.from_local(checkpoint, device)
    cap_tokens(model, tokens)
    return model


def _generate(model: Any, ref: Path) -> Any:
    torch.manual_seed(0)
    return model.generate(TEXT, audio_prompt_path=str(ref), exaggeration=0.3, cfg_weight=0.3, temperature=0.6)


def _fast(model: Any) -> Any:
    """The fast path over ``model`` (moves the watermarker to the GPU; compiles T3 layers: no spectral op)."""
    from ttsbench.chatterbox.fast import FastChatterbox

    return FastChatterbox(model)


def _fast_run(fast: Any, tokens: int, stream: bool = True) -> int:
    from ttsbench.chatterbox.fast_t3 import SamplingParams

    params = SamplingParams(temperature=0.6, cfg_weight=0.3)
    torch.manual_seed(0)
    n = len(fast.synthesize(TEXT, params, max_new_tokens=tokens, exaggeration=0.3))
    if stream:
        n += sum(len(c) for c in fast.stream(TEXT, params, max_new_tokens=tokens, exaggeration=0.3))
    return n


def child_profile(args: argparse.Namespace) -> dict:
    """One process, one patch mode: generate / fast / server segments (see the module docstring)."""
    from ttsbench.chatterbox import spectral_audit as sa
    from ttsbench.chatterbox.server import Engine, ServerConfig, make_server

    kc_dir = Path(os.environ["PYTORCH_KERNEL_CACHE_PATH"])
    state = stft_patch.apply(args.patch, args.device)
    out: dict[str, Any] = {"patch": state.as_dict(), "segments": {}}
    model = _load(args.checkpoint, args.device, args.hazard_tokens)

    def gen(rec: dict) -> None:
        rec["samples"] = int(_generate(model, args.ref).shape[-1])

    if "generate" in args.segments:
        out["segments"]["generate"] = _segment("generate", gen, kc_dir)

    def fast(rec: dict) -> None:
        rec["samples"] = _fast_run(fp, args.hazard_tokens)

    if "fast" in args.segments:
        fp = _fast(model)
        out["fast_compile_error"] = fp.t3.compile_error
        out["segments"]["fast"] = _segment("fast", fast, kc_dir)
        fp = None
    model = None  # the server loads its own

    def server(rec: dict) -> None:
        port = free_port()
        cfg = ServerConfig(
            weights=str(args.checkpoint),
            weights_label="random-init",
            reference=str(args.ref),
            device=args.device,
            port=port,
            stft_patch=args.patch,
            max_new_tokens=args.hazard_tokens,
            seed=0,
            voice="ref",
        )
        engine = Engine(cfg)
        engine.load()
        rec["server_stft_patch"] = engine.stft_state
        rec["fast"] = engine.fast is not None
        srv = make_server(cfg, engine)
        th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        th.start()
        try:
            with tempfile.TemporaryDirectory() as d:
                rec["bench_http"] = bench_http(f"http://127.0.0.1:{port}", Path(d) / "run")
        finally:
            srv.shutdown()
            srv.server_close()
        if not rec["bench_http"]["ok"]:
            raise RuntimeError(f"bench-http failed: {rec['bench_http']['output']}")

    # requests are served on other threads: the audit (thread-local) would miss them, the profiler does not
    if "server" in args.segments:
        out["segments"]["server"] = _segment("server", server, kc_dir, audit_too=False)
    out["nvrtc_mapped"] = sa.nvrtc_mapped()
    state.restore()
    return out


def child_nvrtc(args: argparse.Namespace) -> dict:
    """With libnvrtc gone: what ``--patch`` (off/auto) decides, and whether generate and the fast path run."""
    from ttsbench.chatterbox import spectral_audit as sa

    out: dict[str, Any] = {"selftest": stft_patch.selftest_checks(args.device)}
    state = stft_patch.apply(args.patch, args.device)
    out["patch"] = state.as_dict()
    model = _load(args.checkpoint, args.device, args.hazard_tokens)
    for name, fn in (
        ("generate", lambda: _generate(model, args.ref)),
        ("fast", lambda: _fast_run(_fast(model), args.hazard_tokens)),
    ):
        if name not in args.segments:
            continue
        try:
            fn()
            _sync(args.device)
            out[name] = "ok"
        except Exception as exc:  # the failure the patch exists for
            out[name] = _err(exc)
        print(f"  [nvrtc gone, patch {args.patch}] {name}: {out[name]}", flush=True)
    out["nvrtc_mapped"] = sa.nvrtc_mapped()
    return out


def run_child(args: argparse.Namespace, kind: str, patch: str, timeout_s: float, env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as d:
        res_path = Path(d) / "child.json"
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            "--patch",
            patch,
            "--device",
            args.device,
            "--checkpoint",
            str(args.checkpoint),
            "--ref",
            str(args.ref),
            "--hazard-tokens",
            str(args.hazard_tokens),
            "--child-out",
            str(res_path),
            "--segments",
            args.segments,
        ]
        child_env = {**_env(), **(env or {})}
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=child_env, check=False)
        except subprocess.TimeoutExpired as exc:
            return {"error": f"child {kind}/{patch} ran past {timeout_s:g} s", "output": str(exc.stdout)[-2000:]}
        sys.stdout.write(res.stdout[-4000:])
        if res_path.is_file():
            return json.loads(res_path.read_text())
        return {"error": f"child {kind}/{patch} exited {res.returncode}", "output": (res.stdout + res.stderr)[-3000:]}


def find_nvrtc(roots: list[Path] | None = None) -> list[Path]:
    """Every libnvrtc* file or link under ``roots`` (default: the places a CUDA torch finds it)."""
    if not roots:
        roots = [
            Path(torch.__file__).resolve().parent.parent,
            Path(sys.prefix),
            Path("/usr/local"),
            Path("/usr/lib"),
            Path("/usr/lib64"),
            Path("/lib"),
            Path("/opt"),
            *(Path(p) for p in sys.path if p and Path(p).is_dir()),
        ]
    found: set[Path] = set()
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                if f.startswith("libnvrtc"):
                    found.add(Path(dirpath) / f)
    return sorted(found)


def hide(paths: list[Path], into: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Move ``paths`` into ``into``; (moved pairs, errors)."""
    moved: list[tuple[Path, Path]] = []
    errors: list[str] = []
    for i, p in enumerate(paths):
        dst = into / f"{i}-{p.name}"
        try:
            shutil.move(str(p), str(dst))
            moved.append((p, dst))
        except OSError as exc:
            errors.append(f"{p}: {exc}")
    return moved, errors


def restore(moved: list[tuple[Path, Path]]) -> list[str]:
    errors = []
    for src, dst in reversed(moved):
        try:
            shutil.move(str(dst), str(src))
        except OSError as exc:
            errors.append(f"{src}: {exc}")
    return errors


def server_with_nvrtc_gone(args: argparse.Namespace, log_dir: Path) -> dict:
    """``serve-chatterbox --stft-patch auto`` (its own process) answering ``bench-http``."""
    import urllib.request

    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "ttsbench",
        "serve-chatterbox",
        "--weights",
        str(args.checkpoint),
        "--reference",
        str(args.ref),
        "--device",
        args.device,
        "--port",
        str(port),
        "--seed",
        "0",
        "--max-new-tokens",
        str(args.hazard_tokens),
        "--stft-patch",
        "auto",
    ]
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    log = (log_dir / "server.log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                log.flush()
                return {
                    "ok": False,
                    "error": f"server exited {proc.returncode}",
                    "log": (log_dir / "server.log").read_text()[-2000:],
                }
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    out["health_stft_patch"] = json.loads(r.read())["stft_patch"]
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                return {"ok": False, "error": "server not healthy in 300 s"}
            time.sleep(1)
        out["bench_http"] = bench_http(url, log_dir / "run")
        out["ok"] = out["bench_http"]["ok"]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    if not out.get("ok"):
        out["log"] = (log_dir / "server.log").read_text()[-2000:]
    return out


def hazard(args: argparse.Namespace, doc: dict, save: Callable[[], None]) -> None:
    work = Path(tempfile.mkdtemp(prefix="stft-hazard-"))
    args.ref = reference_wav(work / "ref.wav")
    profile: dict[str, Any] = {}
    for patch in ("off", "on"):
        kc = work / f"kernel-cache-{patch}"
        kc.mkdir()
        print(f"profile, patch {patch}", flush=True)
        profile[f"patch_{patch}"] = run_child(
            args, "profile", patch, args.child_timeout, {"PYTORCH_KERNEL_CACHE_PATH": str(kc)}
        )
    doc["profile"] = profile
    on = profile["patch_on"].get("segments", {})
    doc["cufft_kernels_with_patch"] = sum(sum(s.get("cufft_kernels", {}).values()) for s in on.values()) if on else None
    doc["nvrtc_compilations_with_patch"] = sum(len(s.get("nvrtc_compiled", [])) for s in on.values()) if on else None
    doc["complex_ops_computed_with_patch"] = {k: s.get("complex_ops_computed") for k, s in on.items()}
    save()
    if not args.hide_nvrtc:
        return
    libs = find_nvrtc(args.nvrtc_roots)
    stash = work / "nvrtc-away"
    stash.mkdir()
    moved, errors = hide(libs, stash)
    nv: dict[str, Any] = {"hidden": [str(s) for s, _ in moved], "hide_errors": errors}
    try:
        print(f"nvrtc hidden: {nv['hidden']} errors {errors}", flush=True)
        off = run_child(args, "nvrtc", "off", args.child_timeout)
        auto = run_child(args, "nvrtc", "auto", args.child_timeout)
        srv = server_with_nvrtc_gone(args, work) if "server" in args.segments else {}
        nv.update(
            {
                "patch_off": off.get("generate") if off.get("generate") != "ok" else "no failure: generate ran",
                "patch_off_fast": off.get("fast"),
                "patch_off_selftest": off.get("selftest"),
                "patch_on_generate": auto.get("generate", auto.get("error")),
                "patch_on_fast": auto.get("fast", auto.get("error")),
                "patch_on_server": "ok" if srv.get("ok") else srv.get("error") or srv.get("bench_http"),
                "auto_decision": (auto.get("patch") or {}).get("reason"),
                "auto_state": auto.get("patch"),
                "auto_nvrtc_mapped": auto.get("nvrtc_mapped"),
                "server": srv,
            }
        )
    finally:
        nv["restore_errors"] = restore(moved)
        nv["restored"] = not nv["restore_errors"] and all(s.exists() for s, _ in moved)
        doc["nvrtc_unavailable"] = nv
        save()


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
    ap.add_argument("--synth-reps", type=int, default=5)
    ap.add_argument("--no-synthesis", action="store_true", help="skip the timed whole synthesis")
    ap.add_argument("--hazard", action="store_true", help="profile cuFFT/NVRTC/complex ops, patch off and on")
    ap.add_argument("--hide-nvrtc", action="store_true", help="also run with every libnvrtc* moved away (restored)")
    ap.add_argument(
        "--nvrtc-roots",
        type=Path,
        nargs="*",
        default=None,
        help="where to look for libnvrtc* (default: torch's, the prefix's and the system's lib folders)",
    )
    ap.add_argument("--hazard-tokens", type=int, default=30, help="speech-token cap of the hazard runs")
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks/stft-patch.json"))
    ap.add_argument("--segments", default="generate,fast,server", help="hazard segments to run (comma-separated)")
    ap.add_argument("--child-timeout", type=float, default=420, help="seconds per hazard child process")
    ap.add_argument("--child", choices=("profile", "nvrtc"), help=argparse.SUPPRESS)
    ap.add_argument("--patch", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--ref", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    if args.child:
        result = (child_profile if args.child == "profile" else child_nvrtc)(args)
        args.child_out.write_text(json.dumps(result))
        return 0

    doc: dict[str, Any] = {
        "device": device_label(args.device),
        "host": platform.node(),
        "selftest_native": stft_patch.selftest_checks(args.device),
        "auto_decision_here": stft_patch.apply("auto", args.device, targets=()).as_dict(),
        "method": "median wall ms after warm-up, torch.cuda.synchronize around each run",
        "target": "patched_ms <= native_ms",
        "cases": [],
    }

    def save() -> None:
        write_json_atomic(args.out, doc)  # the project's one JSON writer

    cases = [
        _as_default(c, N_FFT)
        for c in stft_cases(args.device, [float(s) for s in args.seconds.split(",")], args.warmup, args.reps)
    ]
    cases += [
        _as_default(c, n) for c, n in zip(mel_stft_cases(args.device, args.warmup, args.reps), (400, 1920), strict=True)
    ]
    doc["cases"] = cases
    save()
    if args.hazard:  # before the timed synthesis: what the run is for comes back first
        if args.checkpoint is None:
            raise SystemExit("--hazard needs --checkpoint")
        hazard(args, doc, save)
    if args.checkpoint is not None and not args.no_synthesis:
        try:
            cases.append(synthesis_case(args.device, args.checkpoint, args.max_new_tokens, args.synth_reps))
        except Exception as exc:  # keep what was measured
            doc["synthesis_error"] = _err(exc)
        save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
