#!/usr/bin/env python3
"""Wait until the Chatterbox server's /health says the model is loaded, while the server process lives.

Usage: wait_health.py URL TIMEOUT_S PIDFILE|unit:NAME TOKEN_FILE|-
The bearer token is read from a file (never on the command line). Exit 0 healthy, 2 the server exited,
3 timed out. Prints one JSON line (the /health document when healthy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def main(url: str, timeout_s: float, target: str, token_file: str) -> int:
    headers = {}
    if token_file != "-":
        with open(token_file) as fh:
            headers["Authorization"] = "Bearer " + fh.read().strip()
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout_s:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
                doc = json.loads(resp.read() or b"{}")
                if resp.status == 200 and doc.get("model_loaded"):
                    doc["waited_s"] = round(time.monotonic() - start, 2)
                    print(json.dumps(doc))
                    return 0
                last = f"HTTP {resp.status}: {doc}"
        except Exception as exc:  # any failure means "not yet"
            last = str(exc)
        if not alive(target):
            print(json.dumps({"healthy": False, "reason": "server exited", "last": last}))
            return 2
        time.sleep(1.0)
    print(json.dumps({"healthy": False, "reason": f"no healthy answer within {timeout_s:g} s", "last": last}))
    return 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]))
