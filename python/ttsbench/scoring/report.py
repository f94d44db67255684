"""``report.html`` (one self-contained file: inline CSS, SVG plots, PNG spectrograms and audio as data URIs)
and ``report.md`` (a Markdown summary for a pull request).

This module prepares the data: small functions that turn the run folder's JSON into plain dicts, one per section
of ``templates/report.html.j2`` (Jinja2, autoescape on). The only markup made here is our own: the SVG plots of
``scoring.plots``, which escape what they draw."""

from __future__ import annotations

import base64
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from ttsbench.scoring.plots import grouped_bars, spectrogram_png, strip_plot
from ttsbench.scoring.registry import METRICS
from ttsbench.scoring.rundoc import RunDir, read_json

PCT_KEYS = [
    ("p50_ttfa_ms", "TTFA p50 (ms)"),
    ("p90_ttfa_ms", "TTFA p90 (ms)"),
    ("p99_ttfa_ms", "TTFA p99 (ms)"),
    ("mean_ttfa_ms", "TTFA mean (ms)"),
    ("p50_rtf", "RTF p50"),
    ("p90_rtf", "RTF p90"),
    ("p99_rtf", "RTF p99"),
    ("mean_rtf", "RTF mean"),
]
HOST_KEYS = ["name", "arch", "gpu_name", "compute_capability", "driver", "cuda", "torch", "python"]
_BETTER = {"higher": "higher", "lower": "lower", "target": "near target", "info": "n/a (info)"}
_EQUIVALENT = {True: "equivalent", False: "not shown equivalent", None: "not testable"}

# verdict kinds (verdict.json "kind") → CSS class: decided (an outcome's condition held), default (none
# held), pending / incomplete (inputs missing), insufficient (a precondition failed), gate (Gemma drift)
_KIND_CLASS = {
    "decided": "decided",
    "default": "default",
    "pending": "pending",
    "incomplete": "pending",
    "insufficient": "fail",
    "gate": "fail",
}


def _num(v: Any, nd: int = 2) -> str:
    """A value as the report shows it: floats with ``nd`` decimals, None as "–", booleans lower-case. Plain text
    (the template escapes it)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ttsbench", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), disabled_extensions=("md.j2",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    return env


def _optional(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _verdict_class(verdict: dict[str, Any]) -> str:
    kind = verdict.get("kind")
    if kind is None:  # verdict.json of version 1
        o = str(verdict.get("outcome") or "")
        kind = "pending" if o.startswith(("pending", "incomplete")) else "gate" if o.startswith("failed") else ""
    return f"verdict {_KIND_CLASS.get(str(kind), '')}".strip()


def _clause(c: dict[str, Any]) -> dict[str, Any]:
    return {"clause": c.get("clause"), "state": c.get("state"), "values": list((c.get("values") or {}).items())}


def verdict_view(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    if not verdict:
        return None
    rule = verdict.get("rule", {})
    return {
        "css_class": _verdict_class(verdict),
        "kind": verdict.get("kind"),
        "outcome": verdict.get("outcome") or "",
        "reasons": verdict.get("reasons", []),
        "decided_by": [_clause(c) for c in verdict.get("decided_by") or []],
        "would_change": verdict.get("would_change") or [],
        "rule": {k: rule.get(k) for k in ("name", "rule_version", "file", "sha256")},
        "inputs": [[k, v, verdict["input_sources"][k]["from"]] for k, v in verdict.get("inputs", {}).items()],
        "trace": [
            {
                "step": "precondition" if t.get("kind") == "requires" else "outcome",
                "outcome": t.get("outcome"),
                "state": t.get("state"),
                "clauses": [_clause(c) for c in t.get("clauses", [])],
            }
            for t in verdict.get("trace", [])
        ],
    }


def systems_view(systems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "system_id": s["system_id"],
            "standin": bool(s["engine"].get("standin")),
            "cells": [
                *(str(s["engine"].get(k)) for k in ("name", "version", "install", "weights")),
                f"{s['summary'].get('n_ok')}/{s['summary'].get('n')}",
            ],
        }
        for s in systems
    ]


def rtf_definition(systems: list[dict[str, Any]]) -> str:
    return str(next((s["summary"]["rtf_definition"] for s in systems if s["summary"].get("rtf_definition")), ""))


def latency_view(run: RunDir, systems: list[dict[str, Any]]) -> dict[str, Any]:
    utts = list(run.texts())
    return {
        "header": ["system", *[lab for _, lab in PCT_KEYS]],
        "rows": [[s["system_id"], *[s["summary"].get(k) for k, _ in PCT_KEYS]] for s in systems],
        "rtf_definition": rtf_definition(systems),
        "ttfa_svg": strip_plot(
            {s["system_id"]: [u["ttfa_ms"] for u in s["utterances"] if u.get("ttfa_ms") is not None] for s in systems},
            "Time to first audio per utterance (dot) and p50 (bar)",
            "ms",
        ),
        "rtf_svg": grouped_bars(
            utts,
            {
                s["system_id"]: [next((u.get("rtf") for u in s["utterances"] if u["utt_id"] == k), None) for k in utts]
                for s in systems
            },
            "Real-time factor per utterance",
            "RTF",
            ref_line=1.0,
            ref_label="real time (RTF 1)",
        ),
    }


def gemma_view(gemma: dict[str, Any] | None) -> dict[str, Any] | None:
    if not gemma:
        return None
    base = gemma.get("baseline_p50_ms")
    view = {k: gemma.get(k) for k in ("mode", "backend", "standin", "drift", "max_drift", "gate")}
    view["svg"] = grouped_bars(
        ["before", "during", "after"],
        {"Gemma p50 latency": [base, gemma.get("during_p50_ms"), gemma.get("post_p50_ms")]},
        "Gemma p50 latency before / during / after",
        "ms",
        ref_line=(base * float(gemma.get("max_drift") or 1.2)) if base else None,
        ref_label="drift gate",
    )
    return view


def _ci95(ci: list[float | None]) -> str:
    return f"{ci[0]:.2f} – {ci[1]:.2f}" if ci[0] is not None else "–"


def ratings_view(ratings: dict[str, Any] | None) -> dict[str, Any] | None:
    if not ratings:
        return None
    st = ratings["stats"]
    pairs = []
    for p in st["pairs"]:
        t = p.get("tost")
        tost = None
        if t:
            tost = {
                "margin": t.get("margin"),
                "result": _EQUIVALENT[t.get("equivalent")],
                "tost_p": t.get("tost_p"),
                "ci90": t.get("ci90") or [None, None],
            }
        pairs.append({k: p[k] for k in ("a", "b", "mean_diff", "wilcoxon_p", "n_items")} | {"tost": tost})
    return {
        "per_system": [[k, v["mean"], _ci95(v["ci95"]), v["n"]] for k, v in st["per_system"].items()],
        "pairs": pairs,
        "raters": ratings.get("raters"),
        "excluded": ratings.get("excluded_raters") or [],
        "source": ratings.get("source"),
        "question": ratings["question"],
    }


def objective_view(objective: dict[str, Any] | None) -> dict[str, Any] | None:
    if not objective:
        return None
    per = objective["per_system"]
    names = [n for n in METRICS if METRICS[n].scope == "clip" and any(f"mean_{n}" in v for v in per.values())]
    return {
        "header": ["system", *[METRICS[n].label for n in names]],
        "rows": [[sid, *[v.get(f"mean_{n}") for n in names]] for sid, v in per.items()],
        "pairs": [
            {
                "a": p["a"],
                "b": p["b"],
                "n_items": p["n_items"],
                "metrics": [
                    {"label": m.label, "value": p.get(f"mean_{n}"), "units": m.units}
                    for n, m in METRICS.items()
                    if f"mean_{n}" in p
                ],
            }
            for p in objective.get("pairs", [])
        ],
        "skipped": objective.get("skipped", []),
    }


def audio_view(run: RunDir, systems: list[dict[str, Any]], with_audio: bool) -> dict[str, Any]:
    """Spectrograms always; the WAVs themselves only ``with_audio`` (labelled clips un-blind a listening test)."""
    from ttsbench.scoring.objective import load_mono

    utterances = []
    for utt, text in run.texts().items():
        figures = []
        for s in systems:
            u = next((x for x in s["utterances"] if x["utt_id"] == utt), None)
            if not u or not u.get("ok") or not u.get("wav") or not (run.root / u["wav"]).is_file():
                figures.append({"system_id": s["system_id"], "png_b64": None})
                continue
            path = run.root / u["wav"]
            y, sr = load_mono(path)
            figures.append(
                {
                    "system_id": s["system_id"],
                    "png_b64": _b64(spectrogram_png(y, sr)),
                    "audio_s": u.get("audio_s"),
                    "wav_b64": _b64(path.read_bytes()) if with_audio else None,
                }
            )
        utterances.append({"utt_id": utt, "text": text, "figures": figures})
    ref = run.reference
    return {
        "with_audio": with_audio,
        "reference_b64": _b64(ref.read_bytes()) if ref else None,
        "utterances": utterances,
    }


def hosts_view(systems: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "header": ["system", *HOST_KEYS],
        "rows": [[s["system_id"], *[s["host"].get(k) for k in HOST_KEYS]] for s in systems],
        "configs": [{"system_id": s["system_id"], "config": str(s.get("config"))} for s in systems],
    }


def metric_docs(rtf_def: str) -> list[dict[str, Any]]:
    return [
        {
            "label": m.label,
            "name": m.name,
            "units": m.units,
            "better": _BETTER[m.direction],
            "scope": m.scope,
            "meaning": m.description,
        }
        for m in METRICS.values()
    ] + [
        {
            "label": "TTFA",
            "name": None,
            "units": "ms",
            "better": "lower",
            "scope": "clip",
            "meaning": "time from request to the first audio bytes",
        },
        {"label": "RTF", "name": None, "units": "ratio", "better": "lower", "scope": "clip", "meaning": rtf_def},
        {
            "label": "Identity rating",
            "name": None,
            "units": "1–5",
            "better": "higher",
            "scope": "clip",
            "meaning": "human rating of similarity to the reference voice (blind A/B)",
        },
    ]


def context(run: RunDir, embed_audio: bool = False) -> dict[str, Any]:
    """Everything ``report.html.j2`` shows, as plain data."""
    doc = run.doc
    systems = doc["systems"]
    ratings = _optional(run.scores_dir / "ratings.json")
    return {
        "run_id": run.run_id,
        "header": {k: doc.get(k) for k in ("kind", "started_at", "finished_at", "complete")},
        "verdict": verdict_view(_optional(run.root / "verdict.json")),
        "standins": [s["system_id"] for s in systems if s["engine"].get("standin")],
        "systems": systems_view(systems),
        "latency": latency_view(run, systems),
        "gemma": gemma_view(doc.get("gemma")),
        "ratings": ratings_view(ratings),
        "objective": objective_view(_optional(run.scores_dir / "objective.json")),
        "audio": audio_view(run, systems, embed_audio or ratings is not None),
        "hosts": hosts_view(systems),
        "metric_docs": metric_docs(rtf_definition(systems)),
    }


def render_html(ctx: dict[str, Any]) -> str:
    return _env().get_template("report.html.j2").render(ctx)


def build(run: RunDir, embed_audio: bool = False) -> tuple[str, str]:
    """(html, markdown). Labelled audio is embedded only once human ratings exist, or with ``embed_audio``
    (a report opened before the blind listening test would otherwise un-blind it)."""
    verdict = _optional(run.root / "verdict.json")
    objective = _optional(run.scores_dir / "objective.json")
    ratings = _optional(run.scores_dir / "ratings.json")
    standins = [s["system_id"] for s in run.doc["systems"] if s["engine"].get("standin")]
    return render_html(context(run, embed_audio)), markdown(run, verdict, ratings, objective, standins)


def markdown_context(
    run: RunDir, verdict: dict | None, ratings: dict | None, objective: dict | None, standins: list[str]
) -> dict[str, Any]:
    """What ``report.md.j2`` shows, as plain data."""
    return {
        "run_id": run.run_id,
        "verdict": verdict
        and {
            "outcome": verdict["outcome"],
            "reasons": verdict.get("reasons", []),
            "would_change": verdict.get("would_change") or [],
            "rule": {k: verdict["rule"][k] for k in ("name", "rule_version", "file", "sha256")},
        },
        "standins": standins,
        "systems": [
            {
                "system_id": s["system_id"],
                "weights": s["engine"].get("weights"),
                **{k: s["summary"].get(k) for k in ("n_ok", "n", "p50_ttfa_ms", "p90_ttfa_ms", "p50_rtf", "p90_rtf")},
            }
            for s in run.doc["systems"]
        ],
        "gemma": run.doc.get("gemma"),
        "ratings": ratings
        and {
            "per_system": [
                [k, v["mean"], f"{v['ci95'][0]:.2f}–{v['ci95'][1]:.2f}" if v["ci95"][0] is not None else "–", v["n"]]
                for k, v in ratings["stats"]["per_system"].items()
            ],
            "pairs": ratings["stats"]["pairs"],
        },
        "objective": objective
        and {
            "per_system": objective["per_system"],
            "skipped": objective.get("skipped") or [],
        },
    }


def markdown(
    run: RunDir, verdict: dict | None, ratings: dict | None, objective: dict | None, standins: list[str]
) -> str:
    ctx = markdown_context(run, verdict, ratings, objective, standins)
    return _env().get_template("report.md.j2").render(ctx)
