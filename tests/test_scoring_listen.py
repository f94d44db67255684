"""Blind A/B listening: session, HTTP API without a browser, terminal mode fed from stdin."""

from __future__ import annotations

import io
import json
import threading
import urllib.request

import pytest

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.errors import UserError
from ttsbench.scoring.listen.server import make_server
from ttsbench.scoring.listen.session import Session, pick_systems
from ttsbench.scoring.listen.terminal import run_terminal
from ttsbench.scoring.rundoc import RunDir

pytestmark = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")
SYSTEMS = ("chatterbox@titan", "chatterbox@panda")


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def test_seeded_order_and_resume(run):
    r = RunDir.open(run)
    a = Session(r, SYSTEMS, seed=7)
    b = Session(r, SYSTEMS, seed=7)
    assert [i.systems for i in a.items] == [i.systems for i in b.items]
    orders = {tuple(i.systems for i in Session(r, SYSTEMS, seed=s).items) for s in range(8)}
    assert len(orders) > 1  # the seed changes the per-item order
    a.answer("i01", {"A": 3, "B": 4}, "x")
    c = Session(r, SYSTEMS, seed=999)  # resumes with the saved seed, ignoring the new one
    assert c.resumed and c.seed == 7 and c.answers["i01"]["A"] == 3
    progress = (run / "scores" / "listen-progress.json").read_text()
    assert "chatterbox@titan" not in json.dumps(json.loads(progress)["answers"])
    assert not (run / "scores" / "ab-mapping.json").exists()
    with pytest.raises(ValueError):
        a.answer("i02", {"A": 6, "B": 1}, None)
    with pytest.raises(UserError, match="choose two with --systems"):
        pick_systems(RunDir(run, {"systems": [{"system_id": s} for s in ("a@x", "b@y", "c@z")]}), None)


def test_http_api_hides_mapping_until_submit(run):
    s = Session(RunDir.open(run), SYSTEMS, seed=3)
    srv = make_server(s)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    bodies = []

    def get(path):
        with urllib.request.urlopen(base + path) as r:
            body = r.read()
        bodies.append(body)
        return body

    def post(path, data):
        req = urllib.request.Request(
            base + path, json.dumps(data).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req) as r:
            body = r.read()
        bodies.append(body)
        return json.loads(body)

    try:
        get("/")
        state = json.loads(get("/api/state"))
        assert [i["item"] for i in state["items"]] == ["i01", "i02", "i03"]
        wavs = [get(f"/clip/{i['item']}/{lab}") for i in state["items"] for lab in "RAB"]
        assert all(w[:4] == b"RIFF" for w in wavs)
        for n, it in enumerate(state["items"]):
            post("/api/rate", {"item": it["item"], "scores": {"A": 2 + n % 3, "B": 5}, "note": "n"})
        for b in bodies:
            for sid in (*SYSTEMS, "titan", "panda"):
                assert sid.encode() not in b
        assert not (run / "scores" / "ab-mapping.json").exists()
        res = post("/api/submit", {})
        assert set(res["mapping"]["i01"].values()) >= set(SYSTEMS)
    finally:
        srv.shutdown()
        srv.server_close()
    mapping = json.loads((run / "scores" / "ab-mapping.json").read_text())
    ratings = json.loads((run / "scores" / "ratings.json").read_text())
    for row in ratings["ratings"]:
        item = mapping["items"][row["item"]]
        assert item[row["label"]] == row["system"]
        assert row["score"] == (5 if row["label"] == "B" else 2 + int(row["item"][1:]) - 1)
    assert not (run / "scores" / "listen-progress.json").exists()


def test_terminal_mode_from_stdin_prints_opaque_paths(run):
    s = Session(RunDir.open(run), SYSTEMS, seed=1)
    lines: list[str] = []
    # item 1: replay A, a bad answer, then 4 and 2; items 2 and 3: plain answers
    stdin = io.StringIO("a\n9\n4\n2\nsounded off\n5\n5\n\n3\n1\n\n")
    assert run_terminal(s, stdin, lines.append, player=None) is True
    out = "\n".join(lines)
    assert "please type 1, 2, 3, 4 or 5" in out
    assert "i01-A.wav" in out and "reference:" in out
    before_submit = out.split("submitted.")[0]
    for sid in ("titan", "panda"):
        assert sid not in before_submit
    ratings = json.loads((run / "scores" / "ratings.json").read_text())
    by = {(r["item"], r["label"]): r for r in ratings["ratings"]}
    assert by[("i01", "A")]["score"] == 4 and by[("i01", "B")]["note"] == "sounded off"
    assert by[("i03", "B")]["score"] == 1


def test_terminal_mode_eof_keeps_progress(run):
    s = Session(RunDir.open(run), SYSTEMS, seed=1)
    assert run_terminal(s, io.StringIO("4\n2\n\n3\n"), lambda _: None, player=None) is False
    assert not (run / "scores" / "ratings.json").exists()
    resumed = Session(RunDir.open(run), SYSTEMS)
    assert list(resumed.answers) == ["i01"]
