"""Offline objective metrics per clip and per pair of systems → ``scores/objective.json``.

Core metrics use numpy/soundfile only. Optional ones need the ``metrics`` extra; when their module is
missing, the metric is listed under ``skipped`` with the reason, and everything else is still computed.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttsbench.results import utc_now
from ttsbench.scoring.registry import METRICS, METRICS_EXTRA_HINT
from ttsbench.scoring.rundoc import RunDir

SILENCE_DBFS = -40.0
FRAME_S = 0.02
ANALYSIS_SR = 16000


def load_mono(path: Path, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Float32 mono in [-1, 1]; resampled to ``sr`` (polyphase) when given."""
    import soundfile as sf

    y, fs = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr is not None and fs != sr:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(fs), int(sr))
        y = resample_poly(y, sr // g, int(fs) // g).astype(np.float32)
        fs = sr
    return y, int(fs)


def frame_dbfs(y: np.ndarray, sr: int) -> np.ndarray:
    n = max(1, int(sr * FRAME_S))
    k = len(y) // n
    if k == 0:
        return np.array([-120.0])
    fr = y[: k * n].reshape(k, n).astype(np.float64)
    rms = np.sqrt(np.mean(fr * fr, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def basic_metrics(y: np.ndarray, sr: int, text: str) -> dict[str, float]:
    dur = len(y) / sr
    db = frame_dbfs(y, sr)
    loud = np.nonzero(db > SILENCE_DBFS)[0]
    lead = (loud[0] if len(loud) else len(db)) * FRAME_S
    chars = max(1, len(text.strip()))
    return {
        "duration_s": round(dur, 4),
        "clipping_rate": float(np.mean(np.abs(y) >= 0.999)) if len(y) else 0.0,
        "leading_silence_s": round(min(lead, dur), 4),
        "silence_ratio": float(np.mean(db <= SILENCE_DBFS)),
        "s_per_char": dur / chars,
        "chars_per_s": chars / dur if dur > 0 else 0.0,
    }


@dataclass
class Backends:
    """Optional metric back ends; ``missing`` maps module name → reason."""

    modules: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    _encoder: Any = None

    @classmethod
    def probe(cls, importer: Callable[[str], Any] = importlib.import_module) -> Backends:
        b = cls()
        for mod in ("resemblyzer", "speechmos", "onnxruntime", "pyloudnorm", "pyworld", "librosa"):
            try:
                b.modules[mod] = importer(mod)
            except Exception as exc:  # ImportError, or a broken install raising something else
                b.missing[mod] = f"{mod} not installed ({type(exc).__name__}): {METRICS_EXTRA_HINT}"
        return b

    def why_not(self, metric: str) -> str | None:
        for mod in METRICS[metric].needs:
            if mod in self.missing:
                return self.missing[mod]
        return None

    def encoder(self) -> Any:
        if self._encoder is None:
            self._encoder = self.modules["resemblyzer"].VoiceEncoder(device="cpu", verbose=False)
        return self._encoder


def embed(b: Backends, y16: np.ndarray) -> np.ndarray:
    wav = b.modules["resemblyzer"].preprocess_wav(y16, source_sr=ANALYSIS_SR)
    return np.asarray(b.encoder().embed_utterance(wav), dtype=np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def dnsmos(b: Backends, y16: np.ndarray) -> dict[str, float]:
    from speechmos import dnsmos as dm

    r = dm.run(np.clip(y16, -1.0, 1.0).astype(np.float32), ANALYSIS_SR)
    return {
        "dnsmos_ovrl": float(r["ovrl_mos"]),
        "dnsmos_sig": float(r["sig_mos"]),
        "dnsmos_p808": float(r["p808_mos"]),
    }


def loudness(b: Backends, y: np.ndarray, sr: int) -> float | None:
    pyln = b.modules["pyloudnorm"]
    if len(y) < int(0.4 * sr):  # BS.1770 needs at least one 400 ms block
        return None
    v = float(pyln.Meter(sr).integrated_loudness(y.astype(np.float64)))
    return v if np.isfinite(v) else None


def world_features(b: Backends, y16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F0 per 5 ms frame, 25 mel-cepstral coefficients per frame)."""
    pw = b.modules["pyworld"]
    x = y16.astype(np.float64)
    f0, t = pw.dio(x, ANALYSIS_SR, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, ANALYSIS_SR)
    sp = pw.cheaptrick(x, f0, t, ANALYSIS_SR)
    mc = pw.code_spectral_envelope(sp, ANALYSIS_SR, 25)
    return f0, mc


def pair_metrics(b: Backends, a16: np.ndarray, b16: np.ndarray) -> dict[str, float]:
    from scipy.spatial.distance import cdist

    f0a, mca = world_features(b, a16)
    f0b, mcb = world_features(b, b16)
    cost = cdist(mca[:, 1:], mcb[:, 1:])
    _, wp = b.modules["librosa"].sequence.dtw(C=cost, backtrack=True)
    ia, ib = wp[::-1, 0], wp[::-1, 1]
    diff = mca[ia, 1:] - mcb[ib, 1:]
    mcd = float(np.mean((10.0 / np.log(10.0)) * np.sqrt(2.0 * np.sum(diff * diff, axis=1))))
    va, vb = f0a[ia] > 0, f0b[ib] > 0
    both = va & vb
    f0_rmse = float(np.sqrt(np.mean((f0a[ia][both] - f0b[ib][both]) ** 2))) if both.any() else None
    return {"mcd_db": mcd, "f0_rmse_hz": f0_rmse, "voicing_error": float(np.mean(va != vb))}


def _mean(vals: list[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return float(np.mean(xs)) if xs else None


def score_run(
    run: RunDir, backends: Backends | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Compute every metric that can run here; the document for ``scores/objective.json``."""
    systems = run.system_ids()
    clips = {s: run.clips(s) for s in systems}  # raises on missing WAVs before anything is written
    b = backends or Backends.probe()
    ref = run.reference
    skipped: list[dict[str, str]] = []
    for name in METRICS:
        why = b.why_not(name)
        if why is None and name == "speaker_similarity" and ref is None:
            why = "no reference/voice.wav in the run folder"
        if why is None and METRICS[name].scope == "pair" and len(systems) < 2:
            why = "needs two systems with the same utterances"
        if why:
            skipped.append({"metric": name, "reason": why})
    skip = {s["metric"] for s in skipped}
    ref_emb = None
    if "speaker_similarity" not in skip:
        ref_emb = embed(b, load_mono(ref, ANALYSIS_SR)[0])

    per_clip: dict[str, dict[str, dict[str, Any]]] = {}
    audio16: dict[tuple[str, str], np.ndarray] = {}
    for s in systems:
        per_clip[s] = {}
        for c in clips[s]:
            if not c.ok or c.path is None:
                per_clip[s][c.utt_id] = {"ok": False}
                continue
            if progress:
                progress(f"{s} {c.utt_id}")
            y, sr = load_mono(c.path)
            m: dict[str, Any] = {"ok": True, **basic_metrics(y, sr, c.text)}
            y16 = load_mono(c.path, ANALYSIS_SR)[0]
            audio16[(s, c.utt_id)] = y16
            if "loudness_lufs" not in skip:
                m["loudness_lufs"] = loudness(b, y, sr)
            if ref_emb is not None:
                m["speaker_similarity"] = cosine(embed(b, y16), ref_emb)
            if "dnsmos_ovrl" not in skip:
                m.update(dnsmos(b, y16))
            per_clip[s][c.utt_id] = m

    clip_metric_names = [n for n, d in METRICS.items() if d.scope == "clip" and n not in skip]
    per_system = {
        s: {
            "n_clips": sum(1 for v in per_clip[s].values() if v.get("ok")),
            **{f"mean_{n}": _mean([v.get(n) for v in per_clip[s].values() if v.get("ok")]) for n in clip_metric_names},
        }
        for s in systems
    }

    pairs: list[dict[str, Any]] = []
    pair_names = [n for n, d in METRICS.items() if d.scope == "pair" and n not in skip]
    if pair_names:
        for sa, sb in itertools.combinations(systems, 2):
            rows = {}
            for utt in sorted(set(per_clip[sa]) & set(per_clip[sb])):
                if (sa, utt) in audio16 and (sb, utt) in audio16:
                    if progress:
                        progress(f"{sa} vs {sb} {utt}")
                    rows[utt] = pair_metrics(b, audio16[(sa, utt)], audio16[(sb, utt)])
            pairs.append(
                {
                    "a": sa,
                    "b": sb,
                    "n_items": len(rows),
                    "per_utterance": rows,
                    **{f"mean_{n}": _mean([r.get(n) for r in rows.values()]) for n in pair_names},
                }
            )

    return {
        "version": 1,
        "run_id": run.run_id,
        "created_at": utc_now(),
        "reference": "reference/voice.wav" if ref else None,
        "metrics": {n: METRICS[n].as_dict() for n in METRICS},
        "skipped": skipped,
        "per_system": per_system,
        "per_clip": per_clip,
        "pairs": pairs,
    }
