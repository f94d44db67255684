"""Loopback HTTP server for the blind listening page (stdlib only; random port on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from ttsbench.scoring.listen.session import Session

_CLIP = re.compile(r"^/clip/(i\d+)/([ABR])$")


def page_html() -> str:
    return resources.files("ttsbench.scoring.listen").joinpath("page.html").read_text(encoding="utf-8")


def make_server(session: Session, port: int = 0) -> ThreadingHTTPServer:
    lock = threading.Lock()
    html = page_html().encode("utf-8")

    class Handler(BaseHTTPRequestHandler):
        server_version = "ttsbench-listen"
        sys_version = ""

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet
            return

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: Any) -> None:
            self._send(code, json.dumps(data).encode("utf-8"), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                return self._send(200, html, "text/html; charset=utf-8")
            if path == "/favicon.ico":
                return self._send(204, b"", "image/x-icon")
            if path == "/api/state":
                with lock:
                    return self._json(200, session.public_state())
            m = _CLIP.match(path)
            if m:
                try:
                    with lock:
                        body = session.clip(m.group(1), m.group(2))
                except KeyError:
                    return self._json(404, {"error": "no such clip"})
                return self._send(200, body, "audio/wav")
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            try:
                data = json.loads(self.rfile.read(n) or b"{}")
            except json.JSONDecodeError:
                return self._json(400, {"error": "body must be JSON"})
            try:
                with lock:
                    if self.path == "/api/rate":
                        session.answer(str(data.get("item")), data.get("scores") or {}, data.get("note"))
                        return self._json(
                            200,
                            {"ok": True, "complete": session.complete(), "answered": len(session.answers)},
                        )
                    if self.path == "/api/submit":
                        return self._json(200, {"ok": True, **session.submit()})
            except KeyError:
                return self._json(404, {"error": "no such item"})
            except ValueError as exc:
                return self._json(400, {"error": str(exc)})
            return self._json(404, {"error": "not found"})

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)
