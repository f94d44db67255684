"""Blinded clips for a listening session: what the rater hears must not tell the systems apart by anything but
the voice.

Every clip is, per session: resampled to one rate, trimmed of leading/trailing silence, loudness-matched to
one target (EBU R128 integrated loudness via pyloudnorm; an RMS match when pyloudnorm is not installed or the
clip is too short for it), padded with silence so both clips of an item have the same length (plus a random
per-session pad, so no duration equals the run's), and re-quantised to 16-bit PCM with TPDF dither from the
session's random generator — so the bytes differ in every session and never equal a WAV of the run folder.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP_SR = 24000
TARGET_LUFS = -23.0  # EBU R128 programme loudness
PEAK_CEILING = 0.89  # -1 dBFS
SILENCE_DBFS = -50.0
MAX_PAD_S = 0.35


@dataclass(frozen=True)
class Loudness:
    value: float
    method: str  # "bs1770" (pyloudnorm) or "rms"


def load(path: Path) -> np.ndarray:
    from ttsbench.scoring.objective import load_mono

    y, _ = load_mono(path, CLIP_SR)
    return y.astype(np.float64)


def trim(y: np.ndarray, sr: int = CLIP_SR) -> np.ndarray:
    """Cut leading/trailing frames quieter than SILENCE_DBFS (10 ms frames, 20 ms kept either side)."""
    n = max(1, sr // 100)
    k = len(y) // n
    if k == 0:
        return y
    fr = y[: k * n].reshape(k, n)
    db = 20 * np.log10(np.maximum(np.sqrt(np.mean(fr * fr, axis=1)), 1e-9))
    loud = np.flatnonzero(db > SILENCE_DBFS)
    if len(loud) == 0:
        return y
    a = max(0, (loud[0] - 2) * n)
    b = min(len(y), (loud[-1] + 3) * n)
    return y[a:b]


def loudness(y: np.ndarray, sr: int = CLIP_SR) -> Loudness:
    try:
        import pyloudnorm

        v = float(pyloudnorm.Meter(sr).integrated_loudness(y))
        if np.isfinite(v):
            return Loudness(v, "bs1770")
    except (ImportError, ValueError):  # not installed, or the clip is shorter than one 400 ms block
        pass
    rms = float(np.sqrt(np.mean(y * y))) if len(y) else 0.0
    return Loudness(20 * np.log10(max(rms, 1e-9)) - 0.691, "rms")  # unweighted BS.1770 formula


def match_loudness(y: np.ndarray, target: float = TARGET_LUFS) -> tuple[np.ndarray, Loudness]:
    """Gain to ``target``; if that would clip, the gain stops at the peak ceiling (recorded by the caller)."""
    lo = loudness(y)
    gain = 10 ** ((target - lo.value) / 20)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak * gain > PEAK_CEILING and peak > 0:
        gain = PEAK_CEILING / peak
    return y * gain, lo


def pad_to(y: np.ndarray, n: int, rng: random.Random) -> np.ndarray:
    """Silence before/after (split at random) up to ``n`` samples."""
    extra = max(0, n - len(y))
    before = rng.randint(0, extra)
    return np.concatenate([np.zeros(before), y, np.zeros(extra - before)])


def encode(y: np.ndarray, rng: random.Random, sr: int = CLIP_SR) -> bytes:
    """16-bit PCM WAV with TPDF dither (±1 LSB) drawn from the session's generator; no metadata chunks."""
    import soundfile as sf

    gen = np.random.default_rng(rng.getrandbits(64))
    tpdf = (gen.random(len(y)) - gen.random(len(y))) / 32768.0
    q = np.clip(np.round((y + tpdf) * 32767.0), -32768, 32767).astype(np.int16)
    buf = io.BytesIO()
    sf.write(buf, q, sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def altered_voice(y: np.ndarray) -> np.ndarray:
    """A clearly different voice for a catch trial: the clip played 1.45× faster (pitch up ~6.4 semitones)."""
    from scipy.signal import resample

    return resample(y, int(len(y) / 1.45))


def blind_pair(a: np.ndarray, b: np.ndarray, rng: random.Random) -> tuple[bytes, bytes]:
    """Both clips of one item: trimmed, loudness-matched, padded to one random length ≥ the longer, dithered."""
    a, _ = match_loudness(trim(a))
    b, _ = match_loudness(trim(b))
    n = max(len(a), len(b)) + int(rng.uniform(0.05, MAX_PAD_S) * CLIP_SR)
    return encode(pad_to(a, n, rng), rng), encode(pad_to(b, n, rng), rng)


def blind_one(y: np.ndarray, rng: random.Random) -> bytes:
    y, _ = match_loudness(trim(y))
    return encode(pad_to(y, len(y) + int(rng.uniform(0.05, MAX_PAD_S) * CLIP_SR), rng), rng)
