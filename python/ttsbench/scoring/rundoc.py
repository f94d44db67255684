"""Adapter between scoring and the run folder (docs/run-folder.md).

Reads ``results.json`` as plain JSON and writes JSON atomically. When ``ttsbench.results`` (the one JSON
writer of the project) is importable it is used instead, so this module is the single place to swap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsbench.atomic import write_json_atomic, write_text_atomic  # noqa: F401  (re-exported)
from ttsbench.errors import UserError

RESULTS_NAME = "results.json"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc


@dataclass(frozen=True)
class Clip:
    """One synthesized utterance of one system, as scoring sees it."""

    system_id: str
    utt_id: str
    text: str
    path: Path | None  # absolute path of the WAV, None when the utterance failed
    ok: bool


@dataclass
class RunDir:
    """A run folder and its results document."""

    root: Path
    doc: dict[str, Any]

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> RunDir:
        root = Path(run_dir)
        p = root / RESULTS_NAME
        if not root.is_dir() or not p.is_file():
            raise UserError(f"{root}: no {RESULTS_NAME} here (is this a run folder?)")
        doc = read_json(p)
        if not isinstance(doc, dict) or not isinstance(doc.get("systems"), list):
            raise UserError(f"{p}: not a results document (no 'systems' list); see docs/run-folder.md")
        return cls(root=root, doc=doc)

    @property
    def run_id(self) -> str:
        return str(self.doc.get("run_id") or self.root.name)

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    @property
    def reference(self) -> Path | None:
        p = self.root / "reference" / "voice.wav"
        return p if p.is_file() else None

    def system_ids(self) -> list[str]:
        return [str(s["system_id"]) for s in self.doc["systems"]]

    def system(self, system_id: str) -> dict[str, Any]:
        for s in self.doc["systems"]:
            if s.get("system_id") == system_id:
                return s
        raise UserError(f"{self.root}: no system {system_id!r} in results.json (have: {', '.join(self.system_ids())})")

    def clips(self, system_id: str, check_files: bool = True) -> list[Clip]:
        """The system's utterances; an ok utterance whose WAV is missing is a user-visible error."""
        out: list[Clip] = []
        missing: list[str] = []
        for u in self.system(system_id).get("utterances", []):
            ok = bool(u.get("ok")) and bool(u.get("wav"))
            path = (self.root / u["wav"]) if ok else None
            if ok and check_files and not path.is_file():
                missing.append(str(u["wav"]))
            out.append(Clip(system_id, str(u["utt_id"]), str(u.get("text", "")), path, ok))
        if missing:
            raise UserError(
                f"{self.root}: {len(missing)} WAV(s) of {system_id} named in results.json are missing, "
                f"first: {missing[0]} — re-collect the run folder"
            )
        return out

    def texts(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in self.doc["systems"]:
            for u in s.get("utterances", []):
                out.setdefault(str(u["utt_id"]), str(u.get("text", "")))
        return out

    def save(self) -> Path:
        return write_json_atomic(self.root / RESULTS_NAME, self.doc)

    def update_slot(self, key: str, value: Any) -> Path:
        """Re-read results.json, set one top-level slot, write it back atomically."""
        fresh = read_json(self.root / RESULTS_NAME)
        fresh[key] = value
        self.doc = fresh
        return self.save()
