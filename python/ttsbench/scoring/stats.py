"""Statistics on human ratings: mean with a 95% t-interval per system; paired Wilcoxon signed-rank; a paired
TOST equivalence test (two one-sided t-tests) within the decision rules' 0.5 margin.

Several raters: each (system, utterance) is first averaged over raters, so every statistic is over items."""

from __future__ import annotations

import itertools
import math
from typing import Any


def mean_ci(xs: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample SD and the two-sided t confidence interval (None bounds when n < 2)."""
    from scipy import stats

    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": [None, None]}
    mean = sum(xs) / n
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "ci95": [None, None]}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95": [mean - half, mean + half]}


def wilcoxon_paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test on paired scores (same items)."""
    from scipy import stats

    n = len(a)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    out: dict[str, Any] = {"n_items": n, "mean_diff": (sum(diffs) / n) if n else None, "wilcoxon_p": None}
    if n == 0:
        out["note"] = "no paired items"
    elif all(d == 0 for d in diffs):
        out["wilcoxon_p"] = 1.0
        out["note"] = "all paired differences are zero"
    else:
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)
    return out


EQUIVALENCE_MARGIN = 0.5  # the redundancy rule's |titan_mean - panda_mean| < 0.5 on the 1-5 identity scale


def tost_paired(diffs: list[float], margin: float = EQUIVALENCE_MARGIN, alpha: float = 0.05) -> dict[str, Any]:
    """Paired TOST: equivalent when both one-sided tests reject |mean diff| >= margin (90% CI inside ±margin)."""
    from scipy import stats

    n = len(diffs)
    out: dict[str, Any] = {"margin": margin, "alpha": alpha, "tost_p": None, "equivalent": None, "ci90": [None, None]}
    if n < 2:
        out["note"] = "needs at least 2 paired items"
        return out
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    if se == 0:
        out.update(tost_p=0.0 if abs(mean) < margin else 1.0, equivalent=abs(mean) < margin, ci90=[mean, mean])
        return out
    p_low = float(stats.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_high = float(stats.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    half = float(stats.t.ppf(1 - alpha, n - 1)) * se
    out.update(tost_p=max(p_low, p_high), equivalent=max(p_low, p_high) < alpha, ci90=[mean - half, mean + half])
    return out


def rating_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """rows: {utt_id, system, score[, rater]}. Per-system mean/CI over items (each the mean of its raters) and
    pairwise paired tests (Wilcoxon, TOST within ±0.5) on shared items."""
    acc: dict[str, dict[str, list[float]]] = {}
    raters: dict[str, set[str]] = {}
    for r in rows:
        acc.setdefault(r["system"], {}).setdefault(r["utt_id"], []).append(float(r["score"]))
        raters.setdefault(r["system"], set()).add(str(r.get("rater") or "-"))
    by_sys = {s: {u: sum(v) / len(v) for u, v in items.items()} for s, items in acc.items()}
    per_system = {
        s: {
            **mean_ci(list(v.values())),
            "n_ratings": sum(len(x) for x in acc[s].values()),
            "n_raters": len(raters[s]),
        }
        for s, v in sorted(by_sys.items())
    }
    pairs = []
    for sa, sb in itertools.combinations(sorted(by_sys), 2):
        items = sorted(set(by_sys[sa]) & set(by_sys[sb]))
        a = [by_sys[sa][i] for i in items]
        b = [by_sys[sb][i] for i in items]
        pairs.append(
            {"a": sa, "b": sb, **wilcoxon_paired(a, b), "tost": tost_paired([x - y for x, y in zip(a, b, strict=True)])}
        )
    return {"per_system": per_system, "pairs": pairs}
