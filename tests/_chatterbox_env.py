"""Where the chatterbox venv and the random-init test checkpoint are, for tests marked ``chatterbox``.

TTSBENCH_CHATTERBOX_PYTHON: an interpreter that imports chatterbox (default: the dev venv
~/.cache/ttsbench/chatterbox-dev). TTSBENCH_CHATTERBOX_CHECKPOINT: a random-init checkpoint (default
~/.cache/ttsbench/test-checkpoint). Missing → skip, or fail in CI / with TTSBENCH_REQUIRE_CHATTERBOX=1.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "ttsbench"
WEIGHT_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") or os.environ.get("TTSBENCH_REQUIRE_CHATTERBOX") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def chatterbox_python() -> str:
    candidates = [os.environ.get("TTSBENCH_CHATTERBOX_PYTHON"), str(CACHE / "chatterbox-dev" / "bin" / "python")]
    for cand in candidates:
        if not cand or not Path(cand).exists():
            continue
        res = subprocess.run([cand, "-c", "import chatterbox.tts, soundfile"], capture_output=True, timeout=300,
                             check=False)
        if res.returncode == 0:
            return cand
    _unavailable("no python with chatterbox-tts (set TTSBENCH_CHATTERBOX_PYTHON)")
    raise AssertionError("unreachable")


def checkpoint() -> Path:
    ckpt = Path(os.environ.get("TTSBENCH_CHATTERBOX_CHECKPOINT") or CACHE / "test-checkpoint")
    if not all((ckpt / f).is_file() for f in WEIGHT_FILES):
        _unavailable(f"no random-init checkpoint at {ckpt} (set TTSBENCH_CHATTERBOX_CHECKPOINT)")
    return ckpt


def env_for_checkout() -> dict[str, str]:
    """Run ``python -m ttsbench`` from this checkout inside the chatterbox venv."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "python"), "PYTHONUNBUFFERED": "1"}
