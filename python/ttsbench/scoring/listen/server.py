"""Loopback HTTP server for the blind listening page (stdlib only; random port on 127.0.0.1).

One server, one or more rater sessions; each session has its own secret token, given to the rater in the
URL fragment (``/#t=TOKEN``: a fragment is never sent in requests, logs or Referer). The page sends it back
in the ``X-Ttsbench-Token`` header on every API call and clip fetch. Requests are refused unless the Host is
this server's own address (no DNS rebinding), a POST comes from this server's own Origin (a page on any other
origin — another localhost port included — is refused) with a JSON body, and the token names a session.
"""

from __future__ import annotations

import json
import re
import threading
from importlib import resources
from typing import Any

from ttsbench.httpserve import JsonHandler, Server
from ttsbench.scoring.listen.session import Conflict, Session

_CLIP = re.compile(r"^/clip/([0-9a-f]{10}|-)/([ABR])$")
TOKEN_HEADER = "X-Ttsbench-Token"


def page_html() -> str:
    return resources.files("ttsbench.scoring.listen").joinpath("page.html").read_text(encoding="utf-8")


class ListenServer(Server):
    sessions: dict[str, Session]

    def url(self, session: Session) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/#t={session.token}"

    def all_submitted(self) -> bool:
        return all(s.submitted is not None for s in self.sessions.values())


def make_server(sessions: Session | list[Session], port: int = 0) -> ListenServer:
    lock = threading.Lock()
    html = page_html().encode("utf-8")
    by_token = {s.token: s for s in ([sessions] if isinstance(sessions, Session) else sessions)}

    class Handler(JsonHandler):
        # one request per connection: the page loads a handful of clips, and a closed socket never lingers
        protocol_version = "HTTP/1.0"
        server_version = "ttsbench-listen"

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            if ctype.startswith("text/html"):
                self.send_header(
                    "Content-Security-Policy",
                    "default-src 'self'; media-src 'self' blob:; style-src 'unsafe-inline'; "
                    "script-src 'unsafe-inline'; frame-ancestors 'none'",
                )
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, data: Any) -> None:
            self._send(code, json.dumps(data).encode("utf-8"), "application/json")

        def _origins(self) -> set[str]:
            port = self.server.server_address[1]
            return {f"http://127.0.0.1:{port}", f"http://localhost:{port}"}

        def _host_ok(self) -> bool:
            return f"http://{self.headers.get('Host', '')}" in self._origins()

        def _session(self) -> Session | None:
            return by_token.get(self.headers.get(TOKEN_HEADER, ""))

        def do_GET(self) -> None:
            if not self._host_ok():
                return self._json(403, {"error": "wrong Host"})
            path = self.path.split("?", 1)[0]
            if path == "/":
                return self._send(200, html, "text/html; charset=utf-8")
            if path == "/favicon.ico":
                return self._send(204, b"", "image/x-icon")
            session = self._session()
            if session is None:
                return self._json(403, {"error": "missing or unknown session token"})
            if path == "/api/state":
                with lock:
                    return self._json(200, session.public_state())
            m = _CLIP.match(path)
            if m:
                try:
                    body = session.clip(m.group(1), m.group(2))
                except KeyError:
                    return self._json(404, {"error": "no such clip"})
                return self._send(200, body, "audio/wav")
            return self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if not self._host_ok():
                return self._json(403, {"error": "wrong Host"})
            if self.headers.get("Origin") not in self._origins() or self.headers.get(
                "Sec-Fetch-Site", "same-origin"
            ) not in ("same-origin", "none"):
                return self._json(403, {"error": "cross-origin request refused"})
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                return self._json(415, {"error": "body must be application/json"})
            session = self._session()
            if session is None:
                return self._json(403, {"error": "missing or unknown session token"})
            n = min(int(self.headers.get("Content-Length") or 0), 65536)
            try:
                data = json.loads(self.rfile.read(n) or b"{}")
                if not isinstance(data, dict):
                    raise ValueError
            except ValueError:
                return self._json(400, {"error": "body must be a JSON object"})
            try:
                with lock:
                    if self.path == "/api/played":
                        session.mark_played(str(data.get("item")), str(data.get("label")))
                        return self._json(200, {"ok": True})
                    if self.path == "/api/rate":
                        scores = data.get("scores") if isinstance(data.get("scores"), dict) else {}
                        session.answer(str(data.get("item")), scores, data.get("note"))
                        return self._json(
                            200,
                            {"ok": True, "complete": session.complete(), "answered": len(session.answers)},
                        )
                    if self.path == "/api/submit":
                        return self._json(200, {"ok": True, **session.submit()})
            except KeyError:
                return self._json(404, {"error": "no such item"})
            except Conflict as exc:
                return self._json(409, {"error": str(exc)})
            except ValueError as exc:
                return self._json(400, {"error": str(exc)})
            return self._json(404, {"error": "not found"})

    srv = ListenServer(("127.0.0.1", port), Handler)
    srv.sessions = by_token
    return srv
