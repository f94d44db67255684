"""Where one CPU Chatterbox synthesis of the rehearsal spends its time (random-init weights, upstream path).

Compares the rehearsal's old settings (7.5 s reference, 40 tokens) with the current ones (3 s reference, 32
tokens): conditionals, T3, S3Gen flow, HiFT. Prints a table and writes docs/benchmarks/rehearsal-synthesis.json.
usage: chatterbox-venv python benchmarks/rehearsal_synthesis.py CHECKPOINT_DIR
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cpu_machine

ROOT = Path(__file__).resolve().parents[1]
OLD_TEXT = (
    "Hello, this is the rehearsal reference voice. It speaks a few calm sentences so that the voice can be cloned."
)
NEW_TEXT = "Hello, this is the rehearsal reference voice."


def timed(stages: dict[str, float], obj: Any, name: str, label: str) -> None:
    fn = getattr(obj, name)

    def wrapper(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            stages[label] = stages.get(label, 0.0) + time.perf_counter() - t0

    setattr(obj, name, wrapper)


def main() -> None:
    import torch
    from chatterbox.tts import ChatterboxTTS

    sys.path.insert(0, str(ROOT / "python"))
    from ttsbench.chatterbox.runner import cap_tokens

    model = ChatterboxTTS.from_local(sys.argv[1], "cpu")
    stages: dict[str, float] = {}
    timed(stages, model, "prepare_conditionals", "conditionals_s")
    timed(stages, model.t3, "inference", "t3_s")
    timed(stages, model.s3gen.flow, "inference", "s3gen_flow_s")
    timed(stages, model.s3gen.mel2wav, "inference", "hift_s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = (("old: 7.5 s ref, 40 tokens", OLD_TEXT, 40), ("now: 3 s ref, 32 tokens", NEW_TEXT, 32))
        for label, text, tokens in settings:
            ref = Path(tmp) / "ref.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(ref), text], check=True)
            cap_tokens(model, tokens)
            for _ in range(2):  # the second call is the one reported (first-call allocations excluded)
                stages.clear()
                t0 = time.perf_counter()
                wav = model.generate(
                    "Hello, this is a failover check.",
                    audio_prompt_path=str(ref),
                    exaggeration=0.3,
                    cfg_weight=0.3,
                    temperature=0.6,
                )
                total = time.perf_counter() - t0
            rows.append(
                {
                    "setting": label,
                    "max_new_tokens": tokens,
                    "total_s": round(total, 2),
                    "audio_s": round(wav.shape[-1] / 24000, 2),
                    **{k: round(v, 2) for k, v in stages.items()},
                }
            )
    doc = {"machine": cpu_machine.machine(torch), "weights": "random-init", "device": "cpu", "rows": rows}
    for r in rows:
        parts = "  ".join(f"{k} {r[k]:.1f}" for k in ("conditionals_s", "t3_s", "s3gen_flow_s", "hift_s"))
        print(f"{r['setting']:<28} total {r['total_s']:6.1f} s  {parts}  audio {r['audio_s']} s")
    cpu_machine.write("rehearsal-synthesis", doc)


if __name__ == "__main__":
    main()
