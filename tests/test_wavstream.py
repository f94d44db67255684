"""The incremental WAV/PCM decoder: header split anywhere, chunk boundaries mid-sample, bad streams."""

from __future__ import annotations

import io
import itertools
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from ttsbench.httpserve import wav_header
from ttsbench.wavstream import StreamDecoder, StreamFormatError

RNG = np.random.default_rng(7)
PCM = (RNG.uniform(-0.8, 0.8, 300) * 32767).astype("<i2")
EXPECTED = PCM.astype(np.float32) / 32768.0


def _streaming_wav() -> bytes:
    return wav_header(24000) + PCM.tobytes()


def _sized_wav_with_list_chunk() -> bytes:
    """A non-streaming WAV with a LIST chunk before data and trailing junk after the data chunk."""
    data = PCM.tobytes()
    lst = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\x00"  # odd size → pad byte
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 24000, 48000, 2, 16)
    body = b"WAVE" + fmt + lst + b"data" + struct.pack("<I", len(data)) + data + b"id3 \x00\x00\x00\x00"
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _decode(pieces: list[bytes], **kw) -> tuple[np.ndarray, StreamDecoder]:
    dec = StreamDecoder(**kw)
    got = [dec.feed(p) for p in pieces]
    out = dec.finish()
    assert np.array_equal(np.concatenate(got), out)
    return out, dec


@pytest.mark.parametrize("make", [_streaming_wav, _sized_wav_with_list_chunk])
def test_header_split_at_every_byte_offset(make):
    blob = make()
    for cut in range(len(blob) + 1):
        out, dec = _decode([blob[:cut], blob[cut:]])
        assert dec.sample_rate == 24000
        np.testing.assert_array_equal(out, EXPECTED)


def test_first_audio_byte_is_not_the_header():
    blob = _streaming_wav()
    dec = StreamDecoder()
    dec.feed(blob[:44])
    assert dec.header_done and dec.audio_bytes == 0
    assert dec.feed(blob[44:45]).size == 0  # half a sample: audio has started, no complete sample yet
    assert dec.audio_bytes == 1
    assert dec.feed(blob[45:46]).size == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=700), max_size=12))
def test_arbitrary_chunk_boundaries(cuts):
    blob = _streaming_wav()
    edges = sorted({min(c, len(blob)) for c in cuts} | {0, len(blob)})
    out, _ = _decode([blob[a:b] for a, b in itertools.pairwise(edges)])
    np.testing.assert_array_equal(out, EXPECTED)


def test_matches_soundfile_for_float_and_stereo():
    x = RNG.uniform(-0.5, 0.5, (200, 2)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 16000, subtype="FLOAT", format="WAV")
    blob = buf.getvalue()
    out, dec = _decode([blob[i : i + 7] for i in range(0, len(blob), 7)])
    assert dec.sample_rate == 16000
    np.testing.assert_allclose(out, x.mean(axis=1), atol=1e-7)


def test_raw_pcm_needs_and_uses_declared_rate():
    with pytest.raises(ValueError, match="sample rate"):
        StreamDecoder("pcm")
    blob = PCM.tobytes()
    out, dec = _decode([blob[:3], blob[3:100], blob[100:]], mode="pcm", sample_rate=22050)
    assert dec.sample_rate == 22050
    np.testing.assert_array_equal(out, EXPECTED)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (wav_header(24000)[:20], "mid-header"),
        (b"", "mid-header"),
        (wav_header(24000) + PCM.tobytes()[:-1], "mid-sample"),
        (wav_header(24000), "zero-length"),
        (_sized_wav_with_list_chunk()[:-200], "short of the WAV data size"),
    ],
)
def test_bad_endings(blob, match):
    dec = StreamDecoder()
    dec.feed(blob)
    with pytest.raises(StreamFormatError, match=match):
        dec.finish()


def test_not_a_wav_is_rejected_early():
    with pytest.raises(StreamFormatError, match="not a WAV"):
        StreamDecoder().feed(b"ID3\x04\x00\x00\x00\x00")
    with pytest.raises(StreamFormatError, match="expected b'WAVE'"):
        StreamDecoder().feed(b"RIFF\x00\x00\x00\x00AVI LIST")


def test_zero_length_pcm():
    with pytest.raises(StreamFormatError, match="zero-length"):
        StreamDecoder("pcm", sample_rate=24000).finish()
