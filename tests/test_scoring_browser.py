"""Report and listening page in real Chromium (Debian's /usr/bin/chromium via Playwright, headless)."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import soundfile as sf

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


def _serve_other_origin() -> tuple[ThreadingHTTPServer, str]:
    """A plain page on another localhost port: the 'other site' that must not be able to post ratings."""

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<!doctype html><title>other</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            return

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/"


def _rate_in_page(page, session: Session, score: int) -> None:
    """Rate every item like a careful listener: both clips played (at 16x, to keep the test short), then 1-5."""
    n = len(session.items)
    for k in range(n):
        key = page.evaluate("S.items[S.idx].item")  # the page's current item (an opaque key)
        page.wait_for_function(f"['A', 'B'].every(l => document.getElementById('audio-' + l).dataset.item === '{key}')")
        assert page.locator("#score-A-3").is_disabled()  # not playable-before-rating
        for lab in "AB":
            page.evaluate(f"""() => {{ const a = document.getElementById('audio-{lab}');
                a.playbackRate = 16; a.currentTime = 0; return a.play(); }}""")
        page.wait_for_function("!document.getElementById('score-A-3').disabled", timeout=15000)
        it = session.item(key)
        want = {"A": score, "B": score}
        if it.kind == "catch_different":
            want = {lab: 1 if sid.endswith("+altered") else 4 for lab, sid in zip("AB", it.systems, strict=True)}
        page.keyboard.press(str(want["A"]))
        page.keyboard.press(str(want["B"]))
        page.locator("#next").click()
        page.wait_for_function(f"document.getElementById('counter').textContent.includes('{k + 1} rated')")


def test_listening_page_blind_two_raters(browser, tmp_path):
    run = make_run(tmp_path, texts={"u01": "Hello there.", "u02": "Please hold the line."})
    systems = ("chatterbox@titan", "chatterbox@panda")
    r = RunDir.open(run)
    # fixed seeds: the random padding is then reproducible (no chance coincidence with a run duration)
    alice, bob = Session(r, systems, rater="alice", seed=1), Session(r, systems, rater="bob", seed=2)
    srv = make_server([alice, bob])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    other, other_url = _serve_other_origin()
    originals = {p.read_bytes() for p in run.glob("wavs/**/*.wav")}
    run_durations = [u["audio_s"] for s in r.doc["systems"] for u in s["utterances"]]
    clips: list[tuple[str, bytes]] = []
    errors: list[str] = []
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's CSP (no eval) forbids
    ctx = browser.new_context(bypass_csp=True)
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))

    def record(route):  # the exact bytes the page receives
        resp = route.fetch()
        clips.append((route.request.url, resp.body()))
        route.fulfill(response=resp)

    page.route("**/clip/**", record)
    forbidden = [*systems, "titan", "panda"]
    try:
        # a page on another origin posts a rating with alice's (stolen) key: refused, nothing stored
        page.goto(other_url)
        base = srv.url(alice).split("#")[0]
        res = page.evaluate(
            """async ([base, token]) => {
                const out = [];
                for (const [h, ct] of [[{'X-Ttsbench-Token': token, 'Content-Type': 'application/json'}, 1],
                                       [{'Content-Type': 'text/plain'}, 0]]) {
                  try { const r = await fetch(base + 'api/played', {method: 'POST', headers: h, mode: 'no-cors',
                          body: JSON.stringify({item: 'x', label: 'A'})}); out.push(r.type + ':' + r.status); }
                  catch (e) { out.push('blocked'); }
                }
                return out; }""",
            [base, alice.token],
        )
        assert alice.played == set() and alice.answers == {}, res
        page.goto(srv.url(alice))
        page.wait_for_selector("#rate:not([hidden])")
        assert "Practice" in page.locator("#practice").inner_text()
        # the page itself may not rate a clip that was not played
        code = page.evaluate(
            """async (item) => (await fetch('/api/rate', {method: 'POST', headers: {
            'Content-Type': 'application/json', 'X-Ttsbench-Token': TOKEN},
            body: JSON.stringify({item, scores: {A: 3, B: 3}})})).status""",
            alice.items[0].key,
        )
        assert code == 409
        _rate_in_page(page, alice, 4)
        assert not (run / "scores").exists(), "something was written before submit"
        dom = page.content()
        for word in forbidden:
            assert word not in dom
        # clips: never a run WAV's bytes; A and B of an item equally long, and no run duration
        assert clips
        by_item: dict[str, dict[str, float]] = {}
        for url, body in clips:
            assert body not in originals
            info = sf.info(io.BytesIO(body))
            item, lab = url.rsplit("/", 2)[-2:]
            by_item.setdefault(item, {})[lab] = info.frames / info.samplerate
            for word in forbidden:
                assert word.encode() not in body
        assert {it.key for it in alice.items} <= set(by_item), "not every item's clips were checked"
        for item, d in by_item.items():
            if item != "-":
                assert d["A"] == d["B"], (item, d)
                assert all(abs(d["A"] - x) > 0.001 for x in run_durations), (d, run_durations)
        page.locator("#submit").click()
        page.wait_for_selector("#done:not([hidden]) table")
        # the second rater, same browser session, own key
        page.goto(srv.url(bob))
        page.reload()
        page.wait_for_selector("#rate:not([hidden])")
        _rate_in_page(page, bob, 2)
        page.locator("#submit").click()
        page.wait_for_selector("#done:not([hidden]) table")
        assert "chatterbox@titan" in page.locator("#done").inner_text()  # revealed only now
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "listen.png"))
        ctx.close()
        srv.shutdown()
        srv.server_close()
        other.shutdown()
        other.server_close()
    agg = json.loads((run / "scores" / "ratings.json").read_text())
    assert agg["raters"] == ["alice", "bob"]
    for sid in systems:
        assert agg["stats"]["per_system"][sid]["mean"] == pytest.approx(3.0)
        assert agg["stats"]["per_system"][sid]["n_raters"] == 2
    assert errors == []
