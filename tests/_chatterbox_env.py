"""Where the chatterbox venv and the random-init test checkpoint are, for tests marked ``chatterbox``.

TTSBENCH_CHATTERBOX_PYTHON: an interpreter that imports chatterbox (default: the dev venv
~/.cache/ttsbench/chatterbox-dev). TTSBENCH_CHATTERBOX_CHECKPOINT: a random-init checkpoint (default
~/.cache/ttsbench/test-checkpoint). Missing → skip, or fail in CI / with TTSBENCH_REQUIRE_CHATTERBOX=1.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from standin_helpers import stop_process

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
        res = subprocess.run(
            [cand, "-c", "import chatterbox.tts, soundfile"], capture_output=True, timeout=300, check=False
        )
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


def reference_wav(path: Path, seconds: float) -> Path:
    """A voiced-sounding 150 Hz reference WAV (24 kHz, PCM16) of ``seconds``."""
    import numpy as np
    import soundfile as sf

    sr = 24000
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 150 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")
    return path


def serve_argv(ckpt: Path, ref: Path, port: int, *extra: str) -> list[str]:
    """``serve-chatterbox`` on CPU with the random-init checkpoint (seed 0) in the chatterbox venv."""
    return [
        chatterbox_python(),
        "-m",
        "ttsbench",
        "serve-chatterbox",
        "--weights",
        str(ckpt),
        "--reference",
        str(ref),
        "--device",
        "cpu",
        "--port",
        str(port),
        "--seed",
        "0",
        *extra,
    ]


@contextlib.contextmanager
def serve_chatterbox(
    argv: list[str], port: int, log_path: Path, headers: dict[str, str] | None = None, timeout_s: float = 600
) -> Iterator[str]:
    """Start ``argv`` (a serve-chatterbox command), wait until /health answers 200, yield its URL, stop it."""
    import httpx

    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env_for_checkout())
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"server exited {proc.returncode}: {log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(url + "/health", headers=headers, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"server did not become healthy in {timeout_s:g} s")
                time.sleep(1)
            yield url
        finally:
            stop_process(proc, 30)
