"""Per-request TTS metrics (one dataclass) and the run summary computed from them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

RTF_DEFINITION = "synthesis_seconds / audio_seconds (lower is faster; < 1 is faster than real time)"
PERCENTILES = (50, 90, 99)


@dataclass
class RequestMetrics:
    """One synthesis request. Times in ms from just before the request was sent."""

    utt_id: str
    text: str
    ok: bool = False
    error: str | None = None
    wav: str | None = None
    http_status: int | None = None
    ttfa_ms: float | None = None  # first byte of audio samples (never the header)
    t_first_nonsilent_ms: float | None = None
    stall_ms: float | None = None  # playback stalls (underruns) of a listener playing from the first audio on
    total_ms: float | None = None
    audio_s: float | None = None
    rtf: float | None = None  # total_ms / 1000 / audio_s, see RTF_DEFINITION
    sample_rate: int | None = None
    sample_format: str | None = None  # what the server sent: s16le | s32le | f32le | u8 (the WAV keeps it)
    concurrency: int = 1
    request_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Playback:
    """A listener who starts playing at the first audio and plays on: how long playback stalled, in all,
    waiting for the next audio (an underrun). A stream that stays ahead of playback stalls 0 ms."""

    def __init__(self) -> None:
        self.runs_out: float | None = None  # the clock time at which the audio received so far is played out
        self.stall_s = 0.0

    def feed(self, t: float, seconds: float) -> None:
        """``seconds`` of audio arrived at clock time ``t`` (``time.perf_counter()``)."""
        if seconds <= 0:
            return
        if self.runs_out is None:
            self.runs_out = t
        elif t > self.runs_out:
            self.stall_s += t - self.runs_out
            self.runs_out = t
        self.runs_out += seconds


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (``numpy.percentile``, method ``linear``) of the finite values, None
    for none."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    return float(np.percentile(xs, q, method="linear"))


def ms_dist(values: Sequence[float]) -> dict[str, Any]:
    """``{n, p50, p90, max}`` of durations in ms (percentiles as :func:`percentile`, 0.1 ms), ``{n: 0}`` for none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "p50": round(float(np.percentile(xs, 50)), 1),
        "p90": round(float(np.percentile(xs, 90)), 1),
        "max": round(max(xs), 1),
    }


def _stats(prefix: str, values: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"mean_{prefix}": (sum(values) / len(values)) if values else None}
    for q in PERCENTILES:
        out[f"p{q}_{prefix}"] = percentile(values, q)
    return out


def _row(r: RequestMetrics | Mapping[str, Any]) -> Mapping[str, Any]:
    return r.to_dict() if isinstance(r, RequestMetrics) else r


def summarize(
    rows: Sequence[RequestMetrics | Mapping[str, Any]],
    peak_gpu_mem_mb: float | None = None,
    peak_proc_mem_mb: float | None = None,
) -> dict[str, Any]:
    """Summary block of a system in results.json (keys as in docs/run-folder.md), from request rows
    (``RequestMetrics`` or their dicts)."""
    ok = [d for d in map(_row, rows) if d.get("ok")]
    summary: dict[str, Any] = {"n": len(rows), "n_ok": len(ok), "n_error": len(rows) - len(ok)}
    summary.update(_stats("ttfa_ms", [d["ttfa_ms"] for d in ok if d.get("ttfa_ms") is not None]))
    summary.update(_stats("rtf", [d["rtf"] for d in ok if d.get("rtf") is not None]))
    summary["rtf_definition"] = RTF_DEFINITION
    summary["peak_gpu_mem_mb"] = peak_gpu_mem_mb
    summary["peak_proc_mem_mb"] = peak_proc_mem_mb
    return summary
