"""What a measuring command will write into a run folder, checked *before* it measures anything.

A benchmark that finds out only at the end that ``--run-dir`` holds a broken ``results.json`` (or a file
where a folder must go, or a different reference voice) would have to throw its measurements away; so
:func:`check_outputs` runs before the first request and :func:`copy_reference` after the last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError

REFERENCE_REL = Path("reference") / "voice.wav"  # docs/run-folder.md


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir(p: Path, what: str) -> None:
    base = _nearest_existing(p)
    if not base.is_dir():
        raise UserError(f"{p}: cannot create the {what}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{p}: cannot create the {what}: {base} is not writable")


def check_outputs(run_dir: Path, files: list[Path], reference: Any = None) -> dict[str, Any] | None:
    """Check that every file (relative to ``run_dir``) can be written and an existing results.json is valid.

    Returns the existing results document (fully validated) or None for a new run folder. ``reference`` is a
    :class:`ttsbench.reference.Reference` whose file will be copied to ``reference/voice.wav``."""
    from ttsbench.runcheck import RESULTS_NAME, load_valid_run

    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: --run-dir exists and is not a folder")
    _writable_dir(run_dir, "run folder")
    doc: dict[str, Any] | None = None
    results = run_dir / RESULTS_NAME
    if results.exists() or results.is_symlink():
        if not results.is_file():
            raise UserError(f"{results}: exists but is not a file")
        _root, doc = load_valid_run(run_dir, scores=False)
        if not os.access(results, os.R_OK) or not os.access(run_dir, os.W_OK | os.X_OK):
            raise UserError(f"{results}: cannot be replaced (folder not writable)")
    targets = [*files, REFERENCE_REL] if reference is not None else list(files)
    for rel in targets:
        dest = run_dir / rel
        if dest.is_dir():
            raise UserError(f"{dest}: is a folder; a file must be written there")
        for rp in Path(rel).parents:
            parent = run_dir / rp
            if parent.exists() and not parent.is_dir():
                raise UserError(f"{dest}: cannot be written: {parent} is a file, not a folder")
        _writable_dir(dest.parent, "folder")
    if reference is not None:
        have = run_dir / REFERENCE_REL
        if have.is_file() and have.read_bytes() != Path(reference.path).read_bytes():
            raise UserError(
                f"{have}: the run folder already holds a different reference voice; "
                "use the same --reference for every system of a run, or a new --run-dir"
            )
    return doc


def copy_reference(src: str | os.PathLike, run_dir: Path) -> Path:
    """Copy the reference clip, byte for byte, to ``run_dir/reference/voice.wav`` (atomic)."""
    from ttsbench.atomic import write_atomic

    data = Path(src).read_bytes()
    dest = run_dir / REFERENCE_REL
    if dest.is_file() and dest.read_bytes() == data:
        return dest
    return write_atomic(dest, lambda tmp: Path(tmp).write_bytes(data))
