"""STAND-IN for vllm-omni serving Voxtral: an OpenAI-style speech server backed by espeak-ng.

Wire format follows vllm-omni (docs/serving/speech_api.md and entrypoints/openai/serving_speech.py at
vllm-project/vllm-omni 078de2d1): ``POST /v1/audio/speech`` JSON with ``input``, ``model``, ``voice``,
``response_format`` (wav|pcm), ``stream`` / ``stream_format`` and ``ref_audio`` (data:/http(s) URL).

* ``stream_format: "audio"`` → raw bytes, chunked: WAV = 44-byte header with 0xFFFFFFFF sizes, then 16-bit
  PCM; pcm = 16-bit little-endian mono at the server rate (24 kHz by default).
* ``stream: true`` without stream_format (or ``stream_format: "sse"``) → SSE ``speech.audio.delta`` events
  with base64 audio, then ``speech.audio.done``.
* otherwise non-streaming: one complete body (WAV with true sizes, or raw PCM).

Knobs: first-chunk delay D (first audio sample leaves the server D ms after the request arrived;
synthesis happens inside D), chunk length C ms of audio, pacing X ms between chunks. Faults for tests,
per request (header ``X-Standin-Fault``) or for all requests (``--fault``): ``http-500``,
``truncate-header``, ``truncate-sample``, ``zero-audio``.

``GET /standin/timings`` (stand-in only): per request, the ``time.perf_counter()`` values (CLOCK_MONOTONIC,
comparable with a client on the same host) of request arrival, body read, the first-chunk deadline and the
write of the first samples, tagged with the request's ``X-Standin-Request-Id`` header; the last 10000.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from ttsbench.httpserve import JsonHandler, Server, wav_header

FAULTS = ("http-500", "truncate-header", "truncate-sample", "zero-audio")


@dataclass
class TtsConfig:
    host: str = "127.0.0.1"
    port: int = 8004
    first_chunk_delay_ms: float = 0.0
    chunk_ms: float = 80.0
    chunk_pacing_ms: float = 0.0
    sample_rate: int = 24000
    model: str = "standin-voxtral-espeak"
    voice_label: str = "neutral_female"
    espeak_voice: str = "en-us"
    fault: str | None = None
    early_header: bool = False  # send the WAV header at once, before the first-chunk delay
    verbose: bool = False
    # vllm-omni speech contract (ttsbench/upstream/contracts/<v>.json): refuse what that version refuses
    contract: dict | None = None
    # openai: the vllm-omni speech API above; text-json: a STAND-IN *production* server with its own request
    # shape (POST text_json_path with {"text": ...} → one complete WAV), like a homelab's FastAPI wrapper
    api: str = "openai"
    text_json_path: str = "/tts"
    _cache: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # per-request server-side times (GET /standin/timings), for splitting client overhead from our own
    _timings: deque = field(default_factory=lambda: deque(maxlen=10000))


def synthesize(cfg: TtsConfig, text: str) -> bytes:
    """16-bit mono PCM at cfg.sample_rate for ``text`` via espeak-ng (cached)."""
    with cfg._lock:
        hit = cfg._cache.get(text)
    if hit is not None:
        return hit
    import numpy as np
    from scipy.signal import resample_poly

    from ttsbench.wavstream import StreamDecoder

    proc = subprocess.run(
        ["espeak-ng", "--stdout", "-v", cfg.espeak_voice, "--", text],
        capture_output=True,
        check=True,
        timeout=60,
    )
    dec = StreamDecoder("wav")
    dec.feed(proc.stdout)
    x = dec.finish()
    src = dec.sample_rate or cfg.sample_rate
    if src != cfg.sample_rate:
        from math import gcd

        g = gcd(src, cfg.sample_rate)
        x = resample_poly(x, cfg.sample_rate // g, src // g)
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    with cfg._lock:
        cfg._cache[text] = pcm
        while len(cfg._cache) > 256:
            cfg._cache.popitem(last=False)
    return pcm


class TtsHandler(JsonHandler):
    cfg: TtsConfig
    server_version = "ttsbench-standin/1"

    def verbose(self) -> bool:
        return self.cfg.verbose

    t_arrival = 0.0
    t_read = 0.0
    _head_sent = False

    def end_headers(self) -> None:
        self._head_sent = True
        super().end_headers()

    def parse_request(self) -> bool:
        # The request line has just been read: this is when the request arrived (headers/body follow).
        self.t_arrival = time.perf_counter()
        self._head_sent = False
        return super().parse_request()

    def do_GET(self) -> None:
        c = self.cfg
        if self.path == "/health":
            self.send_json(200, {"status": "ok", "standin": True})
        elif self.path == "/v1/models":
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": c.model, "object": "model", "owned_by": "ttsbench-standin", "standin": True}],
                },
            )
        elif self.path == "/standin/timings":
            self.send_json(
                200,
                {
                    "standin": True,
                    "clock": "time.perf_counter() seconds (CLOCK_MONOTONIC on Linux: comparable across "
                    "processes on this host)",
                    "first_chunk_delay_ms": c.first_chunk_delay_ms,
                    "requests": list(c._timings),
                },
            )
        elif self.path == "/v1/audio/voices":
            self.send_json(200, {"voices": [c.voice_label], "uploaded_voices": []})
        else:
            self.send_error_json(404, f"no route {self.path}", "NotFoundError")

    def do_POST(self) -> None:
        t_arrival = self.t_arrival
        if self.cfg.api == "text-json":
            self._text_json(t_arrival)
            return
        if self.path != "/v1/audio/speech":
            self.read_json_safely()
            self.send_error_json(404, f"no route {self.path}", "NotFoundError")
            return
        try:
            req = self.read_json()
            self.t_read = time.perf_counter()
            plan = self._plan(req)
        except ValueError as exc:
            self.send_error_json(400, str(exc))
            return
        fault = self.headers.get("X-Standin-Fault") or self.cfg.fault
        if fault and fault not in FAULTS:
            self.send_error_json(400, f"unknown X-Standin-Fault {fault!r} (one of {', '.join(FAULTS)})")
            return
        if fault == "http-500":
            self.send_error_json(500, "stand-in fault injected: internal server error", "InternalServerError")
            return
        try:
            self._serve(t_arrival, req["input"], plan, fault)
        except ConnectionError:
            raise
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            # espeak-ng failed: an error the client can read, never a crashed handler thread
            if self._head_sent:
                self.close_connection = True  # mid-stream: the client sees the body end early
            else:
                self.send_error_json(500, f"stand-in synthesis failed: {exc}", "InternalServerError")

    def _text_json(self, t_arrival: float) -> None:
        """STAND-IN production API: {"text": "..."} (optional "voice") → one complete 16-bit WAV."""
        if self.path != self.cfg.text_json_path:
            self.read_json_safely()
            self.send_error_json(
                404, f"no route {self.path} (this server speaks POST {self.cfg.text_json_path})", "NotFoundError"
            )
            return
        try:
            req = self.read_json()
            self.t_read = time.perf_counter()
            if not isinstance(req, dict) or not isinstance(req.get("text"), str) or not req["text"].strip():
                raise ValueError('expected a JSON object {"text": "..."}')
        except ValueError as exc:
            self.send_error_json(422, str(exc))
            return
        fault = self.headers.get("X-Standin-Fault") or self.cfg.fault
        if fault == "http-500":
            self.send_error_json(500, "stand-in fault injected: internal server error", "InternalServerError")
            return
        self._serve(t_arrival, req["text"], ("wav", "none"), fault)

    def read_json_safely(self) -> None:
        with contextlib.suppress(ValueError):
            self.read_json()

    def _plan(self, req: Any) -> tuple[str, str]:
        if not isinstance(req, dict):
            raise ValueError("request body must be a JSON object")
        text = req.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("Input text cannot be empty")
        bad = next((i for i, ch in enumerate(text) if ord(ch) < 0x20 and ch not in "\t\n\r"), None)
        if bad is not None:
            raise ValueError(f"input contains the control character {ord(text[bad]):#06x} at position {bad + 1}")
        fmt = req.get("response_format") or "wav"
        if fmt not in ("wav", "pcm"):
            raise ValueError(f"stand-in supports response_format wav or pcm, not {fmt!r}")
        sf = req.get("stream_format")
        if sf not in (None, "audio", "sse"):
            raise ValueError(f"stream_format must be 'audio' or 'sse', not {sf!r}")
        if self.cfg.contract is not None:
            return self._plan_contract(req, fmt, sf)
        if sf is None:
            sf = "sse" if req.get("stream") else "none"
        ref = req.get("ref_audio")
        if ref is not None:
            self._check_ref(ref)
        return fmt, sf

    def _plan_contract(self, req: dict, fmt: str, sf: str | None) -> tuple[str, str]:
        """The request rules of the vllm-omni version in cfg.contract (for a Voxtral model)."""
        sp = self.cfg.contract["speech"]
        if sf is not None and sf not in sp["stream_formats"]:
            raise ValueError(f"'{sf}' is not a supported stream_format yet. Please use 'audio'.")
        if sf is None and "stream_format" not in req:
            sf = sp["default_stream_format"]
        if sf is None:
            mode = "sse" if req.get("stream") else "none"
        elif sf == "audio":
            mode = "audio" if (req.get("stream") or sp["default_stream_format"] is None) else "none"
        else:
            mode = "sse"
        if mode != "none" and fmt not in sp["stream_response_formats"]:
            raise ValueError(f"Streaming requires response_format='pcm' or 'wav'. Got response_format='{fmt}'.")
        if mode != "none" and fmt not in sp["voxtral_stream_response_formats"]:
            raise ValueError(
                "First audio output must include sample rate metadata for WAV streaming "
                f"(vllm-omni {self.cfg.contract['version']}: Voxtral's output carries no sample rate)"
            )
        if sp["voxtral_needs_voice_or_ref_audio"] and not (req.get("voice") or req.get("ref_audio")):
            raise ValueError("Either 'voice' (preset speaker) or 'ref_audio' (voice cloning) must be provided")
        if req.get("ref_audio") is not None:
            self._check_ref(req["ref_audio"])
        return fmt, mode

    @staticmethod
    def _check_ref(ref: Any) -> None:
        if not isinstance(ref, str) or not ref.startswith(("data:", "http://", "https://", "file://")):
            raise ValueError("ref_audio must be an http(s) URL, a file:// URI or a base64 data: URL")
        if ref.startswith("data:"):
            try:
                raw = base64.b64decode(ref.split(",", 1)[1], validate=True)
            except (IndexError, ValueError) as exc:
                raise ValueError("ref_audio data URL is not valid base64") from exc
            if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
                raise ValueError("ref_audio is not a WAV file")

    # -- response writing -------------------------------------------------------------------------
    def _chunk(self, data: bytes) -> None:
        self.wfile.write(_framed(data))

    def _serve(self, t_arrival: float, text: str, plan: tuple[str, str], fault: str | None) -> None:
        c = self.cfg
        fmt, mode = plan
        ctype = {"wav": "audio/wav", "pcm": "audio/pcm"}[fmt]
        deadline = t_arrival + c.first_chunk_delay_ms / 1000.0
        if mode == "none":
            pcm = synthesize(c, text)
            body = (wav_header(c.sample_rate, len(pcm)) if fmt == "wav" else b"") + pcm
            body = self._apply_fault(body, fmt, fault, c.sample_rate)
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Standin", "espeak-ng")
            _sleep_until(deadline)
            t_write = time.perf_counter()
            self.end_headers()
            self.wfile.write(body)
            self._record(t_arrival, deadline, t_write, time.perf_counter())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if mode == "sse" else ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Standin", "espeak-ng")
        self.send_header("X-Sample-Rate", str(c.sample_rate))
        self.end_headers()
        emit = self._sse_event if mode == "sse" else self._chunk
        header = wav_header(c.sample_rate) if fmt == "wav" else b""
        if fault == "truncate-header":
            emit(header[:20] if header else b"")
            self._end()
            return
        header_sent = False
        if c.early_header and header:
            emit(header)
            header_sent = True
        pcm = synthesize(c, text)
        if fault == "zero-audio":
            pcm = b""
        step = max(2, int(c.sample_rate * c.chunk_ms / 1000.0) * 2)
        pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)] or [b""]
        if fault == "truncate-sample":
            pieces = [pieces[0][:-1] if len(pieces[0]) % 2 == 0 else pieces[0]]
        if not header_sent and header:
            pieces[0] = header + pieces[0]
        # the first chunk is framed before the wait, so that nothing but the write follows the deadline
        first = _framed(self._sse_data(pieces[0]) if mode == "sse" else pieces[0])
        _sleep_until(deadline)
        t_next = t_write = time.perf_counter()
        self.wfile.write(first)
        self._record(t_arrival, deadline, t_write, time.perf_counter())
        for piece in pieces[1:]:
            t_next += c.chunk_pacing_ms / 1000.0
            _sleep_until(t_next)
            emit(piece)
        self._end(mode == "sse")

    def _record(self, t_arrival: float, deadline: float, t_write: float, t_written: float) -> None:
        """Server-side times of this request's first audio write (GET /standin/timings)."""
        self.cfg._timings.append(
            {
                "request_id": self.headers.get("X-Standin-Request-Id"),
                "t_arrival": t_arrival,  # request line read
                "t_body_read": self.t_read,  # JSON body read
                "t_deadline": deadline,  # t_arrival + first-chunk delay
                "t_first_audio_write": t_write,  # just before write() of the first samples
                "t_first_audio_written": t_written,  # that write() returned
            }
        )

    def _sse_event(self, data: bytes) -> None:
        self._chunk(self._sse_data(data))

    @staticmethod
    def _sse_data(data: bytes) -> bytes:
        if not data:
            return b""
        ev = {
            "type": "speech.audio.delta",
            "audio": base64.b64encode(data).decode(),
            "response_format": "wav" if data[:4] == b"RIFF" else "pcm",
        }
        return b"event: speech.audio.delta\ndata: " + json.dumps(ev).encode() + b"\n\n"

    def _end(self, sse: bool = False) -> None:
        if sse:
            done = {"type": "speech.audio.done", "usage": None, "standin": True}
            self._chunk(b"event: speech.audio.done\ndata: " + json.dumps(done).encode() + b"\n\n")
        self.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _apply_fault(body: bytes, fmt: str, fault: str | None, sample_rate: int) -> bytes:
        header_len = 44 if fmt == "wav" else 0
        if fault == "truncate-header":
            return body[:20] if fmt == "wav" else b""
        if fault == "zero-audio":
            return wav_header(sample_rate, 0) if fmt == "wav" else b""
        if fault == "truncate-sample":
            return body[: header_len + 2 * 100 + 1]
        return body


def _framed(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (nothing for no data: a zero-length chunk would end the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


_SPIN_S = 0.0005  # sleep to this much before a deadline, then poll: timer wake-ups overshoot by ~0.1 ms


def _sleep_until(t: float) -> None:
    """Wait until perf_counter() >= t, overshooting by microseconds rather than a timer's ~0.1 ms."""
    left = t - time.perf_counter()
    if left > _SPIN_S:
        time.sleep(left - _SPIN_S)
    while time.perf_counter() < t:
        os.sched_yield()  # releases the GIL (time.sleep(0) would pay the ~50 us timer slack)


def make_server(cfg: TtsConfig) -> Server:
    handler = type("BoundTtsHandler", (TtsHandler,), {"cfg": cfg})
    return Server((cfg.host, cfg.port), handler)
