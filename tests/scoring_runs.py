"""Build synthetic-but-real run folders: speech from espeak-ng, results.json per docs/run-folder.md."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import soundfile as sf

TEXTS = {
    "u01": "Hello, this is your assistant speaking.",
    "u02": "The weather today is sunny with a light breeze.",
    "u03": "Please hold while I connect your call.",
}
# Two "systems": two espeak voices/speeds on two hosts, plus a reference clip.
SYSTEMS = {
    "chatterbox@titan": ("chatterbox", "titan", ["-v", "en-us", "-s", "165"]),
    "chatterbox@panda": ("chatterbox", "panda", ["-v", "en-gb", "-s", "140", "-p", "70"]),
}

HAVE_ESPEAK = shutil.which("espeak-ng") is not None


def speak(path: Path, text: str, voice: list[str]) -> float:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", *voice, "-w", str(path), text], check=True, capture_output=True)
    info = sf.info(str(path))
    return info.frames / info.samplerate


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    ok = [r for r in rows if r["ok"]]
    t = np.array([r["ttfa_ms"] for r in ok]) if ok else np.array([])
    f = np.array([r["rtf"] for r in ok]) if ok else np.array([])

    def pct(a, q):
        return float(np.percentile(a, q)) if len(a) else None

    return {
        "n": len(rows),
        "n_ok": len(ok),
        "n_error": len(rows) - len(ok),
        "mean_ttfa_ms": float(t.mean()) if len(t) else None,
        "p50_ttfa_ms": pct(t, 50),
        "p90_ttfa_ms": pct(t, 90),
        "p99_ttfa_ms": pct(t, 99),
        "mean_rtf": float(f.mean()) if len(f) else None,
        "p50_rtf": pct(f, 50),
        "p90_rtf": pct(f, 90),
        "p99_rtf": pct(f, 99),
        "rtf_definition": "synthesis_seconds / audio_seconds (lower is faster; < 1 is faster than real time)",
        "peak_gpu_mem_mb": None,
        "peak_proc_mem_mb": None,
    }


def make_run(
    root: Path,
    systems: dict[str, tuple[str, str, list[str]]] | None = None,
    texts: dict[str, str] | None = None,
    ttfa_ms: dict[str, float] | None = None,
    gemma_drift: float | None = 1.05,
    kind: str = "bench-chatterbox",
    standin: set[str] | None = None,
    config: dict[str, dict] | None = None,
) -> Path:
    systems = systems or SYSTEMS
    texts = texts or TEXTS
    ttfa_ms = ttfa_ms or {}
    run = root / f"{kind}-20261124T101500Z"
    speak(
        run / "reference" / "voice.wav",
        "This is the reference voice for identity.",
        ["-v", "en-us", "-s", "160"],
    )
    doc_systems = []
    for k, (sid, (engine, host, voice)) in enumerate(systems.items()):
        rows = []
        for j, (utt, text) in enumerate(texts.items()):
            rel = f"wavs/{engine}/{host}/{utt}.wav"
            audio_s = speak(run / rel, text, voice)
            base = ttfa_ms.get(sid, 120.0 + 40 * k)
            total = 300.0 + 100 * j + 50 * k
            rows.append(
                {
                    "utt_id": utt,
                    "text": text,
                    "wav": rel,
                    "ok": True,
                    "error": None,
                    "http_status": 200,
                    "ttfa_ms": base + 7 * j,
                    "t_first_nonsilent_ms": base + 20 + 7 * j,
                    "total_ms": total,
                    "audio_s": audio_s,
                    "rtf": total / 1000 / audio_s,
                    "sample_rate": 22050,
                    "concurrency": 1,
                }
            )
        doc_systems.append(
            {
                "system_id": sid,
                "engine": {
                    "name": engine,
                    "version": "0.1.7",
                    "install": "pip --no-deps, torch keep",
                    "standin": sid in (standin or set()),
                    "weights": "random-init",
                },
                "host": {
                    "name": host,
                    "arch": "x86_64",
                    "gpu_name": None,
                    "compute_capability": None,
                    "driver": None,
                    "cuda": None,
                    "torch": "2.9.1",
                    "python": "3.11.2",
                },
                "config": (config or {}).get(sid, {"voice": "reference/voice.wav"}),
                "utterances": rows,
                "summary": summary(rows),
            }
        )
    gemma = None
    if gemma_drift is not None:
        gemma = {
            "mode": "parallel",
            "backend": "standin",
            "standin": True,
            "baseline_p50_ms": 190.0,
            "during_p50_ms": 240.0,
            "post_p50_ms": 190.0 * gemma_drift,
            "drift": gemma_drift,
            "max_drift": 1.2,
            "gate": "pass" if gemma_drift <= 1.2 else "fail",
        }
    doc = {
        "schema_version": 1,
        "run_id": run.name,
        "kind": kind,
        "started_at": "2026-11-24T10:15:00Z",
        "finished_at": "2026-11-24T10:20:00Z",
        "complete": True,
        "systems": doc_systems,
        "gemma": gemma,
        "scores": None,
        "verdict": None,
    }
    (run / "results.json").write_text(json.dumps(doc, indent=2))
    return run
