"""roles/chatterbox end to end: `molecule test` of its default scenario on the namespace test host titan.

converge installs chatterbox-tts (host torch kept) from an offline wheelhouse, random-init weights on CPU, runs
the smoke synthesis and starts the server; idempotence must report 0 changed; verify hits /health, gets a
non-silent 24 kHz WAV (whole and streamed), checks bad requests and the token, and stops/starts the service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import _chatterbox_env

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "chatterbox"


@pytest.mark.chatterbox
@pytest.mark.testhosts
@pytest.mark.slow
def test_molecule_default_scenario(testhosts) -> None:
    host_torch = os.environ.get("TTSBENCH_HOST_TORCH_PYTHON") or str(
        _chatterbox_env.CACHE / "host-torch" / "bin" / "python"
    )
    if not Path(host_torch).exists():
        pytest.skip(f"no host-torch interpreter at {host_torch} (set TTSBENCH_HOST_TORCH_PYTHON)")
    _chatterbox_env.checkpoint()  # a ready random-init checkpoint to copy (skips when absent)
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "TTSBENCH_TESTHOSTS_STATE": str(testhosts.state_dir),
        "TTSBENCH_HOST_TORCH_PYTHON": host_torch,
        "TTSBENCH_CHATTERBOX_CHECKPOINT": str(_chatterbox_env.checkpoint()),
        "ANSIBLE_FORCE_COLOR": "0",
        "NO_COLOR": "1",
    }
    res = subprocess.run(
        [str(Path(bindir) / "molecule"), "test", "-s", "default"],
        cwd=ROLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    # idempotence really ran and found nothing to change; verify really ran its assertions
    assert "idempotence" in out.lower()
    assert "Check they are non-silent 24 kHz 16-bit WAVs" in out
