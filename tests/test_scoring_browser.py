"""Report and listening page in real Chromium (Debian's /usr/bin/chromium via Playwright, headless)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.cli import main
from ttsbench.scoring.listen.server import make_server
from ttsbench.scoring.listen.session import Session
from ttsbench.scoring.rundoc import RunDir

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (HAVE_ESPEAK and Path(CHROMIUM).exists()), reason="needs chromium + espeak-ng"),
]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
SHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_report_renders_without_console_errors(browser, tmp_path):
    run = make_run(tmp_path, standin={"chatterbox@panda"})
    csv = tmp_path / "r.csv"
    csv.write_text(
        "utt_id,system,score,note\n"
        + "".join(
            f"{u},{s},{x},\n"
            for u in ("u01", "u02", "u03")
            for s, x in (("chatterbox@titan", 4), ("chatterbox@panda", 5))
        )
    )
    assert main(["ratings", "import", str(run), str(csv)]) == 0
    assert main(["verdict", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((run / "report.html").as_uri())
    assert page.locator("#verdict").inner_text().startswith("Verdict:")
    # 3 utterances < the rule's 10: its own outcome (never "diverges"), coloured as a failed precondition
    assert "insufficient_utterances" in page.locator("#verdict").inner_text()
    assert page.locator("#verdict.fail[data-kind=insufficient]").count() == 1
    assert "titan_n >= 10" in page.locator("#decided-by").inner_text()
    assert page.locator("#would-change li").count() >= 1 and page.get_by_text("Rule trace").count() == 1
    assert page.locator("svg").count() >= 3  # TTFA, RTF, Gemma
    assert page.locator("img[alt^=spectrogram]").count() == 6
    assert page.locator("audio").count() == 7  # 6 clips + reference
    assert page.get_by_text("stand-in", exact=False).count() >= 1
    # every embedded image decodes
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    duration = page.evaluate("""() => new Promise(res => { const a = document.querySelector('audio');
        a.preload = 'auto'; a.addEventListener('loadedmetadata', () => res(a.duration)); a.load(); })""")
    assert duration > 1.0
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "report.png"), full_page=False)
    assert errors == []
    page.close()


def test_listening_page_blind_until_submit(browser, tmp_path):
    run = make_run(tmp_path)
    systems = ("chatterbox@titan", "chatterbox@panda")
    session = Session(RunDir.open(run), systems, seed=11)
    srv = make_server(session)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/"
    bodies: list[tuple[str, bytes]] = []
    errors: list[str] = []
    ctx = browser.new_context()
    page = ctx.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def record(resp):
        try:
            bodies.append((resp.url, resp.body()))
        except Exception:  # e.g. aborted media range request
            bodies.append((resp.url, b""))

    page.on("response", record)
    forbidden = [*systems, "titan", "panda"]
    try:
        page.goto(url)
        page.wait_for_selector("#rate:not([hidden])")
        n_items = len(session.items)
        for k in range(n_items):
            # play every clip (keyboard R/A/B, and play() directly) and wait for real playback
            page.keyboard.press("r")
            played = page.evaluate("""() => Promise.all(['R','A','B'].map(l => {
                const a = document.getElementById('audio-' + l);
                return a.play().then(() => new Promise(r => setTimeout(() => r(a.currentTime > 0 || !a.paused), 300)));
            }))""")
            assert all(played)
            dom = page.content()
            for word in forbidden:
                assert word not in dom, f"{word} leaked into the DOM before submit"
            page.keyboard.press(str(2 + k % 3))  # A
            page.keyboard.press("5")  # B (focus moves to B after rating A)
            page.fill("#note", f"note {k}")
            page.locator("#next").click()
            page.wait_for_function(
                f"document.getElementById('counter').textContent.includes('{k + 1} rated')"
            )
        assert (run / "scores" / "listen-progress.json").exists()
        assert not (run / "scores" / "ab-mapping.json").exists()
        # reloading resumes (nothing lost) — still blind
        page.reload()
        page.wait_for_selector("#submit:not([hidden])")
        assert f"{n_items} rated" in page.locator("#counter").inner_text()
        for u, body in bodies:
            for word in forbidden:
                assert word.encode() not in body, f"{word} leaked in {u} before submit"
        page.locator("#submit").click()
        page.wait_for_selector("#done:not([hidden]) table")
        assert "chatterbox@titan" in page.locator("#done").inner_text()  # revealed only now
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "listen.png"))
        ctx.close()
        srv.shutdown()
        srv.server_close()
    ratings = json.loads((run / "scores" / "ratings.json").read_text())
    mapping = json.loads((run / "scores" / "ab-mapping.json").read_text())["items"]
    assert len(ratings["ratings"]) == 2 * n_items
    for r in ratings["ratings"]:
        k = int(r["item"][1:]) - 1
        assert mapping[r["item"]][r["label"]] == r["system"]
        assert r["score"] == (2 + k % 3 if r["label"] == "A" else 5)
        assert r["note"] == f"note {k}"
    assert errors == []
