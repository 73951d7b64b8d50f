"""analysis.stats against scipy and scikit-posthocs on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.stats import (
    adjust_pvalues,
    analyze_factor,
    dunn_test,
    energy_per_image_j,
    kruskal_table,
    kruskal_wallis,
    levene_test,
    normality_by_group,
    power_source_counts,
    spearman_correlations,
)


@pytest.fixture
def grouped() -> pd.DataFrame:
    """Four groups of unequal size with ties inside and across groups, plus NaNs."""
    rng = np.random.default_rng(3)
    rows = []
    for g, (n, loc) in {"a100": (12, 1.0), "h100": (9, 1.4), "v100": (15, 1.1), "t4": (7, 2.0)}.items():
        vals = np.round(rng.normal(loc, 0.3, n), 1)  # rounding creates ties
        rows += [{"gpu_type": g, "energy": v} for v in vals]
    rows += [{"gpu_type": "a100", "energy": math.nan}, {"gpu_type": "h100", "energy": math.nan}]
    return pd.DataFrame(rows)


def _groups(df: pd.DataFrame) -> dict[str, np.ndarray]:
    d = df.dropna()
    return {g: d.loc[d.gpu_type == g, "energy"].to_numpy() for g in sorted(d.gpu_type.unique())}


def test_energy_per_image_uses_all_images_processed() -> None:
    runs = pd.DataFrame({"energy_j": [1000.0, 500.0, 1.0], "train_images": [100, 50, 0], "epochs": [4, 2, 3]})
    out = energy_per_image_j(runs)
    assert out.iloc[0] == pytest.approx(1000 / 400)
    assert out.iloc[1] == pytest.approx(500 / 100)
    assert math.isnan(out.iloc[2])


def test_shapiro_per_group_equals_scipy(grouped: pd.DataFrame) -> None:
    table = normality_by_group(grouped, "energy", "gpu_type")
    for g, vals in _groups(grouped).items():
        row = table.set_index("group").loc[g]
        ref = stats.shapiro(vals)
        assert row["n"] == len(vals)
        assert row["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
        assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert row["normal"] == (ref.pvalue >= 0.05)


def test_shapiro_marks_small_and_constant_groups() -> None:
    df = pd.DataFrame({"f": ["x", "x", "y", "y", "y"], "v": [1.0, 2.0, 5.0, 5.0, 5.0]})
    table = normality_by_group(df, "v", "f").set_index("group")
    assert "too few" in table.loc["x", "note"] and math.isnan(table.loc["x", "p_value"])
    assert table.loc["y", "note"] == "all values equal"
    assert table.loc["x", "normal"] is pd.NA


@pytest.mark.parametrize("center", ["median", "mean"])
def test_levene_equals_scipy(grouped: pd.DataFrame, center: str) -> None:
    res = levene_test(grouped, "energy", "gpu_type", center=center)
    ref = stats.levene(*_groups(grouped).values(), center=center)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res.k, res.n) == (4, 43)


def test_kruskal_and_eta_squared_equal_scipy(grouped: pd.DataFrame) -> None:
    res = kruskal_wallis(grouped, "energy", "gpu_type")
    groups = _groups(grouped)
    ref = stats.kruskal(*groups.values())
    n, k = sum(map(len, groups.values())), len(groups)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.eta_squared == pytest.approx((ref.statistic - k + 1) / (n - k), rel=1e-12)
    assert (res.k, res.n) == (k, n)


def test_kruskal_leaves_out_small_groups_and_says_so(grouped: pd.DataFrame) -> None:
    df = pd.concat([grouped, pd.DataFrame({"gpu_type": ["p100", "p100"], "energy": [9.0, 9.5]})])
    res = kruskal_wallis(df, "energy", "gpu_type", min_n=3)
    assert res.skipped == {"p100": 2}
    assert res.statistic == pytest.approx(stats.kruskal(*_groups(grouped).values()).statistic)
    assert "p100 (n=2)" in res.as_dict()["skipped"]


def test_kruskal_with_one_group_is_marked_not_computed() -> None:
    df = pd.DataFrame({"f": ["x"] * 5 + ["y"], "v": np.arange(6.0)})
    res = kruskal_wallis(df, "v", "f")
    assert math.isnan(res.p_value) and "qualify" in res.note


def test_kruskal_table_one_row_per_factor(grouped: pd.DataFrame) -> None:
    df = grouped.dropna().assign(epochs=lambda d: np.tile([4, 12, 36], len(d))[: len(d)])
    table = kruskal_table(df, "energy", ["gpu_type", "epochs", "not_a_column"])
    assert list(table["factor"]) == ["gpu_type", "epochs"]
    assert {"statistic", "p_value", "eta_squared", "k", "n", "skipped", "note"} <= set(table.columns)


@pytest.mark.parametrize("p_adjust", ["holm", "bonferroni", "fdr_bh", None])
def test_dunn_equals_scikit_posthocs(grouped: pd.DataFrame, p_adjust: str | None) -> None:
    res = dunn_test(grouped, "energy", "gpu_type", p_adjust=p_adjust, min_n=1)
    ref = sp.posthoc_dunn(grouped.dropna(), val_col="energy", group_col="gpu_type", p_adjust=p_adjust)
    ref = ref.loc[res.pvalues.index, res.pvalues.columns]
    np.testing.assert_allclose(res.pvalues.to_numpy(), ref.to_numpy(), rtol=1e-12, atol=1e-15)


def test_dunn_with_numeric_levels_and_heavy_ties_equals_scikit_posthocs() -> None:
    rng = np.random.default_rng(11)
    df = pd.DataFrame({"epochs": np.repeat([4, 12, 36, 108], 10), "e": rng.integers(0, 6, 40).astype(float)})
    res = dunn_test(df, "e", "epochs")
    ref = sp.posthoc_dunn(df, val_col="e", group_col="epochs", p_adjust="holm")
    assert list(res.pvalues.index) == [4, 12, 36, 108]
    np.testing.assert_allclose(
        res.pvalues.to_numpy(), ref.loc[[4, 12, 36, 108], [4, 12, 36, 108]].to_numpy(), rtol=1e-12
    )


def test_dunn_pairs_table_is_consistent(grouped: pd.DataFrame) -> None:
    res = dunn_test(grouped, "energy", "gpu_type", p_adjust="bonferroni")
    assert len(res.pairs) == 6
    row = res.pairs.iloc[0]
    assert res.pvalues.loc[row.group_a, row.group_b] == pytest.approx(row.p_adjusted)
    assert row.p_adjusted == pytest.approx(min(1.0, 6 * row.p_unadjusted))
    assert (res.pairs["significant"] == (res.pairs["p_adjusted"] < 0.05)).all()
    assert np.all(np.diag(res.pvalues.to_numpy()) == 1.0)


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_adjust_pvalues_equals_statsmodels(method: str) -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001, 0.04, 0.9, 0.5])
    np.testing.assert_allclose(adjust_pvalues(p, method), multipletests(p, method=method)[1], rtol=1e-12)


def test_adjust_pvalues_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="holm"):
        adjust_pvalues([0.1], "tukey")


def test_analyze_factor_bundles_everything(grouped: pd.DataFrame) -> None:
    res = analyze_factor(grouped, "energy", "gpu_type", p_adjust="bonferroni")
    assert len(res.normality) == 4
    assert res.levene.k == res.kruskal.k == 4
    assert res.dunn.p_adjust == "bonferroni"


def _runs() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 30
    util = rng.uniform(20, 95, n)
    params = rng.integers(1_000_000, 30_000_000, n)
    return pd.DataFrame(
        {
            "gpu_type": np.repeat(["a100", "h100"], n // 2),
            "gpu_util_mean": np.where(np.arange(n) % 7 == 0, np.nan, util),
            "mean_power_w": 50 + 2.5 * util + rng.normal(0, 10, n),
            "params": params,
            "flops": params * 30 + rng.integers(0, 10_000_000, n),
            "energy_j": 1e-3 * params + rng.normal(0, 500, n) + 5e4,
            "train_images": 40_000,
            "epochs": rng.choice([4, 12], n),
        }
    )


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_spearman_equals_scipy(alternative: str) -> None:
    runs = _runs()
    table = spearman_correlations(runs, alternative=alternative)
    per_image = runs["energy_j"] / (runs["train_images"] * runs["epochs"])
    refs = {
        ("gpu_util_mean", "energy_per_image_j"): (runs["gpu_util_mean"], per_image),
        ("gpu_util_mean", "mean_power_w"): (runs["gpu_util_mean"], runs["mean_power_w"]),
        ("params", "energy_per_image_j"): (runs["params"], per_image),
        ("flops", "energy_per_image_j"): (runs["flops"], per_image),
    }
    for (x, y), (xs, ys) in refs.items():
        ok = xs.notna() & ys.notna()
        ref = stats.spearmanr(xs[ok], ys[ok], alternative=alternative)
        row = table[(table.x == x) & (table.y == y)].iloc[0]
        assert row["n"] == ok.sum()
        assert row["rho"] == pytest.approx(ref.statistic, rel=1e-12)
        assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_spearman_skips_pairs_with_too_few_values_and_missing_columns() -> None:
    runs = _runs().drop(columns=["flops"])
    runs["gpu_util_mean"] = np.nan
    runs.loc[:1, "gpu_util_mean"] = [10.0, 20.0]
    table = spearman_correlations(runs).set_index(["x", "y"])
    assert "too few" in table.loc[("gpu_util_mean", "mean_power_w"), "note"]
    assert table.loc[("gpu_util_mean", "mean_power_w"), "n"] == 2
    assert "missing" in table.loc[("flops", "energy_per_image_j"), "note"]
    assert not math.isnan(table.loc[("params", "energy_per_image_j"), "rho"])


def test_spearman_by_group() -> None:
    runs = _runs()
    table = spearman_correlations(runs, [("params", "energy_j")], by="gpu_type")
    assert list(table["gpu_type"]) == ["a100", "h100"]
    sub = runs[runs.gpu_type == "h100"]
    assert table.iloc[1]["rho"] == pytest.approx(stats.spearmanr(sub.params, sub.energy_j).statistic)


def test_power_sources_refuse_mixing_unless_told() -> None:
    runs = pd.DataFrame({"power_source": ["nvml", "nvml", "simulated"]})
    with pytest.raises(ValueError, match="allow_mixed"):
        power_source_counts(runs)
    assert power_source_counts(runs, allow_mixed=True) == {"nvml": 2, "simulated": 1}
    assert power_source_counts(runs.iloc[:2]) == {"nvml": 2}


def test_power_kinds_agree_with_the_database_and_label_figures_honestly() -> None:
    from analysis.figures import SIMULATED, source_label
    from analysis.stats import power_kind

    assert [power_kind(s) for s in ("nvml", "rapl", "simulated", "unknown", "codecarbon")] == [
        "measured", "measured", "simulated", "unknown", "unknown"]
    assert source_label(["simulated"]) == SIMULATED
    assert source_label(["nvml"]) == "measured power (nvml)"
    # a run without a known meter is not called measured
    assert source_label(["nvml", "unknown"]) == "measured power (nvml); power of unknown source (unknown)"
    assert source_label(["simulated", "unknown"]).startswith("MIXED power sources")
