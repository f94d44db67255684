"""One rater's blind A/B identity session ("should sound identical", 1–5 against the reference voice).

What the rater gets: a practice item first (not scored), then the run's items in a shuffled order with the
two systems balanced over the A and B sides, and two hidden catch trials among them — the same clip on both
sides, and one side a clearly different voice — that flag an unreliable rater. Clips are blinded per session
(:mod:`ttsbench.scoring.listen.blind`): loudness- and length-matched, re-encoded with dither, held in memory.

What is never on disk or in the page before submit: the A/B mapping, the seed, which items are catch trials.
Progress lives in this process's memory only (a page reload keeps it; a stopped process loses it — start a
new session). A rating is accepted only after both clips of the item were played, and only before submit;
a session submits once, writing ``scores/raters/<rater>/<session>.json`` and re-aggregating
``scores/ratings.json`` over all raters.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttsbench.errors import UserError
from ttsbench.results import utc_now, utc_stamp
from ttsbench.scoring.listen import blind
from ttsbench.scoring.ratings import (
    QUESTION,
    RATER_ID,
    aggregate_listen,
    load_ratings,
    rater_sessions,
    ratings_path,
    save_rater_session,
)
from ttsbench.scoring.rundoc import RunDir

LABELS = ("A", "B")
PRACTICE, TEST, CATCH_SAME, CATCH_DIFF = "practice", "test", "catch_same", "catch_different"


class Conflict(Exception):
    """The request is well-formed but not allowed now (not played yet, already submitted)."""


@dataclass(frozen=True)
class Item:
    key: str  # opaque per session
    kind: str
    utt_id: str
    text: str
    systems: tuple[str, str]  # what A and B are ("<sid>" or "<sid>+altered" for the different-voice catch)


def pick_systems(run: RunDir, systems: str | None) -> tuple[str, str]:
    ids = run.system_ids()
    if systems:
        pair = tuple(s.strip() for s in systems.split(","))
        if len(pair) != 2 or pair[0] == pair[1]:
            raise UserError(f"--systems needs two different system ids, e.g. {','.join(ids[:2]) or 'a@h1,b@h2'}")
        for s in pair:
            if s not in ids:
                raise UserError(f"--systems: unknown system {s!r} (run has: {', '.join(ids)})")
        return pair  # type: ignore[return-value]
    if len(ids) != 2:
        raise UserError(f"run has {len(ids)} systems ({', '.join(ids)}); choose two with --systems A,B")
    return ids[0], ids[1]


def new_rater_id() -> str:
    return f"rater-{secrets.token_hex(3)}"


class Session:
    def __init__(
        self,
        run: RunDir,
        systems: tuple[str, str],
        rater: str | None = None,
        new_session: bool = False,
        force: bool = False,
        seed: int | None = None,
    ):
        """``seed`` is for tests only (the CLI never takes one: a seed rebuilds the mapping)."""
        self.run = run
        self.systems = systems
        self.rater = rater or new_rater_id()
        if not RATER_ID.fullmatch(self.rater):
            raise UserError(f"rater id {self.rater!r}: use letters, digits, '.', '_' or '-' (max 40)")
        existing = load_ratings(run)
        if existing is not None and existing.get("source") != "listen" and not force:
            raise UserError(
                f"{ratings_path(run)} holds imported ratings ({existing.get('source')}); pass --force to replace "
                "them with listening-session ratings"
            )
        if rater_sessions(run, self.rater) and not new_session:
            raise UserError(
                f"rater {self.rater!r} has already submitted a session for this run; a rater submits once — "
                "pass --new-session to rate again (the newest session of a rater counts), or choose another --rater"
            )
        self.token = secrets.token_urlsafe(24)
        stamp = utc_stamp()
        self.session_id = f"{stamp}-{secrets.token_hex(4)}"
        self._seed = seed if seed is not None else secrets.randbits(63)
        self._rng = random.Random(self._seed)
        self.started_at = utc_now()
        self.items: list[Item] = []
        self._clips: dict[tuple[str, str], bytes] = {}
        self._build()
        self.played: set[tuple[str, str]] = set()
        self.answers: dict[str, dict[str, Any]] = {}
        self.submitted: dict[str, Any] | None = None

    # ------------------------------------------------------------ items and blinded clips
    def _key(self) -> str:
        return f"{self._rng.getrandbits(40):010x}"

    def _build(self) -> None:
        a = {c.utt_id: c for c in self.run.clips(self.systems[0]) if c.ok}
        b = {c.utt_id: c for c in self.run.clips(self.systems[1]) if c.ok}
        shared = [u for u in a if u in b]
        if not shared:
            raise UserError(
                f"{self.run.root}: no utterance has OK audio from both {self.systems[0]} and {self.systems[1]}"
            )
        rng = self._rng
        audio: dict[tuple[str, str], np.ndarray] = {}

        def y(sid: str, utt: str) -> np.ndarray:
            if (sid, utt) not in audio:
                clip = (a if sid == self.systems[0] else b)[utt]
                audio[(sid, utt)] = blind.load(clip.path)  # type: ignore[arg-type]
            return audio[(sid, utt)]

        # balanced sides: exactly half (rounded at random) of the test items play systems[0] as A
        n = len(shared)
        first_as_a = [True] * (n // 2) + [False] * (n // 2)
        if n % 2:
            first_as_a.append(rng.random() < 0.5)
        rng.shuffle(first_as_a)
        tests = []
        for utt, s0_a in zip(shared, first_as_a, strict=True):
            pair = self.systems if s0_a else (self.systems[1], self.systems[0])
            tests.append((TEST, utt, pair))
        catch_utts = [rng.choice(shared), rng.choice(shared)]
        same_sys = rng.choice(self.systems)
        diff_sys = rng.choice(self.systems)
        odd_side = rng.randrange(2)
        diff_pair = (diff_sys, f"{diff_sys}+altered") if odd_side else (f"{diff_sys}+altered", diff_sys)
        catches = [(CATCH_SAME, catch_utts[0], (same_sys, same_sys)), (CATCH_DIFF, catch_utts[1], diff_pair)]
        body = tests + catches
        rng.shuffle(body)
        practice_utt = rng.choice(shared)
        pp = list(self.systems)
        rng.shuffle(pp)
        plan = [(PRACTICE, practice_utt, tuple(pp)), *body]
        texts = self.run.texts()
        for kind, utt, pair in plan:
            key = self._key()
            while any(it.key == key for it in self.items):
                key = self._key()
            self.items.append(Item(key, kind, utt, texts.get(utt, ""), pair))  # type: ignore[arg-type]
            ys = []
            for sid in pair:
                base = sid.removesuffix("+altered")
                v = y(base, utt)
                ys.append(blind.altered_voice(v) if sid.endswith("+altered") else v)
            ca, cb = blind.blind_pair(ys[0], ys[1], rng)
            self._clips[(key, "A")], self._clips[(key, "B")] = ca, cb
        ref = self.run.reference
        self.has_reference = ref is not None
        if ref is not None:
            self._clips[("", "R")] = blind.blind_one(blind.load(ref), rng)
        self._rng = None  # type: ignore[assignment]  # nothing after this point may depend on the seed

    def item(self, key: str) -> Item:
        for it in self.items:
            if it.key == key:
                return it
        raise KeyError(key)

    def clip(self, key: str, label: str) -> bytes:
        if label == "R":
            if not self.has_reference:
                raise KeyError(label)
            return self._clips[("", "R")]
        if label not in LABELS:
            raise KeyError(label)
        self.item(key)
        return self._clips[(key, label)]

    # ------------------------------------------------------------ what the rater may see
    def public_state(self) -> dict[str, Any]:
        return {
            "rater": self.rater,
            "question": QUESTION,
            "has_reference": self.has_reference,
            "items": [{"item": it.key, "text": it.text, "practice": it.kind == PRACTICE} for it in self.items],
            "answers": self.answers,
            "played": sorted(f"{k}/{lab}" for k, lab in self.played),
            "complete": self.complete(),
            "submitted": self.submitted is not None,
        }

    # ------------------------------------------------------------ rating
    def mark_played(self, key: str, label: str) -> None:
        self.item(key)
        if label not in LABELS:
            raise KeyError(label)
        self.played.add((key, label))

    def answer(self, key: str, scores: dict[str, Any], note: str | None) -> None:
        if self.submitted is not None:
            raise Conflict("this session is submitted; a later change needs a new session (--new-session)")
        self.item(key)
        unplayed = [lab for lab in LABELS if (key, lab) not in self.played]
        if unplayed:
            raise Conflict(f"play {' and '.join(unplayed)} before rating")
        clean: dict[str, Any] = {}
        for lab in LABELS:
            v = scores.get(lab)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
                raise ValueError(f"score for {lab} must be an integer 1–5")
            clean[lab] = v
        clean["note"] = (note or "").strip()[:2000] or None
        self.answers[key] = clean

    def complete(self) -> bool:
        return all(it.key in self.answers for it in self.items)

    def _catch_flags(self) -> list[str]:
        flags = []
        for it in self.items:
            ans = self.answers[it.key]
            if it.kind == CATCH_SAME and abs(ans["A"] - ans["B"]) >= 2:
                flags.append(f"same clip on both sides rated {ans['A']} and {ans['B']} (differ by 2 or more)")
            if it.kind == CATCH_DIFF:
                odd = 0 if it.systems[0].endswith("+altered") else 1
                o, s = ans[LABELS[odd]], ans[LABELS[1 - odd]]
                if o >= s or o >= 4:
                    flags.append(f"a clearly different voice rated {o} against {s} for the real one")
        return flags

    def submit(self) -> dict[str, Any]:
        if self.submitted is not None:
            raise Conflict("this session is already submitted")
        if not self.complete():
            missing = [n for n, it in enumerate(self.items, start=1) if it.key not in self.answers]
            raise ValueError(f"not all items rated yet: {', '.join(map(str, missing))}")
        rows, mapping, catch = [], {}, []
        for it in self.items:
            ans = self.answers[it.key]
            mapping[it.key] = {"kind": it.kind, "utt_id": it.utt_id, "A": it.systems[0], "B": it.systems[1]}
            if it.kind in (CATCH_SAME, CATCH_DIFF):
                catch.append({"item": it.key, "kind": it.kind, "A": ans["A"], "B": ans["B"]})
            if it.kind != TEST:
                continue
            for lab, sid in zip(LABELS, it.systems, strict=True):
                rows.append(
                    {
                        "utt_id": it.utt_id,
                        "system": sid,
                        "score": ans[lab],
                        "note": ans.get("note"),
                        "rater": self.rater,
                        "item": it.key,
                        "label": lab,
                    }
                )
        flags = self._catch_flags()
        doc = {
            "version": 1,
            "run_id": self.run.run_id,
            "rater": self.rater,
            "session": self.session_id,
            "started_at": self.started_at,
            "submitted_at": utc_now(),
            "systems": list(self.systems),
            "seed": self._seed,
            "mapping": mapping,
            "ratings": rows,
            "catch_trials": catch,
            "flags": flags,
            "unreliable": bool(flags),
            "blinding": {
                "loudness_target_lufs": blind.TARGET_LUFS,
                "loudness_method": _method(),
                "sample_rate": blind.CLIP_SR,
                "length_matched": True,
                "dither": "TPDF ±1 LSB, per session",
            },
        }
        path = save_rater_session(self.run, doc)
        aggregate_listen(self.run)
        ratings = load_ratings(self.run)
        self.submitted = {
            "rater": self.rater,
            "session_file": str(path.relative_to(self.run.root)),
            "unreliable": bool(flags),
            "flags": flags,
            "mapping": mapping,
            "stats": (ratings or {}).get("stats", {"per_system": {}, "pairs": []}),
        }
        return self.submitted


def _method() -> str:
    try:
        import pyloudnorm  # noqa: F401

        return "bs1770 (pyloudnorm)"
    except ImportError:
        return "rms (pyloudnorm not installed)"
