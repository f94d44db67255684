"""Streaming HTTP benchmark client for OpenAI-style ``POST /v1/audio/speech`` servers (vllm-omni).

Request fields follow vllm-omni's speech API (docs/serving/speech_api.md and
vllm_omni/entrypoints/openai/serving_speech.py, vllm-project/vllm-omni at 078de2d1): ``input``, ``model``,
``voice``, ``response_format`` (wav|pcm for streaming), ``stream_format: "audio"`` for raw byte streaming,
``stream: true`` (+ ``stream_format: "sse"``) for ``speech.audio.delta`` Server-Sent Events, and
``ref_audio`` (a data:/http(s)/file:// URL) for voice cloning. Anything else goes in ``payload_extra``.

Timing: t0 is taken just before the request is handed to the HTTP client (:mod:`ttsbench.leanhttp`, a lean
HTTP/1.1 client on asyncio streams — see there why not httpx); TTFA is the arrival of the first piece holding a
byte of audio *samples* (a WAV header alone does not count); the total ends at the last byte.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttsbench import leanhttp
from ttsbench.audio import SILENCE_DBFS, first_nonsilent_index
from ttsbench.metrics import Playback, RequestMetrics
from ttsbench.utterances import Utterance
from ttsbench.wavstream import StreamDecoder, StreamFormatError

STREAM_MODES = ("audio", "sse", "none")


class ServerUnreachable(Exception):
    """The server could not be connected to at all (not an HTTP error)."""


@dataclass
class SpeechTarget:
    url: str  # full endpoint URL, e.g. http://titan:8004/v1/audio/speech
    model: str | None = None
    voice: str | None = None
    response_format: str = "wav"
    stream: str = "audio"  # audio | sse | none
    pcm_sample_rate: int = 24000
    pcm_format: str = "s16le"
    reference_field: str = "ref_audio"
    reference_url: str | None = None
    payload_extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0
    silence_dbfs: float = SILENCE_DBFS
    # a request template (ttsbench.reqtemplate) replaces payload()/url/response_format when set; url is then
    # the server's base URL and template_values fill the placeholders other than {text}
    template: Any = None
    template_values: dict[str, str | None] = field(default_factory=dict)

    def payload(self, text: str) -> dict[str, Any]:
        p: dict[str, Any] = {"input": text, "response_format": self.response_format}
        if self.model:
            p["model"] = self.model
        if self.voice:
            p["voice"] = self.voice
        if self.stream == "audio":
            p["stream"] = True
            p["stream_format"] = "audio"
        elif self.stream == "sse":
            p["stream"] = True
            p["stream_format"] = "sse"
        if self.reference_url:
            p[self.reference_field] = self.reference_url
        p.update(self.payload_extra)
        return p


def endpoint_url(url: str) -> str:
    """Accept a base URL (http://host:port[/prefix]) or the full endpoint; return the endpoint.

    Only the *path* is completed (``/v1/audio/speech`` appended unless it ends in ``/audio/speech``; ``/v1``
    gets ``/audio/speech``); a query string is kept as it is and a fragment dropped."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url.strip())
    path = u.path.rstrip("/")
    if not path.endswith("/audio/speech"):
        path += "/audio/speech" if path.endswith("/v1") else "/v1/audio/speech"
    return urlunsplit((u.scheme, u.netloc, path, u.query, ""))


# What a Content-Type may say for each request shape (vllm-omni 0.30.0 serving_speech.py: raw streams are
# audio/wav or audio/pcm, SSE is text/event-stream, non-streaming wav/pcm the same audio types). The magic
# bytes decide between wav and pcm; the header only rules out what is plainly not the asked-for audio.
_COMPRESSED = {"mpeg", "mp3", "ogg", "opus", "flac", "aac", "webm", "mp4", "x-flac", "x-m4a"}


def _content_type_problem(content_type: str, target: SpeechTarget) -> str | None:
    """Why this Content-Type cannot be the audio asked for (None when it can)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if not ctype:
        return None
    main, _, sub = ctype.partition("/")
    if target.stream == "sse":
        return None if ctype == "text/event-stream" else f"Content-Type {ctype} is not text/event-stream"
    if ctype == "text/event-stream":
        return "the server sent Server-Sent Events (text/event-stream); use --stream sse"
    if main == "audio" and sub in _COMPRESSED:
        return f"the server sent compressed audio ({ctype}), not {target.response_format}"
    if main == "text" or sub == "json" or sub.endswith("+json") or sub in ("html", "xml"):
        return f"Content-Type {ctype} is not audio"
    return None


class _SseAudio:
    """Pull base64 audio out of ``speech.audio.delta`` events; raise on ``speech.audio.error``."""

    def __init__(self) -> None:
        self._buf = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buf += data.replace(b"\r\n", b"\n")
        out = bytearray()
        while b"\n\n" in self._buf:
            event, self._buf = self._buf.split(b"\n\n", 1)
            payload = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
            if not payload or payload == b"[DONE]":
                continue
            try:
                ev = json.loads(payload)
            except json.JSONDecodeError as exc:
                raise StreamFormatError(f"SSE event is not JSON: {payload[:80]!r}") from exc
            kind = ev.get("type")
            if kind == "speech.audio.delta":
                out += base64.b64decode(ev.get("audio") or "")
            elif kind == "speech.audio.done":
                self.done = True
            elif kind == "speech.audio.error":
                msg = (ev.get("error") or {}).get("message", "unknown error")
                raise StreamFormatError(f"server reported speech.audio.error: {msg}")
        return bytes(out)


def _one_line(text: str, limit: int = 300) -> str:
    s = " ".join(text.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def describe_request(
    target: SpeechTarget, utt: Utterance, concurrency: int = 1, index: int = 0, warmup: bool = False
) -> str:
    """The utterance and the request, for error messages: which text, which request, asked how."""
    which = f"warm-up request {index}" if warmup else f"request {index} at concurrency {concurrency}"
    return f"{utt.utt_id} ({which}: POST {target.url} stream={target.stream} response_format={target.response_format})"


_ERROR_BODY_WAIT_S = 5.0  # an error response's body is only read for the message: never wait long for it
_MAGIC_LEN = 12  # RIFF....WAVE


async def _error_body(resp: leanhttp.Response, timeout_s: float) -> str:
    try:
        async with asyncio.timeout(min(timeout_s, _ERROR_BODY_WAIT_S)):
            raw = await resp.read(4096)
    except TimeoutError:
        return f"(no body within {min(timeout_s, _ERROR_BODY_WAIT_S):g} s)"
    except leanhttp.HttpClientError as exc:
        return f"(body unreadable: {exc})"
    return _one_line(raw.decode("utf-8", "replace")) or "(empty body)"


async def synthesize_once(
    client: leanhttp.Client,
    target: SpeechTarget,
    utt: Utterance,
    concurrency: int = 1,
    index: int = 0,
    marks: dict[str, float] | None = None,
) -> tuple[RequestMetrics, np.ndarray | None]:
    """One timed request. Never raises for per-request failures (they land in ``error``), except
    ServerUnreachable when no connection could be made. ``marks`` (optional) receives the raw
    ``time.perf_counter()`` values ``t0`` and ``t_first_audio`` (for lining up with a server's clock).

    What comes back is checked against what was asked: an HTTP error status is reported as such (its body
    read for at most a few seconds), a Content-Type that cannot be the asked-for audio is refused before any
    byte is counted, a WAV (RIFF/WAVE magic) where raw PCM was asked is refused instead of timing its header
    as audio, and a body without a single byte is an "empty response" as soon as it ends."""
    if target.template is not None:
        return await synthesize_templated(client, target, utt, concurrency, index, marks)
    m = RequestMetrics(utt_id=utt.utt_id, text=utt.text, concurrency=concurrency, request_index=index)
    mode = "pcm" if target.response_format == "pcm" else "wav"
    dec = StreamDecoder(mode, target.pcm_sample_rate if mode == "pcm" else None, target.pcm_format)
    sse = _SseAudio() if target.stream == "sse" else None
    body = json.dumps(target.payload(utt.text)).encode()  # serialised before t0: not part of TTFA
    headers = {"Content-Type": "application/json", **target.headers}
    ctype = ""
    wire_bytes = 0
    held = b""  # pcm: the first bytes, held until they prove not to be a WAV header
    t_held: float | None = None  # arrival of the first held byte (= TTFA once the bytes prove to be PCM)
    t0 = time.perf_counter()

    playback = Playback()

    def feed(audio: bytes, t: float, t_audio: float) -> None:
        new = dec.feed(audio)
        if new is not None and new.size and dec.sample_rate:
            playback.feed(t_audio, new.size / dec.sample_rate)
        if m.ttfa_ms is None and dec.audio_bytes:
            m.ttfa_ms = (t_audio - t0) * 1000.0
            if marks is not None:
                marks["t0"], marks["t_first_audio"] = t0, t_audio
        if (
            m.t_first_nonsilent_ms is None
            and new.size
            and first_nonsilent_index(new, dec.sample_rate or 1, target.silence_dbfs) is not None
        ):
            m.t_first_nonsilent_ms = (t - t0) * 1000.0

    def release_held(t: float) -> None:
        nonlocal held
        if held[:4] == b"RIFF" and held[8:12] == b"WAVE":
            raise StreamFormatError(
                "asked for response_format=pcm but the server sent a WAV (RIFF/WAVE header"
                + (f", Content-Type {ctype}" if ctype else "")
                + "): it ignores response_format; use --response-format wav"
            )
        data, held = held, b""
        feed(data, t, t_held if t_held is not None else t)

    try:
        resp = await client.post(target.url, body, headers, target.timeout_s)
        try:
            m.http_status = resp.status
            ctype = resp.headers.get("content-type", "")
            if not 200 <= resp.status < 300:  # an error (or a redirect): reported as the status, never timed
                m.error = f"HTTP {resp.status}: {await _error_body(resp, target.timeout_s)}"
                return m, None
            problem = _content_type_problem(ctype, target)
            if problem is not None:
                m.error = (
                    f"HTTP {resp.status} but {problem} (asked stream={target.stream}, "
                    f"response_format={target.response_format}): {await _error_body(resp, target.timeout_s)}"
                )
                return m, None
            async for piece in resp.pieces():
                t = time.perf_counter()
                wire_bytes += len(piece)
                audio = sse.feed(piece) if sse is not None else piece
                if not audio:
                    continue
                if mode == "pcm" and (held or not dec.total_bytes):
                    if t_held is None:
                        t_held = t
                    held += audio
                    if len(held) >= _MAGIC_LEN:
                        release_held(t)
                    continue
                feed(audio, t, t)
            t_end = time.perf_counter()
            if held:
                release_held(t_end)
        finally:
            await resp.aclose()
        if wire_bytes == 0:
            raise StreamFormatError(
                f"empty response: HTTP {resp.status} with no body" + (f" (Content-Type {ctype})" if ctype else "")
            )
        if dec.total_bytes == 0:
            raise StreamFormatError("zero-length audio (the response carried no audio bytes)")
        samples = dec.finish()
    except leanhttp.ConnectFailed as exc:
        raise ServerUnreachable(f"cannot connect to {target.url}: {exc}") from exc
    except leanhttp.TimedOut:
        m.error = f"timed out after {target.timeout_s:g} s"
        return m, None
    except leanhttp.ConnectionBroke as exc:
        m.error = f"connection broke mid-response: {_one_line(str(exc))}"
        return m, None
    except StreamFormatError as exc:
        m.error = str(exc)
        if ctype and "not a WAV stream" in m.error:
            m.error += f" (Content-Type {ctype.split(';')[0].strip()})"
        return m, None
    m.total_ms = (t_end - t0) * 1000.0
    m.sample_rate = dec.sample_rate
    m.sample_format = dec.sample_format
    m.audio_s = samples.size / float(dec.sample_rate or 1)
    m.rtf = (m.total_ms / 1000.0) / m.audio_s
    m.stall_ms = playback.stall_s * 1000.0
    m.ok = True
    return m, samples


def settle_after_warmup() -> None:
    """Collect once and freeze what survived (imports, client, connections): later garbage collections
    then only walk objects made by the timed requests, so they stay short inside a timed span."""
    gc.collect()
    gc.freeze()


@dataclass
class RunPlan:
    requests: int  # timed requests per concurrency level (cycling through the utterances)
    warmup: int = 1
    concurrency: tuple[int, ...] = (1,)


@dataclass
class RunState:
    """What has been measured so far; survives Ctrl-C and mid-run failure."""

    rows: list[RequestMetrics] = field(default_factory=list)
    # first good audio per utterance: (samples, sample rate, the row it came from)
    audio: dict[str, tuple[np.ndarray, int, RequestMetrics]] = field(default_factory=dict)
    aborted: str | None = None


async def run_plan(
    target: SpeechTarget,
    utts: list[Utterance],
    plan: RunPlan,
    state: RunState,
    on_row: Callable[[RequestMetrics], None] | None = None,
) -> None:
    """Warm up (excluded; any failure raises), then the timed requests per concurrency level."""
    async with leanhttp.Client(max_idle_per_origin=max(plan.concurrency) + 2) as client:
        for i in range(plan.warmup):
            utt = utts[i % len(utts)]
            m, _ = await synthesize_once(client, target, utt, 1, i)
            if not m.ok:
                raise WarmupFailed(f"{describe_request(target, utt, 1, i, warmup=True)} failed: {m.error}")
        settle_after_warmup()
        for c in plan.concurrency:
            sem = asyncio.Semaphore(c)

            async def one(i: int, c: int = c, sem: asyncio.Semaphore = sem) -> None:
                async with sem:
                    m, samples = await synthesize_once(client, target, utts[i % len(utts)], c, i)
                state.rows.append(m)
                if m.ok and samples is not None and m.utt_id not in state.audio:
                    state.audio[m.utt_id] = (samples, int(m.sample_rate or 0), m)
                if on_row:
                    on_row(m)

            await asyncio.gather(*(one(i) for i in range(plan.requests)))


class WarmupFailed(Exception):
    """A warm-up request failed: nothing has been measured, so nothing is written."""


async def synthesize_templated(
    client: leanhttp.Client,
    target: SpeechTarget,
    utt: Utterance,
    concurrency: int = 1,
    index: int = 0,
    marks: dict[str, float] | None = None,
) -> tuple[RequestMetrics, np.ndarray | None]:
    """:func:`synthesize_once` for a request template: the same timing, any request shape and response kind
    (streamed WAV/PCM: TTFA = first audio sample; JSON with base64 audio: TTFA = end of the answer; a URL to
    fetch: TTFA = first audio sample of the fetch)."""
    from ttsbench import reqtemplate

    tpl = target.template
    spec = tpl.response
    m = RequestMetrics(utt_id=utt.utt_id, text=utt.text, concurrency=concurrency, request_index=index)
    mode = spec.decoder_mode
    dec = StreamDecoder(mode, spec.sample_rate if mode == "pcm" else None, spec.pcm_format)
    req = tpl.render(target.url, {**target.template_values, "text": utt.text})  # before t0: not part of TTFA
    headers = {**req.headers, **target.headers}
    t0 = time.perf_counter()

    playback = Playback()

    def feed(piece: bytes, t_piece: float) -> None:
        new = dec.feed(piece)
        if new is not None and new.size and dec.sample_rate:
            playback.feed(t_piece, new.size / dec.sample_rate)
        if m.ttfa_ms is None and dec.audio_bytes:
            m.ttfa_ms = (t_piece - t0) * 1000.0
            if marks is not None:
                marks["t0"], marks["t_first_audio"] = t0, t_piece
        if (
            m.t_first_nonsilent_ms is None
            and new is not None
            and new.size
            and first_nonsilent_index(new, dec.sample_rate or 1, target.silence_dbfs) is not None
        ):
            m.t_first_nonsilent_ms = (t_piece - t0) * 1000.0

    async def stream_audio(resp: leanhttp.Response) -> None:
        first = True
        async for piece in resp.pieces():
            if first:
                reqtemplate.check_content_type(resp.headers.get("content-type", ""), piece, spec)
                first = False
            feed(piece, time.perf_counter())

    try:
        resp = await client.request(req.method, req.url, req.body, headers, target.timeout_s)
        try:
            m.http_status = resp.status
            if resp.status >= 400:
                text = (await resp.read(4096)).decode("utf-8", "replace")
                m.error = f"HTTP {resp.status}: {_one_line(text) or '(empty body)'}"
                return m, None
            if spec.streamed:
                await stream_audio(resp)
            else:
                body = await resp.read(256 << 20)
                what, audio = reqtemplate.audio_from_json(body, spec, req.url)
                if what == "bytes":
                    assert isinstance(audio, bytes)
                    feed(audio, time.perf_counter())
                else:
                    assert isinstance(audio, str)
                    fetched = await client.request("GET", audio, b"", dict(target.headers), target.timeout_s)
                    try:
                        if fetched.status >= 400:
                            text = (await fetched.read(4096)).decode("utf-8", "replace")
                            m.error = f"audio URL {audio}: HTTP {fetched.status}: {_one_line(text) or '(empty)'}"
                            return m, None
                        await stream_audio(fetched)
                    finally:
                        await fetched.aclose()
            t_end = time.perf_counter()
        finally:
            await resp.aclose()
        samples = dec.finish()
    except leanhttp.ConnectFailed as exc:
        raise ServerUnreachable(f"cannot connect to {req.url}: {exc}") from exc
    except leanhttp.TimedOut:
        m.error = f"timed out after {target.timeout_s:g} s"
        return m, None
    except leanhttp.ConnectionBroke as exc:
        m.error = f"connection broke mid-response: {_one_line(str(exc))}"
        return m, None
    except ValueError as exc:  # StreamFormatError, not-audio answers, JSON without the audio field
        m.error = _one_line(str(exc))
        return m, None
    m.total_ms = (t_end - t0) * 1000.0
    m.sample_rate = dec.sample_rate
    m.audio_s = samples.size / float(dec.sample_rate or 1)
    m.rtf = (m.total_ms / 1000.0) / m.audio_s
    m.stall_ms = playback.stall_s * 1000.0
    m.ok = True
    return m, samples
