"""The one HTTP server base of ttsbench's own servers (stdlib only: they must start fast).

Used by `serve-chatterbox`, the stand-ins (`ttsbench standin tts|llm`) and the blind-listening page. Errors
are OpenAI-style JSON bodies ``{"error": {"message", "type", "code"}}``, what OpenAI-style clients parse.
"""

from __future__ import annotations

import json
import socket
import struct
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES: dict[int, str] = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    413: "RequestTooLargeError",
}


# Data size of a streamed WAV whose length is not known yet (RIFF and data sizes; decoders read to the end).
UNKNOWN_SIZE = 0xFFFFFFFF


def wav_header(sample_rate: int, data_bytes: int = UNKNOWN_SIZE) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV (streamed: sizes UNKNOWN_SIZE), as the audio servers send it."""
    riff = UNKNOWN_SIZE if data_bytes == UNKNOWN_SIZE else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


def error_type(status: int) -> str:
    """The OpenAI-style error type of an HTTP status (4xx without a name of its own: BadRequestError)."""
    return ERROR_TYPES.get(status, "BadRequestError" if 400 <= status < 500 else "InternalServerError")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it; bind soon, another process may take it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Server(ThreadingHTTPServer):
    """Threaded server: a thread per connection, daemon threads, a deep accept queue, fast rebinding."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler with TCP_NODELAY (first audio bytes leave at once) and JSON helpers."""

    protocol_version = "HTTP/1.1"
    server_version = "ttsbench/1"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def verbose(self) -> bool:
        """Whether to log each request (stderr); quiet unless a subclass says otherwise."""
        return False

    def log_message(self, format: str, *args: Any) -> None:
        if self.verbose():
            super().log_message(format, *args)

    def read_json(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"request body is not JSON: {exc}") from exc

    def send_json(self, status: int, obj: Any, extra_headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def send_error_json(
        self, status: int, message: str, kind: str | None = None, extra_headers: dict[str, str] | None = None
    ) -> None:
        error = {"message": message, "type": kind or error_type(status), "code": status}
        self.send_json(status, {"error": error}, extra_headers)
