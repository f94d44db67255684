"""Load the utterance set (``files/utterances.yaml``): ids and texts, strictly checked."""

from __future__ import annotations

import re
import unicodedata
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
    """Parse ``{"utterances": [{"id": .., "text": ..}, ...]}`` (a bare list is accepted too).

    Every error is one line naming the file (and, for YAML errors and bad entries, the line)."""
    from ttsbench.yamlload import load_yaml

    p = Path(path) if path is not None else default_utterances_path()
    data = load_yaml(p, "utterances file")
    items = data.get("utterances") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UserError(f"{p}: expected a non-empty list under 'utterances:'")
    seen: set[str] = set()
    out: list[Utterance] = []
    for i, item in enumerate(items, start=1):
        line = getattr(item, "line", None)  # mappings read by yamlload know their line
        where = f"{p}:{line}: utterance #{i}" if line else f"{p}: utterance #{i}"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping with 'id' and 'text', got {type(item).__name__}")
        uid, text = item.get("id"), item.get("text")
        if not isinstance(uid, str) or not _ID.match(uid):
            raise UserError(f"{where}: 'id' must be a string of letters, digits, _ or - (got {uid!r})")
        if not isinstance(text, str):
            raise UserError(f"{where} ({uid}): 'text' must be a string (got {type(text).__name__})")
        if not text.strip():
            raise UserError(f"{where} ({uid}): 'text' is empty or whitespace")
        bad = _control_char(text)
        if bad is not None:
            raise UserError(
                f"{where} ({uid}): 'text' contains the control character {ord(text[bad]):#06x} at position "
                f"{bad + 1}; a TTS request cannot carry it — remove it"
            )
        if uid in seen:
            raise UserError(f"{where}: duplicate id {uid!r}")
        seen.add(uid)
        out.append(Utterance(uid, " ".join(text.split())))
    return out


def _control_char(text: str) -> int | None:
    """Index of the first control or surrogate character a text must not carry (NUL...)."""
    for i, ch in enumerate(text):
        if ch in "\t\n\r":
            continue
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return i
    return None
