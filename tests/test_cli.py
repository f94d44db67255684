"""The ``ttsbench`` front end: --version and doctor, run as real processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from _pathdir import path_without

ROOT = Path(__file__).resolve().parent.parent
BINDIR = str(Path(sys.executable).parent)


def _ttsbench_argv() -> list[str]:
    script = Path(BINDIR) / "ttsbench"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ttsbench"]


def _run(args: list[str], path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    # like ttsbench.runner: the venv's bin (ansible-playbook) is on PATH even when not activated
    env["PATH"] = path if path is not None else BINDIR + os.pathsep + os.environ.get("PATH", "")
    return subprocess.run([*_ttsbench_argv(), *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def test_version_prints_the_installed_version():
    res = _run(["--version"])
    assert res.returncode == 0, res.stderr
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("ttsbench") == declared
    assert res.stdout.strip() == f"ttsbench {declared}"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed here")
def test_doctor_passes_when_everything_required_is_there():
    res = _run(["doctor"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "espeak-ng" in res.stdout
    assert "MISSING" not in res.stdout


def test_doctor_fails_naming_the_package_of_a_missing_tool(tmp_path):
    path = path_without(tmp_path / "bin", ["espeak-ng"], extra_dirs=[BINDIR])
    res = _run(["doctor"], path=path)
    assert res.returncode != 0
    assert "espeak-ng is missing" in res.stdout
    assert "apt-get install espeak-ng" in res.stdout
    assert "1 required component(s) missing: espeak-ng" in res.stdout
