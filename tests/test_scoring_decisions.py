"""Ratings import, statistics, decision rules and verdict, on real run folders."""

from __future__ import annotations

import json

import pytest

from scoring_runs import HAVE_ESPEAK, make_run
from ttsbench.cli import main
from ttsbench.errors import UserError
from ttsbench.runner import project_root
from ttsbench.scoring.rules import evaluate, load_rules, parse_expr
from ttsbench.scoring.stats import mean_ci, wilcoxon_paired

pytestmark = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed")
RULES = project_root() / "files" / "decision-rules"
TEN = {f"u{i:02d}": f"Sentence number {i} for the test." for i in range(1, 11)}


@pytest.fixture
def run10(tmp_path):
    return make_run(tmp_path, texts=TEN)


def write_csv(path, rows):
    path.write_text("utt_id,system,score,note\n" + "".join(f"{u},{s},{x},{n}\n" for u, s, x, n in rows))
    return path


def ratings_rows(titan, panda):
    return [(u, "chatterbox@titan", titan[i % len(titan)], "") for i, u in enumerate(TEN)] + [
        (u, "chatterbox@panda", panda[i % len(panda)], "ok") for i, u in enumerate(TEN)
    ]


# ------------------------------------------------------------------ stats
def test_mean_ci_matches_t_interval():
    st = mean_ci([3, 4, 5, 4, 4])
    assert st["mean"] == pytest.approx(4.0)
    # sd = sqrt(0.5); t(0.975, 4) = 2.7764
    assert st["ci95"][1] - 4.0 == pytest.approx(2.7764 * (0.5**0.5) / 5**0.5, rel=1e-3)
    assert mean_ci([])["mean"] is None


def test_wilcoxon_detects_shift_and_handles_ties():
    a = [5, 5, 4, 5, 5, 4, 5, 5, 5, 4]
    b = [3, 2, 3, 2, 3, 3, 2, 3, 2, 3]
    assert wilcoxon_paired(a, b)["wilcoxon_p"] < 0.01
    assert wilcoxon_paired(a, a)["wilcoxon_p"] == 1.0


# ------------------------------------------------------------------ expressions
def test_expressions_three_valued_and_safe():
    env = {"x": 2.0, "y": None, "s": "blackwell"}
    assert evaluate(parse_expr("x >= 1 + 0.5 and abs(x - 3) < 1.5").tree, env) is True
    assert evaluate(parse_expr("y > 1 and x > 5").tree, env) is False  # false and unknown = false
    assert evaluate(parse_expr("y > 1 or x > 1").tree, env) is True
    assert evaluate(parse_expr("y > 1 and x > 1").tree, env) is None
    assert evaluate(parse_expr("s == 'blackwell' and not (x == 3)").tree, env) is True
    assert evaluate(parse_expr("1 < x < 3").tree, env) is True
    for bad in ["__import__('os')", "x.real", "x >", "x ** 2", "[x]", "lambda: 1", "x if y else 2", "x[0]"]:
        with pytest.raises(ValueError):
            parse_expr(bad)


def test_rule_file_errors_have_line_numbers(tmp_path):
    good = (RULES / "voxtral.yaml").read_text()
    f = tmp_path / "r.yaml"
    f.write_text(good.replace("    stat: mean\n", "    stat: mean\n    weight: 2\n", 1))
    with pytest.raises(UserError, match=r"r.yaml:\d+: unknown field 'weight'") as e:
        load_rules(f)
    line = int(str(e.value).split(":")[1])
    assert f.read_text().splitlines()[line - 1].strip() == "weight: 2"
    f.write_text(good.replace("outcomes:\n", "outcomes:\n  - [unclosed\n", 1))
    with pytest.raises(UserError, match=r"r.yaml:\d+: YAML syntax error"):
        load_rules(f)
    f.write_text(good.replace("voxtral_ttfa_p50 <= 500", "voxtral_ttfa <= 500"))
    with pytest.raises(UserError, match=r"r.yaml:\d+: condition uses undeclared input\(s\) voxtral_ttfa"):
        load_rules(f)
    f.write_text(good.replace("voxtral_ttfa_p50 <= 500", "voxtral_ttfa_p50 <= = 500"))
    with pytest.raises(UserError, match=r"bad condition .* column"):
        load_rules(f)


def test_shipped_rule_files_load():
    for name in ("voxtral.yaml", "chatterbox-redundancy.yaml"):
        r = load_rules(RULES / name)
        assert r.rule_version == 2 and len(r.sha256) == 64 and r.gate_outcome == "failed_gate_gemma_drift"


# ------------------------------------------------------------------ ratings import
def test_ratings_import_bad_input_writes_nothing(run10, tmp_path, capsys):
    out = run10 / "scores" / "ratings.json"
    cases = {
        "unknown utterance id 'u99'": [("u99", "chatterbox@titan", 4, "")],
        "out of range": [("u01", "chatterbox@titan", 6, "")],
        "duplicate rating for u01 / chatterbox@titan": [
            ("u01", "chatterbox@titan", 4, ""),
            ("u01", "chatterbox@titan", 3, ""),
        ],
        "unknown system 'voxtral@titan'": [("u01", "voxtral@titan", 4, "")],
    }
    for msg, rows in cases.items():
        f = write_csv(tmp_path / "bad.csv", rows)
        assert main(["ratings", "import", str(run10), str(f)]) == 2
        assert msg in capsys.readouterr().err
        assert not out.exists()
    y = tmp_path / "bad.yaml"
    y.write_text("ratings:\n  - {utt_id: u01, system: chatterbox@titan, score: 4\n")
    assert main(["ratings", "import", str(run10), str(y)]) == 2
    assert "YAML syntax error at line" in capsys.readouterr().err


def test_ratings_import_yaml_and_no_silent_overwrite(run10, tmp_path, capsys):
    y = tmp_path / "r.yaml"
    y.write_text("".join(f"- {{utt_id: {u}, system: {s}, score: {x}}}\n" for u, s, x, _ in ratings_rows([4], [5])))
    assert main(["ratings", "import", str(run10), str(y)]) == 0
    doc = json.loads((run10 / "scores" / "ratings.json").read_text())
    assert doc["stats"]["per_system"]["chatterbox@titan"]["mean"] == 4.0
    assert doc["stats"]["per_system"]["chatterbox@panda"]["n"] == 10
    assert doc["stats"]["pairs"][0]["wilcoxon_p"] < 0.01
    before = (run10 / "scores" / "ratings.json").read_bytes()
    assert main(["ratings", "import", str(run10), str(y)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (run10 / "scores" / "ratings.json").read_bytes() == before


# ------------------------------------------------------------------ verdicts
def verdict(run, rules=None):
    args = ["verdict", str(run)] + (["--rules", str(rules)] if rules else [])
    assert main(args) == 0
    v = json.loads((run / "verdict.json").read_text())
    assert json.loads((run / "results.json").read_text())["verdict"]["outcome"] == v["outcome"]
    return v


def test_redundancy_pending_without_ratings_then_validated(run10, tmp_path):
    v = verdict(run10)
    assert v["outcome"] == "pending_human_ratings"
    assert v["rule"]["name"] == "chatterbox-redundancy"
    assert (
        v["rule"]["sha256"]
        == __import__("hashlib").sha256((RULES / "chatterbox-redundancy.yaml").read_bytes()).hexdigest()
    )
    assert v["inputs"]["titan_n_ok"] == 10 and v["inputs"]["titan_mean"] is None
    f = write_csv(tmp_path / "r.csv", ratings_rows([4, 5], [5, 4]))
    assert main(["ratings", "import", str(run10), str(f)]) == 0
    v = verdict(run10)
    assert v["outcome"] == "titan_chatterbox_redundancy_validated"
    assert v["inputs"]["titan_mean"] == 4.5 and v["inputs"]["panda_mean"] == 4.5


def test_redundancy_diverges(run10, tmp_path):
    f = write_csv(tmp_path / "r.csv", ratings_rows([2, 3], [5, 4]))
    assert main(["ratings", "import", str(run10), str(f)]) == 0
    assert verdict(run10)["outcome"] == "titan_chatterbox_diverges_investigate"


def test_redundancy_blackwell_blocker_needs_no_ratings(tmp_path):
    cfg = {"chatterbox@titan": {"install_ok": False, "install_blocker": {"kind": "blackwell", "estimate_h": 6}}}
    run = make_run(tmp_path, texts=dict(list(TEN.items())[:2]), config=cfg)
    assert verdict(run)["outcome"] == "deferred_blackwell_port_cost"


def test_gemma_drift_overrides_everything(tmp_path):
    run = make_run(tmp_path, texts=TEN, gemma_drift=1.35)
    f = write_csv(tmp_path / "r.csv", ratings_rows([4, 5], [5, 4]))
    assert main(["ratings", "import", str(run), str(f)]) == 0
    v = verdict(run)
    assert v["outcome"] == "failed_gate_gemma_drift"
    assert "1.35" in v["reasons"][0]


def test_voxtral_rule(tmp_path):
    systems = {
        "voxtral@titan": ("voxtral", "titan", ["-v", "en-us"]),
        "chatterbox@panda": ("chatterbox", "panda", ["-v", "en-gb"]),
    }
    texts = dict(list(TEN.items())[:4])
    run = make_run(
        tmp_path / "a",
        systems=systems,
        texts=texts,
        kind="bench-voxtral",
        ttfa_ms={"voxtral@titan": 300.0},
        standin={"voxtral@titan"},
    )
    assert verdict(run)["outcome"] == "pending_human_ratings"
    rows = [(u, "voxtral@titan", 5, "") for u in texts] + [(u, "chatterbox@panda", 4, "") for u in texts]
    f = write_csv(tmp_path / "r.csv", rows)
    assert main(["ratings", "import", str(run), str(f)]) == 0
    v = verdict(run)
    assert v["outcome"] == "swap_candidate" and v["inputs"]["voxtral_ttfa_p50"] < 500
    slow = make_run(
        tmp_path / "b", systems=systems, texts=texts, kind="bench-voxtral", ttfa_ms={"voxtral@titan": 800.0}
    )
    # too slow: decided without ratings (false and unknown = false), never a guessed pass
    assert verdict(slow)["outcome"] == "keep_chatterbox_defer_voxtral_tts"
    assert main(["ratings", "import", str(slow), str(f)]) == 0
    assert verdict(slow)["outcome"] == "keep_chatterbox_defer_voxtral_tts"


def test_verdict_bad_rule_file_keeps_old_verdict(run10, tmp_path, capsys):
    verdict(run10)
    before = (run10 / "verdict.json").read_bytes()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rule_version: 1\nname: x\ninputs: {}\noutcomes:\n  - outcome: a\n    when: 'zz > 1'\ndefault: {outcome: b}\n"
    )
    assert main(["verdict", str(run10), "--rules", str(bad)]) == 2
    assert "bad.yaml:6: condition uses undeclared input(s) zz" in capsys.readouterr().err
    assert (run10 / "verdict.json").read_bytes() == before
