"""Blind A/B listening: session design, blinded clips, HTTP API guards, many raters, terminal mode."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.errors import UserError
from ttsbench.scoring.listen import blind
from ttsbench.scoring.listen.server import TOKEN_HEADER, make_server
from ttsbench.scoring.listen.session import CATCH_DIFF, CATCH_SAME, PRACTICE, TEST, Session, pick_systems
from ttsbench.scoring.listen.terminal import PlayerFailed, run_terminal
from ttsbench.scoring.rundoc import RunDir
from ttsbench.scoring.stats import tost_paired

pytestmark = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")
SYSTEMS = ("chatterbox@titan", "chatterbox@panda")
FORBIDDEN = [*SYSTEMS, "titan", "panda", "catch", "altered", "seed"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("listen"))


@pytest.fixture
def fresh_run(tmp_path):
    return make_run(tmp_path)


def scores_files(run: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(run)) for p in (run / "scores").rglob("*") if p.is_file())
        if (run / "scores").exists()
        else []
    )


def test_session_design_practice_catch_balance_shuffle(run):
    r = RunDir.open(run)
    s = Session(r, SYSTEMS, seed=5)
    kinds = [it.kind for it in s.items]
    assert kinds[0] == PRACTICE and kinds.count(CATCH_SAME) == 1 and kinds.count(CATCH_DIFF) == 1
    tests = [it for it in s.items if it.kind == TEST]
    assert sorted(it.utt_id for it in tests) == ["u01", "u02", "u03"]
    first_as_a = sum(it.systems[0] == SYSTEMS[0] for it in tests)
    assert first_as_a in (1, 2)  # 3 items: as balanced as an odd count allows
    orders = {tuple(it.utt_id for it in Session(r, SYSTEMS, seed=k).items if it.kind == TEST) for k in range(6)}
    assert len(orders) > 1  # item order is shuffled
    state = json.dumps(s.public_state())
    for word in FORBIDDEN:
        assert word not in state
    assert scores_files(run) == []  # nothing on disk before submit


def test_balanced_sides_over_ten_items(tmp_path):
    texts = {f"u{i:02d}": f"Sentence {i}." for i in range(1, 11)}
    r = RunDir.open(make_run(tmp_path, texts=texts))
    for seed in range(3):
        tests = [it for it in Session(r, SYSTEMS, seed=seed).items if it.kind == TEST]
        assert sum(it.systems[0] == SYSTEMS[0] for it in tests) == 5


def wav_info(b: bytes) -> tuple[np.ndarray, int]:
    y, sr = sf.read(io.BytesIO(b), dtype="float64")
    return y, sr


def test_clips_are_blinded(run):
    r = RunDir.open(run)
    s1, s2 = Session(r, SYSTEMS, seed=1), Session(r, SYSTEMS, seed=2)
    originals = {p.read_bytes() for p in run.glob("wavs/**/*.wav")}
    durations = {round(u["audio_s"], 3) for sy in r.doc["systems"] for u in sy["utterances"]}
    for it in s1.items:
        a, b = s1.clip(it.key, "A"), s1.clip(it.key, "B")
        assert a not in originals and b not in originals
        (ya, sra), (yb, srb) = wav_info(a), wav_info(b)
        assert sra == srb == blind.CLIP_SR and len(ya) == len(yb)  # length-matched: duration tells nothing
        assert round(len(ya) / sra, 3) not in durations
        if it.kind in (TEST, PRACTICE):
            la, lb = blind.loudness(ya).value, blind.loudness(yb).value
            assert abs(la - blind.TARGET_LUFS) < 0.5 and abs(lb - blind.TARGET_LUFS) < 0.5
    # the same utterance in another session: other bytes (dither, padding)
    t1 = next(it for it in s1.items if it.kind == TEST and it.utt_id == "u01")
    t2 = next(it for it in s2.items if it.kind == TEST and it.utt_id == "u01")
    assert {s1.clip(t1.key, "A"), s1.clip(t1.key, "B")}.isdisjoint({s2.clip(t2.key, "A"), s2.clip(t2.key, "B")})
    # the different-voice catch really is different (shorter before padding, so faster speech)
    same = next(it for it in s1.items if it.kind == CATCH_SAME)
    assert same.systems[0] == same.systems[1] and s1.clip(same.key, "A") != s1.clip(same.key, "B")


def test_loudness_falls_back_without_pyloudnorm(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pyloudnorm(name, *a, **k):
        if name == "pyloudnorm":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyloudnorm)
    y = 0.1 * np.sin(np.linspace(0, 2000 * np.pi, blind.CLIP_SR))
    out, lo = blind.match_loudness(y)
    assert lo.method == "rms" and blind.loudness(out).method == "rms"
    assert abs(blind.loudness(out).value - blind.TARGET_LUFS) < 0.01


class Client:
    def __init__(self, srv, token: str | None, origin: str | None = "self"):
        self.base = f"http://127.0.0.1:{srv.server_address[1]}"
        self.token, self.origin = token, (self.base if origin == "self" else origin)

    def call(self, path: str, data: dict | None = None) -> tuple[int, bytes]:
        headers = {TOKEN_HEADER: self.token} if self.token else {}
        body = None
        if data is not None:
            headers["Content-Type"] = "application/json"
            if self.origin:
                headers["Origin"] = self.origin
            body = json.dumps(data).encode()
        req = urllib.request.Request(self.base + path, body, headers)
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def honest(session: Session, key: str, score: int) -> dict[str, int]:
    """What a careful rater answers (the test peeks at the hidden design to play one)."""
    it = session.item(key)
    if it.kind == CATCH_DIFF:
        return {lab: 1 if sid.endswith("+altered") else 4 for lab, sid in zip("AB", it.systems, strict=True)}
    return {"A": score, "B": score}


def rate_all(c: Client, session: Session, score: int) -> None:
    state = json.loads(c.call("/api/state")[1])
    for it in state["items"]:
        for lab in "AB":
            assert c.call("/api/played", {"item": it["item"], "label": lab})[0] == 200
        code, body = c.call("/api/rate", {"item": it["item"], "scores": honest(session, it["item"], score)})
        assert code == 200, body


def test_http_guards_and_two_raters(fresh_run):
    r = RunDir.open(fresh_run)
    alice, bob = Session(r, SYSTEMS, rater="alice"), Session(r, SYSTEMS, rater="bob")
    srv = make_server([alice, bob])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        a = Client(srv, alice.token)
        assert Client(srv, None).call("/api/state")[0] == 403
        assert Client(srv, "wrong").call("/api/state")[0] == 403
        state = json.loads(a.call("/api/state")[1])
        assert state["rater"] == "alice" and state["items"][0]["practice"] is True
        first = state["items"][1]["item"]
        # another origin (a page on another localhost port), or no Origin at all: refused
        evil = Client(srv, alice.token, origin=f"http://127.0.0.1:{srv.server_address[1] + 1}")
        assert evil.call("/api/played", {"item": first, "label": "A"})[0] == 403
        assert Client(srv, alice.token, origin=None).call("/api/played", {"item": first, "label": "A"})[0] == 403
        # a rating before both clips were played: refused
        code, body = a.call("/api/rate", {"item": first, "scores": {"A": 3, "B": 3}})
        assert code == 409 and b"play A and B" in body
        a.call("/api/played", {"item": first, "label": "A"})
        assert a.call("/api/rate", {"item": first, "scores": {"A": 3, "B": 3}})[0] == 409
        for body in (a.call("/api/state"), a.call(f"/clip/{first}/A")):
            for word in FORBIDDEN:
                assert word.encode() not in body[1]
        for word in (*SYSTEMS, "titan", "panda"):
            assert word.encode() not in a.call("/")[1]
        rate_all(a, alice, 4)
        assert scores_files(fresh_run) == []  # still nothing on disk
        assert a.call("/api/submit", {})[0] == 200
        assert a.call("/api/submit", {})[0] == 409  # one submit per session
        assert a.call("/api/rate", {"item": first, "scores": {"A": 1, "B": 1}})[0] == 409
        b = Client(srv, bob.token)
        rate_all(b, bob, 2)
        assert b.call("/api/submit", {})[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
    files = scores_files(fresh_run)
    assert [f for f in files if f.startswith("scores/raters/alice/")] and [
        f for f in files if f.startswith("scores/raters/bob/")
    ]
    agg = json.loads((fresh_run / "scores" / "ratings.json").read_text())
    assert agg["raters"] == ["alice", "bob"] and agg["source"] == "listen"
    for sid in SYSTEMS:
        st = agg["stats"]["per_system"][sid]
        assert st["n_raters"] == 2 and st["n"] == 3 and st["n_ratings"] == 6 and st["mean"] == pytest.approx(3.0)
    session = json.loads((fresh_run / next(f for f in files if "/alice/" in f)).read_text())
    for row in session["ratings"]:
        assert session["mapping"][row["item"]][row["label"]] == row["system"]
    with pytest.raises(UserError, match="already submitted"):
        Session(r, SYSTEMS, rater="alice")
    assert Session(r, SYSTEMS, rater="alice", new_session=True).rater == "alice"


def test_catch_trials_flag_an_unreliable_rater(fresh_run):
    r = RunDir.open(fresh_run)
    s = Session(r, SYSTEMS, rater="careless")
    for it in s.items:
        for lab in "AB":
            s.mark_played(it.key, lab)
        s.answer(it.key, {"A": 1, "B": 5}, None)  # same clip twice rated 1 and 5
    res = s.submit()
    assert res["unreliable"] and any("same clip" in f for f in res["flags"])  # flag order follows the shuffle
    assert not (fresh_run / "scores" / "ratings.json").exists()  # the only rater is left out
    good = Session(r, SYSTEMS, rater="careful")
    for it in good.items:
        for lab in "AB":
            good.mark_played(it.key, lab)
        good.answer(it.key, honest(good, it.key, 4), None)
    assert good.submit()["unreliable"] is False
    agg = json.loads((fresh_run / "scores" / "ratings.json").read_text())
    assert agg["raters"] == ["careful"] and agg["excluded_raters"][0]["rater"] == "careless"


def test_tost_matches_two_one_sided_t_tests():
    from scipy import stats

    d = [0.1, -0.2, 0.0, 0.3, -0.1, 0.2, 0.0, -0.1, 0.1, 0.0]
    ref = max(
        stats.ttest_1samp(d, -0.5, alternative="greater").pvalue, stats.ttest_1samp(d, 0.5, alternative="less").pvalue
    )
    t = tost_paired(d)
    assert t["tost_p"] == pytest.approx(ref) and t["equivalent"] is True
    assert tost_paired([1, 0.5, 1.5, 0.5, 1, 1, 0.5, 1, 1.5, 0.5])["equivalent"] is False


def test_terminal_mode_plays_then_rates(fresh_run, tmp_path):
    player = tmp_path / "player"
    player.write_text('#!/bin/sh\necho "$1" >> ' + str(tmp_path / "played.txt") + "\n")
    player.chmod(0o755)
    s = Session(RunDir.open(fresh_run), SYSTEMS, rater="term")
    lines: list[str] = []
    answers = [honest(s, it.key, 5) for it in s.items[1:]]
    stdin = io.StringIO("a\n9\n4\n2\nsounded off\n" + "".join(f"{x['A']}\n{x['B']}\n\n" for x in answers))
    assert run_terminal(s, stdin, lines.append, player=[str(player)]) is True
    out = "\n".join(lines)
    assert "please type 1, 2, 3, 4 or 5" in out and "practice, not scored" in out
    before = out.split("submitted as")[0]
    for word in FORBIDDEN:
        assert word not in before
    played = (tmp_path / "played.txt").read_text().split()
    assert all(("/ttsbench-listen-" in p and Path(p).name[:2].isdigit()) or p.endswith("reference.wav") for p in played)
    doc = json.loads((fresh_run / "scores" / "ratings.json").read_text())
    assert doc["raters"] == ["term"] and len(doc["ratings"]) == 6


def test_terminal_mode_stops_when_the_player_fails(fresh_run):
    s = Session(RunDir.open(fresh_run), SYSTEMS)
    with pytest.raises(PlayerFailed, match="could not play"):
        run_terminal(s, io.StringIO("4\n4\n\n"), lambda _: None, player=["false"])
    assert s.answers == {} and not (fresh_run / "scores").exists()


def test_pick_systems():
    with pytest.raises(UserError, match="choose two with --systems"):
        pick_systems(RunDir(Path("."), {"systems": [{"system_id": s} for s in ("a@x", "b@y", "c@z")]}), None)
