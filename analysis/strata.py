"""Tests within strata, effect sizes with bootstrap intervals, and the campaign's design.

A factor (architecture, GPU type, budget) is tested within each combination of the other design
factors (a *stratum*), so that the effect of one factor cannot appear as the effect of another; a
pooled test over every run is added only where the design is balanced. Beside Kruskal-Wallis
(eta squared with a seeded bootstrap interval) and Dunn come Welch's ANOVA, Games-Howell and
Cliff's delta (with a bootstrap interval), as the architecture-and-environment study's notebooks
have them. `design_table` states the factors, their levels, the runs per cell and the balance.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.stats import _groups, dunn_test, kruskal_wallis, levene_test, normality_by_group

#: The stratum of a pooled row (every run, the other factors mixed).
POOLED = "all"
#: Columns of a stratified group-test row.
TEST_COLUMNS = ["factor", "stratum", "test", "k", "n", "statistic", "p_value", "eta_squared", "eta_squared_ci_low",
                "eta_squared_ci_high", "df_num", "df_den", "runs", "skipped", "note"]
#: Columns of a pairwise row (Games-Howell, Cliff's delta, median difference).
PAIR_COLUMNS = ["factor", "stratum", "group_a", "group_b", "n_a", "n_b", "median_diff", "cliffs_delta",
                "cliffs_delta_ci_low", "cliffs_delta_ci_high", "games_howell_t", "games_howell_df",
                "games_howell_p"]


# --------------------------------------------------------------------------------------------
# Design


def present_factors(runs: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    """The factors of ``factors`` that are columns of ``runs`` (in that order)."""
    return [f for f in factors if f in runs.columns]


def cell_counts(runs: pd.DataFrame, factors: Sequence[str]) -> pd.Series:
    """Runs in every cell of the full crossing of ``factors``' levels (empty cells count 0)."""
    if not factors:
        return pd.Series([len(runs)])
    counts = runs.groupby(list(factors), sort=True).size()
    if len(factors) == 1:
        return counts
    full = pd.MultiIndex.from_product([sorted(runs[f].dropna().unique(), key=str) for f in factors],
                                      names=list(factors))
    return counts.reindex(full, fill_value=0)


def is_balanced(runs: pd.DataFrame, factors: Sequence[str]) -> bool:
    """Every cell of the full crossing of ``factors`` holds the same, non-zero number of runs."""
    counts = cell_counts(runs, factors)
    return bool(len(counts)) and counts.min() > 0 and counts.min() == counts.max()


def design_table(runs: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """One row per design factor: its levels, the runs per cell of the full crossing of all
    factors (min/max), and whether the design is balanced (same runs in every cell)."""
    used = present_factors(runs, factors)
    counts = cell_counts(runs, used)
    balanced = is_balanced(runs, used)
    lo, hi = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    per_cell = f"{lo}" if lo == hi else f"{lo}-{hi}"
    rows = []
    for f in used:
        levels = sorted(runs[f].dropna().unique(), key=str)
        rows.append({"factor": f, "n_levels": len(levels), "levels": ", ".join(map(str, levels)),
                     "runs_per_cell": per_cell, "cells": len(counts), "empty_cells": int((counts == 0).sum()),
                     "balance": "balanced" if balanced else "unbalanced"})
    return pd.DataFrame(rows, columns=["factor", "n_levels", "levels", "runs_per_cell", "cells", "empty_cells",
                                       "balance"])


def design_conclusions(runs: pd.DataFrame, factors: Sequence[str], min_n: int) -> list[str]:
    """What the campaign's size allows: which factors can be tested within strata, and what not."""
    used = present_factors(runs, factors)
    counts = cell_counts(runs, used)
    lo = int(counts.min()) if len(counts) else 0
    out = []
    if lo < min_n:
        out.append(f"The smallest cell holds {lo} run(s), below the smallest group a test uses ({min_n}, "
                   "analysis.min_group_size): a factor cannot be tested within a stratum whose groups are that "
                   "small; such strata are named as not testable, not tested.")
    if "arch_hash" in runs.columns:
        n_arch = int(runs["arch_hash"].nunique())
        out.append(f"{n_arch} architecture(s): correlations with architecture properties rest on {n_arch} value(s) "
                   "(one per architecture), " + ("too few for a p-value (n < 3)." if n_arch < 3 else
                                                  "seeds give the within-architecture variability."))
    if not is_balanced(runs, used):
        out.append("The design is unbalanced: no pooled test is shown, only tests within strata.")
    else:
        out.append("The design is balanced: a pooled test (stratum all) is shown beside the tests within strata; "
                   "the stratified rows are the ones to read when another factor has an effect.")
    return out


# --------------------------------------------------------------------------------------------
# Effect sizes with bootstrap intervals


def _eta_squared(groups: Sequence[np.ndarray]) -> float:
    from scipy import stats

    values = np.concatenate(groups)
    if np.ptp(values) == 0:
        return 0.0
    h = float(stats.kruskal(*groups).statistic)
    k, n = len(groups), values.size
    return (h - k + 1) / (n - k) if n > k else math.nan


def eta_squared_ci(groups: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0,
                   conf: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Kruskal-Wallis' eta squared (resampling within each group)."""
    rng = np.random.default_rng(seed)
    boots = [_eta_squared([g[rng.integers(0, len(g), len(g))] for g in groups]) for _ in range(n_boot)]
    return _percentiles(np.asarray(boots), conf)


def _percentiles(values: np.ndarray, conf: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not v.size:
        return math.nan, math.nan
    a = (1 - conf) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """Cliff's delta = P(a > b) - P(a < b) over every pair."""
    return float(np.sign(np.subtract.outer(np.asarray(a, float), np.asarray(b, float))).mean())


def cliffs_delta_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                    conf: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Cliff's delta (each sample resampled on its own)."""
    rng = np.random.default_rng(seed)
    signs = np.sign(np.subtract.outer(np.asarray(a, float), np.asarray(b, float)))
    i = rng.integers(0, len(a), (n_boot, len(a)))
    j = rng.integers(0, len(b), (n_boot, len(b)))
    boots = signs[i[:, :, None], j[:, None, :]].mean(axis=(1, 2))
    return _percentiles(boots, conf)


# --------------------------------------------------------------------------------------------
# Welch's ANOVA and Games-Howell


def welch_anova(groups: Sequence[np.ndarray]) -> tuple[float, float, float, float]:
    """Welch's heteroscedastic one-way ANOVA: (F, df numerator, df denominator, p)."""
    from scipy import stats

    n = np.array([len(g) for g in groups], float)
    means = np.array([np.mean(g) for g in groups])
    var = np.array([np.var(g, ddof=1) for g in groups])
    if (var <= 0).any():
        return math.nan, math.nan, math.nan, math.nan
    w = n / var
    grand = float(np.sum(w * means) / np.sum(w))
    k = len(groups)
    lam = float(np.sum((1 - w / w.sum()) ** 2 / (n - 1)))
    f = float(np.sum(w * (means - grand) ** 2) / (k - 1)) / (1 + 2 * (k - 2) * lam / (k**2 - 1))
    df2 = (k**2 - 1) / (3 * lam)
    return f, float(k - 1), df2, float(stats.f.sf(f, k - 1, df2))


def games_howell(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float, float]:
    """Games-Howell for one pair among ``k`` groups: (t, Welch df, p from the studentized range)."""
    from scipy import stats

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if va + vb <= 0:
        return math.nan, math.nan, math.nan
    t = float((np.mean(a) - np.mean(b)) / math.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
    p = float(stats.studentized_range.sf(abs(t) * math.sqrt(2), k, df))
    return t, df, min(p, 1.0)


# --------------------------------------------------------------------------------------------
# Tests within strata


def strata(runs: pd.DataFrame, factor: str, factors: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, runs) of each combination of the other design factors (``POOLED`` when there is none)."""
    others = [f for f in present_factors(runs, factors) if f != factor]
    if not others:
        return [(POOLED, runs)]
    out = []
    for key, sub in runs.groupby(others, sort=True):
        keys = key if isinstance(key, tuple) else (key,)
        out.append((", ".join(f"{f}={v}" for f, v in zip(others, keys, strict=True)), sub))
    return out


def _run_ids(sub: pd.DataFrame, value: str) -> str:
    if "run_id" not in sub.columns:
        return f"{int(sub[value].notna().sum())} runs"
    return " ".join(map(str, sub.loc[sub[value].notna(), "run_id"]))


@dataclass(frozen=True)
class StratumTests:
    """The tests of one factor within one stratum: group-test rows (Kruskal-Wallis first, then
    Welch's ANOVA and Levene), Dunn's pairs, the pairwise effect sizes and Shapiro-Wilk per group."""

    rows: list[dict[str, Any]]
    dunn: pd.DataFrame
    effects: pd.DataFrame
    normality: pd.DataFrame


def factor_tests(sub: pd.DataFrame, value: str, factor: str, stratum: str, *, min_n: int, p_adjust: str,
                 alpha: float, n_boot: int, seed: int, normality_min_n: int = 5) -> StratumTests:
    """Kruskal-Wallis (+ eta squared and its interval), Welch's ANOVA, Levene, Dunn, the pairwise
    effect sizes (Games-Howell, Cliff's delta, median difference) and Shapiro-Wilk per group (groups
    under ``normality_min_n`` "not assessable") of ``factor`` within one stratum."""
    kw = kruskal_wallis(sub, value, factor, min_n)
    usable, _ = _groups(sub, value, factor, min_n)
    base = {"factor": factor, "stratum": stratum, "runs": _run_ids(sub, value)}
    lo = hi = math.nan
    if np.isfinite(kw.statistic):
        lo, hi = eta_squared_ci(list(usable.values()), n_boot, seed)
    rows = [{**kw.as_dict(), **base, "eta_squared_ci_low": lo, "eta_squared_ci_high": hi}]
    welch = {**base, "test": "welch_anova", "k": len(usable), "n": sum(len(v) for v in usable.values()),
             "skipped": rows[0]["skipped"]}
    if len(usable) >= 2:
        f, d1, d2, p = welch_anova(list(usable.values()))
        welch.update(statistic=f, p_value=p, df_num=d1, df_den=d2,
                     note="" if np.isfinite(f) else "undefined (a group has no spread)")
    else:
        welch["note"] = kw.note
    rows.append(welch)
    rows.append({**levene_test(sub, value, factor, min_n=min_n).as_dict(), **base})
    dunn = dunn_test(sub, value, factor, p_adjust, alpha, min_n)
    normal = normality_by_group(sub, value, factor, alpha, max(min_n, normality_min_n))
    normal["normal"] = [("yes" if v else "no") if isinstance(v, bool | np.bool_) else "not assessable"
                        for v in normal["normal"]]
    normal.insert(1, "stratum", stratum)
    return StratumTests(rows, dunn.pairs.assign(factor=factor, stratum=stratum, p_adjust=dunn.p_adjust),
                        pairwise_effects(usable, factor, stratum, n_boot, seed), normal)


def pairwise_effects(usable: dict[Hashable, np.ndarray], factor: str, stratum: str, n_boot: int,
                     seed: int) -> pd.DataFrame:
    """Per pair of groups: median difference, Cliff's delta with its interval, Games-Howell."""
    labels = list(usable)
    rows = []
    for i, ga in enumerate(labels):
        for gb in labels[i + 1:]:
            a, b = usable[ga], usable[gb]
            lo, hi = cliffs_delta_ci(a, b, n_boot, seed)
            t, df, p = games_howell(a, b, len(labels))
            rows.append({"factor": factor, "stratum": stratum, "group_a": ga, "group_b": gb, "n_a": len(a),
                         "n_b": len(b), "median_diff": float(np.median(a) - np.median(b)),
                         "cliffs_delta": cliffs_delta(a, b), "cliffs_delta_ci_low": lo, "cliffs_delta_ci_high": hi,
                         "games_howell_t": t, "games_howell_df": df, "games_howell_p": p})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


# --------------------------------------------------------------------------------------------
# The unit of analysis: one value per architecture


def per_architecture(runs: pd.DataFrame, columns: Sequence[str],
                     by: Sequence[str] = ("gpu_type", "epochs")) -> pd.DataFrame:
    """One row per architecture within each combination of ``by``: the median over its runs
    (seeds) of each of ``columns``, and ``n_seeds``."""
    keys = [c for c in by if c in runs.columns] + ["arch_hash"]
    cols = [c for c in columns if c in runs.columns]
    g = runs.groupby(keys, sort=True)
    out = g[cols].median(numeric_only=True) if cols else g.size().to_frame("n_seeds")
    out["n_seeds"] = g.size()
    return out.reset_index()


def seed_spread(runs: pd.DataFrame, value: str, by: Sequence[str] = ("gpu_type", "epochs")) -> pd.DataFrame:
    """The within-architecture variability (over seeds) of ``value``: n, median, min, max, CV."""
    keys = [c for c in by if c in runs.columns] + ["arch_hash"]
    g = runs.groupby(keys, sort=True)[value]
    out = pd.DataFrame({"n_seeds": g.count(), "median": g.median(), "min": g.min(), "max": g.max(),
                        "cv": g.std() / g.mean()})
    return out.reset_index()


__all__ = [
    "PAIR_COLUMNS",
    "POOLED",
    "TEST_COLUMNS",
    "cell_counts",
    "cliffs_delta",
    "cliffs_delta_ci",
    "design_conclusions",
    "design_table",
    "eta_squared_ci",
    "factor_tests",
    "games_howell",
    "is_balanced",
    "pairwise_effects",
    "per_architecture",
    "present_factors",
    "seed_spread",
    "StratumTests",
    "strata",
    "welch_anova",
]
