"""Plots for the report as inline SVG (our own code) and a spectrogram as a base64 PNG (numpy + zlib)."""

from __future__ import annotations

import struct
import zlib
from html import escape

import numpy as np

PALETTE = ["#2d7ff9", "#e8590c", "#2b8a3e", "#862e9c", "#c92a2a", "#5c940d"]
W = 720


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _axis(x0: float, x1: float, lo: float, hi: float, y: float, unit: str) -> str:
    parts = [f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#888"/>']
    for t in np.linspace(lo, hi, 5):
        x = x0 + (t - lo) / (hi - lo) * (x1 - x0)
        parts.append(
            f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#888"/>'
            f'<text x="{x:.1f}" y="{y + 16}" font-size="11" text-anchor="middle">{_fmt(t)}</text>'
        )
    parts.append(f'<text x="{x1}" y="{y + 30}" font-size="11" text-anchor="end">{escape(unit)}</text>')
    return "".join(parts)


def strip_plot(series: dict[str, list[float]], title: str, unit: str) -> str:
    """One row per system: every value as a dot, the median as a bar."""
    names = [n for n, v in series.items() if v]
    if not names:
        return ""
    allv = [x for n in names for x in series[n]]
    lo, hi = min(0.0, min(allv)), max(allv) * 1.1 or 1.0
    left, right, row = 170, W - 20, 34
    h = 40 + row * len(names) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img">',
        f'<title>{escape(title)}</title><text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for i, n in enumerate(names):
        y = 45 + i * row
        c = PALETTE[i % len(PALETTE)]
        out.append(f'<text x="{left - 8}" y="{y + 4}" font-size="12" text-anchor="end">{escape(n)}</text>')
        for v in series[n]:
            x = left + (v - lo) / (hi - lo) * (right - left)
            out.append(f'<circle cx="{x:.1f}" cy="{y}" r="4" fill="{c}" fill-opacity="0.6"/>')
        med = float(np.median(series[n]))
        xm = left + (med - lo) / (hi - lo) * (right - left)
        out.append(
            f'<line x1="{xm:.1f}" y1="{y - 10}" x2="{xm:.1f}" y2="{y + 10}" stroke="#000" stroke-width="2">'
            f"<title>p50 {med:.1f}</title></line>"
        )
    out.append(_axis(left, right, lo, hi, 45 + row * len(names), unit))
    out.append("</svg>")
    return "".join(out)


def grouped_bars(
    categories: list[str],
    series: dict[str, list[float | None]],
    title: str,
    unit: str,
    ref_line: float | None = None,
    ref_label: str = "",
) -> str:
    vals = [v for s in series.values() for v in s if v is not None]
    if not categories or not vals:
        return ""
    top = max([*vals, ref_line or 0.0]) * 1.15 or 1.0
    left, bottom, plot_h = 60, 230, 180
    h = bottom + 50
    group_w = (W - left - 20) / len(categories)
    bar_w = max(2.0, (group_w - 8) / max(1, len(series)))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img">',
        f'<title>{escape(title)}</title><text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{W - 20}" y2="{bottom}" stroke="#888"/>',
    ]
    for t in np.linspace(0, top, 5):
        y = bottom - t / top * plot_h
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{_fmt(t)}</text>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{W - 20}" y2="{y:.1f}" stroke="#eee"/>'
        )
    for gi, cat in enumerate(categories):
        gx = left + gi * group_w + 4
        for si, (name, vs) in enumerate(series.items()):
            v = vs[gi] if gi < len(vs) else None
            if v is None:
                continue
            bh = v / top * plot_h
            out.append(
                f'<rect x="{gx + si * bar_w:.1f}" y="{bottom - bh:.1f}" width="{bar_w - 1:.1f}" '
                f'height="{bh:.1f}" fill="{PALETTE[si % len(PALETTE)]}"><title>{escape(name)} {escape(cat)}: '
                f"{v:.3g}</title></rect>"
            )
        out.append(
            f'<text x="{gx + group_w / 2 - 4:.1f}" y="{bottom + 14}" font-size="11" '
            f'text-anchor="middle">{escape(cat)}</text>'
        )
    if ref_line is not None:
        y = bottom - ref_line / top * plot_h
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{W - 20}" y2="{y:.1f}" stroke="#c92a2a" '
            f'stroke-dasharray="5,4"/><text x="{W - 22}" y="{y - 4:.1f}" font-size="11" fill="#c92a2a" '
            f'text-anchor="end">{escape(ref_label)}</text>'
        )
    for si, name in enumerate(series):
        x = left + si * 170
        out.append(
            f'<rect x="{x}" y="{h - 18}" width="10" height="10" fill="{PALETTE[si % len(PALETTE)]}"/>'
            f'<text x="{x + 14}" y="{h - 9}" font-size="11">{escape(name)}</text>'
        )
    out.append(f'<text x="{left - 50}" y="{bottom - plot_h - 8}" font-size="11">{escape(unit)}</text></svg>')
    return "".join(out)


def _png(rgb: np.ndarray) -> bytes:
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].astype(np.uint8).tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


_STOPS = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], dtype=float)


def spectrogram_png(y: np.ndarray, sr: int, max_hz: float = 8000.0, height: int = 160) -> bytes:
    """Log-magnitude STFT (25 ms Hann, 10 ms hop), 80 dB range, plasma-like colours; low frequencies at the bottom."""
    n_fft, hop = int(0.025 * sr), int(0.010 * sr)
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=1)).T
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    mag = mag[freqs <= max_hz]
    db = 20 * np.log10(np.maximum(mag, 1e-9))
    db = np.clip((db - (db.max() - 80)) / 80, 0, 1)
    rows = np.linspace(0, db.shape[0] - 1, height).astype(int)
    img = db[rows][::-1]
    idx = img * (len(_STOPS) - 1)
    i0 = np.floor(idx).astype(int).clip(0, len(_STOPS) - 2)
    frac = (idx - i0)[..., None]
    rgb = _STOPS[i0] * (1 - frac) + _STOPS[i0 + 1] * frac
    return _png(rgb)
