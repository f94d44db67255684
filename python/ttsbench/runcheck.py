"""The one validation of a run folder, run first by every command that reads one.

``run-folder merge|gemma|finish|check``, ``score``, ``verdict``, ``report``, ``validate`` and ``bench-http
--run-dir`` call :func:`load_valid_run` before they do anything else, so an invalid folder ends in one clear
line (exit code 2) and nothing is written. Checked:

- ``results.json`` is UTF-8 JSON without NaN/Infinity, and matches the versioned schema
  (python/ttsbench/schema/results.schema.json);
- semantics the schema cannot say: system ids unique, a row's (utterance, concurrency, request index) unique
  within its system, every number finite, times and durations not negative, sample rates positive;
- every path the document names (a row's ``wav``, ``scores.<name>.path``) is relative and stays inside the run
  folder, symbolic links included (``report`` embeds those files; ``score`` reads them);
- score files already in ``scores/`` are JSON objects with finite numbers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError

RESULTS_NAME = "results.json"
_NON_NEGATIVE = ("ttfa_ms", "t_first_nonsilent_ms", "stall_ms", "total_ms", "audio_s", "rtf")


class InvalidRun(UserError):
    """The run folder's documents are invalid (exit code 2, one line)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (write null, or a finite number)")


def read_json_strict(path: Path) -> Any:
    """Parse a JSON file; NaN/Infinity, bad UTF-8 and syntax errors are one-line :class:`InvalidRun` errors."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidRun(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRun(f"{path}: not UTF-8 (byte {exc.start}); not a ttsbench document") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRun(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # from _reject_constant
        raise InvalidRun(f"{path}: {exc}") from None
    except RecursionError:
        raise InvalidRun(f"{path}: JSON nested too deeply") from None


def first_non_finite(value: Any, path: str = "") -> str | None:
    """JSON path of the first non-finite float (or None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top)"
    if isinstance(value, dict):
        for k, v in value.items():
            hit = first_non_finite(v, f"{path}/{k}" if path else str(k))
            if hit:
                return hit
    elif isinstance(value, list):
        for i, v in enumerate(value):
            hit = first_non_finite(v, f"{path}/{i}" if path else str(i))
            if hit:
                return hit
    return None


def _is_datetime(text: str) -> bool:
    from datetime import datetime

    if "T" not in text.upper():
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def inside(root: Path, rel: Any) -> str | None:
    """Why ``rel`` is not a path inside ``root`` (None when it is)."""
    if not isinstance(rel, str) or not rel:
        return "is not a non-empty path string"
    if "\x00" in rel or "\\" in rel:
        return "holds a NUL or backslash"
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        return "must be a relative path inside the run folder"
    try:
        real_root = root.resolve()
        real = (root / p).resolve()
    except (OSError, RuntimeError):
        return "cannot be resolved (symbolic link loop?)"
    if real != real_root and real_root not in real.parents:
        return "leads outside the run folder (symbolic link)"
    return None


def semantic_problems(doc: Any, root: Path) -> list[str]:
    """Problems the schema cannot express (for a document that already matches the schema)."""
    out: list[str] = []
    if not isinstance(doc, dict):
        return out
    for key in ("started_at", "finished_at"):  # the schema's "format": "date-time" needs an optional package
        v = doc.get(key)
        if isinstance(v, str) and not _is_datetime(v):
            out.append(f"{key}: {v!r} is not an ISO-8601 date-time (e.g. 2026-11-24T10:15:00Z)")
    systems = doc.get("systems") if isinstance(doc.get("systems"), list) else []
    seen_sys: set[Any] = set()
    for si, s in enumerate(systems):
        if not isinstance(s, dict):
            continue
        sid = s.get("system_id")
        if sid in seen_sys:
            out.append(f"systems/{si}/system_id: duplicate system_id {sid!r}")
        seen_sys.add(sid)
        rows = s.get("utterances") if isinstance(s.get("utterances"), list) else []
        seen_rows: set[tuple[Any, ...]] = set()
        for ri, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            where = f"systems/{si}/utterances/{ri}"
            key = (row.get("utt_id"), row.get("concurrency"), row.get("request_index"))
            if key in seen_rows:
                out.append(
                    f"{where}: duplicate row (utt_id {key[0]!r}, concurrency {key[1]}, request_index {key[2]}); "
                    "rows of one system are unique by these three"
                )
            seen_rows.add(key)
            for k in _NON_NEGATIVE:
                v = row.get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                    out.append(f"{where}/{k}: negative ({v})")
            sr = row.get("sample_rate")
            if isinstance(sr, int) and not isinstance(sr, bool) and sr <= 0:
                out.append(f"{where}/sample_rate: must be positive ({sr})")
            if row.get("wav") is not None:
                why = inside(root, row["wav"])
                if why:
                    out.append(f"{where}/wav: {row['wav']!r} {why}")
    scores = doc.get("scores")
    if isinstance(scores, dict):
        for name, slot in scores.items():
            if isinstance(slot, dict) and "path" in slot and slot["path"] is not None:
                why = inside(root, slot["path"])
                if why:
                    out.append(f"scores/{name}/path: {slot['path']!r} {why}")
    return out


def document_problems(doc: Any, root: Path) -> list[str]:
    """Schema violations first, then semantic problems; empty list = valid."""
    from ttsbench.results import validation_errors

    try:
        errs = validation_errors(doc)
    except RecursionError:
        return ["(top): nested too deeply"]
    return errs + [p for p in semantic_problems(doc, root) if p not in errs]


def results_path(run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(run folder, its results.json) for a run folder or a path to its results.json."""
    p = Path(run_dir)
    if p.is_dir():
        return p, p / RESULTS_NAME
    if p.is_file() or p.name == RESULTS_NAME:
        return p.parent, p
    return p, p / RESULTS_NAME


def load_valid_run(run_dir: str | os.PathLike, *, scores: bool = True) -> tuple[Path, dict[str, Any]]:
    """Read and fully check a run folder; returns (run folder, results document) or raises :class:`InvalidRun`.

    The message is one line: the file, the first problem and how many more there are."""
    root, f = results_path(run_dir)
    if not f.is_file():
        raise InvalidRun(f"{f}: no results.json here (is this a run folder?)")
    doc = read_json_strict(f)
    problems = document_problems(doc, root)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InvalidRun(f"{f}: invalid run document: {problems[0]}{more}; `ttsbench validate` lists them")
    if scores:
        sdir = root / "scores"
        for sf in sorted(sdir.glob("*.json")) if sdir.is_dir() else []:
            sdoc = read_json_strict(sf)
            if not isinstance(sdoc, dict):
                raise InvalidRun(f"{sf}: not a JSON object; re-create it (ttsbench score / listen)")
            hit = first_non_finite(sdoc)
            if hit:
                raise InvalidRun(f"{sf}: {hit}: not a finite number")
    return root, doc


def all_problems(run_dir: str | os.PathLike) -> tuple[Path, list[str]]:
    """Every problem of the results document (for ``ttsbench validate``); JSON errors still raise."""
    root, f = results_path(run_dir)
    if not f.is_file():
        raise InvalidRun(f"{f}: no results.json here (is this a run folder?)")
    return f, document_problems(read_json_strict(f), root)
