"""Build a PATH directory that lacks some commands, to test what happens when a tool is missing."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def path_without(directory: Path, missing: Iterable[str], extra_dirs: Iterable[str] = ()) -> str:
    """Fill DIRECTORY with symlinks to every executable on PATH (plus EXTRA_DIRS) except MISSING.

    Returns the new PATH value (just DIRECTORY).
    """
    skip = set(missing)
    directory.mkdir(parents=True, exist_ok=True)
    dirs = [*extra_dirs, *os.environ.get("PATH", "").split(os.pathsep)]
    for d in dirs:
        if not d or not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            name = entry.name
            if name in skip or (directory / name).exists() or (directory / name).is_symlink():
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                (directory / name).symlink_to(entry.path)
    return str(directory)
