"""Inputs from the run folder → decision rule → ``verdict.json`` (and results.json's ``verdict`` slot).

Order: a Gemma drift above the gate overrides everything (``failed_gate_gemma_drift``); otherwise the
rule's outcomes are tried in order with three-valued logic. An outcome left undecided because human
ratings are missing gives ``pending_human_ratings`` — never a guessed pass.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from ttsbench.scoring.ratings import load_ratings
from ttsbench.scoring.rules import RuleError, RuleSet, evaluate
from ttsbench.scoring.rundoc import RunDir, utc_now_iso, write_json_atomic

PENDING = "pending_human_ratings"
INCOMPLETE = "incomplete_inputs"

RULE_BY_KIND = {"bench-voxtral": "voxtral.yaml", "bench-chatterbox": "chatterbox-redundancy.yaml"}
_MISSING = object()


def default_rule_file(run: RunDir, rules_dir: Path) -> Path:
    kind = str(run.doc.get("kind"))
    if kind not in RULE_BY_KIND:
        raise RuleError(f"no default decision rule for run kind {kind!r}; pass --rules FILE")
    return rules_dir / RULE_BY_KIND[kind]


def _match(ids: list[str], pattern: str, name: str) -> str | None:
    hits = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
    if len(hits) > 1:
        raise RuleError(
            f"input {name!r}: system pattern {pattern!r} matches several systems "
            f"({', '.join(hits)}); the rule needs exactly one"
        )
    return hits[0] if hits else None


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _system_field(system: dict[str, Any], field: str) -> Any:
    if field == "install_ok":
        for where in ("engine.install_ok", "config.install_ok"):
            v = _get(system, where)
            if v is not _MISSING:
                return v
        n_ok = _get(system, "summary.n_ok")
        return bool(n_ok) if n_ok is not _MISSING and n_ok is not None else _MISSING
    return _get(system, field)


def gather_inputs(rules: RuleSet, run: RunDir, ratings: dict[str, Any] | None) -> tuple[dict, dict]:
    """(values, provenance). Missing values are None; provenance says where each came from."""
    ids = run.system_ids()
    rated = (ratings or {}).get("stats", {}).get("per_system", {})
    values: dict[str, Any] = {}
    prov: dict[str, Any] = {}
    for name, spec in rules.inputs.items():
        v: Any = _MISSING
        sid = None
        if spec.source == "gemma":
            v = _get(run.doc.get("gemma") or {}, spec.field or "")
            where = f"results.json gemma.{spec.field}"
        elif spec.source == "results":
            sid = _match(ids, spec.system or "", name)
            where = f"results.json {sid or spec.system}.{spec.field}"
            if sid is not None:
                v = _system_field(run.system(sid), spec.field or "")
            elif spec.field == "install_ok":
                v, where = False, f"results.json has no system matching {spec.system!r}"
        else:
            sid = _match(sorted(set(ids) | set(rated)), spec.system or "", name)
            where = f"scores/ratings.json {sid or spec.system} {spec.stat}"
            if sid is not None and sid in rated:
                v = rated[sid].get(spec.stat)
        if (v is _MISSING or v is None) and spec.has_default:
            v, where = spec.default, f"{where} (absent → rule default)"
        values[name] = None if v is _MISSING else v
        prov[name] = {"source": spec.source, "system": sid, "from": where, "missing": values[name] is None}
    return values, prov


def decide(rules: RuleSet, run: RunDir) -> dict[str, Any]:
    ratings = load_ratings(run)
    values, prov = gather_inputs(rules, run, ratings)
    reasons: list[str] = []
    gemma = run.doc.get("gemma") or None
    max_drift = rules.gemma_max_drift or (gemma or {}).get("max_drift")
    drift = (gemma or {}).get("drift")
    gate: dict[str, Any] = {"gemma_drift": drift, "max_drift": max_drift}
    outcome: str | None = None
    if gemma is None:
        gate["status"] = "no gemma record"
        reasons.append("no Gemma guard record in results.json: drift gate not applied")
    elif drift is not None and max_drift is not None and float(drift) > float(max_drift):
        gate["status"] = "fail"
        outcome = rules.gate_outcome
        reasons.append(
            f"Gemma drift {float(drift):.2f}× exceeds the gate {float(max_drift):.2f}× "
            "— production LLM was disturbed; result is not a valid decision"
        )
    elif gemma.get("gate") == "fail":
        gate["status"] = "fail"
        outcome = rules.gate_outcome
        reasons.append("Gemma guard gate recorded as failed in results.json")
    else:
        gate["status"] = "pass"
    trace = []
    if outcome is None:
        for o in rules.outcomes:
            v = evaluate(o.when.tree, values) if o.when else True
            trace.append(
                {
                    "outcome": o.outcome,
                    "when": o.when.source if o.when else None,
                    "value": None if v is None else bool(v),
                }
            )
            if v is None:
                missing = sorted(n for n in (o.when.names if o.when else ()) if values.get(n) is None)
                human = [n for n in missing if rules.inputs[n].source == "ratings"]
                if human:
                    outcome = PENDING
                    reasons.append(
                        f"human ratings missing ({', '.join(human)}): run `ttsbench listen` or "
                        "`ttsbench ratings import`; objective metrics are reported meanwhile"
                    )
                else:
                    outcome = INCOMPLETE
                    reasons.append(f"inputs missing from the run: {', '.join(missing)}")
                break
            if v:
                outcome = o.outcome
                reasons.append(o.reason or f"{o.when.source if o.when else ''} is true")
                break
        if outcome is None:
            outcome = rules.default.outcome
            reasons.append(rules.default.reason or "no outcome condition held")
    return {
        "version": 1,
        "run_id": run.run_id,
        "decided_at": utc_now_iso(),
        "rule": {
            "name": rules.name,
            "rule_version": rules.rule_version,
            "file": str(rules.path),
            "sha256": rules.sha256,
        },
        "inputs": values,
        "input_sources": prov,
        "gate": gate,
        "trace": trace,
        "outcome": outcome,
        "reasons": reasons,
        "ratings_present": ratings is not None,
    }


def write_verdict(run: RunDir, verdict: dict[str, Any]) -> Path:
    p = write_json_atomic(run.root / "verdict.json", verdict)
    run.update_slot(
        "verdict", {k: verdict[k] for k in ("outcome", "reasons", "rule", "inputs", "decided_at")}
    )
    return p
