"""Request templates: loading errors come before any request, rendering keeps optional fields optional, and
every response kind (streamed WAV, raw PCM, JSON with base64 audio, a URL to fetch) gives the same audio."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from standin_helpers import standin, ttsbench_cmd
from ttsbench import reqtemplate
from ttsbench.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
HOMELAB = ROOT / "inventory" / "example-homelab" / "templates"

pytestmark = pytest.mark.timeout(120)


def _write(tmp_path: Path, text: str, name: str = "t.yml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("text", "name", "needle"),
    [
        ('path: /tts\nbody: {"text": "{txt}"}\n', "t.yml", "unknown placeholder(s) {txt}"),
        ('{"path": "/tts", "body": {"text": "{text}"},}', "t.json", "invalid JSON at line 1"),
        ("path: /tts\nbody: [unclosed\n", "t.yml", "invalid YAML"),
        ('path: /tts\nbody: \'{"text": "{text}"\'\n', "t.yml", "body is not valid JSON"),
        ('path: /tts\nbody: {"say": "hello"}\n', "t.yml", "never sends the text"),
        ('path: /tts\nbody: {"text": "{text}"}\nresponse: {kind: pcm}\n', "t.yml", "response.sample_rate"),
        ('path: /tts\nbody: {"text": "{text}"}\nresponse: {kind: json-base64}\n', "t.yml", "needs field"),
        ('path: /tts\nbody: {"text": "{text}"}\nresponse: {kind: mp3}\n', "t.yml", "response kind 'mp3'"),
        ('path: /tts\nbody: {"text": "{text}"}\nreponse: {kind: wav}\n', "t.yml", "unknown key(s) reponse"),
        ('path: /tts\nmethod: DELETE\nbody: {"text": "{text}"}\n', "t.yml", "method 'DELETE'"),
    ],
)
def test_bad_templates_are_rejected_on_load(tmp_path, text, name, needle):
    with pytest.raises(UserError) as err:
        reqtemplate.load(_write(tmp_path, text, name))
    assert needle in str(err.value)


def test_rendering_fills_placeholders_and_drops_unset_optional_fields(tmp_path):
    t = reqtemplate.load(
        _write(
            tmp_path,
            'path: /say/{voice}\nheaders: {X-Voice: "v={voice}"}\n'
            'body: {"text": "{text}", "speaker": "{voice}", "opts": ["{model}", "x {{y}}"]}\n',
        )
    )
    req = t.render("http://h:1/", reqtemplate.values('Hi "there"', voice="a b", model=None))
    assert req.url == "http://h:1/say/a%20b"
    assert req.headers["X-Voice"] == "v=a b" and req.headers["Content-Type"] == "application/json"
    assert json.loads(req.body) == {"text": 'Hi "there"', "speaker": "a b", "opts": ["x {y}"]}
    # a placeholder inside a longer string cannot be left out: it is an error, not an empty string
    with pytest.raises(UserError, match=r"uses \{voice\} but no voice was given"):
        t.render("http://h:1", reqtemplate.values("hi"))


def test_reference_placeholders_need_a_reference(tmp_path):
    t = reqtemplate.load(_write(tmp_path, 'path: /clone\nbody: {"text": "{text}", "ref": "{reference_audio_b64}"}\n'))
    assert t.needs_reference()
    with pytest.raises(UserError, match="pass --reference"):
        reqtemplate.check_inputs(t, has_reference=False)


def test_openai_preset_matches_the_flag_request():
    from ttsbench.httpbench import SpeechTarget

    for stream in ("audio", "none"):
        for fmt in ("wav", "pcm"):
            target = SpeechTarget(
                url="http://x/v1/audio/speech",
                model="m",
                voice="v",
                response_format=fmt,
                stream=stream,
                payload_extra={"seed": 3},
            )
            t = reqtemplate.openai(response_format=fmt, stream=stream, extra={"seed": 3})
            req = t.render("http://x", reqtemplate.values("hello", voice="v", model="m"))
            assert json.loads(req.body) == target.payload("hello")
            assert req.url == target.url


def test_form_body(tmp_path):
    t = reqtemplate.load(_write(tmp_path, 'path: /tts\nbody_kind: form\nbody: {text: "{text}", speed: 1}\n'))
    req = t.render("http://h", reqtemplate.values("a&b"))
    assert req.body == b"text=a%26b&speed=1"
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"


# ---------------------------------------------------------------------------------------- every response kind
def _wav_bytes(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


SR = 16000
TONE = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)


@contextlib.contextmanager
def _kinds_server() -> Iterator[str]:
    """A small server answering the same second of tone in each response shape (POST /wav, /pcm, /b64, /url,
    GET /files/a.wav) and JSON where audio is expected (/notaudio)."""
    wav = _wav_bytes(TONE, SR)
    pcm = (np.clip(TONE, -1, 1) * 32767).astype("<i2").tobytes()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(wav, "audio/wav")

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert req["text"]
            body, ctype = {
                "/wav": (wav, "audio/wav"),
                "/pcm": (pcm, "application/octet-stream"),
                "/b64": (
                    json.dumps({"result": {"audio": base64.b64encode(wav).decode()}}).encode(),
                    "application/json",
                ),
                "/url": (json.dumps({"url": "/files/a.wav"}).encode(), "application/json"),
                "/notaudio": (b'{"detail": "queued"}', "application/json"),
            }[self.path]
            self._send(body, ctype)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


KINDS = {
    "wav": "path: /wav\nbody: {text: '{text}'}\nresponse: {kind: wav}\n",
    "pcm": f"path: /pcm\nbody: {{text: '{{text}}'}}\nresponse: {{kind: pcm, sample_rate: {SR}}}\n",
    "json-base64": "path: /b64\nbody: {text: '{text}'}\nresponse: {kind: json-base64, field: result.audio}\n",
    "url": "path: /url\nbody: {text: '{text}'}\nresponse: {kind: url, field: url}\n",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_response_kind_gives_the_audio_in_bench_http_and_probe(tmp_path, kind):
    tpl = _write(tmp_path, KINDS[kind])
    with _kinds_server() as url:
        r = subprocess.run(
            ttsbench_cmd(
                "bench-http",
                url,
                "--request-template",
                tpl,
                "--run-dir",
                str(tmp_path / "run"),
                "--only",
                "u01",
                "--warmup",
                "0",
                "--host-label",
                "local",
                "--no-progress",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        p = subprocess.run(
            ttsbench_cmd("probe-tts", url, "--request-template", tpl, "--min-duration-s", "0.9"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    system = json.loads((tmp_path / "run" / "results.json").read_text())["systems"][0]
    row = system["utterances"][0]
    assert row["ok"] and row["sample_rate"] == SR and row["audio_s"] == pytest.approx(1.0, abs=1e-3)
    assert system["config"]["request_template"]["response"]["kind"] == kind
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["duration_s"] == pytest.approx(1.0, abs=1e-3)


def test_json_where_audio_is_expected_is_a_clear_error(tmp_path):
    tpl = _write(tmp_path, "path: /notaudio\nbody: {text: '{text}'}\nresponse: {kind: wav}\n")
    with _kinds_server() as url:
        r = subprocess.run(
            ttsbench_cmd(
                "bench-http",
                url,
                "--request-template",
                tpl,
                "--run-dir",
                str(tmp_path / "r"),
                "--only",
                "u01",
                "--warmup",
                "1",
                "--no-progress",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        p = subprocess.run(
            ttsbench_cmd("probe-tts", url, "--request-template", tpl), capture_output=True, text=True, timeout=60
        )
    assert r.returncode == 3 and "server answered application/json, not audio" in r.stderr, r.stderr
    assert not (tmp_path / "r").exists()
    out = json.loads(p.stdout)
    assert p.returncode == 1 and not out["ok"] and "not audio" in out["error"], out


def test_homelab_example_template_measures_the_text_json_standin(tmp_path):
    """The documented example (inventory/example-homelab) against the stand-in production server, which answers
    only its own request shape."""
    tpl = str(HOMELAB / "panda-tts.yml")
    with standin("tts", "--api", "text-json", "--first-chunk-delay-ms", "100") as url:
        r = subprocess.run(
            ttsbench_cmd(
                "bench-http",
                url,
                "--request-template",
                tpl,
                "--run-dir",
                str(tmp_path),
                "--only",
                "u01",
                "-n",
                "2",
                "--warmup",
                "1",
                "--host-label",
                "panda",
                "--engine",
                "production",
                "--standin",
                "--no-progress",
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        openai = subprocess.run(ttsbench_cmd("probe-tts", url), capture_output=True, text=True, timeout=60)
        dry = subprocess.run(
            ttsbench_cmd("probe-tts", url, "--request-template", tpl, "--dry-run"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    system = json.loads((tmp_path / "results.json").read_text())["systems"][0]
    assert system["config"]["request_template"]["body"] == {"text": "{text}"}
    assert all(row["ok"] and row["ttfa_ms"] >= 100 for row in system["utterances"])
    # the OpenAI request is not what this server speaks: that is why the template exists
    assert openai.returncode == 1 and "HTTP 404" in json.loads(openai.stdout)["error"]
    assert json.loads(dry.stdout)["body"] == {"text": "Hello, this is a failover check. The voice should sound normal."}


def test_bad_template_fails_before_any_request(tmp_path):
    tpl = _write(tmp_path, 'path: /tts\nbody: {"text": "{text}", "v": "{voise}"}\n')
    r = subprocess.run(
        ttsbench_cmd("probe-tts", "http://127.0.0.1:9", "--request-template", tpl, "--dry-run"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "unknown placeholder(s) {voise}" in r.stderr and not r.stdout
