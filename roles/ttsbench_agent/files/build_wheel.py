#!/usr/bin/env python3
"""Build a reproducible wheel of the ttsbench project tree on the controller.

Usage: build_wheel.py PROJECT_DIR DIST_DIR [pip wheel args...]
Copies pyproject.toml, README.md and python/ into a clean temporary tree (no stale build/ or
egg-info), builds with SOURCE_DATE_EPOCH fixed so equal sources give an equal wheel, and prints
one JSON line: {"wheel": path, "sha256": hex, "changed": bool}.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv: list[str]) -> int:
    project, dist = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    extra = argv[2:]
    if not (project / "pyproject.toml").is_file():
        print(json.dumps({"error": f"no pyproject.toml in {project} (set ttsbench_agent_project_dir)"}))
        return 2
    dist.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    with tempfile.TemporaryDirectory(prefix="ttsbench-wheel-") as tmp:
        src = Path(tmp) / "src"
        out = Path(tmp) / "out"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (project / name).is_file():
                shutil.copy2(project / name, src / name)
        shutil.copytree(project / "python", src / "python", ignore=ignore)
        env = dict(os.environ, SOURCE_DATE_EPOCH="315532800", PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *extra, str(src), "-w", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(json.dumps({"error": "pip wheel failed", "stderr": proc.stderr[-4000:]}))
            return 1
        built = sorted(out.glob("ttsbench-*.whl"))
        if len(built) != 1:
            print(json.dumps({"error": f"expected one ttsbench wheel, got {[p.name for p in built]}"}))
            return 1
        target = dist / built[0].name
        new_sha = sha256(built[0])
        changed = not target.is_file() or sha256(target) != new_sha
        if changed:  # a unique temporary name: two plays (or test lanes) may build at the same time
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=dist)
            os.close(fd)
            shutil.copyfile(built[0], tmp_name)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
    print(json.dumps({"wheel": str(target), "sha256": new_sha, "changed": changed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
