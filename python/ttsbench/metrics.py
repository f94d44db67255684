"""Per-request TTS metrics (one dataclass) and the run summary computed from them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

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
    total_ms: float | None = None
    audio_s: float | None = None
    rtf: float | None = None  # total_ms / 1000 / audio_s, see RTF_DEFINITION
    sample_rate: int | None = None
    sample_format: str | None = None  # what the server sent: s16le | s32le | f32le | u8 (the WAV keeps it)
    concurrency: int = 1
    request_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    xs = sorted(v for v in values if v is not None and math.isfinite(v))
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _stats(prefix: str, values: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"mean_{prefix}": (sum(values) / len(values)) if values else None}
    for q in PERCENTILES:
        out[f"p{q}_{prefix}"] = percentile(values, q)
    return out


def summarize(rows: list[RequestMetrics]) -> dict[str, Any]:
    """Summary block of a system in results.json (keys as in docs/run-folder.md)."""
    ok = [r for r in rows if r.ok]
    summary: dict[str, Any] = {"n": len(rows), "n_ok": len(ok), "n_error": len(rows) - len(ok)}
    summary.update(_stats("ttfa_ms", [r.ttfa_ms for r in ok if r.ttfa_ms is not None]))
    summary.update(_stats("rtf", [r.rtf for r in ok if r.rtf is not None]))
    summary["rtf_definition"] = RTF_DEFINITION
    summary["peak_gpu_mem_mb"] = None
    summary["peak_proc_mem_mb"] = None
    return summary
