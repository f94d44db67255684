"""Roughly how long a playbook run has left: the task start times of the last good run on this machine.

A run records when each task started (seconds from the playbook's start). The next run of the same playbook
looks its current task up in that record and says ``total - offset`` is left. Tasks are keyed by play, task
name and how often that pair has started so far, so a role included for two hosts keeps two entries. Without
a record of this machine the package's measured one (``ttsbench/data/eta-<playbook>.json``) is used.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ttsbench.atomic import write_json_atomic
from ttsbench.results import utc_now


def cache_path(playbook: str) -> Path:
    """Where this machine's record of ``playbook`` lives (``$XDG_CACHE_HOME/ttsbench/eta/<stem>.json``)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ttsbench" / "eta" / f"{Path(playbook).stem}.json"


def shipped_path(playbook: str) -> Path:
    return Path(str(resources.files("ttsbench") / "data" / f"eta-{Path(playbook).stem}.json"))


@dataclass(frozen=True)
class Record:
    """One finished run: the offset at which every task started, and the run's total."""

    total_s: float
    offsets: dict[str, float]
    source: str = ""

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            doc = json.loads(path.read_text())
            return cls(float(doc["total_s"]), {str(k): float(v) for k, v in doc["offsets"].items()}, str(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


def format_duration(seconds: float) -> str:
    """Rough on purpose: ``~4 min`` from 90 s up, else ``~40 s`` (5 s steps)."""
    if seconds >= 90:
        return f"~{round(seconds / 60)} min"
    return f"~{max(5, round(seconds / 5) * 5)} s"


def format_left(seconds: float) -> str:
    return f"{format_duration(seconds)} left"


@dataclass
class RunClock:
    """Follows one playbook run; ``task_started`` answers what is left, ``save`` keeps the record."""

    playbook: str
    previous: Record | None
    clock: Callable[[], float] = time.monotonic
    _start: float = field(init=False)
    _seen: Counter[str] = field(default_factory=Counter, init=False)
    _offsets: dict[str, float] = field(default_factory=dict, init=False)
    _last_left: tuple[float, float] | None = field(default=None, init=False)  # (estimate, when it was given)

    def __post_init__(self) -> None:
        self._start = self.clock()

    @classmethod
    def for_playbook(cls, playbook: str, clock: Callable[[], float] = time.monotonic) -> RunClock:
        previous = Record.load(cache_path(playbook)) or Record.load(shipped_path(playbook))
        return cls(playbook, previous, clock)

    def task_started(self, play: str, task: str) -> float | None:
        """Seconds left once this task has started, or None when there is nothing to go by."""
        now = self.clock()
        pair = f"{play} | {task}"
        self._seen[pair] += 1
        key = f"{pair} #{self._seen[pair]}"
        self._offsets.setdefault(key, round(now - self._start, 2))
        if self.previous is None:
            return None
        if key in self.previous.offsets:
            left = max(0.0, self.previous.total_s - self.previous.offsets[key])
            self._last_left = (left, now)
            return left
        if self._last_left is not None:  # a task the record lacks: count down from the last estimate
            estimate, given = self._last_left
            return max(0.0, estimate - (now - given))
        return None

    def save(self, path: Path | None = None) -> Path:
        """Keep this run's record for the next one (call after a good run only)."""
        path = path or cache_path(self.playbook)
        doc = {
            "playbook": Path(self.playbook).name,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "finished_at": utc_now(),
            "total_s": round(self.clock() - self._start, 2),
            "offsets": self._offsets,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(path, doc)
