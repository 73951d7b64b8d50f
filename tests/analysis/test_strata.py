"""Tests within strata, one value per architecture, effect sizes with intervals, tiny groups not
assessed, no circular correlation on simulated power, extrapolation flagged."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.report import AnalysisSettings, analyze, write_report
from analysis.stats import kruskal_wallis
from analysis.strata import (
    cliffs_delta,
    cliffs_delta_ci,
    design_table,
    eta_squared_ci,
    factor_tests,
    games_howell,
    welch_anova,
)
from tests.analysis.test_report import FAST, SPECS, make_campaign


def _runs(cells: list[tuple[str, int, int]], per_image: dict[int, float], seed: int = 1) -> pd.DataFrame:
    """Runs of (architecture, budget, count) whose energy per image depends on the budget only."""
    rng = np.random.default_rng(seed)
    rows = []
    for arch, budget, count in cells:
        for _ in range(count):
            j = per_image[budget] * (1 + rng.normal(0, 0.05)) * 1000 * budget
            rows.append({"arch_hash": arch, "epochs": budget, "gpu_type": "v100", "power_source": "nvml",
                         "energy_j": j, "duration_s": 100.0, "train_images": 1000})
    df = pd.DataFrame(rows)
    df["run_id"] = range(len(df))
    return df


def test_a_budget_effect_is_not_an_architecture_effect_within_strata() -> None:
    # architecture a ran mostly at the dear budget, b mostly at the cheap one; architectures do not differ
    runs = _runs([("a", 8, 9), ("a", 1, 3), ("b", 8, 3), ("b", 1, 9)], {1: 1.0, 8: 3.0})
    report = analyze(runs, settings={"factors": ["arch_hash", "epochs"], "bootstrap": 200})
    per_image = report.runs
    pooled = kruskal_wallis(per_image, "energy_per_image_j", "arch_hash")
    assert pooled.p_value < 0.05  # the pooled test would call the budget effect an architecture effect
    t = report.tables["group_tests"]
    arch = t[(t["factor"] == "arch_hash") & (t["test"] == "kruskal")]
    assert set(arch["stratum"]) == {"epochs=1", "epochs=8"}  # unbalanced: no pooled row
    assert (arch["p_value"] > 0.05).all(), arch
    assert arch["runs"].str.split().map(len).sum() == len(runs)  # the runs each test rests on
    assert {"eta_squared_ci_low", "eta_squared_ci_high"} <= set(t.columns)
    assert (report.tables["design"]["balance"] == "unbalanced").all()
    page = report.markdown()
    for word in ("## Design", "Welch", "Games-Howell", "Cliff"):
        assert word in page


def test_a_balanced_design_has_a_pooled_row_beside_the_strata() -> None:
    runs = _runs([(a, b, 3) for a in "ab" for b in (1, 8)], {1: 1.0, 8: 3.0})
    design = design_table(runs, ["arch_hash", "epochs", "gpu_type"]).set_index("factor")
    assert design.loc["arch_hash", "levels"] == "a, b" and design.loc["epochs", "runs_per_cell"] == "3"
    assert (design["balance"] == "balanced").all()
    t = analyze(runs, settings={"factors": ["arch_hash", "epochs"], "bootstrap": 200}).tables["group_tests"]
    kw = t[(t["factor"] == "epochs") & (t["test"] == "kruskal")].set_index("stratum")
    assert set(kw.index) == {"all", "arch_hash=a", "arch_hash=b"}
    assert kw.loc["all", "eta_squared"] > 0.5 and 0.3 < kw.loc["all", "eta_squared_ci_low"] <= kw.loc[
        "all", "eta_squared_ci_high"]


def test_architecture_properties_use_one_value_per_architecture() -> None:
    runs = _runs([("a", 1, 4), ("b", 1, 4)], {1: 1.0, 8: 1.0})
    runs["params"] = runs["arch_hash"].map({"a": 1e6, "b": 2e6})
    runs["flops"] = runs["params"] * 10
    sp = analyze(runs, settings={"bootstrap": 200}).tables["spearman"]
    arch = sp[sp["x"].isin(["params", "flops"])]
    assert len(arch) and (arch["n"] == 2).all() and arch["p_value"].isna().all()
    assert (arch["unit"] == "architecture (median over seeds)").all()


def test_a_simulated_campaign_reports_no_circular_correlation(tmp_path: Path) -> None:
    store, info = make_campaign(f"sqlite:///{tmp_path / 's.db'}", tmp_path, "sim", 2, (1, 2), ("cpu",), 2)
    files = write_report(store, info, tmp_path / "r", AnalysisSettings.from_mapping({**FAST, "bootstrap": 200}),
                         SPECS)
    sp = pd.read_csv(files.folder / "tables" / "spearman.csv")
    assert not sp["x"].str.startswith("gpu_util").any()
    assert (sp.loc[sp["x"].isin(["params", "flops"]), "n"] <= 2).all()
    page = files.page.read_text()
    assert "circular" in page and "extrapolation" in page
    preds = pd.read_csv(files.folder / "tables" / "surrogate_predictions.csv")
    far = preds[preds["epochs"] == 108]
    assert far["extrapolation"].all() and (far["budget_ratio_to_nearest"] == 54).all()
    sw = pd.read_csv(files.folder / "tables" / "shapiro_wilk.csv")
    assert not sw.loc[sw["n"] < 5, "normal"].astype(str).str.lower().isin(["true", "yes", "1"]).any()


def test_shapiro_on_tiny_groups_is_not_assessable() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"f": ["x"] * 4 + ["y"] * 8, "v": rng.normal(size=12)})
    res = factor_tests(df, "v", "f", "all", min_n=3, p_adjust="holm", alpha=0.05, n_boot=200, seed=0)
    sw = res.normality.set_index("group")
    assert sw.loc["x", "normal"] == "not assessable" and sw.loc["y", "normal"] in ("yes", "no")


def test_welch_and_games_howell_equal_welch_t_for_two_groups() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 12), rng.normal(0.8, 2, 9)
    ref = stats.ttest_ind(a, b, equal_var=False)
    f, d1, _, p = welch_anova([a, b])
    assert f == pytest.approx(ref.statistic**2) and d1 == 1 and p == pytest.approx(ref.pvalue)
    t, _, p_gh = games_howell(a, b, 2)
    assert t == pytest.approx(ref.statistic) and p_gh == pytest.approx(ref.pvalue, rel=1e-6)
    assert cliffs_delta(np.array([2.0, 3.0]), np.array([1.0, 2.0])) == pytest.approx(0.75)
    lo, hi = eta_squared_ci([a, b], 200, 0)
    assert lo <= hi


def test_cliffs_delta_interval_covers_a_known_effect_about_95_percent() -> None:
    shift, n, reps = 0.8, 25, 200
    truth = 2 * stats.norm.cdf(shift / math.sqrt(2)) - 1  # P(X > Y) - P(X < Y) for unit normals
    rng = np.random.default_rng(7)
    covered = 0
    for r in range(reps):
        lo, hi = cliffs_delta_ci(rng.normal(shift, 1, n), rng.normal(0, 1, n), 400, seed=r)
        covered += lo <= truth <= hi
    assert 0.88 <= covered / reps <= 0.99
