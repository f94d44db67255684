"""Inputs from the run folder → decision rule → ``verdict.json`` (and results.json's ``verdict`` slot).

Order: a Gemma drift above the run's recorded gate overrides everything (``failed_gate_gemma_drift``);
otherwise the rule's outcomes are tried in order with three-valued logic (see :func:`decide`). An outcome
left undecided because human ratings are missing gives ``pending_human_ratings`` — never a guessed pass.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from ttsbench.results import utc_now
from ttsbench.scoring.ratings import load_ratings
from ttsbench.scoring.rules import Expr, Outcome, RuleError, RuleSet, clauses, evaluate
from ttsbench.scoring.rundoc import RunDir, write_json_atomic

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


def _fmt(v: Any) -> str:
    if v is None:
        return "missing"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.3g}"
    return repr(v) if isinstance(v, str) else str(v)


def _state(v: Any) -> str:
    return "unknown" if v is None else ("true" if v else "false")


def _clause(c: Expr, values: dict[str, Any]) -> dict[str, Any]:
    v = evaluate(c.tree, values)
    return {"clause": c.source, "state": _state(v), "values": {n: values.get(n) for n in sorted(c.names)}}


def _clause_text(c: dict[str, Any]) -> str:
    vals = ", ".join(f"{k} = {_fmt(v)}" for k, v in c["values"].items())
    return f"`{c['clause']}` is {c['state']}" + (f" ({vals})" if vals else "")


def _trace(o: Outcome, values: dict[str, Any], kind: str) -> dict[str, Any]:
    v = evaluate(o.when.tree, values) if o.when else True
    return {
        "kind": kind,
        "outcome": o.outcome,
        "when": o.when.source if o.when else None,
        "state": _state(v),
        "clauses": [_clause(c, values) for c in clauses(o.when)] if o.when else [],
    }


def _gate(rules: RuleSet, run: RunDir) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(gate record, deciding clause when the gate fails). The threshold is the run's own gemma.max_drift."""
    gemma = run.doc.get("gemma") or None
    max_drift = (gemma or {}).get("max_drift")
    drift = (gemma or {}).get("drift")
    gate: dict[str, Any] = {
        "gemma_drift": drift,
        "max_drift": max_drift,
        "threshold_from": "results.json gemma.max_drift",
    }
    clause = {
        "clause": "gemma.drift <= gemma.max_drift",
        "values": {"gemma.drift": drift, "gemma.max_drift": max_drift},
    }
    if gemma is None:
        gate["status"] = "no gemma record"
        return gate, None
    if drift is not None and max_drift is not None and float(drift) > float(max_drift):
        gate["status"] = "fail"
        return gate, {**clause, "state": "false"}
    if gemma.get("gate") == "fail":
        gate["status"] = "fail"
        return gate, {"clause": "gemma.gate == 'pass'", "state": "false", "values": {"gemma.gate": "fail"}}
    gate["status"] = "pass"
    return gate, None


def decide(rules: RuleSet, run: RunDir) -> dict[str, Any]:
    """Apply the rule; every verdict names the clauses that decided it (true/false/unknown, with values).

    Order: the Gemma drift gate; then the outcomes in order (Kleene logic). The rule's ``requires``
    preconditions are checked when the walk reaches the first outcome that reads a human rating: a false one
    is its own verdict (e.g. ``insufficient_utterances``). Human ratings missing where an outcome depends on
    them gives ``pending_human_ratings`` (naming the missing ratings and any failed precondition); other
    missing inputs give ``incomplete_inputs``; no outcome true gives the rule's default.
    """
    ratings = load_ratings(run)
    values, prov = gather_inputs(rules, run, ratings)
    reasons: list[str] = []
    decided_by: list[dict[str, Any]] = []
    would_change: list[str] = []
    gate, gate_clause = _gate(rules, run)
    human = rules.rating_inputs()
    req_trace = [_trace(r, values, "requires") for r in rules.requires]
    out_trace = [_trace(o, values, "outcome") for o in rules.outcomes]
    outcome: str | None = None
    kind = "decided"
    if gate["status"] == "no gemma record":
        reasons.append("no Gemma guard record in results.json: drift gate not applied")
    if gate_clause is not None:
        outcome, kind = rules.gate_outcome, "gate"
        decided_by.append(gate_clause)
        drift, max_drift = gate["gemma_drift"], gate["max_drift"]
        reasons.append(
            f"Gemma drift {_fmt(drift)}× exceeds the run's gate {_fmt(max_drift)}× (gemma_guard_max_drift)"
            " — production LLM was disturbed; the result is not a valid decision"
            if drift is not None and max_drift is not None and float(drift) > float(max_drift)
            else "Gemma guard gate recorded as failed in results.json"
        )
        would_change.append("a run in which the Gemma guard gate passes (drift within gemma_guard_max_drift)")
    requires_checked = False
    walk = list(zip(rules.outcomes, out_trace, strict=True)) if outcome is None else []
    for o, tr in walk:
        names = o.when.names if o.when else frozenset()
        if names & human and not requires_checked:
            requires_checked = True
            failed = [t for t in req_trace if t["state"] != "true"]
            missing_h = sorted(n for n in names & human if values.get(n) is None)
            if failed and not (missing_h and tr["state"] == "unknown"):
                t = failed[0]
                if t["state"] == "false":
                    outcome, kind = t["outcome"], "insufficient"
                    decided_by += [c for c in t["clauses"] if c["state"] != "true"]
                    r = next(x for x in rules.requires if x.outcome == t["outcome"])
                    reasons.append(
                        f"precondition {'; '.join(_clause_text(c) for c in decided_by)}"
                        + (f": {r.reason}" if r.reason else "")
                    )
                    would_change.append(f"a run where `{t['when']}` holds")
                else:
                    outcome, kind = INCOMPLETE, "incomplete"
                    decided_by += [c for c in t["clauses"] if c["state"] == "unknown"]
                    reasons.append("precondition cannot be checked: " + "; ".join(_clause_text(c) for c in decided_by))
                    would_change.append("the missing inputs recorded in results.json")
                break
        if tr["state"] == "unknown":
            unknown = [c for c in tr["clauses"] if c["state"] == "unknown"]
            missing = sorted({n for c in unknown for n, v in c["values"].items() if v is None})
            missing_h = [n for n in missing if n in human]
            decided_by += unknown
            if missing_h:
                outcome, kind = PENDING, "pending"
                who = ", ".join(f"{n} ({prov[n]['system'] or rules.inputs[n].system})" for n in missing_h)
                reasons.append(
                    f"human ratings missing: {who} — `{o.outcome}` depends on them "
                    f"({'; '.join(_clause_text(c) for c in unknown)}); run `ttsbench listen` or "
                    "`ttsbench ratings import`; objective metrics are reported meanwhile"
                )
                for t in req_trace:
                    if t["state"] != "true":
                        bad = [c for c in t["clauses"] if c["state"] != "true"]
                        decided_by += bad
                        reasons.append(
                            f"also: precondition {'; '.join(_clause_text(c) for c in bad)} — once rated, the "
                            f"verdict is {t['outcome']} unless that holds"
                        )
                        would_change.append(f"a run where `{t['when']}` holds (else, once rated: {t['outcome']})")
                would_change.append("human ratings for " + ", ".join(missing_h))
            else:
                outcome, kind = INCOMPLETE, "incomplete"
                reasons.append(
                    f"inputs missing from the run: {', '.join(missing)} ({'; '.join(_clause_text(c) for c in unknown)})"
                )
                would_change.append("a run that records " + ", ".join(missing))
            break
        if tr["state"] == "true":
            outcome = o.outcome
            decided_by += tr["clauses"]
            reasons.append((o.reason + " — " if o.reason else "") + "; ".join(_clause_text(c) for c in tr["clauses"]))
            break
    if outcome is None:
        outcome, kind = rules.default.outcome, "default"
        reasons.append(rules.default.reason or "no outcome condition held")
        for tr in out_trace:
            false = [c for c in tr["clauses"] if c["state"] == "false"]
            decided_by += false
            reasons.append(f"not {tr['outcome']}: " + "; ".join(_clause_text(c) for c in false))
    if kind in {"decided", "default"}:
        for tr in out_trace:
            if tr["outcome"] == outcome or tr["state"] == "unknown":
                continue
            false = [c for c in tr["clauses"] if c["state"] == "false"]
            if false:
                would_change.append(
                    f"{tr['outcome']} if "
                    + " and ".join(f"`{c['clause']}`" for c in false)
                    + " (now "
                    + ", ".join(f"{k} = {_fmt(v)}" for c in false for k, v in c["values"].items())
                    + ")"
                )
    return {
        "version": 2,
        "run_id": run.run_id,
        "decided_at": utc_now(),
        "rule": {
            "name": rules.name,
            "rule_version": rules.rule_version,
            "file": str(rules.path),
            "sha256": rules.sha256,
        },
        "inputs": values,
        "input_sources": prov,
        "gate": gate,
        "trace": req_trace + out_trace,
        "outcome": outcome,
        "kind": kind,
        "decided_by": decided_by,
        "reasons": reasons,
        "would_change": would_change,
        "ratings_present": ratings is not None,
    }


def write_verdict(run: RunDir, verdict: dict[str, Any]) -> Path:
    p = write_json_atomic(run.root / "verdict.json", verdict)
    run.update_slot("verdict", {k: verdict[k] for k in ("outcome", "kind", "reasons", "rule", "inputs", "decided_at")})
    return p
