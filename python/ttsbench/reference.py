"""Reference voice clip for cloning: checked, resampled to the engine's rate, sent as a data URL.

vllm-omni takes ``ref_audio`` as an http(s) URL, a base64 ``data:`` URL or a ``file://`` URI
(docs/serving/speech_api.md at vllm-project/vllm-omni 078de2d1); we send a data URL of a 16-bit WAV.

The clip is refused here, before any request, when the server would refuse it or clone nothing from it:
shorter than 1 s (vllm-omni 0.30.0 ``serving_speech.py``: ``_REF_AUDIO_MIN_DURATION = 1.0`` — "At least 1s of
clear speech is required") or silent (no 10 ms frame above the silence threshold).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from ttsbench.audio import SILENCE_DBFS, first_nonsilent_index, rms_dbfs
from ttsbench.errors import UserError

MIN_REFERENCE_S = 1.0  # vllm-omni's _REF_AUDIO_MIN_DURATION


@dataclass(frozen=True)
class Reference:
    path: Path
    source_rate: int
    sample_rate: int
    duration_s: float
    wav_bytes: bytes

    @property
    def data_url(self) -> str:
        return "data:audio/wav;base64," + base64.b64encode(self.wav_bytes).decode("ascii")


def load_reference(path: str | Path, target_rate: int = 24000) -> Reference:
    import soundfile as sf
    from scipy.signal import resample_poly

    p = Path(path)
    if not p.is_file():
        raise UserError(f"reference audio {p}: file not found")
    with p.open("rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise UserError(f"reference audio {p}: not a WAV file (RIFF/WAVE header missing); convert it to WAV")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise UserError(f"reference audio {p}: unreadable WAV ({exc})") from exc
    x = data.mean(axis=1)
    if x.size == 0:
        raise UserError(f"reference audio {p}: contains no samples")
    duration = x.size / float(sr)
    if duration < MIN_REFERENCE_S:
        raise UserError(
            f"reference audio {p}: {duration:.2f} s long; the server needs at least {MIN_REFERENCE_S:g} s of "
            "clear speech — use a longer clip"
        )
    if first_nonsilent_index(x, int(sr), SILENCE_DBFS) is None:
        raise UserError(
            f"reference audio {p}: silent ({rms_dbfs(x):.1f} dBFS, no 10 ms frame above {SILENCE_DBFS:g} dBFS); "
            "a voice cannot be cloned from it — use a clip of clear speech"
        )
    if sr != target_rate:
        g = gcd(int(sr), int(target_rate))
        x = resample_poly(x, target_rate // g, int(sr) // g).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), target_rate, subtype="PCM_16", format="WAV")
    return Reference(p, int(sr), target_rate, x.size / target_rate, buf.getvalue())
