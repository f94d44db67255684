"""report.html from the Jinja2 template: hostile strings from a run folder are escaped, audio stays withheld
before ratings, and the package data that ships the template matches what exists."""

from __future__ import annotations

import json
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.scoring.report import build
from ttsbench.scoring.rundoc import RunDir

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "ttsbench"
HOSTILE = "<script>alert('x')</script>"


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


@pytest.mark.skipif(not HAVE_ESPEAK, reason="needs espeak-ng")
def test_hostile_strings_are_escaped(tmp_path):
    sid = f"{HOSTILE}@titan"
    run = make_run(
        tmp_path,
        systems={sid: ("chatterbox", "titan", ["-v", "en-us"]), "chatterbox@panda": ("chatterbox", "panda", [])},
        texts={"u<img src=x onerror=alert(1)>": f'Say {HOSTILE} & "quote"'},
        standin={sid},
        config={sid: {"voice": "</code><script>bad()</script>"}},
    )
    doc = json.loads((run / "results.json").read_text())
    doc["gemma"]["mode"] = "<iframe src=x>"
    (run / "results.json").write_text(json.dumps(doc))
    html, md = build(RunDir.open(run))
    parsed = _parse(html)
    assert "script" not in parsed.tags and "iframe" not in parsed.tags
    assert parsed.tags.count("img") == 2  # the two spectrograms, nothing from the utterance id
    assert "<script" not in html and "<iframe" not in html and "onerror=alert(1)>" not in html
    text = "".join(parsed.text)  # what a reader sees: the hostile strings, verbatim, as text
    for shown in (sid, f'Say {HOSTILE} & "quote"', "<iframe src=x>", "</code><script>bad()</script>"):
        assert shown in text
    assert sid in md  # Markdown is not HTML-escaped (a pull request renderer sanitises it)


@pytest.mark.skipif(not HAVE_ESPEAK, reason="needs espeak-ng")
def test_audio_withheld_before_ratings_unless_embed(tmp_path):
    run = RunDir.open(make_run(tmp_path, texts={"u01": "Hello there."}))
    html, md = build(run)
    assert "**Verdict: not decided yet**" in md and "Human ratings: pending." in md
    assert "id='audio-withheld'" in html and html.count("data:audio/wav") == 1  # the reference voice only
    assert "No verdict yet" in html and "<b>Pending</b>" in html
    html, _ = build(run, embed_audio=True)
    assert "audio-withheld" not in html and html.count("data:audio/wav") == 3


def test_one_template_block_per_section():
    from ttsbench.scoring.report import _env

    blocks = set(_env().get_template("report.html.j2").blocks)
    assert blocks == {"header", "summary", "latency", "gemma", "ratings", "objective", "audio", "hosts", "metrics"}


def _package_data() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ttsbench"]


def test_every_data_file_in_the_package_is_shipped():
    shipped = {p for g in _package_data() for p in PACKAGE.glob(g)}
    data = {p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert data <= shipped, f"not in package-data: {sorted(str(p.relative_to(PACKAGE)) for p in data - shipped)}"
    assert {PACKAGE / "templates" / "report.html.j2", PACKAGE / "templates" / "report.css"} <= shipped


@pytest.mark.parametrize("glob", _package_data())
def test_every_package_data_glob_matches_a_file(glob):
    assert list(PACKAGE.glob(glob)), f"pyproject.toml package-data {glob!r} matches nothing under python/ttsbench"
