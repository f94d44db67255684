"""Terminal listening for headless hosts: plays with aplay/play where present, else prints clip paths.

Clips are copied under opaque names (``i03-A.wav``) so neither paths nor file names reveal the system.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ttsbench.scoring.listen.session import LABELS, Session


def find_player(choice: str = "auto") -> list[str] | None:
    """argv prefix of a player, or None to print paths instead."""
    if choice == "none":
        return None
    cands = {"aplay": ["aplay", "-q"], "play": ["play", "-q"]}
    order = [choice] if choice in cands else ["aplay", "play"]
    for name in order:
        if shutil.which(name):
            return cands[name]
    return None


def run_terminal(
    session: Session, stdin: TextIO, out: Callable[[str], None], player: list[str] | None
) -> bool:
    """Ask for every unrated item; returns True when everything was rated and submitted."""
    tmp = Path(tempfile.mkdtemp(prefix="ttsbench-listen-"))
    try:

        def clip(key: str, label: str) -> Path:
            p = tmp / f"{key}-{label}.wav"
            if not p.exists():
                p.write_bytes(session.clip(key, label))
            return p

        def present(key: str, label: str) -> None:
            p = clip(key, label)
            name = "reference" if label == "R" else label
            if player:
                out(f"  ▶ {name}")
                subprocess.run([*player, str(p)], check=False)
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
            out(f"\nItem {n}/{total}: “{it.text}”")
            labels = (["R"] if session.reference else []) + list(LABELS)
            for lab in labels:
                present(it.key, lab)
            scores: dict[str, int] = {}
            for lab in LABELS:
                while lab not in scores:
                    ans = ask(f"  {lab}: similarity to the reference 1–5 (r/a/b replays): ", it.key, labels)
                    if ans is None:
                        out("\ninput ended; progress saved — run the same command again to resume")
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
        out("\nsubmitted. A/B mapping written to scores/ab-mapping.json")
        for sid, st in res["stats"]["per_system"].items():
            out(f"  {sid}: mean {st['mean']:.2f} (n={st['n']})")
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
