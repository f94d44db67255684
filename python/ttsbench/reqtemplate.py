"""Request templates: how to speak to any TTS HTTP API (``bench-http --request-template``, ``probe-tts``, the
failover drill, the bench-voxtral baseline).

A template is a YAML or JSON file (or a preset name, see :data:`PRESETS`)::

    name: homelab-fastapi          # label recorded in results
    method: POST                   # POST (default), PUT or GET
    path: /tts                     # appended to the server's base URL; placeholders are URL-quoted here
    headers: {X-Api-Key: secret}   # optional; placeholders allowed
    body_kind: json                # json (default) or form (application/x-www-form-urlencoded, flat mapping)
    body: {"text": "{text}"}       # any JSON value; placeholders inside strings
    response:
      kind: wav                    # wav | pcm | json-base64 | url
      sample_rate: 24000           # pcm: the declared rate (and for json-base64/url with audio_format pcm)
      pcm_format: s16le            # pcm: s16le | s32le | f32le | u8
      field: audio                 # json-base64/url: dotted path of the field in the JSON answer
      audio_format: wav            # json-base64/url: what the decoded/fetched bytes are (wav | pcm)

Placeholders: ``{text}``, ``{voice}``, ``{model}``, ``{reference_audio_data_url}`` (data:audio/wav;base64,...),
``{reference_audio_b64}`` (the WAV as plain base64) and ``{reference_audio_path}``; ``{{``/``}}`` are literal
braces. A string that is exactly one placeholder whose value is not given (no ``--voice``) is left out of its
JSON object (so optional fields stay optional); inside a longer string it is an error. An unknown
placeholder, invalid JSON/YAML, or a missing reference are errors when the template is loaded — before any
request is sent or any service is touched.

How audio comes back decides what TTFA means: ``wav``/``pcm`` are read as a stream (TTFA = first audio
sample); ``json-base64`` is a whole answer (TTFA = the end of the JSON); ``url`` fetches the audio from the
URL in the answer (TTFA = first audio sample of that fetch).
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urljoin

from ttsbench.errors import UserError

PLACEHOLDERS = (
    "text",
    "voice",
    "model",
    "reference_audio_data_url",
    "reference_audio_b64",
    "reference_audio_path",
)
REFERENCE_PLACEHOLDERS = frozenset(p for p in PLACEHOLDERS if p.startswith("reference_audio"))
RESPONSE_KINDS = ("wav", "pcm", "json-base64", "url")
METHODS = ("POST", "PUT", "GET")
PCM_FORMATS = ("s16le", "s32le", "f32le", "u8")
_TOP_KEYS = {"name", "method", "path", "headers", "body_kind", "body", "response", "description"}
_RESPONSE_KEYS = {"kind", "sample_rate", "pcm_format", "field", "audio_format"}


@dataclass(frozen=True)
class ResponseSpec:
    kind: str = "wav"
    sample_rate: int | None = None
    pcm_format: str = "s16le"
    field: str | None = None
    audio_format: str = "wav"

    @property
    def streamed(self) -> bool:
        return self.kind in ("wav", "pcm")

    @property
    def decoder_mode(self) -> str:
        """wav or pcm: how the audio bytes (streamed, decoded from base64, or fetched) are decoded."""
        return self.kind if self.streamed else self.audio_format


@dataclass(frozen=True)
class RequestTemplate:
    name: str
    source: str  # preset:<name> or the file path
    method: str = "POST"
    path: str = "/v1/audio/speech"
    headers: dict[str, str] = field(default_factory=dict)
    body_kind: str = "json"
    body: Any = None
    response: ResponseSpec = field(default_factory=ResponseSpec)

    def placeholders(self) -> set[str]:
        found: set[str] = set()
        for s in _strings(self.path, self.headers, self.body):
            found |= _fields(s)
        return found

    def needs_reference(self) -> bool:
        return bool(self.placeholders() & REFERENCE_PLACEHOLDERS)

    def url(self, base_url: str, values: Mapping[str, str | None]) -> str:
        """The request URL: base URL (scheme://host:port[/prefix]) + the rendered path."""
        path = _render_str(self.path, values, quote_values=True, where="path")
        if path.startswith(("http://", "https://")):
            return path
        return base_url.rstrip("/") + "/" + path.lstrip("/")

    def render(self, base_url: str, values: Mapping[str, str | None]) -> RenderedRequest:
        body_obj = _render_obj(self.body, values, "body")
        if body_obj is _OMIT:
            body_obj = None
        headers = {k: _render_str(v, values, where=f"header {k}") for k, v in self.headers.items()}
        if self.method == "GET" or body_obj is None:
            body = b""
        elif self.body_kind == "form":
            body = urlencode({k: "" if v is None else v for k, v in body_obj.items()}).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            body = json.dumps(body_obj).encode()
            headers.setdefault("Content-Type", "application/json")
        return RenderedRequest(self.method, self.url(base_url, values), headers, body, body_obj)

    def describe(self) -> dict[str, Any]:
        """What results.json records about the template."""
        r = self.response
        return {
            "name": self.name,
            "source": self.source,
            "method": self.method,
            "path": self.path,
            "header_names": sorted(self.headers),  # values may hold secrets
            "body_kind": self.body_kind,
            "body": self.body,
            "response": {
                "kind": r.kind,
                "sample_rate": r.sample_rate,
                "pcm_format": r.pcm_format,
                "field": r.field,
                "audio_format": r.audio_format,
            },
        }


@dataclass(frozen=True)
class RenderedRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    body_obj: Any


# ------------------------------------------------------------------------------------------------ presets
def openai_body(
    *,
    response_format: str = "wav",
    stream: str = "audio",
    reference_field: str = "ref_audio",
    with_reference: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAI-style speech body (vllm-omni, ``serve-chatterbox``) as a template body."""
    body: dict[str, Any] = {
        "input": "{text}",
        "model": "{model}",
        "voice": "{voice}",
        "response_format": response_format,
    }
    if stream in ("audio", "sse"):
        body["stream"] = True
        body["stream_format"] = stream
    if with_reference:
        body[reference_field] = "{reference_audio_data_url}"
    body.update(dict(extra or {}))
    return body


def openai(
    *,
    response_format: str = "wav",
    stream: str = "none",
    pcm_sample_rate: int = 24000,
    pcm_format: str = "s16le",
    **kw: Any,
) -> RequestTemplate:
    if stream == "sse":
        raise UserError("the openai preset has no SSE response kind here: use --stream audio or none")
    resp = ResponseSpec(
        kind=response_format, sample_rate=pcm_sample_rate if response_format == "pcm" else None, pcm_format=pcm_format
    )
    return RequestTemplate(
        name="openai",
        source="preset:openai",
        path="/v1/audio/speech",
        body=openai_body(response_format=response_format, stream=stream, **kw),
        response=resp,
    )


PRESETS = ("openai",)


# ------------------------------------------------------------------------------------------------ loading
def load(spec: str, **openai_kw: Any) -> RequestTemplate:
    """A preset name (``openai``; ``openai_kw`` are its options) or a template file; checked completely."""
    if spec in PRESETS:
        return openai(**openai_kw)
    p = Path(spec)
    if not p.is_file():
        raise UserError(f"request template {spec}: no such file (and not a preset: {', '.join(PRESETS)})")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"request template {p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except Exception as exc:  # yaml.YAMLError and its subclasses
        raise UserError(f"request template {p}: invalid YAML: {' '.join(str(exc).split())}") from exc
    return from_mapping(doc, str(p))


def from_mapping(doc: Any, source: str) -> RequestTemplate:
    where = f"request template {source}"
    if not isinstance(doc, dict):
        raise UserError(f"{where}: expected a mapping with path, body and response")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_TOP_KEYS))})")
    method = str(doc.get("method", "POST")).upper()
    if method not in METHODS:
        raise UserError(f"{where}: method {method!r} is not one of {', '.join(METHODS)}")
    path = doc.get("path", "/v1/audio/speech")
    if not isinstance(path, str) or not path:
        raise UserError(f"{where}: path must be a non-empty string such as /tts")
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str | int | float) for v in headers.values()):
        raise UserError(f"{where}: headers must map names to strings")
    headers = {str(k): str(v) for k, v in headers.items()}
    body_kind = doc.get("body_kind", "json")
    if body_kind not in ("json", "form"):
        raise UserError(f"{where}: body_kind must be json or form, not {body_kind!r}")
    body = doc.get("body")
    if isinstance(body, str) and body_kind == "json":
        # a JSON text written as a string in YAML: it must parse
        try:
            body = json.loads(body)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{where}: body is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})"
            ) from exc
    if body is None and method != "GET":
        raise UserError(f'{where}: a {method} template needs a body, e.g. body: {{"text": "{{text}}"}}')
    if body_kind == "form" and not (
        isinstance(body, dict) and all(isinstance(v, str | int | float) for v in body.values())
    ):
        raise UserError(f"{where}: a form body must be a flat mapping of field names to values")
    resp = _response(doc.get("response") or {}, where)
    t = RequestTemplate(
        name=str(doc.get("name") or Path(source).stem),
        source=source,
        method=method,
        path=path,
        headers=headers,
        body_kind=body_kind,
        body=body,
        response=resp,
    )
    bad = t.placeholders() - set(PLACEHOLDERS)
    if bad:
        raise UserError(
            f"{where}: unknown placeholder(s) {', '.join('{' + b + '}' for b in sorted(bad))} "
            f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}; write {{{{ and }}}} for braces)"
        )
    if "text" not in t.placeholders():
        raise UserError(f"{where}: the template never sends the text: put {{text}} in the body or path")
    return t


def _response(r: Any, where: str) -> ResponseSpec:
    if not isinstance(r, dict):
        raise UserError(f"{where}: response must be a mapping such as {{kind: wav}}")
    unknown = set(r) - _RESPONSE_KEYS
    if unknown:
        raise UserError(f"{where}: unknown response key(s) {', '.join(sorted(unknown))}")
    kind = r.get("kind", "wav")
    if kind not in RESPONSE_KINDS:
        raise UserError(f"{where}: response kind {kind!r} is not one of {', '.join(RESPONSE_KINDS)}")
    audio_format = r.get("audio_format", "wav")
    if audio_format not in ("wav", "pcm"):
        raise UserError(f"{where}: response audio_format must be wav or pcm")
    pcm_format = r.get("pcm_format", "s16le")
    if pcm_format not in PCM_FORMATS:
        raise UserError(f"{where}: response pcm_format must be one of {', '.join(PCM_FORMATS)}")
    rate = r.get("sample_rate")
    if (kind == "pcm" or (kind not in ("wav", "pcm") and audio_format == "pcm")) and not (
        isinstance(rate, int) and rate > 0
    ):
        raise UserError(f"{where}: raw PCM needs its rate: set response.sample_rate (e.g. 24000)")
    fld = r.get("field")
    if kind in ("json-base64", "url") and not (isinstance(fld, str) and fld):
        raise UserError(
            f"{where}: response kind {kind} needs field (the JSON field holding the "
            f"{'base64 audio' if kind == 'json-base64' else 'audio URL'}, e.g. audio)"
        )
    return ResponseSpec(kind=kind, sample_rate=rate, pcm_format=pcm_format, field=fld, audio_format=audio_format)


def values(
    text: str, *, voice: str | None = None, model: str | None = None, reference: Any = None
) -> dict[str, str | None]:
    """Placeholder values; ``reference`` is a :class:`ttsbench.reference.Reference` or None."""
    import base64

    return {
        "text": text,
        "voice": voice or None,
        "model": model or None,
        "reference_audio_data_url": reference.data_url if reference is not None else None,
        "reference_audio_b64": base64.b64encode(reference.wav_bytes).decode("ascii") if reference is not None else None,
        "reference_audio_path": str(reference.path) if reference is not None else None,
    }


def check_inputs(t: RequestTemplate, *, has_reference: bool) -> None:
    if t.needs_reference() and not has_reference:
        used = sorted(t.placeholders() & REFERENCE_PLACEHOLDERS)
        raise UserError(
            f"request template {t.source} sends {', '.join('{' + u + '}' for u in used)}: pass --reference WAV"
        )


# ------------------------------------------------------------------------------------------------ responses
def json_field(doc: Any, path: str, source: str) -> Any:
    cur = doc
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            keys = ", ".join(sorted(cur)) if isinstance(cur, dict) else type(cur).__name__
            raise ValueError(f"{source}: the JSON answer has no field {path!r} (found: {keys})")
    return cur


def audio_from_json(body: bytes, spec: ResponseSpec, base_url: str) -> tuple[str, bytes | str]:
    """For json-base64: ("bytes", decoded audio); for url: ("url", absolute URL). ValueError when not there."""
    import base64
    import binascii

    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"answer is not JSON (response kind {spec.kind}): {_snippet(body)}") from exc
    value = json_field(doc, spec.field or "", "response")
    if spec.kind == "json-base64":
        if not isinstance(value, str) or not value:
            raise ValueError(f"response field {spec.field!r} is not base64 text")
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]
        try:
            return "bytes", base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"response field {spec.field!r} is not valid base64 ({exc})") from exc
    if not isinstance(value, str) or not value:
        raise ValueError(f"response field {spec.field!r} is not a URL")
    return "url", urljoin(base_url, value)


def check_content_type(ctype: str, body_start: bytes, spec: ResponseSpec) -> None:
    """A streamed wav/pcm answer that is plainly not audio (JSON, HTML, text) is an error, not silence."""
    c = ctype.split(";")[0].strip().lower()
    if spec.streamed and (c in ("application/json", "text/html", "text/plain") or c.startswith("text/")):
        raise ValueError(f"server answered {c}, not audio (response kind {spec.kind}): {_snippet(body_start)}")


def _snippet(b: bytes, n: int = 160) -> str:
    s = " ".join(b[:n].decode("utf-8", "replace").split())
    return repr(s) if s else "(empty body)"


# ------------------------------------------------------------------------------------------------ rendering
def _strings(*objs: Any) -> list[str]:
    out: list[str] = []
    for o in objs:
        if isinstance(o, str):
            out.append(o)
        elif isinstance(o, dict):
            out += _strings(*o.keys(), *o.values())
        elif isinstance(o, list):
            out += _strings(*o)
    return out


def _fields(s: str) -> set[str]:
    try:
        return {f for _lit, f, _spec, _conv in string.Formatter().parse(s) if f is not None}
    except ValueError as exc:
        raise UserError(f"request template: {s!r}: {exc} (write {{{{ and }}}} for literal braces)") from exc


def _sole_placeholder(s: str) -> str | None:
    parts = list(string.Formatter().parse(s))
    if len(parts) == 1 and parts[0][0] == "" and parts[0][1] is not None and not parts[0][2] and not parts[0][3]:
        return parts[0][1]
    return None


def _render_str(s: str, values: Mapping[str, str | None], *, quote_values: bool = False, where: str) -> str:
    out = []
    for lit, name, spec, conv in string.Formatter().parse(s):
        out.append(lit)
        if name is None:
            continue
        if spec or conv:
            raise UserError(f"request template {where}: '{{{name}!{conv}:{spec}}}': no conversions or formats")
        v = values.get(name)
        if v is None:
            raise UserError(f"request template {where} uses {{{name}}} but no {name.replace('_', ' ')} was given")
        out.append(quote(v, safe="") if quote_values else v)
    return "".join(out)


def _render_obj(o: Any, values: Mapping[str, str | None], where: str) -> Any:
    if isinstance(o, str):
        sole = _sole_placeholder(o)
        if sole is not None and values.get(sole) is None:
            return _OMIT
        return _render_str(o, values, where=where)
    if isinstance(o, dict):
        out = {}
        for k, v in o.items():
            r = _render_obj(v, values, where)
            if r is not _OMIT:
                out[_render_str(k, values, where=where)] = r
        return out
    if isinstance(o, list):
        return [r for r in (_render_obj(v, values, where) for v in o) if r is not _OMIT]
    return o


class _Omit:
    def __repr__(self) -> str:
        return "<omitted>"


_OMIT: Any = _Omit()
