"""Each role's molecule scenario (delegated driver, localhost): converge, idempotence, verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from roles_helpers import ROOT, agent_venv
from ttsbench.httpserve import free_port

MOLECULE = Path(sys.executable).with_name("molecule")


@pytest.mark.slow
@pytest.mark.parametrize("role", ["gemma_guard", "vllm_omni"])
def test_molecule_scenario(role: str, tmp_path: Path) -> None:
    if not MOLECULE.exists() and not shutil.which("molecule"):
        pytest.skip("molecule not installed (pip install -e '.[test]')")
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        TTSBENCH_MOLECULE_ROOT=str(tmp_path),
        TTSBENCH_TEST_AGENT_VENV=str(agent_venv()),
        TTSBENCH_MOLECULE_LLM_PORT=str(free_port()),
        TTSBENCH_MOLECULE_TTS_PORT=str(free_port()),
        MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule-ephemeral"),
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
    )
    proc = subprocess.run(
        [str(MOLECULE) if MOLECULE.exists() else "molecule", "test"],
        cwd=ROOT / "roles" / role,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    for step in ("converge", "idempotence", "verify"):
        assert f"{step}: Executed: Successful" in proc.stdout + proc.stderr, tail
