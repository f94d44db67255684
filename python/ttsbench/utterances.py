"""Load the utterance set (``files/utterances.yaml``): ids and texts, strictly checked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ttsbench.errors import UserError

_ID = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    text: str


def default_utterances_path() -> Path:
    from ttsbench.runner import project_root

    return project_root() / "files" / "utterances.yaml"


def load_utterances(path: str | Path | None = None) -> list[Utterance]:
    """Parse ``{"utterances": [{"id": .., "text": ..}, ...]}`` (a bare list is accepted too)."""
    import yaml

    p = Path(path) if path is not None else default_utterances_path()
    if not p.is_file():
        raise UserError(f"{p}: utterances file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    items = data.get("utterances") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UserError(f"{p}: expected a non-empty list under 'utterances:'")
    seen: set[str] = set()
    out: list[Utterance] = []
    for i, item in enumerate(items, start=1):
        where = f"{p}: utterance #{i}"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping with 'id' and 'text', got {type(item).__name__}")
        uid, text = item.get("id"), item.get("text")
        if not isinstance(uid, str) or not _ID.match(uid):
            raise UserError(f"{where}: 'id' must be a string of letters, digits, _ or - (got {uid!r})")
        if not isinstance(text, str):
            raise UserError(f"{where} ({uid}): 'text' must be a string (got {type(text).__name__})")
        if not text.strip():
            raise UserError(f"{where} ({uid}): 'text' is empty or whitespace")
        if uid in seen:
            raise UserError(f"{where}: duplicate id {uid!r}")
        seen.add(uid)
        out.append(Utterance(uid, " ".join(text.split())))
    return out
