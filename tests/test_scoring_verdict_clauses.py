"""Verdicts that say why: every clause state (true / false / unknown), preconditions, pending, gate, incomplete.

The run documents here are built in memory (no audio needed: a verdict reads results.json and
scores/ratings.json only), so these tests are cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ttsbench.errors import UserError
from ttsbench.runner import project_root
from ttsbench.scoring.rules import load_rules
from ttsbench.scoring.rundoc import RunDir
from ttsbench.scoring.verdict import decide

RULES = project_root() / "files" / "decision-rules"


def system(sid: str, n: int, n_ok: int | None = None, p50: float | None = 200.0, config: dict | None = None):
    n_ok = n if n_ok is None else n_ok
    return {
        "system_id": sid,
        "engine": {"name": sid.split("@")[0], "version": "x", "install": "x", "standin": False, "weights": "hub"},
        "host": {"name": sid.split("@")[1]},
        "config": config or {},
        "utterances": [],
        "summary": {"n": n, "n_ok": n_ok, "n_error": n - n_ok, "p50_ttfa_ms": p50},
    }


def run_dir(
    tmp_path: Path,
    systems: list[dict],
    ratings: dict[str, float] | None = None,
    drift: float = 1.0,
    kind: str = "bench-chatterbox",
) -> RunDir:
    doc: dict[str, Any] = {
        "run_id": "r1",
        "kind": kind,
        "systems": systems,
        "gemma": {"drift": drift, "max_drift": 1.2, "gate": "pass" if drift <= 1.2 else "fail"},
    }
    (tmp_path / "results.json").write_text(json.dumps(doc))
    if ratings is not None:
        (tmp_path / "scores").mkdir()
        per = {s: {"n": 10, "mean": m, "sd": 0.5, "ci95": [m - 0.3, m + 0.3]} for s, m in ratings.items()}
        (tmp_path / "scores" / "ratings.json").write_text(json.dumps({"stats": {"per_system": per}}))
    return RunDir.open(tmp_path)


def chatterbox(tmp_path, n=10, n_ok=None, ratings=None, **kw):
    rules = load_rules(RULES / "chatterbox-redundancy.yaml")
    systems = [system("chatterbox@titan", n, n_ok, **kw), system("chatterbox@panda", n)]
    return decide(rules, run_dir(tmp_path, systems, ratings))


def states(v: dict) -> dict[str, str]:
    return {c["clause"]: c["state"] for c in v["decided_by"]}


def test_demo_two_utterances_no_ratings_is_pending_and_names_the_count(tmp_path):
    v = chatterbox(tmp_path, n=2)
    assert v["outcome"] == "pending_human_ratings" and v["kind"] == "pending"
    text = " ".join(v["reasons"])
    assert "titan_mean (chatterbox@titan)" in text and "panda_mean (chatterbox@panda)" in text
    assert "`titan_n >= 10` is false (titan_n = 2)" in text and "insufficient_utterances" in text
    s = states(v)
    assert s["abs(titan_mean - panda_mean) < 0.5"] == "unknown" and s["titan_n >= 10"] == "false"
    assert any("human ratings" in w for w in v["would_change"])
    assert any("`titan_n >= 10` holds" in w for w in v["would_change"])


def test_too_few_utterances_with_ratings_is_its_own_outcome(tmp_path):
    v = chatterbox(tmp_path, n=2, ratings={"chatterbox@titan": 2.0, "chatterbox@panda": 4.5})
    assert v["outcome"] == "insufficient_utterances"  # not "diverges" although the means differ by 2.5
    assert v["decided_by"] == [{"clause": "titan_n >= 10", "state": "false", "values": {"titan_n": 2}}]
    assert "diverges" not in " ".join(v["reasons"])


def test_validated_lists_every_true_clause_and_what_would_change_it(tmp_path):
    v = chatterbox(tmp_path, ratings={"chatterbox@titan": 4.4, "chatterbox@panda": 4.6})
    assert v["outcome"] == "titan_chatterbox_redundancy_validated"
    assert set(states(v).values()) == {"true"} and len(v["decided_by"]) == 3
    assert v["decided_by"][2]["values"] == {"panda_mean": 4.6, "titan_mean": 4.4}
    assert any(
        w.startswith("titan_chatterbox_diverges_investigate if `abs(titan_mean - panda_mean) >= 0.5`")
        for w in v["would_change"]
    )


def test_diverges_is_decided_by_its_own_clause(tmp_path):
    v = chatterbox(tmp_path, ratings={"chatterbox@titan": 3.0, "chatterbox@panda": 4.5})
    assert v["outcome"] == "titan_chatterbox_diverges_investigate" and v["kind"] == "decided"
    assert states(v)["abs(titan_mean - panda_mean) >= 0.5"] == "true"


def test_failed_utterance_falls_to_default_with_the_false_clause_not_pending(tmp_path):
    v = chatterbox(tmp_path, n=10, n_ok=9)
    assert v["outcome"] == "titan_chatterbox_diverges_investigate" and v["kind"] == "default"
    assert states(v)["titan_n_ok == titan_n"] == "false"
    assert any("`titan_n_ok == titan_n` is false (titan_n = 10, titan_n_ok = 9)" in r for r in v["reasons"])


def test_blackwell_blocker_decides_without_ratings_or_utterances(tmp_path):
    cfg = {"install_ok": False, "install_blocker": {"kind": "blackwell", "estimate_h": 6}}
    v = chatterbox(tmp_path, n=0, config=cfg)
    assert v["outcome"] == "deferred_blackwell_port_cost"
    assert states(v) == {
        "not install_ok": "true",
        "blocker_kind == 'blackwell'": "true",
        "blocker_patch_hours > 1": "true",
    }


def test_gate_uses_the_runs_recorded_threshold(tmp_path):
    rules = load_rules(RULES / "chatterbox-redundancy.yaml")
    run = run_dir(
        tmp_path,
        [system("chatterbox@titan", 10), system("chatterbox@panda", 10)],
        {"chatterbox@titan": 4.5, "chatterbox@panda": 4.5},
        drift=1.3,
    )
    v = decide(rules, run)
    assert v["outcome"] == "failed_gate_gemma_drift" and v["kind"] == "gate"
    assert v["gate"]["max_drift"] == 1.2 and v["gate"]["threshold_from"] == "results.json gemma.max_drift"
    assert v["decided_by"][0]["values"] == {"gemma.drift": 1.3, "gemma.max_drift": 1.2}


def test_missing_objective_input_is_incomplete_not_pending(tmp_path):
    rules = load_rules(RULES / "voxtral.yaml")
    run = run_dir(
        tmp_path,
        [system("voxtral@titan", 4, p50=None), system("chatterbox@panda", 4)],
        {"voxtral@titan": 5.0, "chatterbox@panda": 4.0},
        kind="bench-voxtral",
    )
    v = decide(rules, run)
    assert v["outcome"] == "incomplete_inputs"
    assert states(v) == {"voxtral_ttfa_p50 <= 500": "unknown"}


def test_voxtral_too_slow_is_decided_without_ratings(tmp_path):
    rules = load_rules(RULES / "voxtral.yaml")
    run = run_dir(
        tmp_path, [system("voxtral@titan", 4, p50=800.0), system("chatterbox@panda", 4)], kind="bench-voxtral"
    )
    v = decide(rules, run)
    assert v["outcome"] == "keep_chatterbox_defer_voxtral_tts" and v["kind"] == "default"
    assert states(v) == {"voxtral_ttfa_p50 <= 500": "false"}


# ------------------------------------------------------------------ rules checked when they load
def bad_rule(tmp_path, old: str, new: str, name: str = "chatterbox-redundancy.yaml") -> tuple[str, str]:
    text = (RULES / name).read_text()
    assert old in text
    f = tmp_path / "r.yaml"
    f.write_text(text.replace(old, new, 1))
    with pytest.raises(UserError) as e:
        load_rules(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:"), msg
    line = int(msg.split(":")[1])
    return msg, f.read_text().splitlines()[line - 1].strip()


def test_typo_metric_path_refused_with_file_line(tmp_path):
    msg, line = bad_rule(tmp_path, "field: summary.p50_ttfa_ms", "field: summary.p50_ttfa", "voxtral.yaml")
    assert "no field 'summary.p50_ttfa'" in msg and "did you mean 'summary.p50_ttfa_ms'" in msg
    assert line == "field: summary.p50_ttfa"
    msg, line = bad_rule(tmp_path, "field: summary.n_ok", "field: sumary.n_ok")
    assert line == "field: sumary.n_ok" and "did you mean 'summary'" in msg
    msg, line = bad_rule(tmp_path, "stat: mean", "stat: median")
    assert line == "stat: median" and "stat must be one of" in msg


def test_non_boolean_when_refused_with_file_line(tmp_path):
    for when in ("5", "'titan_n + 1'", "'abs(titan_mean - panda_mean)'", "'blocker_kind'"):
        msg, line = bad_rule(tmp_path, 'when: "titan_n >= 10"', f"when: {when}")
        assert line == f"when: {when}", msg
        assert "not true/false" in msg or "must be a condition" in msg, msg
    msg, _ = bad_rule(tmp_path, 'when: "titan_n >= 10"', "when: \"titan_n >= 'ten'\"")
    assert "needs a number, got text" in msg
    msg, _ = bad_rule(tmp_path, 'when: "titan_n >= 10"', 'when: "titan_n and install_ok"')
    assert "and/or needs a true/false value, got a number" in msg


def test_gate_values_typed_and_one_drift_threshold(tmp_path):
    msg, line = bad_rule(tmp_path, "outcome: failed_gate_gemma_drift", "outcome: 5")
    assert line == "outcome: 5" and "gate.outcome must be a snake_case name" in msg
    msg, line = bad_rule(tmp_path, "gate:\n", "gate:\n  gemma_max_drift: high\n")
    assert line == "gemma_max_drift: high" and "gemma_guard_max_drift" in msg
    msg, line = bad_rule(tmp_path, "    default: false\n", "    default: 'no'\n")
    assert line == "default: 'no'" and "default 'no' is text, but install_ok is a true/false value" in msg
    msg, line = bad_rule(tmp_path, "    default: 0\n", "    default: soon\n")  # free-form config: typed by default
    assert line.startswith("when:") and "needs a number, got text" in msg


def test_unknown_keys_refused_with_file_line(tmp_path):
    msg, line = bad_rule(
        tmp_path, "  titan_mean:\n    source: ratings\n", "  titan_mean:\n    source: ratings\n    sytem: x\n"
    )
    assert line == "sytem: x" and "did you mean 'system'" in msg
    msg, line = bad_rule(tmp_path, "default:\n", "defualt:\n")
    assert line == "defualt:"


def test_validate_rules_cli(tmp_path, capsys):
    from ttsbench.cli import main

    assert main(["validate", "--rules", str(RULES / "chatterbox-redundancy.yaml")]) == 0
    assert "chatterbox-redundancy v2: valid" in capsys.readouterr().out
    f = tmp_path / "r.yaml"
    f.write_text((RULES / "voxtral.yaml").read_text().replace("field: summary.p50_ttfa_ms", "field: summary.p50"))
    assert main(["validate", "--rules", str(f)]) == 2
    assert f"{f}:" in capsys.readouterr().err
