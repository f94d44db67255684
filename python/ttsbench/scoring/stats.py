"""Statistics on human ratings: mean with a 95% t-interval per system; paired Wilcoxon signed-rank."""

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


def rating_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """rows: {utt_id, system, score}. Per-system mean/CI and pairwise paired tests on shared items."""
    by_sys: dict[str, dict[str, float]] = {}
    for r in rows:
        by_sys.setdefault(r["system"], {})[r["utt_id"]] = float(r["score"])
    per_system = {s: mean_ci(list(v.values())) for s, v in sorted(by_sys.items())}
    pairs = []
    for sa, sb in itertools.combinations(sorted(by_sys), 2):
        items = sorted(set(by_sys[sa]) & set(by_sys[sb]))
        pairs.append(
            {
                "a": sa,
                "b": sb,
                **wilcoxon_paired([by_sys[sa][i] for i in items], [by_sys[sb][i] for i in items]),
            }
        )
    return {"per_system": per_system, "pairs": pairs}
