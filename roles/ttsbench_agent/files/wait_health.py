#!/usr/bin/env python3
"""Wait for a server's health endpoint while its process lives (shared by roles/vllm_omni and roles/chatterbox).

Usage: wait_health.py URL TIMEOUT_S PIDFILE|unit:NAME [TOKEN_FILE|-] [REQUIRED_KEY|-]
Healthy = HTTP 200 and, when REQUIRED_KEY is given, that key of the JSON body is true (e.g. model_loaded).
The bearer token is read from a file (never on the command line). Exit 0 healthy, 2 the server exited,
3 timed out. Prints one JSON line: the health document (when it is JSON) plus healthy and waited_s; when
unhealthy, the reason and the last answer (an error status with its body, e.g. serve-chatterbox's 503
``{"status": "failed", "error": ...}`` after a CUDA error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request


def alive(target: str) -> bool:
    if target.startswith("unit:"):
        return subprocess.run(["systemctl", "is-active", "--quiet", target[5:]], check=False).returncode == 0
    try:
        with open(target) as fh:
            os.kill(int(fh.read().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def main(url: str, timeout_s: float, target: str, token_file: str = "-", required_key: str = "-") -> int:
    headers = {}
    if token_file != "-":
        with open(token_file) as fh:
            headers["Authorization"] = "Bearer " + fh.read().strip()
    start = time.monotonic()
    last = "no answer yet"
    while time.monotonic() - start < timeout_s:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
                body = resp.read()
                try:
                    doc = json.loads(body or b"{}")
                except json.JSONDecodeError:
                    doc = {}
                doc = doc if isinstance(doc, dict) else {"body": doc}
                if resp.status == 200 and (required_key == "-" or doc.get(required_key)):
                    doc.update(healthy=True, waited_s=round(time.monotonic() - start, 2))
                    print(json.dumps(doc))
                    return 0
                last = f"HTTP {resp.status}: {doc}"
        except urllib.error.HTTPError as exc:  # e.g. 503 {"status": "failed", "error": ...}: keep the server's why
            body = exc.read(2000).decode("utf-8", "replace").strip()
            last = f"HTTP {exc.code}: {body or exc.reason}"
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        if not alive(target):
            print(json.dumps({"healthy": False, "reason": "the server process exited", "last": last}))
            return 2
        time.sleep(0.5)
    print(json.dumps({"healthy": False, "reason": f"no healthy answer within {timeout_s:g} s", "last": last}))
    return 3


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5, 6):
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1], float(sys.argv[2]), *sys.argv[3:]))
