"""Linters run as tests: ruff, yamllint, ansible-lint (production profile)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)


def test_ruff() -> None:
    """Every Python file in the tree (role scripts and molecule helpers too): lint clean and `ruff format`ted."""
    tracked = _run(["git", "ls-files", "*.py"]).stdout.split()
    checked = _run([_tool("ruff"), "check", "--show-files", "."]).stdout
    missed = [p for p in tracked if str(ROOT / p) not in checked]
    assert not missed, f"ruff does not see {missed} (excluded?)"
    res = _run([_tool("ruff"), "check", "."])
    assert res.returncode == 0, res.stdout + res.stderr
    fmt = _run([_tool("ruff"), "format", "--check", "."])
    assert fmt.returncode == 0, "run `ruff format .`:\n" + fmt.stdout + fmt.stderr


def test_yamllint() -> None:
    res = _run([_tool("yamllint"), "-s", "."])
    assert res.returncode == 0, res.stdout + res.stderr


def test_ansible_lint_production_profile() -> None:
    env_bin = str(BIN)
    res = subprocess.run(
        [_tool("ansible-lint"), "--profile", "production", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
        env={**__import__("os").environ, "PATH": env_bin + ":" + __import__("os").environ.get("PATH", "")},
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-6000:]
