"""Incremental decoder for streamed TTS audio: WAV (header, then PCM) or raw PCM.

Bytes arrive in arbitrary pieces: the RIFF header may be split anywhere, and a piece may end in the
middle of a sample. ``feed()`` returns the samples completed by each piece; ``finish()`` checks that the
stream ended cleanly (not mid-header, not mid-sample, at least one sample).

vllm-omni streams WAV as a 44-byte header with 0xFFFFFFFF size placeholders followed by 16-bit PCM
(vllm_omni/entrypoints/openai/serving_speech.py, ``_create_wav_header``); espeak-ng --stdout uses
0x7FFFF000. Sizes at or above 0x7F000000 (or 0) are treated as "unknown length".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_UNKNOWN_SIZE_MIN = 0x7F000000
_FORMATS = {  # (wav format tag, bits) -> (numpy dtype, scale)
    (1, 8): ("u1", None),
    (1, 16): ("<i2", 32768.0),
    (1, 32): ("<i4", 2147483648.0),
    (3, 32): ("<f4", 1.0),
}
PCM_FORMATS = {"s16le": (1, 16), "s32le": (1, 32), "f32le": (3, 32), "u8": (1, 8)}


class StreamFormatError(ValueError):
    """The byte stream is not valid audio of the expected kind (or ended early)."""


@dataclass
class AudioFormat:
    sample_rate: int
    channels: int
    format_tag: int
    bits: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8


class StreamDecoder:
    """Feed bytes, get float32 mono samples. ``mode`` is "wav" or "pcm" (pcm needs sample_rate)."""

    def __init__(
        self, mode: str = "wav", sample_rate: int | None = None, pcm_format: str = "s16le", channels: int = 1
    ) -> None:
        if mode not in ("wav", "pcm"):
            raise ValueError(f"unknown stream mode {mode!r} (wav or pcm)")
        self.mode = mode
        self.fmt: AudioFormat | None = None
        if mode == "pcm":
            if not sample_rate or sample_rate <= 0:
                raise ValueError("raw PCM needs a declared sample rate")
            if pcm_format not in PCM_FORMATS:
                raise ValueError(f"unknown PCM format {pcm_format!r} (one of {', '.join(PCM_FORMATS)})")
            tag, bits = PCM_FORMATS[pcm_format]
            self.fmt = AudioFormat(sample_rate, channels, tag, bits)
        self._buf = bytearray()
        self._data_left: int | None = None  # bytes of the data chunk still expected (None = unknown)
        self.header_bytes = 0
        self.audio_bytes = 0  # payload bytes of the data chunk seen so far (partial samples included)
        self.total_bytes = 0
        self._chunks: list[np.ndarray] = []
        self._unbounded = False
        self._pending = b""

    @property
    def header_done(self) -> bool:
        return self.mode == "pcm" or self._data_left is not None or self._unbounded

    @property
    def sample_rate(self) -> int | None:
        return self.fmt.sample_rate if self.fmt else None

    @property
    def sample_format(self) -> str | None:
        """The sample format the stream carries, as a PCM_FORMATS name (s16le, s32le, f32le, u8)."""
        if self.fmt is None:
            return None
        return next(k for k, v in PCM_FORMATS.items() if v == (self.fmt.format_tag, self.fmt.bits))

    def feed(self, data: bytes) -> np.ndarray:
        """Consume one piece of the stream; returns the samples it completed (possibly empty)."""
        self.total_bytes += len(data)
        self._buf += data
        if not self.header_done and not self._parse_header():
            return np.zeros(0, dtype=np.float32)
        payload = self._take_payload()
        return self._decode(payload)

    def _take_payload(self) -> bytes:
        buf = self._buf
        if self._data_left is not None:
            take = min(self._data_left, len(buf))
            new = bytes(buf[:take])
            self._data_left -= take
            self.audio_bytes += take
            del buf[:]  # anything after a bounded data chunk (LIST etc.) is not audio
        else:
            new = bytes(buf)
            self.audio_bytes += len(new)
            del buf[:]
        pend = self._pending + new
        fb = self.fmt.frame_bytes  # type: ignore[union-attr]
        whole = len(pend) - len(pend) % fb
        self._pending = pend[whole:]
        return pend[:whole]

    def _decode(self, raw: bytes) -> np.ndarray:
        if not raw:
            return np.zeros(0, dtype=np.float32)
        f = self.fmt
        assert f is not None
        dtype, scale = _FORMATS[(f.format_tag, f.bits)]
        arr = np.frombuffer(raw, dtype=dtype)
        x = (arr.astype(np.float32) - 128.0) / 128.0 if scale is None else arr.astype(np.float32) / scale
        if f.channels > 1:
            x = x.reshape(-1, f.channels).mean(axis=1)
        x = np.ascontiguousarray(x, dtype=np.float32)
        self._chunks.append(x)
        return x

    def _parse_header(self) -> bool:
        """Try to parse RIFF/WAVE up to the data chunk; True once done. Raises on garbage."""
        b = self._buf
        if len(b) >= 4 and b[:4] != b"RIFF":
            raise StreamFormatError(f"not a WAV stream (starts with {bytes(b[:4])!r}, expected b'RIFF')")
        if len(b) >= 12 and b[8:12] != b"WAVE":
            raise StreamFormatError(f"not a WAV stream (RIFF type {bytes(b[8:12])!r}, expected b'WAVE')")
        pos = 12
        fmt: AudioFormat | None = None
        while True:
            if len(b) < pos + 8:
                return False
            cid = bytes(b[pos : pos + 4])
            size = struct.unpack_from("<I", b, pos + 4)[0]
            if cid == b"data":
                if fmt is None:
                    raise StreamFormatError("WAV data chunk before fmt chunk")
                self.fmt = fmt
                self.header_bytes = pos + 8
                del b[: pos + 8]
                if size == 0 or size >= _UNKNOWN_SIZE_MIN:
                    self._unbounded = True
                else:
                    self._data_left = size
                return True
            body_end = pos + 8 + size + (size & 1)
            if cid == b"fmt ":
                if len(b) < pos + 8 + 16:
                    return False
                tag, ch, sr, _br, _ba, bits = struct.unpack_from("<HHIIHH", b, pos + 8)
                if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: real tag is the sub-format GUID's first 2 bytes
                    if len(b) < pos + 8 + 26:
                        return False
                    tag = struct.unpack_from("<H", b, pos + 8 + 24)[0]
                if (tag, bits) not in _FORMATS or ch < 1 or sr <= 0:
                    raise StreamFormatError(f"unsupported WAV format (tag {tag}, {bits} bit, {ch} ch, {sr} Hz)")
                fmt = AudioFormat(sr, ch, tag, bits)
            if size >= _UNKNOWN_SIZE_MIN:
                raise StreamFormatError(f"WAV chunk {cid!r} has an implausible size {size}")
            if len(b) < body_end:
                return False
            pos = body_end

    def finish(self) -> np.ndarray:
        """Call at end of stream; returns all decoded samples or raises StreamFormatError."""
        if not self.header_done:
            raise StreamFormatError(f"stream ended mid-header after {self.total_bytes} bytes")
        if self._pending:
            raise StreamFormatError(
                f"stream ended mid-sample ({len(self._pending)} stray bytes after {self.audio_bytes} audio bytes)"
            )
        if self._data_left:
            raise StreamFormatError(f"stream ended {self._data_left} bytes short of the WAV data size")
        if self.audio_bytes == 0:
            raise StreamFormatError("zero-length audio (no samples in the response)")
        return self.samples()

    def samples(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]
