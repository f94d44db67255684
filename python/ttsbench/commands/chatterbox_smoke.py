"""``ttsbench chatterbox-smoke``: load Chatterbox once, synthesize one short sentence, check the audio.

Runs inside the chatterbox venv (roles/chatterbox calls it after installing). Prints one JSON object with
the versions and the audio checks; exits non-zero when the audio is empty, not finite or not 24 kHz.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chatterbox-smoke", help="post-install check: one short Chatterbox synthesis (chatterbox venv)")
    p.add_argument("--weights", default="hub", help="'hub' or a local checkpoint directory")
    p.add_argument("--weights-label", default=None, help="hub, local or random-init (default: guessed)")
    p.add_argument("--reference", default="", help="reference WAV (default: the checkpoint's built-in voice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--stft-patch", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap speech tokens (random-init weights)")
    p.add_argument("--text", default="Hello from the smoke test.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the audio here (WAV)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import numpy as np

    from ttsbench.chatterbox.server import SAMPLE_RATE, Engine, ServerConfig
    from ttsbench.commands.serve_chatterbox import _guess_label
    from ttsbench.errors import UserError

    label = args.weights_label or ("hub" if args.weights == "hub" else _guess_label(Path(args.weights)))
    cfg = ServerConfig(
        weights=args.weights,
        weights_label=label,
        reference=args.reference,
        device=args.device,
        stft_patch=args.stft_patch,
        max_new_tokens=args.max_new_tokens,
    )
    engine = Engine(cfg)
    engine.load()
    sr = int(engine.model.sr)
    t0 = time.perf_counter()
    x = engine.synthesize(args.text, seed=args.seed)
    synth_s = time.perf_counter() - t0
    n = int(x.shape[0])
    rms = float(np.sqrt(np.mean(np.square(x.astype(np.float64))))) if n else 0.0
    facts = {
        "ok": True,
        "sample_rate": sr,
        "samples": n,
        "audio_s": round(n / sr, 3) if sr else 0.0,
        "rms": round(rms, 6),
        "finite": bool(np.isfinite(x).all()),
        "synth_s": round(synth_s, 3),
        "load_s": round(engine.load_s, 3),
        "device": engine.device,
        "weights": label,
        "max_new_tokens": args.max_new_tokens,
        "stft_patch": engine.stft_state,
        **engine.versions,
    }
    problems = []
    if sr != SAMPLE_RATE:
        problems.append(f"sample rate {sr} Hz, expected {SAMPLE_RATE}")
    if n == 0:
        problems.append("no audio samples")
    elif rms == 0.0:
        problems.append("audio is all zeros")
    if args.out and n:
        import soundfile as sf

        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp")
        sf.write(str(tmp), x, sr, subtype="PCM_16", format="WAV")
        tmp.replace(out)
    if problems:
        facts["ok"] = False
        facts["problems"] = problems
    print(json.dumps(facts), flush=True)
    if problems:
        raise UserError("chatterbox smoke synthesis failed: " + "; ".join(problems), exit_code=1)
    return 0
