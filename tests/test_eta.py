"""ttsbench.eta: what `make demo` says is left, from the last good run's task start times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttsbench.eta import Record, RunClock, cache_path, format_left, shipped_path


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _run(clock: FakeClock, previous: Record | None, steps: list[tuple[float, str, str]]) -> tuple[RunClock, list]:
    rc = RunClock("bench-x.yml", previous, clock)
    answers = []
    for at, play, task in steps:
        clock.t = 100.0 + at
        answers.append(rc.task_started(play, task))
    return rc, answers


def test_a_recorded_run_tells_the_next_one_what_is_left(tmp_path: Path) -> None:
    clock = FakeClock()
    # the same role task for two hosts keeps two entries (#1, #2)
    steps = [(0, "titan", "Install"), (60, "titan", "Build"), (150, "panda", "Install"), (170, "panda", "Install")]
    first, answers = _run(clock, None, steps)
    assert answers == [None] * 4  # nothing to go by on a machine's first run
    clock.t = 100.0 + 200
    saved = first.save(tmp_path / "eta.json")
    rec = Record.load(saved)
    assert rec is not None and rec.total_s == 200
    assert rec.offsets == {
        "titan | Install #1": 0,
        "titan | Build #1": 60,
        "panda | Install #1": 150,
        "panda | Install #2": 170,
    }

    _, answers = _run(
        clock,
        rec,
        [(0, "titan", "Install"), (90, "titan", "Build"), (95, "titan", "New task"), (160, "panda", "Install")],
    )
    # left = recorded total - the task's recorded offset; an unknown task counts down from the last estimate
    assert answers == [200, 140, 135, 50]


def test_unreadable_records_are_ignored(tmp_path: Path) -> None:
    for text in ["", "{", '{"total_s": 3}', '{"total_s": "x", "offsets": {}}', "[]"]:
        p = tmp_path / "eta.json"
        p.write_text(text)
        assert Record.load(p) is None, text
    assert Record.load(tmp_path / "missing.json") is None


def test_cache_follows_xdg_and_the_package_ships_a_measured_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_path("playbooks/bench-chatterbox.yml") == tmp_path / "ttsbench" / "eta" / "bench-chatterbox.json"
    rc = RunClock.for_playbook("bench-chatterbox.yml")
    assert rc.previous is not None and rc.previous.source == str(shipped_path("bench-chatterbox.yml"))
    doc = json.loads(shipped_path("bench-chatterbox.yml").read_text())
    # measured, not made up: offsets rise with the task order and end before the total
    offsets = list(doc["offsets"].values())
    assert offsets == sorted(offsets) and offsets[0] >= 0 and offsets[-1] < doc["total_s"]
    assert doc["machine"] and len(offsets) > 50


@pytest.mark.parametrize(
    ("secs", "text"),
    [(0, "~5 s left"), (42, "~40 s left"), (89, "~90 s left"), (95, "~2 min left"), (250, "~4 min left")],
)
def test_format_left(secs: float, text: str) -> None:
    assert format_left(secs) == text


def test_demo_prints_time_left_and_keeps_the_record_of_a_good_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ttsbench demo` with ansible-runner replaced by a STAND-IN that replays task-start events (the event
    shape ansible-runner gives the handler): one line per task with the time left from the record, arg-spec
    validation counted but not shown, and the record rewritten only after a good run."""
    import argparse
    from types import SimpleNamespace

    import ttsbench.runner
    from ttsbench.commands import demo

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(ttsbench.runner, "project_root", lambda: tmp_path)
    record = cache_path("bench-x.yml")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"total_s": 300, "offsets": {"P | Install #1": 0, "P | Bench #1": 200}}))
    tasks = ["Install", "Validating arguments against arg spec 'main'", "Bench"]

    def fake_run(playbook: str, inventory: str, extravars: dict, event_handler) -> SimpleNamespace:
        for t in tasks:
            event_handler({"event": "playbook_on_task_start", "event_data": {"play": "P", "task": t}})
        return SimpleNamespace(
            playbook=playbook,
            status=status,
            ok=status == "successful",
            changed_by_host=dict,
            failure_messages=lambda: ["boom"],
        )

    monkeypatch.setattr(ttsbench.runner, "run_playbook", fake_run)
    args = argparse.Namespace(playbook="bench-x.yml", inventory="inventory/rehearsal", extra_var=[])

    status = "failed"
    assert demo._run(args) == 1
    out = capsys.readouterr().out
    assert "took ~5 min last time" in out and "~5 min left Install" in out and "~2 min left Bench" in out
    assert "Validating" not in out and "boom" in out
    assert Record.load(record).total_s == 300  # a failed run keeps the old record

    status = "successful"
    assert demo._run(args) == 0
    rec = Record.load(record)
    assert (
        rec is not None
        and rec.total_s < 60
        and set(rec.offsets)
        == {
            "P | Install #1",
            "P | Validating arguments against arg spec 'main' #1",
            "P | Bench #1",
        }
    )
