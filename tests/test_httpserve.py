"""ttsbench.httpserve, the one HTTP base of serve-chatterbox, the stand-ins and the listening page."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import pytest

from ttsbench.httpserve import JsonHandler, Server, error_type


class EchoHandler(JsonHandler):
    def do_POST(self) -> None:
        try:
            body = self.read_json()  # read before any answer: the connection is kept alive
        except ValueError as exc:
            self.send_error_json(400, str(exc))
            return
        if self.path != "/echo":
            self.send_error_json(404, f"no route {self.path}")
            return
        status = int(body.get("status", 200))
        if status != 200:
            self.send_error_json(status, "asked for", extra_headers={"X-Asked": str(status)})
            return
        self.send_json(200, {"echo": body}, {"X-Echo": "1"})


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _post(conn: http.client.HTTPConnection, path: str, raw: bytes) -> tuple[int, dict, http.client.HTTPResponse]:
    conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
    res = conn.getresponse()
    return res.status, json.loads(res.read()), res


def test_json_round_trip_errors_and_keep_alive(server: Server) -> None:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    status, body, res = _post(conn, "/echo", b'{"text": "hi"}')
    assert status == 200 and body == {"echo": {"text": "hi"}} and res.getheader("X-Echo") == "1"
    assert res.getheader("Content-Type") == "application/json"
    sock = conn.sock
    status, body, _ = _post(conn, "/echo", b"{not json")
    assert status == 400 and body["error"]["type"] == "BadRequestError" and "not JSON" in body["error"]["message"]
    status, body, _ = _post(conn, "/nowhere", b"{}")
    assert status == 404 and body["error"] == {"message": "no route /nowhere", "type": "NotFoundError", "code": 404}
    status, body, res = _post(conn, "/echo", b'{"status": 500}')
    assert status == 500 and body["error"]["type"] == "InternalServerError" and res.getheader("X-Asked") == "500"
    assert conn.sock is sock  # HTTP/1.1 keep-alive: four requests, one connection
    conn.close()


@pytest.mark.parametrize(
    "status,kind",
    [
        (400, "BadRequestError"),
        (401, "AuthenticationError"),
        (404, "NotFoundError"),
        (413, "RequestTooLargeError"),
        (422, "BadRequestError"),
        (500, "InternalServerError"),
        (503, "InternalServerError"),
    ],
)
def test_error_types_are_openai_names(status: int, kind: str) -> None:
    assert error_type(status) == kind
