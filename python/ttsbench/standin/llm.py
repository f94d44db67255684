"""STAND-IN for the production Gemma: OpenAI-style ``/v1/models`` + ``/v1/chat/completions``.

Every response waits ``latency_ms`` first. Tests simulate drift by changing it at runtime:
``POST /standin/latency {"latency_ms": 250}`` (``GET /standin/latency`` reads it back).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from ttsbench.httpserve import JsonHandler, Server


@dataclass
class LlmConfig:
    host: str = "127.0.0.1"
    port: int = 8003
    latency_ms: float = 0.0
    model: str = "standin-gemma"
    verbose: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get_latency(self) -> float:
        with self._lock:
            return self.latency_ms

    def set_latency(self, ms: float) -> None:
        with self._lock:
            self.latency_ms = ms


class LlmHandler(JsonHandler):
    cfg: LlmConfig
    server_version = "ttsbench-standin/1"

    def verbose(self) -> bool:
        return self.cfg.verbose

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_json(200, {"status": "ok", "standin": True})
        elif self.path == "/v1/models":
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self.cfg.model,
                            "object": "model",
                            "owned_by": "ttsbench-standin",
                            "standin": True,
                        }
                    ],
                },
            )
        elif self.path == "/standin/latency":
            self.send_json(200, {"latency_ms": self.cfg.get_latency()})
        else:
            self.send_error_json(404, f"no route {self.path}", "NotFoundError")

    def do_POST(self) -> None:
        t0 = time.perf_counter()
        try:
            req = self.read_json()
        except ValueError as exc:
            self.send_error_json(400, str(exc))
            return
        if self.path == "/standin/latency":
            ms = req.get("latency_ms") if isinstance(req, dict) else None
            if not isinstance(ms, int | float) or isinstance(ms, bool) or ms < 0:
                self.send_error_json(400, 'body must be {"latency_ms": <number >= 0>}')
                return
            self.cfg.set_latency(float(ms))
            self.send_json(200, {"latency_ms": float(ms)})
            return
        if self.path != "/v1/chat/completions":
            self.send_error_json(404, f"no route {self.path}", "NotFoundError")
            return
        if not isinstance(req, dict) or not isinstance(req.get("messages"), list) or not req["messages"]:
            self.send_error_json(400, "'messages' must be a non-empty list")
            return
        delay = self.cfg.get_latency() / 1000.0 - (time.perf_counter() - t0)
        if delay > 0:
            time.sleep(delay)
        self.send_json(
            200,
            {
                "id": f"chatcmpl-standin-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.get("model") or self.cfg.model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "OK (stand-in reply)"},
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
            },
        )


def make_server(cfg: LlmConfig) -> Server:
    handler = type("BoundLlmHandler", (LlmHandler,), {"cfg": cfg})
    return Server((cfg.host, cfg.port), handler)
