"""The shared health waiter the vllm_omni and chatterbox roles run on their hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from standin_helpers import standin

SCRIPT = Path(__file__).resolve().parents[1] / "roles" / "ttsbench_agent" / "files" / "wait_health.py"


def _wait(url: str, timeout: str, target: str, *extra: str) -> tuple[int, dict]:
    res = subprocess.run(
        [sys.executable, str(SCRIPT), url, timeout, target, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return res.returncode, json.loads(res.stdout.strip().splitlines()[-1])


def test_healthy_required_key_and_dead_process(tmp_path: Path) -> None:
    live = tmp_path / "live.pid"
    live.write_text(str(os.getpid()))
    with standin("llm") as url:
        rc, doc = _wait(f"{url}/health", "10", str(live))
        assert rc == 0 and doc["healthy"] is True and doc["waited_s"] >= 0
        # a key the health document never sets true: bounded wait, exit 3, says why
        rc, doc = _wait(f"{url}/health", "1.5", str(live), "-", "model_loaded")
        assert rc == 3 and doc["healthy"] is False and "within 1.5 s" in doc["reason"]
    dead = tmp_path / "dead.pid"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead.write_text(str(proc.pid))
    rc, doc = _wait("http://127.0.0.1:9/health", "30", str(dead))
    assert rc == 2 and doc["reason"] == "the server process exited"


def test_an_unhealthy_answer_keeps_the_servers_reason(tmp_path: Path) -> None:
    """A 503 with a JSON body (serve-chatterbox after a CUDA error) is reported with that body, not only 'HTTP
    Error 503', so the play says why the server is not healthy."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Failed(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"status": "failed", "error": "AcceleratorError: CUDA error: illegal memory access"})
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *_a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Failed)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    live = tmp_path / "live.pid"
    live.write_text(str(os.getpid()))
    try:
        rc, doc = _wait(f"http://127.0.0.1:{srv.server_address[1]}/health", "1.2", str(live))
    finally:
        srv.shutdown()
    assert rc == 3 and doc["healthy"] is False
    assert doc["last"].startswith("HTTP 503: ") and "illegal memory access" in doc["last"]
