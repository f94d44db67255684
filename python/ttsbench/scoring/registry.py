"""The one registry of metrics: name, units, direction and meaning. The report's metric docs come from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass

METRICS_EXTRA_HINT = "pip install -e '.[metrics]'"


@dataclass(frozen=True)
class MetricDoc:
    name: str
    label: str
    units: str
    direction: str  # "higher", "lower", "target" (closer to a target is better), "info"
    scope: str  # "clip" (per clip) or "pair" (two systems, same text)
    needs: tuple[str, ...]  # optional modules it needs beyond the core
    description: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["needs"] = list(self.needs)
        return d


METRICS: dict[str, MetricDoc] = {
    m.name: m
    for m in [
        MetricDoc(
            "speaker_similarity",
            "Speaker similarity to reference",
            "cosine [-1, 1]",
            "higher",
            "clip",
            ("resemblyzer",),
            "Cosine similarity of resemblyzer d-vectors of the clip and reference/voice.wav.",
        ),
        MetricDoc(
            "dnsmos_ovrl",
            "DNSMOS overall",
            "MOS 1–5",
            "higher",
            "clip",
            ("speechmos", "onnxruntime"),
            "Microsoft DNSMOS P.835 overall quality estimate (no reference needed), via speechmos.",
        ),
        MetricDoc(
            "dnsmos_sig",
            "DNSMOS signal",
            "MOS 1–5",
            "higher",
            "clip",
            ("speechmos", "onnxruntime"),
            "DNSMOS P.835 speech-signal quality estimate.",
        ),
        MetricDoc(
            "dnsmos_p808",
            "DNSMOS P.808",
            "MOS 1–5",
            "higher",
            "clip",
            ("speechmos", "onnxruntime"),
            "DNSMOS P.808 overall MOS estimate.",
        ),
        MetricDoc(
            "loudness_lufs",
            "Integrated loudness",
            "LUFS",
            "target",
            "clip",
            ("pyloudnorm",),
            "ITU-R BS.1770-4 integrated loudness; about −16…−23 LUFS is typical for speech.",
        ),
        MetricDoc(
            "clipping_rate",
            "Clipping rate",
            "fraction of samples",
            "lower",
            "clip",
            (),
            "Share of samples with |x| ≥ 0.999 of full scale.",
        ),
        MetricDoc(
            "leading_silence_s",
            "Leading silence",
            "s",
            "lower",
            "clip",
            (),
            "Time before the first 20 ms frame above −40 dBFS RMS (adds to perceived latency).",
        ),
        MetricDoc(
            "silence_ratio",
            "Silence ratio",
            "fraction of frames",
            "lower",
            "clip",
            (),
            "Share of 20 ms frames below −40 dBFS RMS.",
        ),
        MetricDoc("duration_s", "Duration", "s", "info", "clip", (), "Length of the clip."),
        MetricDoc(
            "s_per_char",
            "Seconds per character",
            "s/char",
            "info",
            "clip",
            (),
            "Duration divided by text length; outliers hint at truncation or babbling.",
        ),
        MetricDoc(
            "chars_per_s",
            "Characters per second",
            "char/s",
            "info",
            "clip",
            (),
            "Text length divided by duration (speaking rate).",
        ),
        MetricDoc(
            "mcd_db",
            "Mel-cepstral distortion (DTW)",
            "dB",
            "lower",
            "pair",
            ("pyworld", "librosa"),
            "MCD over 24 mel-cepstral coefficients (c0 excluded) from WORLD spectral envelopes, "
            "frames aligned by DTW, between two systems on the same text.",
        ),
        MetricDoc(
            "f0_rmse_hz",
            "F0 RMSE (DTW)",
            "Hz",
            "lower",
            "pair",
            ("pyworld", "librosa"),
            "RMS difference of WORLD F0 over frames voiced in both clips, DTW-aligned.",
        ),
        MetricDoc(
            "voicing_error",
            "Voicing decision error",
            "fraction of frames",
            "lower",
            "pair",
            ("pyworld", "librosa"),
            "Share of aligned frames where one clip is voiced and the other is not.",
        ),
    ]
}
