"""Statistics of the architecture-and-environment study (003), over plain DataFrames.

Energy is compared per training image (003 normalizes the total energy by the images processed
during training). Per factor: Shapiro-Wilk per group and Levene across groups (the assumptions of
a parametric test, which such data usually break), then Kruskal-Wallis with its effect size
eta squared = (H - k + 1) / (n - k), Dunn's post-hoc test with a p-value correction (Holm by
default), and Spearman rank correlations.

The numbers are scipy's (Shapiro-Wilk, Levene, Kruskal-Wallis, Spearman) and equal
scikit-posthocs' ``posthoc_dunn`` for Dunn's test (tests check both). Groups with fewer values
than a test needs are left out and named in the result instead of yielding a meaningless p-value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.settings import MIN_GROUP_SIZE, PAdjust

#: Values of ``power_source`` that are not measurements.
SIMULATED_SOURCES = frozenset({"simulated"})


def power_kind(source: object) -> str:
    """``measured`` (a hardware meter, ``db.views.MEASURED_SOURCES``), ``simulated`` or ``unknown``:
    the ``power_kind`` of ``run_summary``, for a run's ``power_source``."""
    from db.views import MEASURED_SOURCES

    name = str(source)
    if name in SIMULATED_SOURCES:
        return "simulated"
    return "measured" if name in MEASURED_SOURCES else "unknown"


#: `PAdjust`'s values, as `adjust_pvalues` accepts them.
P_ADJUST_METHODS = tuple(m.value for m in PAdjust)

#: (x, y) column pairs of the default Spearman table, as 003: energy and power against GPU
#: utilization, energy against parameters and FLOPs (energy normalized per training image).
DEFAULT_SPEARMAN_PAIRS: tuple[tuple[str, str], ...] = (
    ("gpu_util_mean", "energy_per_image_j"),
    ("gpu_util_mean", "mean_power_w"),
    ("params", "energy_per_image_j"),
    ("flops", "energy_per_image_j"),
)


# --------------------------------------------------------------------------------------------
# Preparation


def images_per_epoch(runs: pd.DataFrame, convention: str = "training", batch_size: int = 256,
                     valid_images: int = 10_000) -> pd.Series:
    """Images one epoch counts (``analysis.images_per_epoch``).

    ``training``: the run's ``train_images``. ``processed`` (003's convention): every image the
    epoch processed, training and validation passes, each in whole batches (drop-remainder):
    ``floor(train / b) x b + floor(valid / b) x b`` with the run's ``batch_size`` and
    ``valid_images`` columns where present, else the given values. 003's Chesslive runs: 23,807
    training and 10,203 validation images at batch 32 make 23,776 + 10,176 = 33,952 per epoch.
    """
    train = runs["train_images"].astype("float64")
    if convention == "training":
        return train.rename("images_per_epoch")
    if convention != "processed":
        raise ValueError(f"images per epoch convention must be training or processed, not {convention!r}")
    b = runs["batch_size"].astype("float64") if "batch_size" in runs.columns else pd.Series(
        float(batch_size), index=runs.index)
    valid = runs["valid_images"].astype("float64") if "valid_images" in runs.columns else pd.Series(
        float(valid_images), index=runs.index)
    b = b.where(b > 0)
    return (np.floor(train / b) * b + np.floor(valid / b) * b).rename("images_per_epoch")


def energy_per_image_j(runs: pd.DataFrame, images: str = "training", batch_size: int = 256,
                       valid_images: int = 10_000) -> pd.Series:
    """Energy per image (J): ``energy_j / (images per epoch x epochs)``; NaN where undefined.

    ``images``: `images_per_epoch`'s convention: ``training`` (the run's ``train_images``, the
    training images seen once per epoch) or ``processed`` (003: training and validation passes in
    whole batches), so the denominator is every image counted over the run's epochs.
    """
    missing = {"energy_j", "train_images", "epochs"} - set(runs.columns)
    if missing:
        raise ValueError(f"runs lack column(s) {sorted(missing)} needed for energy per image")
    per_epoch = images_per_epoch(runs, images, batch_size, valid_images)
    total = per_epoch * runs["epochs"].astype("float64")
    out = runs["energy_j"].astype("float64") / total.where(total > 0)
    return out.rename("energy_per_image_j")


def with_energy_per_image(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``runs`` with an ``energy_per_image_j`` column."""
    out = runs.copy()
    out["energy_per_image_j"] = energy_per_image_j(runs)
    return out


def power_source_counts(runs: pd.DataFrame, allow_mixed: bool = False) -> dict[str, int]:
    """Runs per ``power_source``; raises ValueError if simulated and measured power are mixed.

    Pass ``allow_mixed=True`` to accept the mixture (the counts then say what each number rests on).
    """
    if "power_source" not in runs.columns:
        raise ValueError("runs lack a power_source column; cannot tell measured from simulated power")
    counts = {str(k): int(v) for k, v in runs["power_source"].fillna("unknown").value_counts().items()}
    simulated = {k for k in counts if power_kind(k) == "simulated"}
    measured = counts.keys() - simulated  # unknown sources included: nothing is pooled with simulated power
    if simulated and measured and not allow_mixed:
        raise ValueError(
            f"runs mix simulated ({sorted(simulated)}) and measured ({sorted(measured)}) power: {counts}; "
            "filter to one kind, or pass allow_mixed=True to analyse them together"
        )
    return counts


def _groups(
    df: pd.DataFrame, value: str, factor: str, min_n: int
) -> tuple[dict[Hashable, np.ndarray], dict[Hashable, int]]:
    """Non-NaN values per level of ``factor`` (levels sorted), split into usable and too small."""
    for col in (value, factor):
        if col not in df.columns:
            raise ValueError(f"no column {col!r}; columns are {sorted(map(str, df.columns))}")
    vals_all = pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=np.float64)
    keys = df[factor]
    keep = ~np.isnan(vals_all) & keys.notna().to_numpy()
    codes, levels = pd.factorize(keys[keep], sort=False)
    vals_all = vals_all[keep]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(levels) + 1))
    usable: dict[Hashable, np.ndarray] = {}
    skipped: dict[Hashable, int] = {}
    for c in sorted(range(len(levels)), key=lambda i: _sort_key(levels[i])):
        vals = vals_all[order[bounds[c]:bounds[c + 1]]]
        level = levels[c].item() if isinstance(levels[c], np.generic) else levels[c]
        if len(vals) >= min_n:
            usable[level] = vals
        else:
            skipped[level] = len(vals)
    return usable, skipped


def _sort_key(level: Any) -> tuple[int, Any]:
    # numbers in numeric order, then everything else by its text
    if isinstance(level, int | float | np.integer | np.floating):
        return (0, float(level))
    return (1, str(level))


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class GroupTestResult:
    """One test across the groups of a factor."""

    test: str
    value: str
    factor: str
    statistic: float
    p_value: float
    k: int  # groups used
    n: int  # values used
    skipped: dict[Any, int] = field(default_factory=dict)  # group -> its size, too small to use
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A flat row for a table (``skipped`` as text)."""
        row = asdict(self)
        row["skipped"] = ", ".join(f"{g} (n={n})" for g, n in self.skipped.items())
        return row


@dataclass(frozen=True)
class KruskalResult(GroupTestResult):
    """Kruskal-Wallis H (tie-corrected, as scipy) with eta squared = (H - k + 1) / (n - k)."""

    eta_squared: float = math.nan


@dataclass(frozen=True)
class DunnResult:
    """Dunn's test: the square matrix of adjusted p-values and one row per pair."""

    value: str
    factor: str
    p_adjust: str
    pvalues: pd.DataFrame  # groups x groups, adjusted p-values, 1 on the diagonal
    pairs: (
        pd.DataFrame
    )  # group_a, group_b, n_a, n_b, mean_rank_a, mean_rank_b, z, p_unadjusted, p_adjusted, significant
    skipped: dict[Any, int] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class FactorAnalysis:
    """Everything 003 reports for one dependent variable across one factor."""

    normality: pd.DataFrame
    levene: GroupTestResult
    kruskal: KruskalResult
    dunn: DunnResult


# --------------------------------------------------------------------------------------------
# Assumption tests


def normality_by_group(
    df: pd.DataFrame, value: str, factor: str, alpha: float = 0.05, min_n: int = MIN_GROUP_SIZE
) -> pd.DataFrame:
    """Shapiro-Wilk W and p per level of ``factor`` (scipy.stats.shapiro).

    Columns: factor, group, n, statistic, p_value, normal (p >= alpha; NA when untested), note.
    Groups with fewer than ``max(min_n, 3)`` values or constant values get NaN and a note.
    """
    from scipy import stats

    usable, skipped = _groups(df, value, factor, 1)
    rows = []
    for level, vals in usable.items():
        note, w, p = "", math.nan, math.nan
        if len(vals) < max(min_n, 3):
            note = f"too few values (n={len(vals)} < {max(min_n, 3)})"
        elif np.ptp(vals) == 0:
            note = "all values equal"
        else:
            res = stats.shapiro(vals)
            w, p = float(res.statistic), float(res.pvalue)
        rows.append(
            {
                "factor": factor,
                "group": level,
                "n": len(vals),
                "statistic": w,
                "p_value": p,
                "normal": pd.NA if math.isnan(p) else bool(p >= alpha),
                "note": note,
            }
        )
    del skipped  # _groups with min_n=1 skips nothing
    return pd.DataFrame(rows, columns=["factor", "group", "n", "statistic", "p_value", "normal", "note"])


def levene_test(
    df: pd.DataFrame, value: str, factor: str, center: str = "median", min_n: int = MIN_GROUP_SIZE
) -> GroupTestResult:
    """Levene's test of equal variances across the levels of ``factor`` (scipy.stats.levene).

    ``center="median"`` (scipy's default, the Brown-Forsythe variant, robust to the skewed data
    003 found) or ``"mean"`` (Levene's original). NaN with a note when fewer than 2 groups qualify.
    """
    from scipy import stats

    usable, skipped = _groups(df, value, factor, min_n)
    n = sum(len(v) for v in usable.values())
    if len(usable) < 2:
        return GroupTestResult(
            "levene",
            value,
            factor,
            math.nan,
            math.nan,
            len(usable),
            n,
            skipped,
            _too_few_groups(usable, min_n),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.levene(*usable.values(), center=center)
    note = "" if np.isfinite(res.statistic) else "undefined (no spread within groups)"
    return GroupTestResult(
        "levene", value, factor, float(res.statistic), float(res.pvalue), len(usable), n, skipped, note
    )


def _too_few_groups(usable: dict[Hashable, np.ndarray], min_n: int) -> str:
    return f"needs 2 groups with at least {min_n} values each, {len(usable)} qualify"


# --------------------------------------------------------------------------------------------
# Kruskal-Wallis and Dunn


def kruskal_wallis(df: pd.DataFrame, value: str, factor: str, min_n: int = MIN_GROUP_SIZE) -> KruskalResult:
    """Kruskal-Wallis H test across the levels of ``factor`` (scipy.stats.kruskal) with eta squared.

    eta squared = (H - k + 1) / (n - k) with k groups and n values (the effect size 003 reports).
    Groups with fewer than ``min_n`` values are left out and listed in ``skipped``.
    """
    from scipy import stats

    usable, skipped = _groups(df, value, factor, min_n)
    k = len(usable)
    n = sum(len(v) for v in usable.values())
    if k < 2:
        return KruskalResult(
            "kruskal", value, factor, math.nan, math.nan, k, n, skipped, _too_few_groups(usable, min_n)
        )
    if np.ptp(np.concatenate(list(usable.values()))) == 0:
        return KruskalResult("kruskal", value, factor, math.nan, math.nan, k, n, skipped, "all values equal")
    res = stats.kruskal(*usable.values())
    h = float(res.statistic)
    eta = (h - k + 1) / (n - k) if n > k else math.nan
    return KruskalResult("kruskal", value, factor, h, float(res.pvalue), k, n, skipped, "", eta_squared=eta)


def adjust_pvalues(p_values: Sequence[float] | np.ndarray, method: str | None = "holm") -> np.ndarray:
    """Family-wise or false-discovery-rate adjusted p-values (as statsmodels' multipletests).

    ``holm`` (step-down), ``bonferroni``, ``fdr_bh`` (Benjamini-Hochberg) or ``none``/None.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    method = "none" if method is None else method.lower()
    if method not in P_ADJUST_METHODS:
        raise ValueError(f"unknown p-value correction {method!r}; choose one of {P_ADJUST_METHODS}")
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="mergesort")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
    else:  # fdr_bh
        adj = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def dunn_test(
    df: pd.DataFrame,
    value: str,
    factor: str,
    p_adjust: str | None = "holm",
    alpha: float = 0.05,
    min_n: int = MIN_GROUP_SIZE,
) -> DunnResult:
    """Dunn's pairwise test of mean ranks after Kruskal-Wallis, with tie correction.

    z_ij = |R_i - R_j| / sqrt((N(N+1)/12 - T) (1/n_i + 1/n_j)), T = sum(t^3 - t) / (12 (N - 1))
    over tied values, p = 2 (1 - Phi(|z|)), then corrected over all pairs with ``p_adjust``
    (`adjust_pvalues`). Ranks are taken over the groups used; groups smaller than ``min_n`` are
    left out. Equals ``scikit_posthocs.posthoc_dunn`` on the same groups.
    """
    from scipy import stats

    method = "none" if p_adjust is None else p_adjust
    usable, skipped = _groups(df, value, factor, min_n)
    labels = list(usable)
    pair_cols = [
        "group_a", "group_b", "n_a", "n_b", "mean_rank_a", "mean_rank_b", "z", "p_unadjusted", "p_adjusted", "significant",
    ]  # fmt: skip
    if len(labels) < 2:
        return DunnResult(
            value, factor, method, pd.DataFrame(index=labels, columns=labels, dtype=float),
            pd.DataFrame(columns=pair_cols), skipped, _too_few_groups(usable, min_n),
        )  # fmt: skip
    values = np.concatenate([usable[g] for g in labels])
    sizes = np.array([len(usable[g]) for g in labels])
    n_total = values.size
    ranks = stats.rankdata(values)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    mean_ranks = np.array([ranks[bounds[i] : bounds[i + 1]].mean() for i in range(len(labels))])
    _, tie_counts = np.unique(values, return_counts=True)
    tie_term = float(np.sum(tie_counts**3 - tie_counts)) / (12.0 * (n_total - 1))
    variance = n_total * (n_total + 1) / 12.0 - tie_term

    ii, jj = np.triu_indices(len(labels), k=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(mean_ranks[ii] - mean_ranks[jj]) / np.sqrt(variance * (1.0 / sizes[ii] + 1.0 / sizes[jj]))
    p_raw = 2.0 * stats.norm.sf(z)
    p_adj = adjust_pvalues(p_raw, method)

    matrix = np.ones((len(labels), len(labels)))
    matrix[ii, jj] = p_adj
    matrix[jj, ii] = p_adj
    pvalues = pd.DataFrame(matrix, index=pd.Index(labels, name=factor), columns=pd.Index(labels, name=factor))
    pairs = pd.DataFrame(
        {
            "group_a": [labels[i] for i in ii],
            "group_b": [labels[j] for j in jj],
            "n_a": sizes[ii],
            "n_b": sizes[jj],
            "mean_rank_a": mean_ranks[ii],
            "mean_rank_b": mean_ranks[jj],
            "z": z,
            "p_unadjusted": p_raw,
            "p_adjusted": p_adj,
            "significant": p_adj < alpha,
        },
        columns=pair_cols,
    )
    return DunnResult(value, factor, method, pvalues, pairs, skipped)


def analyze_factor(
    df: pd.DataFrame,
    value: str,
    factor: str,
    p_adjust: str | None = "holm",
    alpha: float = 0.05,
    min_n: int = MIN_GROUP_SIZE,
) -> FactorAnalysis:
    """Shapiro-Wilk per group, Levene, Kruskal-Wallis with eta squared and Dunn for one factor."""
    return FactorAnalysis(
        normality=normality_by_group(df, value, factor, alpha, min_n),
        levene=levene_test(df, value, factor, min_n=min_n),
        kruskal=kruskal_wallis(df, value, factor, min_n),
        dunn=dunn_test(df, value, factor, p_adjust, alpha, min_n),
    )


def kruskal_table(
    df: pd.DataFrame,
    value: str,
    factors: Iterable[str] = ("arch_hash", "gpu_type", "epochs"),
    min_n: int = MIN_GROUP_SIZE,
) -> pd.DataFrame:
    """One Kruskal-Wallis row (H, p, eta squared, k, n, skipped groups, note) per factor present in ``df``."""
    rows = [kruskal_wallis(df, value, f, min_n).as_dict() for f in factors if f in df.columns]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Correlation


def spearman_correlations(
    runs: pd.DataFrame,
    pairs: Iterable[tuple[str, str]] = DEFAULT_SPEARMAN_PAIRS,
    by: str | None = None,
    min_n: int = MIN_GROUP_SIZE,
    alternative: str = "two-sided",
) -> pd.DataFrame:
    """Spearman's rho and p (scipy.stats.spearmanr) for each (x, y) column pair, optionally per ``by``.

    Rows with NaN in x or y are dropped pair by pair; a pair with fewer than ``min_n`` complete
    rows, a constant column or a missing column gets NaN and a note. ``energy_per_image_j`` is
    computed when absent. ``alternative``: "two-sided" (default), or "greater"/"less" for the
    one-sided test 003 used. Columns: [by,] x, y, n, rho, p_value, note.
    """
    from scipy import stats

    df = runs
    if "energy_per_image_j" not in df.columns and {"energy_j", "train_images", "epochs"} <= set(df.columns):
        df = with_energy_per_image(df)
    groups: list[tuple[Any, pd.DataFrame]] = [(None, df)] if by is None else list(df.groupby(by, sort=True))
    rows = []
    for level, sub in groups:
        for x, y in pairs:
            row: dict[str, Any] = {} if by is None else {by: level}
            row.update({"x": x, "y": y, "n": 0, "rho": math.nan, "p_value": math.nan, "note": ""})
            missing = [c for c in (x, y) if c not in sub.columns]
            if missing:
                row["note"] = f"column(s) {missing} missing"
                rows.append(row)
                continue
            both = sub[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
            row["n"] = len(both)
            if len(both) < min_n:
                row["note"] = f"too few values (n={len(both)} < {min_n})"
            elif both[x].nunique() < 2 or both[y].nunique() < 2:
                row["note"] = "constant values"
            else:
                res = stats.spearmanr(both[x], both[y], alternative=alternative)
                row["rho"], row["p_value"] = float(res.statistic), float(res.pvalue)
            rows.append(row)
    cols = ([by] if by else []) + ["x", "y", "n", "rho", "p_value", "note"]
    return pd.DataFrame(rows, columns=cols)


__all__ = [
    "DEFAULT_SPEARMAN_PAIRS",
    "MIN_GROUP_SIZE",
    "P_ADJUST_METHODS",
    "DunnResult",
    "PAdjust",
    "FactorAnalysis",
    "KruskalResult",
    "GroupTestResult",
    "adjust_pvalues",
    "analyze_factor",
    "dunn_test",
    "energy_per_image_j",
    "images_per_epoch",
    "kruskal_table",
    "kruskal_wallis",
    "levene_test",
    "normality_by_group",
    "power_source_counts",
    "spearman_correlations",
    "with_energy_per_image",
]
