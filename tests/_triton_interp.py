"""Triton kernels in Triton's CPU interpreter, for the tests of the fast path's kernels (no GPU needed).

The interpreter is chosen when triton is imported, so the kernel code runs in a child process started with
TRITON_INTERPRET=1; it prints one JSON line last, which :func:`run_interpreted` returns.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import pytest


def require_triton() -> None:
    """Skip the calling test module where torch or triton is not installed (CPU-only wheels)."""
    pytest.importorskip("torch")
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed", allow_module_level=True)


def run_interpreted(code: str, *args: str, timeout: float = 600) -> Any:
    """Run ``code`` (with ``args``) under TRITON_INTERPRET=1 and return its last output line, parsed as JSON."""
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
