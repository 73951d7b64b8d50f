"""The report's sections, one function each (``analysis.report.parts.SECTIONS``): each reads the
prepared runs of a `Report` and adds its tables, notes and figures to it. No files are touched;
figures are drawn when the report is written.

Also the preparation every section relies on: `prepare_runs` (finished runs with their derived
columns and the energy target of ``analysis.energy``), `select_power` (one kind of power,
``analysis.power_source``), `check_sources` (no pooling of simulated and measured power unless allowed),
`prepare_epochs` and `gpu_specs_for`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from analysis.carbon import J_PER_KWH, J_PER_WH, co2eq_g, co2eq_g_array, life_cycle
from analysis.energy import (
    TARGET_NAMES,
    TOTAL,
    counts_text,
    energy_by_gpu_budget,
    flagged_runs,
    method_shares,
    mixed_methods_text,
    phase_energy,
    with_energy_columns,
    with_epoch_energy,
)
from analysis.estimators import GpuSpec, OnlineConfig, compare_estimators
from analysis.figures import (
    energy_totals_figure,
    epoch_energy_figure,
    epochs_text,
    factor_boxplot,
    learning_curve_figure,
    pareto_figure,
    power_trace_figure,
    surrogate_scatter,
)
from analysis.pareto import aggregate_architectures, hypervolume_table, pareto_by_budget, pareto_table
from analysis.report.model import Report
from analysis.report.parts import FigureSpec, factor_figure, factor_name, slug
from analysis.settings import AnalysisError, CarbonSettings, EnergyTarget, PowerKind
from analysis.stats import (
    DEFAULT_SPEARMAN_PAIRS,
    dunn_test,
    power_source_counts,
    spearman_correlations,
)
from analysis.strata import (
    POOLED,
    TEST_COLUMNS,
    design_conclusions,
    design_table,
    factor_tests,
    is_balanced,
    per_architecture,
    present_factors,
    seed_spread,
    strata,
)
from analysis.surrogate import fit_surrogate, learning_curve, predict

#: Run columns that are properties of the architecture (correlated one value per architecture).
ARCHITECTURE_PROPERTIES = ("params", "flops")
#: Columns a runs table must have for any section.
REQUIRED_RUN_COLUMNS = ("run_id", "arch_hash", "epochs", "gpu_type", "power_source", "energy_j", "duration_s")
ESTIMATOR_NAMES = {
    "online_power": "online, power-based: mean power of the stable window x duration",
    "online_epoch_energy": "online, epoch-energy-based: window energy x stable epochs / window + unstable epochs",
    "offline_power": "offline, kernel ridge on GPU specs, GFLOPs, data sizes, batch, input size -> mean power",
    "offline_epoch_energy": "offline, kernel ridge on the same inputs -> mean epoch energy",
    "green_algorithms": "Green Algorithms: PUE x (cores x W/core x usage + GPUs x TDP x usage + GB x 0.3725 W) x h",
    "ml_co2_impact": "ML CO2 Impact: GPU TDP x hours",
}


# --------------------------------------------------------------------------------------------
# Preparation


def prepare_runs(runs: pd.DataFrame, energy: EnergyTarget | str = EnergyTarget.total,
                 images: str = "training", batch_size: int = 256, valid_images: int = 10_000) -> pd.DataFrame:
    """Finished runs with the derived columns the sections use: the energy accounting of
    ``analysis.energy.with_energy_columns`` (``energy_j`` becomes the ``energy`` target, the total
    and the energy above idle kept beside it), energy_per_image_j of the target, mean_power_w and
    energy_kwh of the total. AnalysisError names missing columns."""
    missing = [c for c in REQUIRED_RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise AnalysisError(f"runs lack column(s) {missing}; give one row per run with {list(REQUIRED_RUN_COLUMNS)}")
    df = runs
    if "status" in df.columns:
        df = df[df["status"] == "done"]
    df = df.copy()
    df["power_source"] = df["power_source"].fillna("unknown").astype(str)
    for col in ("energy_j", "duration_s"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df = with_energy_columns(df, energy, images, batch_size, valid_images)
    if "mean_power_w" not in df.columns:
        df["mean_power_w"] = df[TOTAL] / df["duration_s"].where(df["duration_s"] > 0)
    df["energy_kwh"] = df[TOTAL] / J_PER_KWH
    return df.reset_index(drop=True)


def select_power(runs: pd.DataFrame, kind: PowerKind | str | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The runs of power ``kind`` (None: all) and the runs left out, by power kind. AnalysisError
    when none is left."""
    if kind is None:
        return runs, {}
    keep = runs["power_kind"] == str(kind)
    left_out = {str(k): int(v) for k, v in runs.loc[~keep, "power_kind"].value_counts().items()}
    if not keep.any() and len(runs):
        raise AnalysisError(f"analysis.power_source={kind}: no finished run has {kind} power "
                            f"({', '.join(f'{k}: {v}' for k, v in left_out.items())} runs); "
                            "choose another power source or null")
    return runs[keep].reset_index(drop=True), left_out


def check_sources(runs: pd.DataFrame, allow_mixed: bool) -> dict[str, int]:
    """Runs per power source; AnalysisError when simulated and measured power would be pooled."""
    try:
        return power_source_counts(runs, allow_mixed)
    except ValueError:
        counts = power_source_counts(runs, allow_mixed=True)
        raise AnalysisError(
            f"runs mix simulated and measured power ({', '.join(f'{k}: {v}' for k, v in counts.items())} runs); "
            "analyse one kind (analysis.power_source=measured or simulated), or set "
            "analysis.allow_mixed_sources=true to pool them"
        ) from None


def prepare_epochs(epochs: pd.DataFrame | None, runs: pd.DataFrame,
                   energy: EnergyTarget | str = EnergyTarget.total) -> pd.DataFrame:
    """The epoch rows of ``runs`` (run_id, epoch, duration_s, energy_j at least), ``energy_j`` the
    ``energy`` target (`analysis.energy.with_epoch_energy`)."""
    cols = ["run_id", "epoch", "duration_s", "energy_j"]
    if epochs is None or epochs.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    missing = [c for c in cols if c not in epochs.columns]
    if missing:
        raise AnalysisError(f"epochs lack column(s) {missing}; give one row per epoch with {cols}")
    mine = epochs[epochs["run_id"].isin(runs["run_id"])].reset_index(drop=True)
    return with_epoch_energy(mine, runs, energy)


def gpu_specs_for(
    specs: Mapping[str, Mapping[str, Any] | GpuSpec], gpu_types: Iterable[str]
) -> tuple[dict[str, GpuSpec], list[str]]:
    """``GpuSpec`` of each GPU type, and notes on what was filled in: a type without CUDA cores
    in its conf/gpu entry (the host CPU) gets 0 of them. AnalysisError for a type without an entry."""
    out: dict[str, GpuSpec] = {}
    notes = []
    for g in sorted(set(map(str, gpu_types))):
        spec = specs.get(g)
        if spec is None:
            raise AnalysisError(f"no GPU spec for {g!r} (known: {', '.join(sorted(specs))}); add conf/gpu/{g}.yaml")
        if isinstance(spec, GpuSpec):
            out[g] = spec
            continue
        values = dict(spec)
        for key in ("cuda_cores", "memory_gb"):
            if values.get(key) is None:
                values[key] = 0
                notes.append(f"{g}: no {key} in its conf/gpu entry, taken as 0")
        try:
            out[g] = GpuSpec.from_mapping(g, values)
        except ValueError as err:
            raise AnalysisError(str(err)) from None
    return out, notes


# --------------------------------------------------------------------------------------------
# Sections


def summary(report: Report, phases: pd.DataFrame | None) -> None:
    """Totals (device-hours, energy total and above idle, CO2eq, power sources, methods), energy per
    GPU type and budget with its uncertainty, the methods' shares, the flagged measurements, runs
    by architecture, energy by phase."""
    df, s = report.runs, report.settings
    energy_kwh = float(df["energy_kwh"].sum()) if len(df) else 0.0
    mixed = mixed_methods_text(df)
    if "runs" not in report.meta:
        report.meta["runs done"] = len(df)
    report.meta["device-hours (training + evaluation)"] = f"{df['duration_s'].sum() / 3600:.4g}"
    report.meta["energy, total (kWh)"] = f"{energy_kwh:.4g}" + (f" ({mixed})" if mixed else "")
    above = df["energy_above_idle_j"]
    report.meta["energy above idle (kWh)"] = (
        f"{above.sum() / J_PER_KWH:.4g}" + (f" ({mixed})" if mixed else "")
        + (f" ({int(above.isna().sum())} run(s) without an idle power left out)" if above.isna().any() else ""))
    unc = df["energy_uncertainty_j"]
    report.meta["uncertainty of the total (kWh, stated, summed)"] = (
        f"{unc.sum() / J_PER_KWH:.4g}" if len(df) and unc.notna().all() else
        f"n/a ({int(unc.isna().sum())} run(s) state no uncertainty)")
    report.meta[f"CO2eq (g at {s.carbon.intensity():g} g/kWh, PUE {s.carbon.pue:g}, total energy)"] = (
        f"{co2eq_g(energy_kwh, s.carbon.intensity(), s.carbon.pue):.4g}")
    report.meta["power sources (runs)"] = ", ".join(f"{k}: {v}" for k, v in report.power_sources.items()) or "none"
    report.meta["energy methods (runs)"] = ", ".join(
        f"{k}: {v}" for k, v in df["energy_method"].value_counts().items()) or "none"
    flagged = flagged_runs(df)
    report.meta["flagged measurements (runs)"] = (
        f"{len(flagged)} (included in every figure; listed under Flagged measurements)" if len(flagged) else "0")
    if df.empty:
        return
    report.tables["energy_by_gpu_budget"] = table = energy_by_gpu_budget(df)
    report.tables["energy_methods"] = method_shares(df)
    report.tables["flagged_runs"] = flagged
    report.figures.append(FigureSpec(
        "energy_total_and_above_idle.png",
        "Mean energy per run, total and above idle, by GPU type and epoch budget; error bars: the mean stated "
        "uncertainty" + (f"; {mixed}" if mixed else ""),
        partial(energy_totals_figure, table, label=report.source_label), "summary"))
    if unc.isna().any():
        report.note("summary", f"{int(unc.isna().sum())} run(s) state no energy uncertainty (recorded before "
                               "uncertainties were): their uncertainty is n/a, and so is any sum over them")
    if above.isna().any():
        report.note("summary", f"{int(above.isna().sum())} run(s) record no idle power: their energy above idle is n/a")
    g = df.groupby(["gpu_type", "epochs", "arch_hash"], sort=True)
    report.tables["runs_by_architecture"] = pd.DataFrame({
        "runs": g.size(),
        "median_energy_total_j": g[TOTAL].median(),
        "median_energy_above_idle_j": g["energy_above_idle_j"].median(),
        "median_uncertainty_j": g["energy_uncertainty_j"].median(),
        "median_energy_per_image_j": g["energy_per_image_j"].median(),
        "median_duration_s": g["duration_s"].median(),
        "mean_valid_accuracy": g["valid_accuracy"].mean() if "valid_accuracy" in df else math.nan,
        "params": g["params"].first() if "params" in df else math.nan,
        "power_source": g["power_source"].first(),
        "methods": g["energy_method"].agg(lambda m: ", ".join(sorted(set(m)))),
    }).reset_index()
    if phases is not None and not phases.empty:
        report.tables["phases"] = phase_energy(phases, df)


def design(report: Report) -> None:
    """The campaign's design: factors, levels, runs per cell, balance, and what its size allows."""
    df, s = report.runs, report.settings
    report.tables["design"] = design_table(df, s.factors)
    for text in design_conclusions(df, s.factors, s.min_group_size):
        report.note("design", text)


def statistics(report: Report) -> None:
    """Energy per training image by each factor, within each stratum of the other factors:
    Kruskal-Wallis (eta squared with a bootstrap interval), Welch's ANOVA, Dunn, Games-Howell,
    Cliff's delta; Shapiro-Wilk and Levene; Spearman with one value per architecture."""
    df, s = report.runs, report.settings
    value = "energy_per_image_j"
    if df[value].notna().sum() == 0:
        report.note("statistics", "energy per training image is undefined: the runs record no train_images")
    balanced = is_balanced(df, present_factors(df, s.factors))
    opts: dict[str, Any] = {"min_n": s.min_group_size, "p_adjust": s.p_adjust.value, "alpha": s.alpha,
                            "n_boot": s.bootstrap, "seed": s.seed, "normality_min_n": s.normality_min_n,
                            "max_values": s.bootstrap_max_values}
    per_level, tests, normality, pairs, effects = [], [], [], [], []
    many = many_architectures(report)
    for factor in s.factors:
        name = factor_name(factor)
        if factor not in df.columns:
            report.factor_text[factor] = f"not testable: the runs have no column {factor!r}"
            continue
        g = df.groupby(factor, sort=True)[value]
        per_level += pd.DataFrame({"n": g.count(), "median_j": g.median(), "q1_j": g.quantile(0.25),
                                   "q3_j": g.quantile(0.75), "mean_j": g.mean()}).rename_axis("level").reset_index(
                                  ).assign(factor=factor).to_dict("records")
        keep = top_bottom_levels(df, factor, value, s.top_architectures) if many and factor == "arch_hash" else None
        levels = df[factor].dropna().unique()
        if len(levels) < 2:
            text = f"not testable: one level ({', '.join(map(str, levels)) or 'none'})"
            report.factor_text[factor] = text
            tests.append({"factor": factor, "stratum": POOLED, "test": "kruskal", "k": len(levels),
                          "n": int(df[value].notna().sum()), "note": text})
        else:
            if many and factor != "arch_hash":
                within = blocked_strata(df, factor, value, s.factors)
                report.note("statistics", f"{factor_name(factor).capitalize()}: with {df['arch_hash'].nunique()} "
                            "architectures, tested within each combination of the other factors except the "
                            "architecture, on one value per architecture (its median over seeds) and only "
                            f"architectures measured at every {factor_name(factor)} of the stratum (complete "
                            "blocks: no architecture effect can look like a "
                            f"{factor_name(factor)} effect); n counts architectures.")
            else:
                within = [(label, sub) for label, sub in strata(df, factor, s.factors) if label != POOLED]
                if balanced or not within:
                    within.insert(0, (POOLED, df))
            texts = []
            kw_rows = []
            for label, sub in within:
                res = factor_tests(sub, value, factor, label, keep_levels=keep, **opts)
                tests += res.rows
                kw_rows.append(res.rows[0])
                pairs.append(res.dunn)
                effects.append(res.effects)
                normality.append(res.normality)
                texts.append(_stratum_text(res.rows[0], label))
            if balanced and keep is None:
                dunn = dunn_test(df, value, factor, s.p_adjust.value, s.alpha, s.min_group_size)
                if not dunn.pairs.empty:
                    report.dunn[factor] = dunn.pvalues
            tested = [t for t in texts if t.startswith("Kruskal-Wallis H")]
            scope = ("within strata of the other design factors"
                     + (", plus the pooled test of the balanced design" if balanced else ""))
            if len(texts) > MAX_STRATA_TEXTS:
                report.factor_text[factor] = _strata_summary(kw_rows, s.alpha) + f" ({scope}; every row in " \
                                                                                  "tables/group_tests.csv)"
            else:
                report.factor_text[factor] = "; ".join(tested + [t for t in texts if t not in tested]) + (
                    f" ({len(tested)} of {len(texts)} test(s) possible; {scope})")
        shown_runs = report.runs
        caption_extra = ""
        if keep is not None:
            shown_runs = report.runs[report.runs[factor].isin(keep)]
            caption_extra = (f" Only the {s.top_architectures} architectures of lowest and the {s.top_architectures} "
                             f"of highest median energy per image of {df[factor].nunique()} (analysis.many_architectures="
                             f"{s.many_architectures}); every architecture is in tables/energy_per_image.csv.")
            report.note("statistics", f"{df[factor].nunique()} architectures (more than analysis.many_architectures="
                        f"{s.many_architectures}): the box plot and the pairwise rows (Dunn, Games-Howell, Cliff's "
                        f"delta) cover the {s.top_architectures} architectures of lowest and the "
                        f"{s.top_architectures} of highest median energy per image only, Dunn's p-values "
                        "Bonferroni-corrected over every pair of architectures in the stratum, so the selection "
                        "cannot make a pair significant. The tests across all architectures (Kruskal-Wallis, "
                        "Welch, Levene) use every architecture; the per-architecture figures are in "
                        "tables/energy_per_image.csv and tables/architecture_ranking.csv.")
            report.tables["architecture_ranking"] = _architecture_ranking(df, value, keep)
        report.figures.append(FigureSpec(
            factor_figure(name),
            f"{target_name(report).capitalize()} per training image by {name}; error bars: stated uncertainty. "
            f"{report.factor_text[factor]}{caption_extra}",
            partial(factor_boxplot, shown_runs, factor, test_text=report.factor_text[factor][:300],
                    label=report.source_label, value_label=f"{target_name(report)} per training image (J)",
                    err="energy_per_image_uncertainty_j"),
            "statistics"))
    report.tables["energy_per_image"] = pd.DataFrame(per_level).reindex(
        columns=["factor", "level", "n", "median_j", "q1_j", "q3_j", "mean_j"])
    report.tables["group_tests"] = pd.DataFrame(tests).reindex(columns=TEST_COLUMNS)
    if normality:
        report.tables["shapiro_wilk"] = pd.concat(normality, ignore_index=True)
    pairs = [p for p in pairs if not p.empty]
    if pairs:
        cols = ["factor", "stratum", "group_a", "group_b", "n_a", "n_b", "z", "p_unadjusted", "p_adjusted",
                "p_adjust", "significant"]
        report.tables["dunn"] = pd.concat(pairs, ignore_index=True)[cols]
    if effects:
        report.tables["pairwise_effects"] = pd.concat(effects, ignore_index=True)
    _correlations(report, value)


#: A factor tested in more strata than this is summarised on the page (counts, eta squared range).
MAX_STRATA_TEXTS = 8


def many_architectures(report: Report) -> bool:
    """More architectures than ``analysis.many_architectures``: the page shows the top and bottom ones."""
    df = report.runs
    return "arch_hash" in df.columns and int(df["arch_hash"].nunique()) > report.settings.many_architectures


def blocked_strata(df: pd.DataFrame, factor: str, value: str, factors: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """Strata of ``factor`` over the other factors except the architecture, each holding one row per
    (architecture, level): the median of ``value`` over its seeds, for the architectures measured at
    every level of ``factor`` in that stratum (complete blocks)."""
    others = [f for f in present_factors(df, factors) if f not in (factor, "arch_hash")]
    keys = [*others, factor, "arch_hash"]
    med = df.groupby(keys, sort=True)[value].median().dropna().reset_index()
    out = []
    groups = med.groupby(others, sort=True) if others else [((), med)]
    for key, sub in groups:
        levels = sub[factor].nunique()
        complete = sub.groupby("arch_hash")[factor].transform("nunique") == levels
        keys_ = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{f}={v}" for f, v in zip(others, keys_, strict=True)) or POOLED
        out.append((f"{label} (architecture medians)", sub[complete].reset_index(drop=True)))
    return out


def top_bottom_levels(df: pd.DataFrame, factor: str, value: str, k: int) -> list[Any]:
    """The ``k`` levels of ``factor`` with the lowest and the ``k`` with the highest median ``value``."""
    med = df.groupby(factor, sort=True)[value].median().dropna().sort_values(kind="mergesort")
    if len(med) <= 2 * k:
        return list(med.index)
    return list(med.index[:k]) + list(med.index[-k:])


def _architecture_ranking(df: pd.DataFrame, value: str, shown: Sequence[Any]) -> pd.DataFrame:
    """Every architecture by median ``value`` (rank 1: lowest), its runs and whether the page shows it."""
    g = df.groupby("arch_hash", sort=True)[value]
    out = pd.DataFrame({"runs": g.count(), "median_j": g.median(), "min_j": g.min(), "max_j": g.max()})
    out = out.sort_values("median_j", kind="mergesort").reset_index()
    out.insert(0, "rank", range(1, len(out) + 1))
    out["shown"] = out["arch_hash"].isin(set(shown))
    return out


def _strata_summary(kw_rows: Sequence[Mapping[str, Any]], alpha: float) -> str:
    """Kruskal-Wallis over many strata in one sentence: how many were testable and significant, and
    the range of eta squared."""
    stats_ = [r for r in kw_rows if np.isfinite(r.get("statistic", math.nan))]
    if not stats_:
        return f"Kruskal-Wallis not testable in any of {len(kw_rows)} strata"
    sig = sum(1 for r in stats_ if r["p_value"] < alpha)
    eta = np.array([r["eta_squared"] for r in stats_], dtype=np.float64)
    return (f"Kruskal-Wallis in {len(kw_rows)} strata: {len(stats_)} testable, {sig} with p < {alpha:g} "
            f"(unadjusted across strata); eta squared median {np.nanmedian(eta):.3g} "
            f"(range {np.nanmin(eta):.3g} to {np.nanmax(eta):.3g})")


def _stratum_text(kw: Mapping[str, Any], label: str) -> str:
    where = "pooled over every run" if label == POOLED else label
    if not np.isfinite(kw.get("statistic", math.nan)):
        return f"Kruskal-Wallis not testable in {where} ({kw.get('note') or 'too few runs'})"
    return (f"Kruskal-Wallis H = {kw['statistic']:.3g}, p = {_fmt_p(kw['p_value'])}, eta squared = "
            f"{kw['eta_squared']:.3g} [{kw['eta_squared_ci_low']:.2g}, {kw['eta_squared_ci_high']:.2g}] "
            f"(k = {kw['k']}, n = {kw['n']}; {where})")


def _correlations(report: Report, value: str) -> None:
    """Spearman: architecture properties against energy with one value per architecture (median over
    seeds) within each GPU type and budget; run-level pairs per GPU type; circular pairs left out."""
    df, s = report.runs, report.settings
    arch_pairs = [(x, y) for x, y in DEFAULT_SPEARMAN_PAIRS if x in ARCHITECTURE_PROPERTIES]
    run_pairs = [(x, y) for x, y in DEFAULT_SPEARMAN_PAIRS if x not in ARCHITECTURE_PROPERTIES]
    if report.simulated:
        circular = [(x, y) for x, y in run_pairs if x.startswith("gpu_util")]
        run_pairs = [p for p in run_pairs if p not in circular]
        if circular:
            report.note("statistics", "Left out: " + ", ".join(f"{x} vs {y}" for x, y in circular) + ". The power "
                        "is simulated from the training load, so its correlation with that load is circular, "
                        "not a finding.")
    tables = []
    if arch_pairs and "arch_hash" in df.columns:
        per_arch = per_architecture(df, sorted({c for p in arch_pairs for c in p}))
        per_arch["stratum"] = [f"gpu_type={g}, epochs={e}" for g, e in zip(per_arch["gpu_type"], per_arch["epochs"],
                                                                            strict=True)]
        # n = architectures; below 3 no p-value
        tables.append(spearman_correlations(per_arch, arch_pairs, by="stratum", min_n=3).assign(
            unit="architecture (median over seeds)"))
        report.tables["seed_spread"] = seed_spread(df, value)
        report.note("statistics", "Architecture properties are correlated with energy one value per architecture "
                    "(the median over its seeds) within each GPU type and budget: n is the number of "
                    "architectures, and below 3 no p-value is given. The spread over seeds is the "
                    "within-architecture variability (tables/seed_spread.csv), not further observations.")
    if run_pairs:
        run_level = spearman_correlations(df, run_pairs, by="gpu_type", min_n=s.min_group_size)
        tables.append(run_level.rename(columns={"gpu_type": "stratum"}).assign(unit="run"))
    if tables:
        report.tables["spearman"] = pd.concat(tables, ignore_index=True)
    if "gpu_util_mean" in df.columns and report.simulated:
        report.note("statistics", "simulated runs have no GPU: their gpu_util is the training process's CPU load")


def target_name(report: Report) -> str:
    """The energy target as the page names it: ``total energy`` or ``energy above idle``."""
    return TARGET_NAMES[report.settings.energy]


def _fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def surrogate(report: Report) -> None:
    """EC-NAS's surrogate per GPU type: metrics on held-out architectures, learning curve, predictions."""
    df, s = report.runs, report.settings.surrogate
    metric_cols = ["gpu_type", "n_architectures", "n_runs", "n_fit", "n_train", "n_val", "n_test", "pearson", "kendall_tau",
                   "mae_wh", "best_epoch", "train_s", "note"]
    missing = [c for c in ("matrix", "ops", "params") if c not in df.columns]
    if missing:
        report.tables["surrogate_metrics"] = pd.DataFrame(
            [{"note": f"n/a (runs lack {missing}: the surrogate encodes the cell's adjacency, ops and parameters)"}],
            columns=metric_cols)
        return
    rows, predictions = [], []
    label = report.source_label
    usable = df[np.isfinite(df["energy_j"])]
    for gpu, sub in usable.groupby("gpu_type", sort=True):
        sub = sub.reset_index(drop=True)
        fit_sub = sample_architectures(sub, s.max_runs, s.seed)
        if len(fit_sub) < len(sub):
            report.note("surrogate", f"{gpu}: fitted on {len(fit_sub)} of {len(sub)} runs ("
                        f"{fit_sub['arch_hash'].nunique()} of {sub['arch_hash'].nunique()} architectures, a seeded "
                        f"sample of whole architectures: analysis.surrogate.max_runs={s.max_runs}); the predictions "
                        "cover every architecture")
        n_arch = int(fit_sub["arch_hash"].nunique())
        enough = n_arch >= s.min_architectures
        # the settings are the recipe; too few architectures: fit on every run, no held-out split
        config = s if enough else dataclasses.replace(s, split=(1.0, 0.0, 0.0))
        # the surrogate's inputs, once: the fit, its learning curve and fit.test_index all index sub
        inputs = (list(fit_sub["matrix"]), list(fit_sub["ops"]), fit_sub["params"].to_numpy(dtype=np.float64),
                  fit_sub["epochs"].to_numpy(dtype=np.float64),
                  fit_sub["energy_j"].to_numpy(dtype=np.float64) / J_PER_WH)
        groups = fit_sub["arch_hash"].astype(str).to_numpy()
        fit = fit_surrogate(*inputs, config, groups=groups)
        fit.model.metadata.update({"gpu_type": str(gpu), "power_sources": sorted(sub["power_source"].unique()),
                                   "held_out_test": enough, "campaign": report.title,
                                   "energy_target": str(report.settings.energy)})
        report.surrogates[str(gpu)] = fit
        m = fit.metrics
        why = (f"n/a (only {n_arch} architecture(s) on {gpu}; a held-out test split by architecture needs "
               f"at least {s.min_architectures} (analysis.surrogate.min_architectures): fit on all runs, "
               "no test metrics)")
        row = {"gpu_type": gpu, "n_architectures": int(sub["arch_hash"].nunique()), "n_runs": len(sub),
               "n_fit": len(fit_sub), "n_train": len(fit.train_index),
               "n_val": len(fit.val_index), "n_test": len(fit.test_index), "pearson": m.pearson,
               "kendall_tau": m.kendall_tau, "mae_wh": m.mae_wh, "best_epoch": fit.best_epoch,
               "train_s": fit.train_seconds, "note": "" if enough else why}
        if enough and not np.isfinite(m.pearson):
            row["note"] = "Pearson and Kendall undefined: the test split's energies (or predictions) are constant"
        rows.append(row)
        if enough:
            budgets = fit_sub["epochs"].to_numpy()[fit.test_index]
            text = (f"Pearson r = {m.pearson:.4f}\nKendall tau = {m.kendall_tau:.4f}\nMAE = {m.mae_wh:.3g} Wh\n"
                    f"n = {m.n} test runs, {len(set(fit_sub['arch_hash'].to_numpy()[fit.test_index]))} architectures")
            report.figures.append(FigureSpec(
                f"surrogate_scatter_{slug(gpu)}.png",
                f"Surrogate on {gpu}: predicted vs measured {target_name(report)} of the held-out test runs; "
                "error bars: stated uncertainty",
                partial(surrogate_scatter, fit.test_measured_wh, fit.test_predicted_wh, budgets, metrics_text=text,
                        title=f"Energy surrogate on {gpu}: test split", label=label,
                        measured_err_wh=fit_sub["energy_uncertainty_j"].to_numpy(dtype=np.float64)[fit.test_index]
                        / J_PER_WH, energy_label=target_name(report)),
                "surrogate"))
            sizes = sorted({max(2, round(f * len(fit.train_index))) for f in s.learning_curve_sizes})
            curve = learning_curve(*inputs, sizes, s.learning_curve_inits, config, groups=groups)
            curve.insert(0, "gpu_type", gpu)
            report.tables[f"surrogate_learning_curve_{slug(gpu)}"] = curve
            report.figures.append(FigureSpec(
                f"surrogate_learning_curve_{slug(gpu)}.png",
                f"Surrogate on {gpu}: test MAE against training-set size ({s.learning_curve_inits} initialisations)",
                partial(learning_curve_figure, curve, title=f"Energy surrogate on {gpu}: learning curve",
                        label=label),
                "surrogate"))
        archs = sub.drop_duplicates("arch_hash")
        measured = sub.groupby(["arch_hash", "epochs"])["energy_j"].mean() / J_PER_WH
        seen = sorted(int(b) for b in sub["epochs"].unique())
        # the model predicts energy per epoch: encode the cells once, scale to each budget
        per_epoch = predict(fit.model, list(archs["matrix"]), list(archs["ops"]), archs["params"].to_numpy(), 1)
        for budget in s.predict_budgets:
            nearest = min(seen, key=lambda b: abs(math.log(budget / b)))
            ratio = budget / nearest
            for arch, wh in zip(archs["arch_hash"], per_epoch * budget, strict=True):
                predictions.append({
                    "gpu_type": gpu, "arch_hash": arch, "epochs": budget, "predicted_energy_wh": float(wh),
                    "measured_mean_wh": float(measured.get((arch, budget), math.nan)),
                    "extrapolation": budget not in seen, "nearest_measured_budget": nearest,
                    "budget_ratio_to_nearest": ratio,
                    "note": "" if budget in seen else
                    f"extrapolation: budget not measured ({ratio:.3g} x the nearest measured budget {nearest}; "
                    f"trained on {seen})"})
    report.tables["surrogate_metrics"] = pd.DataFrame(rows, columns=metric_cols)
    if predictions:
        table = pd.DataFrame(predictions)
        report.tables["surrogate_predictions"] = table
        if table["extrapolation"].any():
            far = table.loc[table["extrapolation"], "budget_ratio_to_nearest"]
            report.note("surrogate", f"{int(table['extrapolation'].sum())} prediction(s) are extrapolation beyond the "
                        f"measured budgets (up to {far.max():.3g} x the nearest measured budget; column "
                        "budget_ratio_to_nearest): the surrogate was not trained there, so they are not results. "
                        "Every prediction is for a measured architecture.")


def sample_architectures(runs: pd.DataFrame, max_runs: int, seed: int) -> pd.DataFrame:
    """``runs`` itself when it holds at most ``max_runs`` rows, else the runs of a seeded random
    sample of whole architectures (in a random order, added while they fit) holding at most
    ``max_runs`` runs: a held-out split by architecture stays possible."""
    if len(runs) <= max_runs:
        return runs
    sizes = runs.groupby("arch_hash", sort=True).size()
    order = np.random.default_rng(seed).permutation(len(sizes))
    total = np.cumsum(sizes.to_numpy()[order])
    chosen = set(sizes.index[order[total <= max_runs]])
    return runs[runs["arch_hash"].isin(chosen)].reset_index(drop=True)


def estimators(report: Report, gpu_specs: Mapping[str, Mapping[str, Any] | GpuSpec] | None) -> None:
    """The six energy estimators scored on the same held-out runs; the epoch-energy figure."""
    df, s = report.runs, report.settings
    cols = ["estimator", "method", "n_runs", "rmse_kj", "mae_kj", "r2", "note"]
    if not report.epochs.empty:
        report.figures.append(FigureSpec(
            "epoch_energy.png", f"{target_name(report).capitalize()} of every epoch of every run, by epoch budget "
                                "(error bars: stated uncertainty, where recorded)",
            partial(epoch_energy_figure, report.epochs, report.runs, label=report.source_label,
                    stable_epoch=s.window_start(), window=s.window, energy_label=target_name(report)),
            "estimators"))
    else:
        report.note("estimators", "no epoch rows: the online estimators have nothing to read")
    if gpu_specs is None:
        report.tables["estimators"] = pd.DataFrame(
            [{"estimator": k, "method": v, "n_runs": 0, "note": "n/a (no GPU specs given: pass conf/gpu entries)"}
             for k, v in ESTIMATOR_NAMES.items()], columns=cols)
        return
    try:
        specs, notes = gpu_specs_for(gpu_specs, df["gpu_type"].unique())
    except AnalysisError as err:
        report.tables["estimators"] = pd.DataFrame(
            [{"estimator": k, "method": v, "n_runs": 0, "note": f"n/a ({err})"} for k, v in ESTIMATOR_NAMES.items()],
            columns=cols)
        return
    for n in notes:
        report.note("estimators", n)
    if s.energy == EnergyTarget.above_idle:
        report.note("estimators", "the target is the energy above idle: Green Algorithms and ML CO2 Impact estimate "
                                  "the total draw from the TDP, so their errors include the idle energy")
    missing = [c for c in ("flops", "train_images") if c not in df.columns]
    if missing:
        raise AnalysisError(f"runs lack {missing}, needed by the offline estimator")
    start = s.window_start()
    online = OnlineConfig(stable_epoch=start, window=s.window, cv_threshold=s.cv_threshold)
    # the split made, and the one described: by run where the runs lack the split_by column
    group_by = s.split_by.value if s.split_by is not None and s.split_by in df.columns else None
    try:
        comp = compare_estimators(df, report.epochs, specs, online=online, green=s.green_algorithms,
                                  test_fraction=s.test_fraction, seed=s.seed, group_by=group_by,
                                  test_run_ids=s.test_run_ids, offline_max_runs=s.offline_max_runs,
                                  per_run_hardware=s.per_run_hardware)
    except ValueError as err:
        raise AnalysisError(f"analysis.test_run_ids: {err}") from None
    table = comp.table.copy()
    table.insert(1, "method", table["estimator"].map(ESTIMATOR_NAMES))
    window_note = (f"stable window from epoch {start} (analysis.stable_epoch={s.stable_epoch}, "
                   f"{s.stable_epoch_base}-based)" if start is not None else
                   f"stable epoch detected per run (CV <= {s.cv_threshold:g})") + f", {s.window} epochs"
    for name in ("online_power", "online_epoch_energy"):
        i = table.index[table["estimator"] == name]
        table.loc[i, "note"] = [f"{n}; {window_note}".lstrip("; ") for n in table.loc[i, "note"]]
    budgets = sorted(df["epochs"].unique())
    if max(budgets) < (start or 1) + s.window - 1:
        report.note("estimators", f"every run is shorter ({max(budgets)} epochs at most) than the online estimators' "
                                  f"window ({window_note}): their rows rest on no run")
    report.tables["estimators"] = table.reindex(columns=cols)
    report.tables["estimator_predictions"] = comp.predictions
    held = len(comp.test_run_ids)
    if s.test_run_ids is not None:
        how = "the run ids given in analysis.test_run_ids"
    else:
        how = f"test fraction {s.test_fraction:g}, seed {s.seed}" + (
            f", whole {group_by} groups on one side" if group_by else "")
    report.note("estimators", f"held-out runs: {held} of {len(comp.train_run_ids) + held} ({how})")
    if len(comp.train_run_ids) > s.offline_max_runs:
        report.note("estimators", f"offline estimators: exact kernel ridge (RBF) fitted on a seeded random sample of "
                                  f"{s.offline_max_runs} of the {len(comp.train_run_ids)} training runs "
                                  "(analysis.offline_max_runs): its memory grows with the square and its time with "
                                  "the cube of the runs; they are scored on every held-out run")


def pareto(report: Report) -> None:
    """Pareto front of (1 - validation accuracy, energy) per GPU type and budget: extrema, knee, hypervolume."""
    df, s = report.runs, report.settings
    if "valid_accuracy" not in df.columns or df["valid_accuracy"].notna().sum() == 0:
        report.note("pareto", "n/a: the runs record no validation accuracy")
        return
    ref = tuple(s.pareto.reference) if s.pareto.reference is not None else None
    panels, table2, hv, front_rows = [], [], [], []
    aggregated = []
    for gpu, sub in df.groupby("gpu_type", sort=True):
        archs = aggregate_architectures(sub, by=("arch_hash", "epochs"))
        archs["gpu_type"] = gpu
        aggregated.append(archs)
        finite = archs[np.isfinite(archs["error"]) & np.isfinite(archs["energy_kwh_mean"])]
        results = pareto_by_budget(finite, reference=ref)  # type: ignore[arg-type]
        report.pareto[str(gpu)] = results
        t2 = pareto_table(results).drop(columns=["gpu_type"], errors="ignore")
        t2.insert(0, "gpu_type", gpu)
        table2.append(t2)
        h = hypervolume_table(results)
        h.insert(0, "gpu_type", gpu)
        h["reference"] = "configured" if ref else "1.1 x the front's nadir"
        hv.append(h)
        for budget, res in results.items():
            panels.append((f"{gpu}, {epochs_text(budget)}", finite[finite["epochs"] == budget], res))
            front_rows.append(res.front.assign(gpu_type=gpu)[
                ["gpu_type", "epochs", "arch_hash", "error", "energy_kwh_mean", "turn_deg", "role"]])
            if res.knee is None:
                report.note("pareto", f"{gpu}, {epochs_text(budget)}: front of {len(res.front)} point(s), no knee "
                                      "(a knee needs 3 front points)")
    keep = ["gpu_type", "epochs", "role", "arch_hash", "n_runs", "params_m", "valid_accuracy_mean",
            "valid_accuracy_std", "test_accuracy_mean", "energy_kwh_mean", "energy_kwh_std", "duration_s_mean",
            "duration_s_std", "ops"]
    t = pd.concat(table2, ignore_index=True)
    if "ops" in t.columns:
        t["ops"] = t["ops"].map(lambda o: " ".join(o) if isinstance(o, list | tuple) else o)
    report.tables["pareto"] = t.reindex(columns=[c for c in keep if c in t.columns])
    report.tables["hypervolume"] = pd.concat(hv, ignore_index=True)
    allarch = pd.concat(aggregated, ignore_index=True)
    report.tables["pareto_front"] = pd.concat(front_rows, ignore_index=True)
    report.tables["architectures"] = allarch.drop(columns=[c for c in ("matrix", "ops") if c in allarch.columns])
    report.figures.append(FigureSpec(
        "pareto_front.png", f"Pareto front of (1 - validation accuracy, {target_name(report)}) per budget; error bars: "
                            "mean stated uncertainty",
        partial(pareto_figure, panels, label=report.source_label, energy_label=target_name(report)), "pareto"))


def carbon(report: Report) -> None:
    """CO2eq per GPU type and budget, and the life cycle of each GPU type's chosen architecture."""
    df, c = report.runs, report.settings.carbon
    g = df.groupby(["gpu_type", "epochs"], sort=True)
    table = pd.DataFrame({"runs": g.size(), "energy_kwh": g["energy_kwh"].sum(),
                          "methods": g["energy_method"].agg(counts_text)}).reset_index()
    total = pd.DataFrame([{"gpu_type": "all", "epochs": "all", "runs": len(df), "energy_kwh": df["energy_kwh"].sum(),
                           "methods": counts_text(df["energy_method"])}])
    table = pd.concat([table, total], ignore_index=True)
    table["facility_kwh"] = table["energy_kwh"] * c.pue
    table["co2eq_g"] = co2eq_g_array(table["energy_kwh"].to_numpy(dtype=np.float64) * J_PER_KWH,
                                     c.intensity(), c.pue)
    report.tables["carbon"] = table
    if mixed := mixed_methods_text(df):
        report.note("carbon", f"The totals {mixed}.")
    rows = []
    for gpu, results in report.pareto.items():
        if not results:
            continue
        budget = c.life_cycle_epochs if c.life_cycle_epochs is not None else max(results)
        if budget not in results:
            report.note("carbon", f"{gpu}: no runs at analysis.carbon.life_cycle_epochs={budget}; measured: "
                                  f"{sorted(results)}")
            continue
        res = results[budget]
        role, chosen = ("knee", res.knee) if res.knee is not None else ("min_error", res.min_error)
        runs_of = df[(df["gpu_type"] == gpu) & (df["arch_hash"] == chosen["arch_hash"]) & (df["epochs"] == budget)]
        images = float(runs_of["train_images"].median()) if "train_images" in runs_of else math.nan
        training_kwh = float(runs_of["energy_kwh"].mean())  # the total: CO2 follows what the grid delivers
        search_kwh = float(df.loc[df["gpu_type"] == gpu, "energy_kwh"].sum())
        per_call = training_kwh * (1 - c.overhead_share) / (budget * images) if images > 0 else math.nan
        lc = life_cycle(search_kwh, training_kwh, per_call if np.isfinite(per_call) else 0.0, c.inference_calls,
                        c.intensity(), c.pue)
        rows.append({"gpu_type": gpu, "epochs": budget, "role": role, "arch_hash": chosen["arch_hash"],
                     "search_kwh": lc.search_kwh, "training_kwh": lc.training_kwh,
                     "inference_kwh_per_call": per_call, "inference_calls": c.inference_calls,
                     "inference_kwh": lc.inference_kwh, "total_kwh": lc.total_kwh, "co2eq_g": lc.co2eq_g,
                     **{f"{k}_share": v for k, v in lc.shares().items()},
                     "inputs": "measured: search and training energy; " + (
                         ", ".join(f"{k}={getattr(c, k):g}" + (" (default)" if getattr(c, k) == getattr(
                             CarbonSettings(), k) else " (configured)") for k in ("inference_calls",
                                                                                  "overhead_share")))})
    if rows:
        report.tables["life_cycle"] = pd.DataFrame(rows)


def traces(report: Report, samples: Mapping[Any, pd.DataFrame]) -> None:
    """The power traces of the example runs (``samples``: run_id -> trace samples), by protocol phase."""
    df = report.runs
    pairs = [(df[df["run_id"] == rid].iloc[0].to_dict(), tr) for rid, tr in samples.items()
             if len(tr) and (df["run_id"] == rid).any()]
    if not pairs:
        report.note("traces", "no power traces given")
        return
    report.figures.append(FigureSpec("power_trace.png", "Example power traces by protocol phase",
                                     partial(power_trace_figure, pairs, label=report.source_label), "traces"))


def runs(report: Report) -> None:
    """Every finished run, as prepared (the page shows the main columns, the CSV all of them)."""
    report.tables["runs"] = report.runs
