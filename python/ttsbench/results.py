"""The run document (results.json): build, validate against the versioned schema, load, write atomically.

Schema, validation and the validating writer; the bytes go through ``ttsbench.atomic``. See docs/run-folder.md.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ttsbench.atomic import write_json_atomic
from ttsbench.errors import UserError

SCHEMA_VERSION = 1
RESULTS_NAME = "results.json"


def utc_now() -> str:
    """Now as the run documents write times: ``2026-11-24T10:15:00Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp(now: datetime | None = None) -> str:
    """A compact UTC stamp for folder and id names: ``20261124T101500Z``."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def new_run_id(prefix: str) -> str:
    return f"{prefix}-{utc_stamp()}"


@cache
def schema() -> dict[str, Any]:
    text = resources.files("ttsbench").joinpath("schema/results.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validation_errors(doc: Any) -> list[str]:
    """All schema violations as 'path: message' lines (empty list = valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errs = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    out = []
    for e in errs:
        path = "/".join(str(x) for x in e.absolute_path) or "(top)"
        out.append(f"{path}: {e.message}")
    from ttsbench.runcheck import first_non_finite

    hit = first_non_finite(doc)
    if hit:
        out.append(f"{hit}: not a finite number (NaN/Infinity cannot be written as JSON)")
    if isinstance(doc, dict) and isinstance(doc.get("systems"), list):
        ids = [s.get("system_id") for s in doc["systems"] if isinstance(s, dict)]
        out += [f"systems: duplicate system_id {i!r}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    return out


def validate(doc: Any, where: str = "results.json") -> None:
    errs = validation_errors(doc)
    if errs:
        more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
        raise UserError(f"{where}: does not match the results schema: {errs[0]}{more}")


def new_document(run_id: str, kind: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "kind": kind,
        "started_at": utc_now(),
        "finished_at": None,
        "complete": False,
        "systems": [],
        "gemma": None,
        "scores": None,
        "verdict": None,
    }


def remote_host(name: str | None) -> dict[str, Any]:
    """Host block for a system measured over HTTP: GPU facts are unknown from here, so null."""
    return {
        "name": name or platform.node(),
        "arch": None,
        "gpu_name": None,
        "compute_capability": None,
        "driver": None,
        "cuda": None,
        "torch": None,
        "python": None,
    }


def put_system(doc: dict[str, Any], system: dict[str, Any]) -> None:
    """Add a system, replacing one with the same system_id."""
    doc["systems"] = [s for s in doc["systems"] if s.get("system_id") != system["system_id"]] + [system]


def write_results(run_dir: str | os.PathLike, doc: dict[str, Any]) -> Path:
    """Validate, then write ``run_dir/results.json`` atomically."""
    validate(doc, str(Path(run_dir) / RESULTS_NAME))
    return write_json_atomic(Path(run_dir) / RESULTS_NAME, doc)


def load_results(run_dir: str | os.PathLike, check: bool = True) -> dict[str, Any]:
    """Read ``run_dir/results.json`` (or a path to the file itself); with ``check`` fully validated
    (schema + semantics, :func:`ttsbench.runcheck.load_valid_run`), else only parsed as strict JSON."""
    from ttsbench import runcheck

    if check:
        return runcheck.load_valid_run(run_dir, scores=False)[1]
    _root, p = runcheck.results_path(run_dir)
    if not p.is_file():
        raise UserError(f"{p}: no results.json here (is this a run folder?)")
    return runcheck.read_json_strict(p)
