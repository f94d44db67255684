"""Shared bits of the role tests: a cached ttsbench agent venv, HTTP health polling."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def agent_venv() -> Path:
    """Where the role tests install ttsbench for the 'host' (shared between runs; stamped, so cheap).

    One per pytest-xdist worker: two workers installing into one venv at the same time would corrupt it."""
    env = os.environ.get("TTSBENCH_TEST_AGENT_VENV")
    if env:
        return Path(env)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return Path.home() / ".cache/ttsbench/test-agent" / worker / "venv"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_until(pred, timeout_s: float, step: float = 0.2) -> float | None:
    """Seconds until ``pred()`` was true, or None on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    return None
