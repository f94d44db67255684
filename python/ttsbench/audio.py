"""Small shared audio helpers: read/write WAV (atomically), loudness and silence checks.

Samples are float32 mono in [-1, 1]; multi-channel input is averaged to mono.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from ttsbench.atomic import write_atomic
from ttsbench.errors import UserError

SILENCE_DBFS = -50.0


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file soundfile understands; returns (float32 mono samples, sample rate)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such audio file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise UserError(f"{p}: not a readable WAV/audio file ({exc})") from exc
    return np.ascontiguousarray(data.mean(axis=1), dtype=np.float32), int(sr)


# sample format of the stream (wavstream.PCM_FORMATS) -> WAV subtype that keeps it without loss
WAV_SUBTYPES = {"s16le": "PCM_16", "s32le": "PCM_32", "f32le": "FLOAT", "u8": "PCM_U8"}


def write_wav_atomic(path: str | os.PathLike, samples: np.ndarray, sr: int, sample_format: str = "s16le") -> Path:
    """Write a WAV via a temp file in the same folder and os.replace (never half-written).

    ``sample_format`` is the format the audio came in (default 16-bit); the WAV keeps it (float32 stays
    float32, unclipped; integer formats are clipped to full scale)."""
    if sample_format not in WAV_SUBTYPES:
        raise ValueError(f"unknown sample format {sample_format!r} (one of {', '.join(WAV_SUBTYPES)})")
    subtype = WAV_SUBTYPES[sample_format]
    x = np.asarray(samples, dtype=np.float32)
    if subtype != "FLOAT":
        x = np.clip(x, -1.0, 1.0)
    return write_atomic(path, lambda tmp: sf.write(tmp, x, int(sr), subtype=subtype, format="WAV"))


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (full scale sine = -3 dBFS); -inf for empty or all-zero input."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def is_silent(samples: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    return rms_dbfs(samples) < threshold_dbfs


def first_nonsilent_index(
    samples: np.ndarray, sr: int, threshold_dbfs: float = SILENCE_DBFS, frame_ms: float = 10.0
) -> int | None:
    """Index of the first sample of the first frame louder than the threshold (None if all silent)."""
    x = np.asarray(samples, dtype=np.float32)
    frame = max(1, int(sr * frame_ms / 1000.0))
    n = x.size // frame
    if n == 0:
        return 0 if x.size and not is_silent(x, threshold_dbfs) else None
    frames = x[: n * frame].astype(np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    loud = np.nonzero(rms >= 10 ** (threshold_dbfs / 20.0))[0]
    if loud.size:
        return int(loud[0]) * frame
    tail = x[n * frame :]
    return n * frame if tail.size and not is_silent(tail, threshold_dbfs) else None


def leading_silence_s(samples: np.ndarray, sr: int, threshold_dbfs: float = SILENCE_DBFS) -> float:
    """Seconds of silence before the first non-silent 10 ms frame (whole length if all silent)."""
    idx = first_nonsilent_index(samples, sr, threshold_dbfs)
    return (len(samples) if idx is None else idx) / float(sr)
