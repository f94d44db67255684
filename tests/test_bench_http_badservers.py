"""bench-http against scripted raw servers that misbehave: every case must fail clearly or measure the truth.

Each server below sends exactly the bytes a test scripts (no HTTP framework in between), from a thread with
its own event loop, so both ``httpbench.synthesize_once`` and the whole ``ttsbench bench-http`` command (run
in-process through ``cli.main``) can be pointed at it. Cases from issue 18.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ttsbench import leanhttp
from ttsbench.cli import main
from ttsbench.httpbench import SpeechTarget, endpoint_url, synthesize_once
from ttsbench.utterances import Utterance

pytestmark = pytest.mark.timeout(60)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]
SR = 24000


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


class ScriptedServer:
    """A raw TCP server in a thread; ``handler(reader, writer, request)`` answers each request."""

    def __init__(self, handler: Handler, keep_alive: bool = True) -> None:
        self.handler, self.keep_alive = handler, keep_alive
        self.requests: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    req = await _read_request(reader)
                    self.requests.append(req)
                    await self.handler(reader, writer, req)
                    if not self.keep_alive:
                        break
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def start() -> None:
            self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _wav_header(sr: int = SR, tag: int = 1, bits: int = 16, data: int = 0xFFFFFFFF) -> bytes:
    block = bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        0xFFFFFFFF,
        b"WAVE",
        b"fmt ",
        16,
        tag,
        1,
        sr,
        sr * block,
        block,
        bits,
        b"data",
        data,
    )


def _tone(n: int = SR // 2) -> np.ndarray:
    return (0.4 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)).astype(np.float32)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(ctype: str, extra: str = "Transfer-Encoding: chunked\r\n", status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{extra}\r\n".encode()


def _one(server_handler: Handler, target_kw: dict, timeout_s: float = 5.0, keep_alive: bool = True):
    """One synthesize_once against a scripted server; returns (metrics, samples, wall seconds)."""
    with ScriptedServer(server_handler, keep_alive) as srv:
        target = SpeechTarget(url=endpoint_url(srv.url), timeout_s=timeout_s, **target_kw)

        async def go():
            async with leanhttp.Client() as client:
                return await synthesize_once(client, target, Utterance("u01", "Hello there."), 1, 0)

        t = time.monotonic()
        m, samples = asyncio.run(go())
        return m, samples, time.monotonic() - t


# ---------------------------------------------------------------- WAV where PCM was asked


def test_wav_sent_when_pcm_asked_is_refused_not_timed_as_audio() -> None:
    # The header goes out at once, the first samples 150 ms later: counting the RIFF header as PCM would
    # report a TTFA of ~0 ms and 22 garbage samples (issue 18: "27 ms reported, 138 ms true", exit 0).
    async def handler(_r, w, _req):
        w.write(_head("audio/wav") + _chunk(_wav_header()))
        await w.drain()
        await asyncio.sleep(0.15)
        pcm = (_tone() * 32767).astype("<i2").tobytes()
        w.write(_chunk(pcm) + b"0\r\n\r\n")
        await w.drain()

    m, samples, _wall = _one(handler, {"response_format": "pcm"})
    assert not m.ok and samples is None and m.ttfa_ms is None
    assert "asked for response_format=pcm but the server sent a WAV" in m.error
    assert "Content-Type audio/wav" in m.error and "--response-format wav" in m.error


def test_wav_inside_sse_when_pcm_asked_is_refused_too() -> None:
    import base64

    def event(data: bytes) -> bytes:
        ev = {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}
        return b"event: speech.audio.delta\ndata: " + json.dumps(ev).encode() + b"\n\n"

    async def handler(_r, w, _req):
        pcm = (_tone() * 32767).astype("<i2").tobytes()
        w.write(
            _head("text/event-stream")
            + _chunk(event(_wav_header()[:7]))
            + _chunk(event(_wav_header()[7:] + pcm))
            + b"0\r\n\r\n"
        )
        await w.drain()

    m, _samples, _wall = _one(handler, {"response_format": "pcm", "stream": "sse"})
    assert not m.ok and "server sent a WAV" in m.error, m.error


def test_raw_pcm_when_wav_asked_names_the_content_type() -> None:
    async def handler(_r, w, _req):
        w.write(_head("audio/pcm") + _chunk((_tone() * 32767).astype("<i2").tobytes()) + b"0\r\n\r\n")
        await w.drain()

    m, _samples, _wall = _one(handler, {"response_format": "wav"})
    assert not m.ok and "not a WAV stream" in m.error and m.error.endswith("(Content-Type audio/pcm)"), m.error


@pytest.mark.parametrize("piece", [1, 5, 4096])
def test_real_pcm_ttfa_is_the_first_byte_even_when_held_for_the_magic_check(piece: int) -> None:
    # The first bytes of a PCM stream are held until 12 have arrived (to tell a WAV header apart); the TTFA
    # is still the arrival of the first byte, however the stream is cut.
    pcm = (_tone() * 32767).astype("<i2").tobytes()

    async def handler(_r, w, _req):
        w.write(_head("audio/pcm"))
        await w.drain()
        await asyncio.sleep(0.1)
        w.write(_chunk(pcm[:piece]))
        await w.drain()
        await asyncio.sleep(0.2)
        w.write(_chunk(pcm[piece:]) + b"0\r\n\r\n")
        await w.drain()

    m, samples, _wall = _one(handler, {"response_format": "pcm"})
    assert m.ok, m.error
    assert 95 <= m.ttfa_ms <= 200, m.ttfa_ms  # the first byte (100 ms), not the 12th (300 ms)
    assert m.total_ms >= 295 and samples.size == len(pcm) // 2 and m.sample_format == "s16le"


# ---------------------------------------------------------------- empty bodies and error statuses


@pytest.mark.parametrize("close", [False, True])
def test_empty_200_is_an_empty_response_at_once(close: bool) -> None:
    # kept open: used to wait for --timeout and then say "timed out"; closing: "0 of 0 bytes"
    async def handler(_r, w, _req):
        w.write(_head("audio/wav", "Content-Length: 0\r\n" + ("Connection: close\r\n" if close else "")))
        await w.drain()
        if not close:
            await asyncio.sleep(30)

    m, _samples, wall = _one(handler, {}, timeout_s=10.0, keep_alive=not close)
    assert not m.ok and m.http_status == 200
    assert m.error.startswith("empty response: HTTP 200 with no body"), m.error
    assert wall < 2.0


def test_empty_close_delimited_body_is_an_empty_response() -> None:
    async def handler(_r, w, _req):
        w.write(b"HTTP/1.0 200 OK\r\nContent-Type: audio/pcm\r\n\r\n")
        await w.drain()

    m, _samples, _wall = _one(handler, {"response_format": "pcm"}, keep_alive=False)
    assert not m.ok and m.error.startswith("empty response"), m.error


@pytest.mark.parametrize(
    ("wire", "needle"),
    [
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", "HTTP 500: (empty body)"),
        # the error body never ends: reported as the HTTP error, not as "timed out"
        (
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\noops!\r\n",
            "HTTP 500: (no body within 1 s)",
        ),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 9\r\n\r\nwarming", "HTTP 503: (no body within 1 s)"),
    ],
)
def test_http_error_on_kept_open_connection_is_reported_as_such(wire: bytes, needle: str) -> None:
    async def handler(_r, w, _req):
        w.write(wire)
        await w.drain()
        await asyncio.sleep(30)

    m, _samples, wall = _one(handler, {}, timeout_s=1.0)
    assert not m.ok and m.error == needle and "timed out" not in m.error
    assert wall < 3.0


def test_http_500_keep_alive_with_empty_body_does_not_wait_for_the_timeout() -> None:
    async def handler(_r, w, _req):
        w.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        await asyncio.sleep(30)

    m, _samples, wall = _one(handler, {}, timeout_s=20.0)
    assert m.error == "HTTP 500: (empty body)" and wall < 2.0


@pytest.mark.parametrize(
    ("ctype", "kw", "needle"),
    [
        ("application/json", {}, "HTTP 200 but Content-Type application/json is not audio"),
        ("audio/mpeg", {}, "compressed audio (audio/mpeg), not wav"),
        ("audio/wav", {"stream": "sse"}, "Content-Type audio/wav is not text/event-stream"),
        ("text/event-stream", {}, "use --stream sse"),
    ],
)
def test_content_type_that_cannot_be_the_asked_audio_is_refused(ctype: str, kw: dict, needle: str) -> None:
    body = b'{"error": "model not loaded"}'

    async def handler(_r, w, _req):
        w.write(_head(ctype, f"Content-Length: {len(body)}\r\n") + body)
        await w.drain()

    m, _samples, _wall = _one(handler, kw)
    assert not m.ok and needle in m.error, m.error
    assert "model not loaded" in m.error  # what the server said comes along


# ---------------------------------------------------------------- the command, end to end (in-process)


def _bench(url: str, run_dir: Path, *extra: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(
            [
                "bench-http",
                url,
                "--run-dir",
                str(run_dir),
                "--engine",
                "raw",
                "--host-label",
                "local",
                "--no-progress",
                "--only",
                "u01",
                "--warmup",
                "0",
                *extra,
            ]
        )
    return rc, err.getvalue()


def _good_wav_handler(fmt: str = "s16") -> Handler:
    async def handler(_r, w, _req):
        x = _tone()
        if fmt == "f32":
            payload = _wav_header(tag=3, bits=32) + x.astype("<f4").tobytes()
        else:
            payload = _wav_header() + (x * 32767).astype("<i2").tobytes()
        w.write(_head("audio/wav") + _chunk(payload[:1000]) + _chunk(payload[1000:]) + b"0\r\n\r\n")
        await w.drain()

    return handler


def test_float32_stream_is_saved_as_float32(tmp_path: Path) -> None:
    with ScriptedServer(_good_wav_handler("f32")) as srv:
        rc, err = _bench(srv.url, tmp_path)
    assert rc == 0, err
    row = json.loads((tmp_path / "results.json").read_text())["systems"][0]["utterances"][0]
    assert sf.info(str(tmp_path / row["wav"])).subtype == "FLOAT"  # was PCM_16: lossy and unrecorded
    assert row["sample_format"] == "f32le"
    y, _ = sf.read(str(tmp_path / row["wav"]), dtype="float32")
    assert np.array_equal(y, _tone())  # bit for bit


def test_url_with_query_string_keeps_it(tmp_path: Path) -> None:
    assert endpoint_url("http://h:1/v1/audio/speech?x=1") == "http://h:1/v1/audio/speech?x=1"
    assert endpoint_url("http://h:1/?x=1&y=2") == "http://h:1/v1/audio/speech?x=1&y=2"
    assert endpoint_url("http://h:1/v1/?k=v#frag") == "http://h:1/v1/audio/speech?k=v"
    assert endpoint_url("http://h:1/tts") == "http://h:1/tts/v1/audio/speech"
    with ScriptedServer(_good_wav_handler()) as srv:
        rc, err = _bench(srv.url + "?api-version=2", tmp_path)
        assert rc == 0, err
        assert srv.requests[0].startswith(b"POST /v1/audio/speech?api-version=2 HTTP/1.1\r\n")


def test_failure_names_the_utterance_and_the_request(tmp_path: Path) -> None:
    async def handler(_r, w, _req):
        w.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom")
        await w.drain()

    with ScriptedServer(handler) as srv:
        rc, err = _bench(srv.url, tmp_path / "t", "--response-format", "pcm")
        assert rc == 1
        assert (
            f"first: u01 (request 0 at concurrency 1: POST {srv.url}/v1/audio/speech stream=audio "
            "response_format=pcm): HTTP 500: boom"
        ) in err
        rc, err = _bench(srv.url, tmp_path / "w", "--warmup", "1")
        assert rc == 3 and "u01 (warm-up request 0: POST" in err and "HTTP 500: boom" in err


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "breakit",
    [
        lambda f: f.write_text("{not json"),
        lambda f: f.write_text(f.read_text().replace('"complete": false', '"complete": "no"')),
        lambda f: f.write_text(f.read_text().replace('"schema_version": 1', '"schema_version": NaN')),
    ],
)
def test_broken_existing_results_is_refused_before_any_request(tmp_path: Path, breakit) -> None:
    from ttsbench import results

    results.write_results(tmp_path, results.new_document(tmp_path.name, "bench-http"))
    breakit(tmp_path / "results.json")
    before = _tree(tmp_path)
    with ScriptedServer(_good_wav_handler()) as srv:
        rc, err = _bench(srv.url, tmp_path)
        assert srv.requests == []  # nothing measured, so nothing thrown away
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "results.json" in err, err
    assert _tree(tmp_path) == before


def test_run_dir_that_is_a_file_is_refused_before_any_request(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("x")
    with ScriptedServer(_good_wav_handler()) as srv:
        rc, err = _bench(srv.url, tmp_path / "run")
        assert srv.requests == [] and rc == 2 and "is not a folder" in err


@pytest.mark.parametrize(
    ("seconds", "amp", "needle"),
    [(0.3, 0.3, "0.30 s long; the server needs at least 1 s"), (2.0, 0.0, "silent")],
)
def test_short_or_silent_reference_is_refused(tmp_path: Path, seconds: float, amp: float, needle: str) -> None:
    ref = tmp_path / "ref.wav"
    sf.write(ref, amp * np.sin(np.linspace(0, 3000, int(SR * seconds))), SR)
    with ScriptedServer(_good_wav_handler()) as srv:
        rc, err = _bench(srv.url, tmp_path / "run", "--reference", str(ref))
        assert srv.requests == []
    assert rc == 2 and needle in err and not (tmp_path / "run").exists(), err


def test_reference_is_copied_into_the_run_folder(tmp_path: Path) -> None:
    ref = tmp_path / "ref.wav"
    sf.write(ref, 0.3 * np.sin(np.linspace(0, 3000, int(SR * 1.5))), 16000)
    with ScriptedServer(_good_wav_handler()) as srv:
        rc, err = _bench(srv.url, tmp_path / "run", "--reference", str(ref))
        assert rc == 0, err
        assert b'"ref_audio": "data:audio/wav;base64,' in srv.requests[0]
        assert (tmp_path / "run" / "reference" / "voice.wav").read_bytes() == ref.read_bytes()
        # a second system with a different reference would mix voices in one run: refused before timing
        sf.write(ref, 0.2 * np.sin(np.linspace(0, 5000, int(SR * 1.5))), 16000)
        n = len(srv.requests)
        rc, err = _bench(srv.url, tmp_path / "run", "--reference", str(ref), "--engine", "other")
        assert rc == 2 and "different reference voice" in err and len(srv.requests) == n
