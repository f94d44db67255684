"""What the controller has, what is missing, and how to install it."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    required: bool
    ok: bool
    detail: str
    fix: str


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


def _binary(name: str, candidates: list[str], version_argv: list[str], required: bool, fix: str) -> Check:
    for candidate in candidates:
        # Tools installed in the same venv as ttsbench count even when the venv is not activated.
        local = Path(sys.executable).parent / candidate
        path = str(local) if local.is_file() else shutil.which(candidate)
        if path:
            version = _first_line([path, *version_argv]) or "(version unknown)"
            return Check(name, required, True, f"{path}: {version}", fix)
    return Check(name, required, False, "not found", fix)


def _module(name: str, module: str, required: bool, fix: str) -> Check:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return Check(name, required, False, "not importable", fix)
    try:
        from importlib.metadata import version

        detail = version(name)
    except Exception:  # pragma: no cover - metadata missing for vendored modules
        detail = "importable"
    return Check(name, required, True, detail, fix)


def run_checks() -> list[Check]:
    checks = [
        Check("python", True, True, f"{platform.python_implementation()} {platform.python_version()}", ""),
        _module("ansible-core", "ansible", True, "pip install -e . (ansible-core is a core dependency)"),
        _module("ansible-runner", "ansible_runner", True, "pip install -e ."),
        _binary(
            "ansible-playbook",
            ["ansible-playbook"],
            ["--version"],
            True,
            "pip install -e . inside the project venv, then activate it (make venv)",
        ),
        _binary("ssh", ["ssh"], ["-V"], True, "apt-get install openssh-client"),
        _binary("espeak-ng", ["espeak-ng"], ["--version"], True, "apt-get install espeak-ng"),
        _binary(
            "chromium",
            ["chromium", "chromium-browser", "google-chrome"],
            ["--version"],
            False,
            "apt-get install chromium chromium-driver (only for the listening page tests and report screenshots)",
        ),
        _binary("sox", ["sox"], ["--version"], False, "apt-get install sox (terminal playback, optional)"),
        _module(
            "resemblyzer",
            "resemblyzer",
            False,
            "pip install -e '.[metrics]' (speaker similarity; pulls a CPU torch into the controller venv)",
        ),
        _module("speechmos", "speechmos", False, "pip install -e '.[metrics]' (DNSMOS estimate)"),
    ]
    return checks
