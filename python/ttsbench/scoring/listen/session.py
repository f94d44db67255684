"""A blind A/B listening session: which system is "A" per item is seeded and kept server-side.

Progress (answers by item and *label*, never by system) is saved to ``scores/listen-progress.json`` after
every item; the A/B mapping and the ratings by system are written only on submit.
"""

from __future__ import annotations

import io
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsbench.errors import UserError
from ttsbench.scoring.ratings import QUESTION, ratings_document, ratings_path, write_ratings
from ttsbench.scoring.rundoc import RunDir, read_json, utc_now_iso, write_json_atomic

LABELS = ("A", "B")
CLIP_SR = 24000


@dataclass(frozen=True)
class Item:
    key: str
    utt_id: str
    text: str
    systems: tuple[str, str]  # (system played as A, system played as B)
    paths: tuple[Path, Path]


def pick_systems(run: RunDir, systems: str | None) -> tuple[str, str]:
    ids = run.system_ids()
    if systems:
        pair = tuple(s.strip() for s in systems.split(","))
        if len(pair) != 2 or pair[0] == pair[1]:
            raise UserError(
                f"--systems needs two different system ids, e.g. {','.join(ids[:2]) or 'a@h1,b@h2'}"
            )
        for s in pair:
            if s not in ids:
                raise UserError(f"--systems: unknown system {s!r} (run has: {', '.join(ids)})")
        return pair  # type: ignore[return-value]
    if len(ids) != 2:
        raise UserError(f"run has {len(ids)} systems ({', '.join(ids)}); choose two with --systems A,B")
    return ids[0], ids[1]


class Session:
    def __init__(self, run: RunDir, systems: tuple[str, str], seed: int | None = None, force: bool = False):
        self.run = run
        self.systems = systems
        if ratings_path(run).exists() and not force:
            raise UserError(f"{ratings_path(run)} exists; pass --force to rate again and replace it")
        self.progress_path = run.scores_dir / "listen-progress.json"
        saved = read_json(self.progress_path) if self.progress_path.is_file() else None
        if saved and sorted(saved.get("systems", [])) == sorted(systems):
            self.seed = int(saved["seed"])
            self.answers: dict[str, dict[str, Any]] = dict(saved.get("answers", {}))
            self.resumed = True
        else:
            self.seed = seed if seed is not None else secrets.randbelow(2**31)
            self.answers = {}
            self.resumed = False
        self.reference = run.reference
        self.items = self._items()
        if not self.items:
            raise UserError(f"{run.root}: no utterance has OK audio from both {systems[0]} and {systems[1]}")
        self._cache: dict[tuple[str, str], bytes] = {}
        self.submitted: dict[str, Any] | None = None

    def _items(self) -> list[Item]:
        a = {c.utt_id: c for c in self.run.clips(self.systems[0]) if c.ok}
        b = {c.utt_id: c for c in self.run.clips(self.systems[1]) if c.ok}
        items = []
        for n, utt in enumerate([u for u in a if u in b], start=1):
            flip = random.Random(f"{self.seed}:{utt}").random() < 0.5
            sa, sb = (self.systems[1], self.systems[0]) if flip else self.systems
            ca, cb = (b[utt], a[utt]) if flip else (a[utt], b[utt])
            items.append(Item(f"i{n:02d}", utt, ca.text, (sa, sb), (ca.path, cb.path)))  # type: ignore[arg-type]
        return items

    def item(self, key: str) -> Item:
        for it in self.items:
            if it.key == key:
                return it
        raise KeyError(key)

    # ------------------------------------------------------------ what the listener may see
    def public_state(self) -> dict[str, Any]:
        return {
            "question": QUESTION,
            "has_reference": self.reference is not None,
            "items": [{"item": it.key, "text": it.text} for it in self.items],
            "answers": self.answers,
            "complete": self.complete(),
            "submitted": self.submitted is not None,
        }

    def clip(self, key: str, label: str) -> bytes:
        """Audio re-encoded to one format (PCM16 mono, 24 kHz, no metadata) so bytes don't tell systems apart."""
        it = self.item(key)
        if label == "R":
            if self.reference is None:
                raise KeyError(label)
            path = self.reference
        elif label in LABELS:
            path = it.paths[LABELS.index(label)]
        else:
            raise KeyError(label)
        ck = (key if label != "R" else "", label)
        if ck not in self._cache:
            import soundfile as sf

            from ttsbench.scoring.objective import load_mono

            y, _ = load_mono(path, CLIP_SR)
            buf = io.BytesIO()
            sf.write(buf, y, CLIP_SR, subtype="PCM_16", format="WAV")
            self._cache[ck] = buf.getvalue()
        return self._cache[ck]

    # ------------------------------------------------------------ answers
    def answer(self, key: str, scores: dict[str, Any], note: str | None) -> None:
        self.item(key)
        clean: dict[str, Any] = {}
        for lab in LABELS:
            v = scores.get(lab)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
                raise ValueError(f"score for {lab} must be an integer 1–5")
            clean[lab] = v
        clean["note"] = (note or "").strip()[:2000] or None
        self.answers[key] = clean
        write_json_atomic(
            self.progress_path,
            {
                "version": 1,
                "systems": sorted(self.systems),
                "seed": self.seed,
                "updated_at": utc_now_iso(),
                "answers": self.answers,
            },
        )

    def complete(self) -> bool:
        return all(it.key in self.answers for it in self.items)

    def submit(self) -> dict[str, Any]:
        if not self.complete():
            missing = [it.key for it in self.items if it.key not in self.answers]
            raise ValueError(f"not all items rated yet: {', '.join(missing)}")
        rows = []
        mapping = {}
        for it in self.items:
            ans = self.answers[it.key]
            mapping[it.key] = {"utt_id": it.utt_id, "A": it.systems[0], "B": it.systems[1]}
            for lab, sid in zip(LABELS, it.systems, strict=True):
                rows.append(
                    {
                        "utt_id": it.utt_id,
                        "system": sid,
                        "score": ans[lab],
                        "note": ans.get("note"),
                        "item": it.key,
                        "label": lab,
                    }
                )
        write_json_atomic(
            self.run.scores_dir / "ab-mapping.json",
            {"version": 1, "seed": self.seed, "systems": list(self.systems), "items": mapping},
        )
        doc = ratings_document(
            self.run, rows, "listen", {"blind_ab": {"seed": self.seed, "mapping": "scores/ab-mapping.json"}}
        )
        write_ratings(self.run, doc)
        self.progress_path.unlink(missing_ok=True)
        self.submitted = {"mapping": mapping, "stats": doc["stats"]}
        return self.submitted
