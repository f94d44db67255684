"""``report.html`` (one self-contained file: inline CSS, SVG plots, PNG spectrograms and audio as data URIs)
and ``report.md`` (a Markdown summary for a pull request)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

from ttsbench.scoring.plots import grouped_bars, spectrogram_png, strip_plot
from ttsbench.scoring.registry import METRICS
from ttsbench.scoring.rundoc import RunDir, read_json

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1c1e21}
main{max-width:1100px;margin:1.5rem auto;background:#fff;padding:1.5rem 2rem;border-radius:10px;
box-shadow:0 1px 4px rgba(0,0,0,.08)}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #e4e6eb}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .55rem;
text-align:left;vertical-align:top}th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-size:1.25rem;padding:.8rem 1rem;border-radius:8px;background:#eef4ff;border-left:6px solid #2d7ff9}
.verdict.fail{background:#fff0f0;border-color:#c92a2a}.verdict.pending{background:#fff8e6;border-color:#e8a10c}
.verdict.decided{background:#e6fcf5;border-color:#0ca678}.verdict.default{background:#f1f3f5;border-color:#868e96}
.st-true{color:#087f5b;font-weight:600}.st-false{color:#c92a2a;font-weight:600}.st-unknown{color:#b35c00;font-weight:600}
.badge{display:inline-block;padding:0 .4rem;border-radius:4px;font-size:.8rem;background:#ffe3e3;color:#a61e1e}
.badge.ok{background:#e6fcf5;color:#087f5b}.spec{display:flex;gap:1rem;flex-wrap:wrap}
.spec figure{margin:0}.spec img{width:340px;height:160px;image-rendering:pixelated;border:1px solid #ddd}
audio{width:220px;height:32px}.muted{color:#666}code{background:#f0f2f5;padding:0 .25rem;border-radius:3px}
"""

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


def _num(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return f"{v:.{nd}f}" if isinstance(v, float) else str(v)
    return escape(str(v))


def _table(header: list[str], rows: list[list[str]], num_from: int = 1) -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if i >= num_from else ""}">{c}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _optional(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


# verdict kinds (verdict.json "kind") → CSS class: decided (an outcome's condition held), default (none
# held), pending / incomplete (inputs missing), insufficient (a precondition failed), gate (Gemma drift)
_KIND_CLASS = {"decided": "decided", "default": "default", "pending": "pending", "incomplete": "pending",
               "insufficient": "fail", "gate": "fail"}


def _verdict_class(verdict: dict[str, Any]) -> str:
    kind = verdict.get("kind")
    if kind is None:  # verdict.json of version 1
        o = str(verdict.get("outcome") or "")
        kind = "pending" if o.startswith(("pending", "incomplete")) else "gate" if o.startswith("failed") else ""
    return f"verdict {_KIND_CLASS.get(str(kind), '')}".strip()


def _clause_cells(c: dict[str, Any]) -> str:
    st = escape(str(c.get("state")))
    vals = ", ".join(f"{escape(str(k))} = {_num(v)}" for k, v in (c.get("values") or {}).items())
    return (
        f"<code>{escape(str(c.get('clause')))}</code> <span class='st-{st}'>{st}</span> "
        f"<span class='muted'>{vals}</span>"
    )


def _trace_html(verdict: dict[str, Any]) -> str:
    rows = []
    for t in verdict.get("trace", []):
        rows.append(
            [
                "precondition" if t.get("kind") == "requires" else "outcome",
                (f"else <b>{escape(str(t.get('outcome')))}</b>" if t.get("kind") == "requires"
                 else f"<b>{escape(str(t.get('outcome')))}</b>"),
                f"<span class='st-{escape(str(t.get('state')))}'>{escape(str(t.get('state')))}</span>",
                "<br>".join(_clause_cells(c) for c in t.get("clauses", [])),
            ]
        )
    return "<h3>Rule trace</h3>" + _table(["step", "outcome", "condition", "clauses (value)"], rows, num_from=9)


def build(run: RunDir, embed_audio: bool = False) -> tuple[str, str]:
    """(html, markdown). Labelled audio is embedded only once human ratings exist, or with ``embed_audio``
    (a report opened before the blind listening test would otherwise un-blind it)."""
    doc = run.doc
    systems = doc["systems"]
    verdict = _optional(run.root / "verdict.json")
    objective = _optional(run.scores_dir / "objective.json")
    ratings = _optional(run.scores_dir / "ratings.json")
    gemma = doc.get("gemma")
    standins = [s["system_id"] for s in systems if s["engine"].get("standin")]
    outcome = (verdict or {}).get("outcome")
    h: list[str] = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>ttsbench report — "
        f"{escape(run.run_id)}</title><style>{CSS}</style></head><body><main>"
    ]
    h.append(
        f"<h1>ttsbench report — {escape(run.run_id)}</h1><p class='muted'>kind {escape(str(doc.get('kind')))}"
        f" · started {escape(str(doc.get('started_at')))} · finished {escape(str(doc.get('finished_at')))}"
        f" · complete: {_num(doc.get('complete'))}</p>"
    )
    # ---- summary + verdict first
    h.append("<h2>Summary and verdict</h2>")
    if verdict:
        h.append(
            f"<div class='{_verdict_class(verdict)}' id='verdict' data-kind='{escape(str(verdict.get('kind')))}'>"
            f"Verdict: <b>{escape(outcome or '')}</b></div>"
            "<ul>" + "".join(f"<li>{escape(r)}</li>" for r in verdict.get("reasons", [])) + "</ul>"
        )
        if verdict.get("decided_by"):
            h.append("<p>Decided by:</p><ul id='decided-by'>"
                     + "".join(f"<li>{_clause_cells(c)}</li>" for c in verdict["decided_by"]) + "</ul>")
        if verdict.get("would_change"):
            h.append("<p>What would change it:</p><ul id='would-change'>"
                     + "".join(f"<li>{escape(w)}</li>" for w in verdict["would_change"]) + "</ul>")
        rule = verdict.get("rule", {})
        h.append(
            f"<p class='muted'>rule <code>{escape(str(rule.get('name')))}</code> v{escape(str(rule.get('rule_version')))}"  # noqa: E501
            f" · file <code>{escape(str(rule.get('file')))}</code> · sha256 <code>{escape(str(rule.get('sha256')))}"
            "</code></p>"
        )
        h.append(
            _table(
                ["input", "value", "from"],
                [
                    [escape(k), _num(v), escape(verdict["input_sources"][k]["from"])]
                    for k, v in verdict.get("inputs", {}).items()
                ],
                num_from=9,
            )
        )
        if verdict.get("trace"):
            h.append(_trace_html(verdict))
    else:
        h.append(
            "<div class='verdict pending' id='verdict'>No verdict yet — run <code>ttsbench verdict</code>.</div>"
        )
    if standins:
        h.append(
            "<p><span class='badge'>stand-in</span> These systems are stand-ins, not the real engine: "
            + ", ".join(f"<b>{escape(s)}</b>" for s in standins)
            + ". Their numbers say nothing about the "
            "real engine.</p>"
        )
    rows = []
    for s in systems:
        e, sm = s["engine"], s["summary"]
        badge = (
            "<span class='badge'>stand-in</span>"
            if e.get("standin")
            else "<span class='badge ok'>real</span>"
        )
        rows.append(
            [
                f"{escape(s['system_id'])} {badge}",
                escape(str(e.get("name"))),
                escape(str(e.get("version"))),
                escape(str(e.get("install"))),
                escape(str(e.get("weights"))),
                f"{sm.get('n_ok')}/{sm.get('n')}",
            ]
        )
    h.append(_table(["system", "engine", "version", "install", "weights", "ok/n"], rows, num_from=9))
    # ---- percentiles
    h.append("<h2>Latency and speed</h2>")
    h.append(
        _table(
            ["system", *[lab for _, lab in PCT_KEYS]],
            [[escape(s["system_id"]), *[_num(s["summary"].get(k)) for k, _ in PCT_KEYS]] for s in systems],
        )
    )
    rtf_def = next(
        (s["summary"].get("rtf_definition") for s in systems if s["summary"].get("rtf_definition")), ""
    )
    h.append(f"<p class='muted'>RTF: {escape(str(rtf_def))}</p>")
    h.append(
        strip_plot(
            {
                s["system_id"]: [u["ttfa_ms"] for u in s["utterances"] if u.get("ttfa_ms") is not None]
                for s in systems
            },
            "Time to first audio per utterance (dot) and p50 (bar)",
            "ms",
        )
    )
    utts = list(run.texts())
    h.append(
        grouped_bars(
            utts,
            {
                s["system_id"]: [
                    next((u.get("rtf") for u in s["utterances"] if u["utt_id"] == k), None) for k in utts
                ]
                for s in systems
            },
            "Real-time factor per utterance",
            "RTF",
            ref_line=1.0,
            ref_label="real time (RTF 1)",
        )
    )
    # ---- gemma
    h.append("<h2>Production LLM (Gemma) guard</h2>")
    if gemma:
        tag = " <span class='badge'>stand-in</span>" if gemma.get("standin") else ""
        h.append(
            f"<p>mode <b>{escape(str(gemma.get('mode')))}</b>, backend {escape(str(gemma.get('backend')))}{tag};"
            f" drift {_num(gemma.get('drift'))}× (gate ≤ {_num(gemma.get('max_drift'))}×):"
            f" <b>{escape(str(gemma.get('gate')))}</b></p>"
        )
        base = gemma.get("baseline_p50_ms")
        h.append(
            grouped_bars(
                ["before", "during", "after"],
                {"Gemma p50 latency": [base, gemma.get("during_p50_ms"), gemma.get("post_p50_ms")]},
                "Gemma p50 latency before / during / after",
                "ms",
                ref_line=(base * float(gemma.get("max_drift") or 1.2)) if base else None,
                ref_label="drift gate",
            )
        )
    else:
        h.append("<p class='muted'>No Gemma guard record in this run.</p>")
    # ---- ratings
    h.append("<h2>Human ratings (voice identity, 1–5)</h2>")
    if ratings:
        st = ratings["stats"]
        h.append(
            _table(
                ["system", "mean", "95% CI", "n"],
                [
                    [
                        escape(k),
                        _num(v["mean"]),
                        (f"{v['ci95'][0]:.2f} – {v['ci95'][1]:.2f}" if v["ci95"][0] is not None else "–"),
                        str(v["n"]),
                    ]
                    for k, v in st["per_system"].items()
                ],
            )
        )
        for p in st["pairs"]:
            h.append(
                f"<p>{escape(p['a'])} vs {escape(p['b'])}: mean difference {_num(p['mean_diff'])}, "
                f"Wilcoxon signed-rank p = {_num(p['wilcoxon_p'], 4)} (n = {p['n_items']} items)</p>"
            )
            t = p.get("tost")
            if t:
                eq = {True: "equivalent", False: "not shown equivalent", None: "not testable"}[t.get("equivalent")]
                ci = t.get("ci90") or [None, None]
                h.append(
                    f"<p id='tost'>Equivalence (paired TOST, margin ±{_num(t.get('margin'))}): <b>{eq}</b>, "
                    f"p = {_num(t.get('tost_p'), 4)}, 90% CI of the difference {_num(ci[0])} – {_num(ci[1])}</p>"
                )
        if ratings.get("raters") is not None:
            ex = ratings.get("excluded_raters") or []
            h.append(
                f"<p>Raters: {escape(', '.join(ratings['raters']))}"
                + (
                    "; left out (check trials): "
                    + "; ".join(f"{escape(e['rater'])} ({escape(', '.join(e['flags']))})" for e in ex)
                    if ex
                    else ""
                )
                + "</p>"
            )
        h.append(
            f"<p class='muted'>source: {escape(str(ratings.get('source')))} — {escape(ratings['question'])}</p>"
        )
    else:
        h.append(
            "<p><b>Pending</b>: no human ratings yet (<code>ttsbench listen</code> or "
            "<code>ttsbench ratings import</code>).</p>"
        )
    # ---- objective
    h.append("<h2>Objective metrics</h2>")
    if objective:
        names = [
            n
            for n in METRICS
            if METRICS[n].scope == "clip" and any(f"mean_{n}" in v for v in objective["per_system"].values())
        ]
        h.append(
            _table(
                ["system", *[METRICS[n].label for n in names]],
                [
                    [escape(sid), *[_num(v.get(f"mean_{n}"), 3) for n in names]]
                    for sid, v in objective["per_system"].items()
                ],
            )
        )
        for p in objective.get("pairs", []):
            h.append(
                f"<p>{escape(p['a'])} vs {escape(p['b'])} ({p['n_items']} shared texts): "
                + ", ".join(
                    f"{METRICS[n].label} {_num(p.get(f'mean_{n}'), 3)} {escape(METRICS[n].units)}"
                    for n in METRICS
                    if f"mean_{n}" in p
                )
                + "</p>"
            )
        for s in objective.get("skipped", []):
            h.append(f"<p class='muted'>skipped {escape(s['metric'])}: {escape(s['reason'])}</p>")
    else:
        h.append("<p class='muted'>No objective metrics yet — run <code>ttsbench score</code>.</p>")
    # ---- spectrograms and audio
    h.append("<h2>Spectrograms and audio</h2>")
    from ttsbench.scoring.objective import load_mono

    with_audio = embed_audio or ratings is not None
    if not with_audio:
        h.append(
            "<p class='muted' id='audio-withheld'>Labelled audio is not embedded until human ratings exist (it "
            "would un-blind the listening test); <code>ttsbench report --embed-audio</code> embeds it anyway.</p>"
        )
    ref = run.reference
    if ref:
        h.append(
            f"<p>Reference voice: <audio controls preload='none' src='{_data_uri(ref, 'audio/wav')}'></audio></p>"
        )
    for utt, text in run.texts().items():
        h.append(f"<h3>{escape(utt)} — “{escape(text)}”</h3><div class='spec'>")
        for s in systems:
            u = next((x for x in s["utterances"] if x["utt_id"] == utt), None)
            if not u or not u.get("ok") or not u.get("wav") or not (run.root / u["wav"]).is_file():
                h.append(f"<figure><figcaption>{escape(s['system_id'])}: no audio</figcaption></figure>")
                continue
            path = run.root / u["wav"]
            y, sr = load_mono(path)
            png = base64.b64encode(spectrogram_png(y, sr)).decode("ascii")
            audio = ""
            if with_audio:
                audio = f"<br><audio controls preload='none' src='{_data_uri(path, 'audio/wav')}'></audio>"
            h.append(
                f"<figure><img alt='spectrogram {escape(s['system_id'])} {escape(utt)}' "
                f"src='data:image/png;base64,{png}'><figcaption>{escape(s['system_id'])} · "
                f"{_num(u.get('audio_s'))} s{audio}</figcaption></figure>"
            )
        h.append("</div>")
    # ---- hosts
    h.append("<h2>Hosts and versions</h2>")
    keys = ["name", "arch", "gpu_name", "compute_capability", "driver", "cuda", "torch", "python"]
    h.append(
        _table(
            ["system", *keys],
            [[escape(s["system_id"]), *[_num(s["host"].get(k)) for k in keys]] for s in systems],
            num_from=99,
        )
    )
    h.append(
        _table(
            ["system", "config"],
            [[escape(s["system_id"]), f"<code>{escape(str(s.get('config')))}</code>"] for s in systems],
            num_from=99,
        )
    )
    # ---- metric docs
    h.append("<h2>Metric definitions</h2>")
    h.append(
        _table(
            ["metric", "units", "better", "scope", "meaning"],
            [
                [
                    f"<b>{escape(m.label)}</b><br><code>{escape(m.name)}</code>",
                    escape(m.units),
                    escape(
                        {"higher": "higher", "lower": "lower", "target": "near target", "info": "n/a (info)"}[
                            m.direction
                        ]
                    ),
                    escape(m.scope),
                    escape(m.description),
                ]
                for m in METRICS.values()
            ]
            + [
                ["<b>TTFA</b>", "ms", "lower", "clip", "time from request to the first audio bytes"],
                ["<b>RTF</b>", "ratio", "lower", "clip", escape(str(rtf_def))],
                [
                    "<b>Identity rating</b>",
                    "1–5",
                    "higher",
                    "clip",
                    "human rating of similarity to the reference voice (blind A/B)",
                ],
            ],
            num_from=99,
        )
    )
    h.append("</main></body></html>")
    return "".join(h), markdown(run, verdict, ratings, objective, standins)


def markdown(
    run: RunDir, verdict: dict | None, ratings: dict | None, objective: dict | None, standins: list[str]
) -> str:
    doc = run.doc
    out = [f"## ttsbench: {run.run_id}", ""]
    out.append(f"**Verdict: `{verdict['outcome']}`**" if verdict else "**Verdict: not decided yet**")
    if verdict:
        out += [f"- {r}" for r in verdict.get("reasons", [])]
        if verdict.get("would_change"):
            out += ["", "What would change it:"] + [f"- {w}" for w in verdict["would_change"]]
        rule = verdict["rule"]
        out += [
            "",
            f"Rule `{rule['name']}` v{rule['rule_version']} (`{rule['file']}`, sha256 `{rule['sha256'][:12]}…`)",
        ]
    if standins:
        out += ["", f"> Stand-ins (not the real engine): {', '.join(standins)}"]
    out += [
        "",
        "| system | weights | ok/n | TTFA p50 ms | TTFA p90 ms | RTF p50 | RTF p90 |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in doc["systems"]:
        sm = s["summary"]
        out.append(
            f"| {s['system_id']} | {s['engine'].get('weights')} | {sm.get('n_ok')}/{sm.get('n')} | "
            f"{_num(sm.get('p50_ttfa_ms'), 1)} | {_num(sm.get('p90_ttfa_ms'), 1)} | {_num(sm.get('p50_rtf'))} | "
            f"{_num(sm.get('p90_rtf'))} |"
        )
    g = doc.get("gemma")
    if g:
        out += [
            "",
            f"Gemma guard ({g.get('mode')}{', stand-in' if g.get('standin') else ''}): drift "
            f"{_num(g.get('drift'))}× (gate ≤ {_num(g.get('max_drift'))}×) → **{g.get('gate')}**",
        ]
    if ratings:
        out += ["", "| system | identity mean | 95% CI | n |", "|---|---|---|---|"]
        for k, v in ratings["stats"]["per_system"].items():
            ci = f"{v['ci95'][0]:.2f}–{v['ci95'][1]:.2f}" if v["ci95"][0] is not None else "–"
            out.append(f"| {k} | {_num(v['mean'])} | {ci} | {v['n']} |")
        out += [
            f"- {p['a']} vs {p['b']}: Wilcoxon p = {_num(p['wilcoxon_p'], 4)} (n = {p['n_items']})"
            for p in ratings["stats"]["pairs"]
        ]
    else:
        out += ["", "Human ratings: pending."]
    if objective:
        out += [
            "",
            "Objective metrics: "
            + ", ".join(
                f"{sid}: speaker sim {_num(v.get('mean_speaker_similarity'), 3)}, DNSMOS {_num(v.get('mean_dnsmos_ovrl'))}"  # noqa: E501
                for sid, v in objective["per_system"].items()
            ),
        ]
        if objective.get("skipped"):
            out.append("Skipped: " + ", ".join(s["metric"] for s in objective["skipped"]))
    out += ["", "Full report: `report.html` in the run folder.", ""]
    return "\n".join(out)
