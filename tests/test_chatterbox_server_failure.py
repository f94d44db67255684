"""serve-chatterbox after a CUDA error that leaves the GPU context unusable: /health fails at once (a client
fails over), later requests get 503, and the process exits 70 for its supervisor to restart it. An ordinary
synthesis error is answered 500 and changes nothing. The engine's model load and synthesis are replaced (no
model, controller venv); the HTTP server, its handler and ``serve`` are the real ones."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ttsbench.chatterbox import server as srv
from ttsbench.httpserve import free_port

STICKY = "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously reported"


def _call(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if r.headers.get("Content-Type", "").startswith("application/json") else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_sticky_cuda_error_fails_health_then_exits_70(monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    def load(self: srv.Engine) -> None:
        self.model, self.device = object(), "cuda"

    def stream(self: srv.Engine, text: str, seed: int | None = None) -> Iterator[bytes]:
        if text.startswith("Sticky"):  # as the vocoder thread re-raises it: the CUDA error is the cause
            raise RuntimeError("vocoding failed: see the cause") from RuntimeError(STICKY)
        if text.startswith("Plain"):
            raise ValueError("not a GPU problem")
        yield b"\x00\x00" * 240

    monkeypatch.setattr(srv.Engine, "load", load)
    monkeypatch.setattr(srv.Engine, "stream", stream)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = srv.ServerConfig(reference="voice.wav", host="127.0.0.1", port=port, failed_exit_delay_s=1.5)
    seen: dict[str, Any] = {}

    def client() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20:
            try:
                if _call(base + "/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        speak = base + "/v1/audio/speech"
        seen["ok"] = _call(speak, {"input": "Fine."})[0]
        seen["plain"] = _call(speak, {"input": "Plain failure."})
        seen["health_after_plain"] = _call(base + "/health")
        seen["sticky"] = _call(speak, {"input": "Sticky failure."})
        seen["health"] = _call(base + "/health")
        seen["after"] = _call(speak, {"input": "Fine."})
        seen["at"] = time.monotonic()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    rc = srv.serve(cfg)  # returns once the server shut itself down
    t.join(10)
    err = capfd.readouterr().err
    assert seen["ok"] == 200
    assert seen["plain"][0] == 500 and seen["health_after_plain"][0] == 200  # an ordinary error changes nothing
    assert seen["sticky"][0] == 503 and "restarting" in seen["sticky"][1]["error"]["message"]
    status, health = seen["health"]
    assert status == 503 and health["status"] == "failed" and "illegal memory access" in health["error"]
    assert seen["after"][0] == 503
    assert rc == srv.EXIT_GPU_FAILED == 70
    assert "Traceback" in err and "ValueError: not a GPU problem" in err  # failures are logged with tracebacks
    assert '"event": "gpu_failed"' in err


def test_fatal_gpu_error_reads_the_whole_chain() -> None:
    try:
        try:
            raise RuntimeError("CUDA error: device-side assert triggered")
        except RuntimeError:
            raise KeyError("wrapped") from None  # __cause__ None, __suppress_context__: still in __context__
    except KeyError as exc:
        assert srv.fatal_gpu_error(exc) == "RuntimeError: CUDA error: device-side assert triggered"
    assert srv.fatal_gpu_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")) is None
    assert srv.fatal_gpu_error(ValueError("bad input")) is None


def test_the_command_exits_70_without_teardown(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ttsbench serve-chatterbox`` leaves with os._exit(70) after a GPU failure (no interpreter teardown on a
    broken CUDA context), and returns other statuses normally."""
    import argparse

    from ttsbench.commands import serve_chatterbox

    exits: list[int] = []

    class Exited(Exception):
        pass

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise Exited

    ap = argparse.ArgumentParser()
    serve_chatterbox.register(ap.add_subparsers())
    args = ap.parse_args(["serve-chatterbox", "--reference", "r.wav"])
    monkeypatch.setattr(serve_chatterbox.os, "_exit", fake_exit)
    monkeypatch.setattr(srv, "serve", lambda cfg: 0)
    assert args.func(args) == 0 and exits == []
    monkeypatch.setattr(srv, "serve", lambda cfg: srv.EXIT_GPU_FAILED)
    with pytest.raises(Exited):
        args.func(args)
    assert exits == [70]
