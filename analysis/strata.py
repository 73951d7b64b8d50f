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
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.stats import _groups, dunn_test, kruskal_wallis, levene_test, normality_by_group

#: The stratum of a pooled row (every run, the other factors mixed).
POOLED = "all"
#: Columns of a stratified group-test row.
TEST_COLUMNS = ["factor", "stratum", "test", "k", "n", "statistic", "p_value", "eta_squared", "eta_squared_ci_low",
                "eta_squared_ci_high", "resamples", "df_num", "df_den", "runs", "skipped", "note"]
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


#: Values held at once by a vectorised bootstrap (resamples x values); bounds its memory.
BOOT_BLOCK_VALUES = 2_000_000


def _kruskal_h_rows(values: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Tie-corrected Kruskal-Wallis H of every row of ``values`` (resamples x n), the groups given
    by ``labels`` (0..k-1, the same for every row): scipy's formula, O(n log n) per row."""
    from scipy import stats

    n = values.shape[1]
    ranks = stats.rankdata(values, axis=1)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    rows = values.shape[0]
    cell = (np.arange(rows)[:, None] * k + labels[None, :]).ravel()
    sums = np.bincount(cell, weights=ranks.ravel(), minlength=rows * k).reshape(rows, k)  # rank sums per group
    h = 12.0 / (n * (n + 1)) * np.sum(sums**2 / sizes, axis=1) - 3.0 * (n + 1)
    srt = np.sort(values, axis=1)
    # tie correction: sum of t^3 - t over runs of equal values in each row
    new_run = np.ones_like(srt, dtype=bool)
    new_run[:, 1:] = srt[:, 1:] != srt[:, :-1]
    run_id = np.cumsum(new_run.ravel())  # runs of equal values, numbered across the rows
    t = np.bincount(run_id).astype(np.float64)
    run_row = np.zeros(t.size, dtype=np.int64)
    run_row[run_id] = np.repeat(np.arange(values.shape[0]), n)
    ties = np.bincount(run_row, weights=t**3 - t, minlength=values.shape[0])
    corr = 1.0 - ties / (n**3 - n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(corr > 0, h / corr, 0.0)


def eta_squared_ci(groups: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0,
                   conf: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Kruskal-Wallis' eta squared (resampling within each group).

    Vectorised: the resamples are ranked together in blocks (``BOOT_BLOCK_VALUES``), so the cost
    is O(n_boot x n log n) in numpy, without a Python call per resample."""
    rng = np.random.default_rng(seed)
    sizes = [len(g) for g in groups]
    k, n = len(groups), int(sum(sizes))
    if k < 2 or n <= k:
        return math.nan, math.nan
    labels = np.repeat(np.arange(k), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    values = np.concatenate([np.asarray(g, np.float64) for g in groups])
    block = max(1, BOOT_BLOCK_VALUES // n)
    boots = []
    for first in range(0, n_boot, block):
        m = min(block, n_boot - first)
        # one draw per resample and value, within its group: start of the group + offset
        idx = starts[labels] + np.floor(rng.random((m, n)) * np.asarray(sizes)[labels]).astype(np.int64)
        h = _kruskal_h_rows(values[idx], labels, k)
        boots.append((h - k + 1) / (n - k))
    return _percentiles(np.concatenate(boots), conf)


def _percentiles(values: np.ndarray, conf: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not v.size:
        return math.nan, math.nan
    a = (1 - conf) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def _delta_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cliff's delta of each row pair of ``a`` (rows x n_a) and ``b`` (rows x n_b) from the
    Mann-Whitney U of the pooled ranks: delta = 2 U_a / (n_a n_b) - 1, O((n_a + n_b) log) a row."""
    from scipy import stats

    na, nb = a.shape[1], b.shape[1]
    ranks = stats.rankdata(np.concatenate([a, b], axis=1), axis=1)
    u = ranks[:, :na].sum(axis=1) - na * (na + 1) / 2.0
    return 2.0 * u / (na * nb) - 1.0


def cliffs_delta(a: np.ndarray, b: np.ndarray) -> float:
    """Cliff's delta = P(a > b) - P(a < b) over every pair (from the ranks: O(n log n))."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return math.nan
    return float(_delta_rows(a[None, :], b[None, :])[0])


def cliffs_delta_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                    conf: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of Cliff's delta (each sample resampled on its own), in
    vectorised blocks of resamples."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not len(a) or not len(b):
        return math.nan, math.nan
    if len(a) * len(b) * n_boot <= BOOT_BLOCK_VALUES:  # small samples: index the matrix of signs
        signs = np.sign(np.subtract.outer(a, b))
        i = rng.integers(0, len(a), (n_boot, len(a)))
        j = rng.integers(0, len(b), (n_boot, len(b)))
        return _percentiles(signs[i[:, :, None], j[:, None, :]].mean(axis=(1, 2)), conf)
    block = max(1, BOOT_BLOCK_VALUES // (len(a) + len(b)))
    boots = []
    for first in range(0, n_boot, block):
        m = min(block, n_boot - first)
        i = rng.integers(0, len(a), (m, len(a)))
        j = rng.integers(0, len(b), (m, len(b)))
        boots.append(_delta_rows(a[i], b[j]))
    return _percentiles(np.concatenate(boots), conf)


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


def studentized_range_sf(q: np.ndarray, k: int, df: np.ndarray, nodes: int = 64) -> np.ndarray:
    """P(Q > q) of the studentized range of ``k`` means with ``df`` degrees of freedom, vectorised
    over q and df. k = 2: exactly 2 t.sf(q / sqrt(2), df). k > 2: the range's integral
    k Int phi(z) [Phi(z) - Phi(z - q s)]^(k-1) dz averaged over s = sqrt(chi2_df / df), by
    Gauss-Legendre quadrature in s's quantiles and a fine grid in z (absolute error about 1e-5
    against scipy.stats.studentized_range, which integrates each value on its own and costs tens
    of milliseconds a value)."""
    from scipy import stats

    q = np.atleast_1d(np.asarray(q, np.float64))
    df = np.broadcast_to(np.asarray(df, np.float64), q.shape)
    out = np.full(q.shape, np.nan)
    ok = np.isfinite(q) & np.isfinite(df) & (df > 0)
    if k == 2:
        out[ok] = 2.0 * stats.t.sf(q[ok] / math.sqrt(2.0), df[ok])
        return out
    x, w = np.polynomial.legendre.leggauss(nodes)
    u, w = (x + 1) / 2, w / 2  # nodes on (0, 1)
    z = np.linspace(-8.5, 8.5, 681)
    dz = z[1] - z[0]
    phi = stats.norm.pdf(z)
    big_phi = stats.norm.cdf(z)
    for first in range(0, int(ok.sum()), 256):
        idx = np.flatnonzero(ok)[first:first + 256]
        s = np.sqrt(stats.chi2.ppf(u[None, :], df[idx, None]) / df[idx, None])  # pairs x nodes
        qs = q[idx, None] * s
        inner = np.clip(big_phi[None, None, :] - stats.norm.cdf(z[None, None, :] - qs[:, :, None]), 0, 1)
        cdf_given_s = k * np.sum(phi * inner ** (k - 1), axis=2) * dz
        out[idx] = np.clip(1.0 - np.sum(w * cdf_given_s, axis=1), 0.0, 1.0)
    return out


def games_howell(a: np.ndarray, b: np.ndarray, k: int) -> tuple[float, float, float]:
    """Games-Howell for one pair among ``k`` groups: (t, Welch df, p from the studentized range)."""
    t, df, p = games_howell_pairs([a], [b], k)
    return float(t[0]), float(df[0]), float(p[0])


def games_howell_pairs(a: Sequence[np.ndarray], b: Sequence[np.ndarray], k: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Games-Howell of each pair (a[i], b[i]) among ``k`` groups, the p-values computed together
    (`studentized_range_sf`): arrays of t, Welch df and p (NaN where a pair has no spread)."""
    ma = np.array([np.mean(x) for x in a])
    mb = np.array([np.mean(x) for x in b])
    na = np.array([len(x) for x in a], np.float64)
    nb = np.array([len(x) for x in b], np.float64)
    va = np.array([np.var(x, ddof=1) for x in a]) / na
    vb = np.array([np.var(x, ddof=1) for x in b]) / nb
    se2 = va + vb
    good = se2 > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(good, (ma - mb) / np.sqrt(se2), np.nan)
        df = np.where(good, se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)), np.nan)
    p = np.minimum(studentized_range_sf(np.abs(t) * math.sqrt(2), k, df), 1.0)
    return t, df, p


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


def resamples_for(n_boot: int, n_values: int, max_values: int | None) -> int:
    """Bootstrap resamples of an interval over ``n_values`` values: ``n_boot``, or fewer (never
    under 200) where ``n_boot x n_values`` would exceed ``max_values``."""
    if max_values is None or n_values <= 0:
        return n_boot
    return max(min(n_boot, 200), min(n_boot, max_values // n_values))


def factor_tests(sub: pd.DataFrame, value: str, factor: str, stratum: str, *, min_n: int, p_adjust: str,
                 alpha: float, n_boot: int, seed: int, normality_min_n: int = 5,
                 keep_levels: Collection[Hashable] | None = None, max_values: int | None = None) -> StratumTests:
    """Kruskal-Wallis (+ eta squared and its interval), Welch's ANOVA, Levene, Dunn, the pairwise
    effect sizes (Games-Howell, Cliff's delta, median difference) and Shapiro-Wilk per group (groups
    under ``normality_min_n`` "not assessable") of ``factor`` within one stratum.

    ``keep_levels``: the pairwise rows (Dunn, effects) only among these levels (the top and bottom
    architectures of a campaign with many), Dunn's p-values then Bonferroni-corrected over every
    pair of the stratum, so that the selection cannot make a pair look significant. ``max_values``:
    the bootstrap's budget (`resamples_for`); the row's ``resamples`` says what was used."""
    kw = kruskal_wallis(sub, value, factor, min_n)
    usable, _ = _groups(sub, value, factor, min_n)
    base = {"factor": factor, "stratum": stratum, "runs": _run_ids(sub, value)}
    lo = hi = math.nan
    resamples = resamples_for(n_boot, kw.n, max_values)
    if np.isfinite(kw.statistic):
        lo, hi = eta_squared_ci(list(usable.values()), resamples, seed)
    rows = [{**kw.as_dict(), **base, "eta_squared_ci_low": lo, "eta_squared_ci_high": hi,
             "resamples": resamples if np.isfinite(kw.statistic) else math.nan}]
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
    normal = normality_by_group(sub, value, factor, alpha, max(min_n, normality_min_n))
    normal["normal"] = [("yes" if v else "no") if isinstance(v, bool | np.bool_) else "not assessable"
                        for v in normal["normal"]]
    normal.insert(1, "stratum", stratum)
    if keep_levels is None:
        dunn = dunn_test(sub, value, factor, p_adjust, alpha, min_n)
        pairs = dunn.pairs.assign(factor=factor, stratum=stratum, p_adjust=dunn.p_adjust)
        effects = pairwise_effects(usable, factor, stratum, n_boot, seed, max_values)
    else:
        keep = set(keep_levels)
        pairs = dunn_pairs_among(sub, value, factor, keep, alpha, min_n).assign(factor=factor, stratum=stratum)
        effects = pairwise_effects({g: v for g, v in usable.items() if g in keep}, factor, stratum, n_boot, seed,
                                   max_values, k=len(usable))
    return StratumTests(rows, pairs, effects, normal)


def dunn_pairs_among(sub: pd.DataFrame, value: str, factor: str, keep: Collection[Hashable], alpha: float,
                     min_n: int) -> pd.DataFrame:
    """Dunn's pairs among the levels ``keep`` only, ranked over every usable level of the stratum
    (as `dunn_test`), the p-values Bonferroni-corrected over all k (k - 1) / 2 pairs of the
    stratum: O(n log n + kept pairs), never every pair."""
    from scipy import stats

    usable, _ = _groups(sub, value, factor, min_n)
    labels = list(usable)
    cols = ["group_a", "group_b", "n_a", "n_b", "mean_rank_a", "mean_rank_b", "z", "p_unadjusted", "p_adjusted",
            "significant", "p_adjust"]
    if len(labels) < 2:
        return pd.DataFrame(columns=cols)
    values = np.concatenate([usable[g] for g in labels])
    sizes = np.array([len(usable[g]) for g in labels])
    n_total = values.size
    ranks = stats.rankdata(values)
    group = np.repeat(np.arange(len(labels)), sizes)
    mean_ranks = np.bincount(group, weights=ranks) / sizes
    _, tie_counts = np.unique(values, return_counts=True)
    variance = n_total * (n_total + 1) / 12.0 - float(np.sum(tie_counts**3 - tie_counts)) / (12.0 * (n_total - 1))
    idx = [i for i, g in enumerate(labels) if g in keep]
    family = len(labels) * (len(labels) - 1) // 2
    rows = []
    for a_pos, i in enumerate(idx):
        for j in idx[a_pos + 1:]:
            with np.errstate(divide="ignore", invalid="ignore"):
                z = abs(mean_ranks[i] - mean_ranks[j]) / math.sqrt(variance * (1 / sizes[i] + 1 / sizes[j]))
            p = float(2.0 * stats.norm.sf(z))
            adj = min(1.0, p * family)
            rows.append({"group_a": labels[i], "group_b": labels[j], "n_a": int(sizes[i]), "n_b": int(sizes[j]),
                         "mean_rank_a": mean_ranks[i], "mean_rank_b": mean_ranks[j], "z": z, "p_unadjusted": p,
                         "p_adjusted": adj, "significant": adj < alpha,
                         "p_adjust": f"bonferroni over all {family} pairs"})
    return pd.DataFrame(rows, columns=cols)


def pairwise_effects(usable: dict[Hashable, np.ndarray], factor: str, stratum: str, n_boot: int,
                     seed: int, max_values: int | None = None, k: int | None = None) -> pd.DataFrame:
    """Per pair of groups: median difference, Cliff's delta with its interval, Games-Howell (among
    ``k`` groups: default, the groups given)."""
    labels = list(usable)
    pairs = [(ga, gb) for i, ga in enumerate(labels) for gb in labels[i + 1:]]
    if not pairs:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    t, df, p = games_howell_pairs([usable[a] for a, _ in pairs], [usable[b] for _, b in pairs],
                                  k if k is not None else len(labels))
    rows = []
    for (ga, gb), ti, di, pi in zip(pairs, t, df, p, strict=True):
        a, b = usable[ga], usable[gb]
        lo, hi = cliffs_delta_ci(a, b, resamples_for(n_boot, len(a) + len(b), max_values), seed)
        rows.append({"factor": factor, "stratum": stratum, "group_a": ga, "group_b": gb, "n_a": len(a),
                     "n_b": len(b), "median_diff": float(np.median(a) - np.median(b)),
                     "cliffs_delta": cliffs_delta(a, b), "cliffs_delta_ci_low": lo, "cliffs_delta_ci_high": hi,
                     "games_howell_t": float(ti), "games_howell_df": float(di), "games_howell_p": float(pi)})
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
    "dunn_pairs_among",
    "eta_squared_ci",
    "factor_tests",
    "games_howell",
    "games_howell_pairs",
    "is_balanced",
    "pairwise_effects",
    "per_architecture",
    "present_factors",
    "resamples_for",
    "seed_spread",
    "StratumTests",
    "strata",
    "studentized_range_sf",
    "welch_anova",
]
