"""Terminal listening for headless hosts: plays with aplay/play; ``--player none`` prints clip paths instead.

Clips are the session's blinded copies under opaque names (``03-A.wav``, in a private temporary folder), so
neither paths, names nor bytes reveal the system. A clip counts as played when the player exits 0 (or, with
``--player none``, when the rater confirms having played the printed files); a player that fails stops the
session instead of asking for ratings nobody could hear.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ttsbench.errors import UserError
from ttsbench.scoring.listen.session import LABELS, Session


class PlayerFailed(UserError):
    pass


def find_player(choice: str = "auto") -> list[str] | None:
    """argv prefix of a player, or None to print paths instead."""
    if choice == "none":
        return None
    cands = {"aplay": ["aplay", "-q"], "play": ["play", "-q"]}
    order = [choice] if choice in cands else ["aplay", "play"]
    for name in order:
        if shutil.which(name):
            return cands[name]
    raise UserError(
        f"no audio player found ({' or '.join(order)}); rate in the browser page (ttsbench listen without "
        "--terminal), or pass --player none to play the printed files yourself"
    )


def run_terminal(session: Session, stdin: TextIO, out: Callable[[str], None], player: list[str] | None) -> bool:
    """Ask for every unrated item; returns True when everything was rated and submitted."""
    tmp = Path(tempfile.mkdtemp(prefix="ttsbench-listen-"))
    numbers = {it.key: n for n, it in enumerate(session.items, start=1)}
    try:

        def clip(key: str, label: str) -> Path:
            p = tmp / (f"{numbers[key]:02d}-{label}.wav" if label != "R" else "reference.wav")
            if not p.exists():
                p.write_bytes(session.clip(key, label))
            return p

        def present(key: str, label: str) -> None:
            p = clip(key, label)
            name = "reference" if label == "R" else label
            if player:
                out(f"  ▶ {name}")
                rc = subprocess.run([*player, str(p)], check=False).returncode
                if rc != 0:
                    raise PlayerFailed(
                        f"{player[0]} could not play {p.name} (exit {rc}); fix the audio output, or rate in the "
                        "browser page (ttsbench listen without --terminal)"
                    )
                if label != "R":
                    session.mark_played(key, label)
            else:
                out(f"  {name}: {p}")

        def ask(prompt: str, key: str, labels: list[str]) -> str | None:
            while True:
                out(prompt)
                line = stdin.readline()
                if line == "":
                    return None
                ans = line.strip().lower()
                if ans in {"r", "a", "b"} and ans.upper() in labels:
                    present(key, ans.upper())
                    continue
                return ans

        total = len(session.items)
        for n, it in enumerate(session.items, start=1):
            if it.key in session.answers:
                continue
            practice = " (practice, not scored)" if it.kind == "practice" else ""
            out(f"\nItem {n}/{total}{practice}: “{it.text}”")
            labels = (["R"] if session.has_reference else []) + list(LABELS)
            for lab in labels:
                present(it.key, lab)
            if not player:
                out("  press Enter once you have played A and B: ")
                if stdin.readline() == "":
                    out("\ninput ended; nothing was submitted")
                    return False
                for lab in LABELS:
                    session.mark_played(it.key, lab)
            scores: dict[str, int] = {}
            for lab in LABELS:
                while lab not in scores:
                    ans = ask(f"  {lab}: similarity to the reference 1–5 (r/a/b replays): ", it.key, labels)
                    if ans is None:
                        out("\ninput ended; nothing was submitted (progress is kept only while this runs)")
                        return False
                    if ans in {"1", "2", "3", "4", "5"}:
                        scores[lab] = int(ans)
                    else:
                        out("  please type 1, 2, 3, 4 or 5")
            out("  note (optional, Enter to skip): ")
            note = stdin.readline().strip()
            session.answer(it.key, scores, note)
            out(f"  saved ({len(session.answers)}/{total})")
        res = session.submit()
        out(f"\nsubmitted as {res['rater']}; the A/B mapping is in {res['session_file']}")
        if res["unreliable"]:
            out("  check trials flagged this session (kept, but left out of the aggregate): " + "; ".join(res["flags"]))
        for sid, st in res["stats"]["per_system"].items():
            out(f"  {sid}: mean {st['mean']:.2f} (n={st['n']})")
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
