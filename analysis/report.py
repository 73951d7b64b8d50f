"""The campaign report: statistics, surrogate, estimators, Pareto front and carbon in one folder.

Two layers, so statisticians can use the first without the second:

- `analyze(runs, epochs, ...) -> Report` computes every section from plain DataFrames (one row
  per finished run; one row per epoch of those runs) and holds the results as DataFrames
  (``report.tables``), notes saying what each number rests on (``report.notes``) and the fitted
  objects (surrogates, Pareto fronts). No files are touched.
- `Report.write(folder)` draws the PNG figures, writes every table as CSV and Markdown
  (``tables/``), the surrogate model files, and one page as Markdown and HTML.

`write_report(store, info, out, analysis, gpu_specs)` is the CLI's thin shell: it reads the
campaign through ``db.store.ResultStore`` (`frames_from_store`), calls `analyze` and writes.

Honesty: simulated and measured power are never pooled unless ``allow_mixed_sources`` is set
(`AnalysisError` otherwise); every figure and the page name the power source; a factor with one
level, or groups too small for a test, are reported as not testable instead of a p-value; the
surrogate refuses a held-out split on too few architectures and says so.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import re
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.carbon import J_PER_KWH, J_PER_WH, co2eq_g
from analysis.estimators import GpuSpec, GreenAlgorithmsConfig

log = logging.getLogger(__name__)

#: Columns a runs table must have for any section.
REQUIRED_RUN_COLUMNS = ("run_id", "arch_hash", "epochs", "gpu_type", "power_source", "energy_j", "duration_s")
FACTOR_NAMES = {"arch_hash": "architecture", "gpu_type": "GPU type", "epochs": "epoch budget"}
ESTIMATOR_NAMES = {
    "online_power": "online, power-based: mean power of the stable window x duration",
    "online_epoch_energy": "online, epoch-energy-based: window energy x stable epochs / window + unstable epochs",
    "offline_power": "offline, kernel ridge on GPU specs, GFLOPs, data sizes, batch, input size -> mean power",
    "offline_epoch_energy": "offline, kernel ridge on the same inputs -> mean epoch energy",
    "green_algorithms": "Green Algorithms: PUE x (cores x W/core x usage + GPUs x TDP x usage + GB x 0.3725 W) x h",
    "ml_co2_impact": "ML CO2 Impact: GPU TDP x hours",
}
#: World average grid intensity 2024 (IEA), Carbontracker 2.4's default and the meters' (conf/meter).
DEFAULT_INTENSITY_G_PER_KWH = 445.0
SECTIONS = ("summary", "statistics", "surrogate", "estimators", "pareto", "carbon", "traces", "runs")


class AnalysisError(ValueError):
    """The analysis cannot go on as configured; the one-line message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Settings (conf/analysis/default.yaml)


@dataclass(frozen=True)
class SurrogateSettings:
    """The EC-NAS surrogate's recipe, and what the report does with it."""

    epochs: int = 200
    learning_rate: float = 5e-3
    batch_size: int = 32
    split: tuple[float, ...] = (0.7, 0.1, 0.2)
    seed: int = 0
    #: Fewer architectures (per GPU type): no held-out test split; the model is fit on every run
    #: to show the machinery and its metrics are reported as n/a.
    min_architectures: int = 10
    learning_curve_inits: int = 10
    #: Training-set sizes of the learning curve, as fractions of the training split.
    learning_curve_sizes: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
    #: Epoch budgets to predict for every architecture of the campaign.
    predict_budgets: tuple[int, ...] = (4, 12, 36, 108)


@dataclass(frozen=True)
class ParetoSettings:
    #: Hypervolume reference (1 - validation accuracy, energy in kWh); None: 1.1 x each front's nadir.
    reference: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CarbonSettings:
    """Energy to CO2eq: carbon intensity of the electricity and the facility's PUE."""

    #: g CO2eq per kWh; None: the intensity recorded with the campaign (meter.carbon_intensity_g_per_kwh,
    #: the one Carbontracker used), else `DEFAULT_INTENSITY_G_PER_KWH`.
    intensity_g_per_kwh: float | None = None
    intensity_source: str = "configured (analysis.carbon.intensity_g_per_kwh)"
    pue: float = 1.0
    #: Expected inferences of the chosen architecture over its life (004's e).
    inference_calls: float = 1e6
    #: Budget of the chosen architecture; None: the largest budget measured.
    life_cycle_epochs: int | None = None
    #: 004: backpropagation's share of the training total (inference per image = T (1 - share) / (E D)).
    overhead_share: float = 0.8


@dataclass(frozen=True)
class AnalysisSettings:
    """Every choice of `analyze`, as in ``conf/analysis/default.yaml``."""

    allow_mixed_sources: bool = False
    alpha: float = 0.05
    p_adjust: str = "holm"
    min_group_size: int = 3
    factors: tuple[str, ...] = ("arch_hash", "gpu_type", "epochs")
    stable_epoch: int | None = None
    window: int = 5
    cv_threshold: float = 0.02
    test_fraction: float = 0.3
    split_by: str | None = "arch_hash"
    seed: int = 0
    trace_examples: int = 2
    surrogate: SurrogateSettings = field(default_factory=SurrogateSettings)
    pareto: ParetoSettings = field(default_factory=ParetoSettings)
    carbon: CarbonSettings = field(default_factory=CarbonSettings)
    green_algorithms: GreenAlgorithmsConfig = field(default_factory=GreenAlgorithmsConfig)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> AnalysisSettings:
        """Build from the composed ``analysis`` config section; AnalysisError names a bad key or value."""
        settings = _from_mapping(cls, values or {}, "analysis")
        settings.check()
        return settings

    def check(self) -> None:
        """Range checks; raises AnalysisError naming the setting, the rule and the allowed values."""
        from analysis.stats import P_ADJUST_METHODS

        s, c = self.surrogate, self.carbon
        rules: list[tuple[bool, str]] = [
            (self.p_adjust in P_ADJUST_METHODS,
             f"analysis.p_adjust={self.p_adjust!r} is not allowed (allowed: {', '.join(P_ADJUST_METHODS)})"),
            (0 < self.alpha < 1, f"analysis.alpha={self.alpha} must be between 0 and 1"),
            (self.min_group_size >= 2, f"analysis.min_group_size={self.min_group_size} must be >= 2"),
            (self.window >= 2, f"analysis.window={self.window} must be >= 2 epochs"),
            (self.stable_epoch is None or self.stable_epoch >= 1,
             f"analysis.stable_epoch={self.stable_epoch} must be >= 1 (1-based) or null to detect it"),
            (0 < self.test_fraction < 1, f"analysis.test_fraction={self.test_fraction} must be between 0 and 1"),
            (self.trace_examples >= 0, f"analysis.trace_examples={self.trace_examples} must be >= 0"),
            (s.epochs >= 1, f"analysis.surrogate.epochs={s.epochs} must be >= 1"),
            (len(s.split) == 3 and all(f >= 0 for f in s.split) and math.isclose(sum(s.split), 1.0),
             f"analysis.surrogate.split={list(s.split)} must be three fractions summing to 1, e.g. [0.7,0.1,0.2]"),
            (s.min_architectures >= 3, f"analysis.surrogate.min_architectures={s.min_architectures} must be >= 3"),
            (s.learning_curve_inits >= 1,
             f"analysis.surrogate.learning_curve_inits={s.learning_curve_inits} must be >= 1"),
            (all(0 < f <= 1 for f in s.learning_curve_sizes),
             f"analysis.surrogate.learning_curve_sizes={list(s.learning_curve_sizes)} must be fractions in (0, 1]"),
            (all(isinstance(b, int) and b >= 1 for b in s.predict_budgets),
             f"analysis.surrogate.predict_budgets={list(s.predict_budgets)} must be epoch budgets >= 1"),
            (self.pareto.reference is None or len(self.pareto.reference) == 2,
             f"analysis.pareto.reference={self.pareto.reference} must be [error, energy_kwh] or null"),
            (c.intensity_g_per_kwh is None or c.intensity_g_per_kwh >= 0,
             f"analysis.carbon.intensity_g_per_kwh={c.intensity_g_per_kwh} must be >= 0"),
            (c.pue >= 1, f"analysis.carbon.pue={c.pue} must be >= 1 (facility energy / IT energy)"),
            (c.inference_calls >= 0, f"analysis.carbon.inference_calls={c.inference_calls} must be >= 0"),
            (0 <= c.overhead_share < 1, f"analysis.carbon.overhead_share={c.overhead_share} must be in [0, 1)"),
            (self.green_algorithms.pue >= 1, f"analysis.green_algorithms.pue={self.green_algorithms.pue} must be >= 1"),
        ]
        for ok, message in rules:
            if not ok:
                raise AnalysisError(message)


def _from_mapping(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """A dataclass from a mapping: unknown keys refused, nested dataclasses recursed, lists made
    tuples, numbers checked against the field's default type."""
    if not isinstance(values, Mapping):
        raise AnalysisError(f"{where} must be a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise AnalysisError(f"{where}.{unknown[0]} is not a known setting (allowed: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        f = fields[name]
        key = f"{where}.{name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_mapping(type(default), value or {}, key)
        else:
            kwargs[name] = _coerce(value, default, hints[name], key)
    return cls(**kwargs)


def _coerce(value: Any, default: Any, hint: Any, key: str) -> Any:
    optional = type(None) in typing.get_args(hint)
    if value is None:
        if optional:
            return None
        raise AnalysisError(f"{key} cannot be null (default {default!r})")
    if isinstance(value, list | tuple):
        return tuple(value)
    if default is None:  # an optional setting: check against the type it takes when set
        default = {int: 0, float: 0.0, str: ""}.get(next((a for a in typing.get_args(hint) if a is not type(None)),
                                                          object))
    if isinstance(default, bool) or hint is bool:
        if not isinstance(value, bool):
            raise AnalysisError(f"{key}={value!r} must be true or false")
        return value
    if isinstance(default, float) and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(value, int):
        raise AnalysisError(f"{key}={value!r} must be an integer")
    if isinstance(default, str) and not isinstance(value, str):
        raise AnalysisError(f"{key}={value!r} must be a string")
    return value


# --------------------------------------------------------------------------------------------
# The report object


@dataclass
class FigureSpec:
    """A figure the report draws when written: file name, caption and the function that draws it."""

    name: str
    caption: str
    draw: Callable[[Path], Path] = field(repr=False)
    section: str = ""


@dataclass
class ReportFiles:
    """What `Report.write` wrote. ``str()`` is the Markdown page's path."""

    folder: Path
    page: Path
    html: Path
    tables: list[Path]
    figures: list[Path]
    models: list[Path]
    seconds: float  # wall time of the writing (of reading, analysing and writing from write_report)

    def __str__(self) -> str:
        return str(self.page)


@dataclass
class Report:
    """Every section of a campaign's analysis as DataFrames, notes and fitted objects."""

    title: str
    settings: AnalysisSettings
    power_sources: dict[str, int]
    runs: pd.DataFrame = field(repr=False)
    epochs: pd.DataFrame = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    notes: dict[str, list[str]] = field(default_factory=dict)
    figures: list[FigureSpec] = field(default_factory=list, repr=False)
    factor_text: dict[str, str] = field(default_factory=dict)
    dunn: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    surrogates: dict[str, Any] = field(default_factory=dict, repr=False)  # gpu_type -> SurrogateFit
    pareto: dict[str, dict[Any, Any]] = field(default_factory=dict, repr=False)  # gpu -> budget -> ParetoResult
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        from analysis.stats import power_kind

        return any(power_kind(s) == "simulated" for s in self.power_sources)

    @property
    def source_label(self) -> str:
        from analysis.figures import source_label

        return source_label(self.power_sources)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def markdown(self, model_files: Sequence[Path] = ()) -> str:
        """The page as Markdown (figures referenced by file name)."""
        return _render_markdown(_page(self, model_files))

    def write(self, out: str | Path) -> ReportFiles:
        """Draw the figures, write tables (CSV + Markdown), surrogate models and the page."""
        t0 = time.perf_counter()
        out = Path(out)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        tables = []
        for name, df in self.tables.items():
            csv = out / "tables" / f"{name}.csv"
            _csv_ready(df).to_csv(csv, index=False)
            (out / "tables" / f"{name}.md").write_text(_md_table(df) + "\n")
            tables.append(csv)
        figures = []
        for fig in self.figures:
            t = time.perf_counter()
            figures.append(fig.draw(out / fig.name))
            self.timings_s[f"figure {fig.name}"] = time.perf_counter() - t
        models = []
        from analysis.surrogate import save_model

        for gpu, fit in self.surrogates.items():
            models.append(save_model(fit.model, out / f"surrogate_{_slug(gpu)}.pt"))
        self.timings_s["writing"] = time.perf_counter() - t0
        blocks = _page(self, models)
        page = out / "report.md"
        page.write_text(_render_markdown(blocks))
        page_html = out / "report.html"
        page_html.write_text(_render_html(self.title, blocks))
        return ReportFiles(out, page, page_html, tables, figures, models, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Analysis


def prepare_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs with the derived columns the sections use: energy_per_image_j,
    mean_power_w, energy_kwh (kept where present). AnalysisError names missing columns."""
    from analysis.stats import energy_per_image_j

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
    if "energy_per_image_j" not in df.columns:
        df["energy_per_image_j"] = (energy_per_image_j(df) if "train_images" in df.columns
                                    else pd.Series(math.nan, index=df.index))
    if "mean_power_w" not in df.columns:
        df["mean_power_w"] = df["energy_j"] / df["duration_s"].where(df["duration_s"] > 0)
    df["energy_kwh"] = df["energy_j"] / J_PER_KWH
    return df.reset_index(drop=True)


def check_sources(runs: pd.DataFrame, allow_mixed: bool) -> dict[str, int]:
    """Runs per power source; AnalysisError when simulated and measured power would be pooled."""
    from analysis.stats import power_source_counts

    try:
        return power_source_counts(runs, allow_mixed)
    except ValueError:
        counts = power_source_counts(runs, allow_mixed=True)
        raise AnalysisError(
            f"runs mix simulated and measured power ({', '.join(f'{k}: {v}' for k, v in counts.items())} runs); "
            "analyse one kind, or set analysis.allow_mixed_sources=true to pool them"
        ) from None


def analyze(
    runs: pd.DataFrame,
    epochs: pd.DataFrame | None = None,
    *,
    gpu_specs: Mapping[str, Mapping[str, Any] | GpuSpec] | None = None,
    settings: AnalysisSettings | Mapping[str, Any] | None = None,
    traces: Mapping[Any, pd.DataFrame] | None = None,
    phases: pd.DataFrame | None = None,
    title: str = "campaign",
    meta: Mapping[str, Any] | None = None,
) -> Report:
    """Every section of the report from plain DataFrames; no files are written.

    ``runs``: one row per run (rows with a ``status`` other than done are dropped) with at least
    run_id, arch_hash, epochs, gpu_type, power_source, energy_j, duration_s; the sections use
    train_images, valid_accuracy, test_accuracy, params, flops, matrix and ops (the surrogate),
    gpu_util_mean where present and say what is missing otherwise. ``epochs``: run_id, epoch,
    duration_s, energy_j. ``gpu_specs``: ``conf/gpu`` entries by GPU type (the offline
    estimator and the baselines need them). ``traces``: run_id -> samples (t_s, phase, power_w)
    of the runs whose power trace is drawn. ``phases``: run_phase rows (run_id, phase,
    duration_s, energy_j). Raises AnalysisError for mixed power sources (unless allowed) or a
    bad setting.
    """
    s = settings if isinstance(settings, AnalysisSettings) else AnalysisSettings.from_mapping(settings)
    if s.carbon.intensity_g_per_kwh is None:
        s = dataclasses.replace(s, carbon=dataclasses.replace(
            s.carbon, intensity_g_per_kwh=DEFAULT_INTENSITY_G_PER_KWH,
            intensity_source="default: world average 2024 (IEA); set analysis.carbon.intensity_g_per_kwh"))
    df = prepare_runs(runs)
    sources = check_sources(df, s.allow_mixed_sources)
    ep = _prepare_epochs(epochs, df)
    report = Report(title=title, settings=s, power_sources=sources, runs=df, epochs=ep, meta=dict(meta or {}))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("summary", lambda: _summary(report, phases)),
        ("statistics", lambda: _statistics(report)),
        ("surrogate", lambda: _surrogate(report)),
        ("estimators", lambda: _estimators(report, gpu_specs)),
        ("pareto", lambda: _pareto(report)),
        ("carbon", lambda: _carbon(report)),
        ("traces", lambda: _traces(report, traces or {})),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        if df.empty and name not in ("summary",):
            report.note(name, "n/a: no finished runs")
            continue
        step()
        report.timings_s[name] = time.perf_counter() - t0
    return report


def _intensity(s: AnalysisSettings) -> float:
    """The carbon intensity in use (`analyze` resolves None before any section runs)."""
    value = s.carbon.intensity_g_per_kwh
    return DEFAULT_INTENSITY_G_PER_KWH if value is None else float(value)


def _prepare_epochs(epochs: pd.DataFrame | None, runs: pd.DataFrame) -> pd.DataFrame:
    cols = ["run_id", "epoch", "duration_s", "energy_j"]
    if epochs is None or epochs.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
    missing = [c for c in cols if c not in epochs.columns]
    if missing:
        raise AnalysisError(f"epochs lack column(s) {missing}; give one row per epoch with {cols}")
    return epochs[epochs["run_id"].isin(runs["run_id"])].reset_index(drop=True)


def _summary(report: Report, phases: pd.DataFrame | None) -> None:
    df, s = report.runs, report.settings
    energy_kwh = float(df["energy_kwh"].sum()) if len(df) else 0.0
    if "runs" not in report.meta:
        report.meta["runs done"] = len(df)
    report.meta["device-hours (training + evaluation)"] = f"{df['duration_s'].sum() / 3600:.4g}"
    report.meta["energy (kWh)"] = f"{energy_kwh:.4g}"
    report.meta[f"CO2eq (g at {_intensity(s):g} g/kWh, PUE {s.carbon.pue:g})"] = (
        f"{co2eq_g(energy_kwh, _intensity(s), s.carbon.pue):.4g}")
    report.meta["power sources (runs)"] = ", ".join(f"{k}: {v}" for k, v in report.power_sources.items()) or "none"
    report.tables["runs"] = df
    if df.empty:
        return
    g = df.groupby(["gpu_type", "epochs", "arch_hash"], sort=True)
    summary = pd.DataFrame({
        "runs": g.size(),
        "median_energy_j": g["energy_j"].median(),
        "median_energy_per_image_j": g["energy_per_image_j"].median(),
        "median_duration_s": g["duration_s"].median(),
        "mean_valid_accuracy": g["valid_accuracy"].mean() if "valid_accuracy" in df else math.nan,
        "params": g["params"].first() if "params" in df else math.nan,
        "power_source": g["power_source"].first(),
    }).reset_index()
    report.tables["runs_by_architecture"] = summary
    if phases is not None and not phases.empty:
        p = phases[phases["run_id"].isin(df["run_id"])].merge(df[["run_id", "epochs"]], on="run_id")
        pg = p.groupby(["epochs", "phase"], sort=True)
        report.tables["phases"] = pd.DataFrame({
            "runs": pg["run_id"].nunique(),
            "mean_duration_s": pg["duration_s"].mean(),
            "mean_energy_j": pg["energy_j"].mean(),
            "mean_power_w": pg["energy_j"].sum() / pg["duration_s"].sum().where(pg["duration_s"].sum() > 0),
        }).reset_index()


def _statistics(report: Report) -> None:
    from analysis.figures import factor_boxplot
    from analysis.stats import DEFAULT_SPEARMAN_PAIRS, analyze_factor, spearman_correlations

    df, s = report.runs, report.settings
    value = "energy_per_image_j"
    if df[value].notna().sum() == 0:
        report.note("statistics", "energy per training image is undefined: the runs record no train_images")
    per_level, tests, normality, pairs = [], [], [], []
    for factor in s.factors:
        name = FACTOR_NAMES.get(factor, factor)
        if factor not in df.columns:
            report.factor_text[factor] = f"not testable: the runs have no column {factor!r}"
            continue
        for level, grp in df.groupby(factor, sort=True):
            v = grp[value].dropna()
            per_level.append({"factor": factor, "level": level, "n": len(v), "median_j": v.median(),
                              "q1_j": v.quantile(0.25), "q3_j": v.quantile(0.75), "mean_j": v.mean()})
        levels = df[factor].dropna().unique()
        if len(levels) < 2:
            text = f"not testable: one level ({', '.join(map(str, levels)) or 'none'})"
            report.factor_text[factor] = text
            tests.append({"factor": factor, "test": "kruskal", "k": len(levels), "n": int(df[value].notna().sum()),
                          "note": text})
        else:
            fa = analyze_factor(df, value, factor, s.p_adjust, s.alpha, s.min_group_size)
            kw, lev = fa.kruskal, fa.levene
            tests += [{**kw.as_dict()}, {**lev.as_dict(), "eta_squared": math.nan}]
            normality.append(fa.normality)
            if not fa.dunn.pairs.empty:
                pairs.append(fa.dunn.pairs.assign(factor=factor, p_adjust=fa.dunn.p_adjust))
                report.dunn[factor] = fa.dunn.pvalues
            report.factor_text[factor] = _kruskal_text(kw, lev, fa.dunn, s.alpha)
        report.figures.append(FigureSpec(
            _factor_figure(name),
            f"Energy per training image by {name}. {report.factor_text[factor]}",
            partial(factor_boxplot, report.runs, factor, test_text=report.factor_text[factor],
                    label=report.source_label),
            "statistics"))
    report.tables["energy_per_image"] = pd.DataFrame(per_level)
    test_cols = ["factor", "test", "k", "n", "statistic", "p_value", "eta_squared", "skipped", "note"]
    report.tables["group_tests"] = pd.DataFrame(tests).reindex(columns=test_cols)
    if normality:
        report.tables["shapiro_wilk"] = pd.concat(normality, ignore_index=True)
    if pairs:
        cols = ["factor", "group_a", "group_b", "n_a", "n_b", "z", "p_unadjusted", "p_adjusted", "p_adjust",
                "significant"]
        report.tables["dunn"] = pd.concat(pairs, ignore_index=True)[cols]
    by = "gpu_type"  # energy and utilization mean different things on different devices
    report.tables["spearman"] = spearman_correlations(df, DEFAULT_SPEARMAN_PAIRS, by=by, min_n=s.min_group_size)
    if "gpu_util_mean" in df.columns and report.simulated:
        report.note("statistics", "simulated runs have no GPU: their gpu_util is the training process's CPU load")


def _fmt_p(p: float) -> str:
    return "n/a" if not np.isfinite(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def _kruskal_text(kw: Any, lev: Any, dunn: Any, alpha: float) -> str:
    skipped = f"; left out (too small): {', '.join(f'{g} (n={n})' for g, n in kw.skipped.items())}" if kw.skipped else ""
    if not np.isfinite(kw.statistic):
        return f"Kruskal-Wallis not testable: {kw.note}{skipped}"
    text = (f"Kruskal-Wallis H = {kw.statistic:.3g}, p = {_fmt_p(kw.p_value)}, eta squared = {kw.eta_squared:.3g} "
            f"(k = {kw.k} groups, n = {kw.n} runs); Levene p = {_fmt_p(lev.p_value)}")
    if not dunn.pairs.empty:
        n_sig = int(dunn.pairs["significant"].sum())
        text += f"; Dunn ({dunn.p_adjust}): {n_sig} of {len(dunn.pairs)} pairs differ at alpha {alpha:g}"
    return text + skipped


def _surrogate(report: Report) -> None:
    from analysis.figures import learning_curve_figure, surrogate_scatter
    from analysis.surrogate import SurrogateConfig, fit_surrogate, learning_curve, predict

    df, s = report.runs, report.settings.surrogate
    metric_cols = ["gpu_type", "n_architectures", "n_runs", "n_train", "n_val", "n_test", "pearson", "kendall_tau",
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
        n_arch = int(sub["arch_hash"].nunique())
        enough = n_arch >= s.min_architectures
        split = tuple(s.split) if enough else (1.0, 0.0, 0.0)
        config = SurrogateConfig(learning_rate=s.learning_rate, batch_size=s.batch_size, epochs=s.epochs,
                                 split=split, seed=s.seed)  # type: ignore[arg-type]
        # the surrogate's inputs, once: the fit, its learning curve and fit.test_index all index sub
        inputs = (list(sub["matrix"]), list(sub["ops"]), sub["params"].to_numpy(dtype=np.float64),
                  sub["epochs"].to_numpy(dtype=np.float64), sub["energy_j"].to_numpy(dtype=np.float64) / J_PER_WH)
        groups = sub["arch_hash"].astype(str).to_numpy()
        fit = fit_surrogate(*inputs, config, groups=groups)
        fit.model.metadata.update({"gpu_type": str(gpu), "power_sources": sorted(sub["power_source"].unique()),
                                   "held_out_test": enough, "campaign": report.title})
        report.surrogates[str(gpu)] = fit
        m = fit.metrics
        why = (f"n/a (only {n_arch} architecture(s) on {gpu}; a held-out test split by architecture needs "
               f"at least {s.min_architectures} (analysis.surrogate.min_architectures): fit on all runs, "
               "no test metrics)")
        row = {"gpu_type": gpu, "n_architectures": n_arch, "n_runs": len(sub), "n_train": len(fit.train_index),
               "n_val": len(fit.val_index), "n_test": len(fit.test_index), "pearson": m.pearson,
               "kendall_tau": m.kendall_tau, "mae_wh": m.mae_wh, "best_epoch": fit.best_epoch,
               "train_s": fit.train_seconds, "note": "" if enough else why}
        if enough and not np.isfinite(m.pearson):
            row["note"] = "Pearson and Kendall undefined: the test split's energies (or predictions) are constant"
        rows.append(row)
        if enough:
            budgets = sub["epochs"].to_numpy()[fit.test_index]
            text = (f"Pearson r = {m.pearson:.4f}\nKendall tau = {m.kendall_tau:.4f}\nMAE = {m.mae_wh:.3g} Wh\n"
                    f"n = {m.n} test runs, {len(set(sub['arch_hash'].to_numpy()[fit.test_index]))} architectures")
            report.figures.append(FigureSpec(
                f"surrogate_scatter_{_slug(gpu)}.png",
                f"Surrogate on {gpu}: predicted vs measured energy of the held-out test runs",
                partial(surrogate_scatter, fit.test_measured_wh, fit.test_predicted_wh, budgets, metrics_text=text,
                        title=f"Energy surrogate on {gpu}: test split", label=label),
                "surrogate"))
            sizes = sorted({max(2, round(f * len(fit.train_index))) for f in s.learning_curve_sizes})
            curve = learning_curve(*inputs, sizes, s.learning_curve_inits, config, groups=groups)
            curve.insert(0, "gpu_type", gpu)
            report.tables[f"surrogate_learning_curve_{_slug(gpu)}"] = curve
            report.figures.append(FigureSpec(
                f"surrogate_learning_curve_{_slug(gpu)}.png",
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
            for arch, wh in zip(archs["arch_hash"], per_epoch * budget, strict=True):
                predictions.append({
                    "gpu_type": gpu, "arch_hash": arch, "epochs": budget, "predicted_energy_wh": float(wh),
                    "measured_mean_wh": float(measured.get((arch, budget), math.nan)),
                    "note": "" if budget in seen else f"budget not measured (trained on {seen})"})
    report.tables["surrogate_metrics"] = pd.DataFrame(rows, columns=metric_cols)
    if predictions:
        report.tables["surrogate_predictions"] = pd.DataFrame(predictions)


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


def _estimators(report: Report, gpu_specs: Mapping[str, Mapping[str, Any] | GpuSpec] | None) -> None:
    from analysis.estimators import OnlineConfig, compare_estimators
    from analysis.figures import epoch_energy_figure

    df, s = report.runs, report.settings
    cols = ["estimator", "method", "n_runs", "rmse_kj", "mae_kj", "r2", "note"]
    if not report.epochs.empty:
        report.figures.append(FigureSpec(
            "epoch_energy.png", "Energy of every epoch of every run, by epoch budget",
            partial(epoch_energy_figure, report.epochs, report.runs, label=report.source_label,
                    stable_epoch=s.stable_epoch, window=s.window), "estimators"))
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
    missing = [c for c in ("flops", "train_images") if c not in df.columns]
    if missing:
        raise AnalysisError(f"runs lack {missing}, needed by the offline estimator")
    online = OnlineConfig(stable_epoch=s.stable_epoch, window=s.window, cv_threshold=s.cv_threshold)
    group_by = s.split_by if s.split_by in df.columns else None  # the split made, and the one described
    comp = compare_estimators(df, report.epochs, specs, online=online, green=s.green_algorithms,
                              test_fraction=s.test_fraction, seed=s.seed, group_by=group_by)
    table = comp.table.copy()
    table.insert(1, "method", table["estimator"].map(ESTIMATOR_NAMES))
    window_note = (f"stable window from epoch {s.stable_epoch}" if s.stable_epoch else
                   f"stable epoch detected per run (CV <= {s.cv_threshold:g})") + f", {s.window} epochs"
    for name in ("online_power", "online_epoch_energy"):
        i = table.index[table["estimator"] == name]
        table.loc[i, "note"] = [f"{n}; {window_note}".lstrip("; ") for n in table.loc[i, "note"]]
    budgets = sorted(df["epochs"].unique())
    if max(budgets) < (s.stable_epoch or 1) + s.window - 1:
        report.note("estimators", f"every run is shorter ({max(budgets)} epochs at most) than the online estimators' "
                                  f"window ({window_note}): their rows rest on no run")
    report.tables["estimators"] = table.reindex(columns=cols)
    report.tables["estimator_predictions"] = comp.predictions
    report.note("estimators", f"held-out runs: {len(comp.test_run_ids)} of {len(comp.train_run_ids) + len(comp.test_run_ids)}"
                              f" (test fraction {s.test_fraction:g}, seed {s.seed}"
                              + (f", whole {group_by} groups on one side" if group_by else "") + ")")


def _pareto(report: Report) -> None:
    from analysis.figures import epochs_text, pareto_figure
    from analysis.pareto import aggregate_architectures, hypervolume_table, pareto_by_budget, pareto_table

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
    report.figures.append(FigureSpec("pareto_front.png", "Pareto front of (1 - validation accuracy, energy) per budget",
                                 partial(pareto_figure, panels, label=report.source_label), "pareto"))


def _carbon(report: Report) -> None:
    from analysis.carbon import co2eq_g_array, life_cycle

    df, c = report.runs, report.settings.carbon
    g = df.groupby(["gpu_type", "epochs"], sort=True)
    table = pd.DataFrame({"runs": g.size(), "energy_kwh": g["energy_kwh"].sum()}).reset_index()
    total = pd.DataFrame([{"gpu_type": "all", "epochs": "all", "runs": len(df), "energy_kwh": df["energy_kwh"].sum()}])
    table = pd.concat([table, total], ignore_index=True)
    table["facility_kwh"] = table["energy_kwh"] * c.pue
    table["co2eq_g"] = co2eq_g_array(table["energy_kwh"].to_numpy(dtype=np.float64) * J_PER_KWH,
                                     _intensity(report.settings), c.pue)
    report.tables["carbon"] = table
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
        training_kwh = float(chosen["energy_kwh_mean"])
        search_kwh = float(df.loc[df["gpu_type"] == gpu, "energy_kwh"].sum())
        per_call = training_kwh * (1 - c.overhead_share) / (budget * images) if images > 0 else math.nan
        lc = life_cycle(search_kwh, training_kwh, per_call if np.isfinite(per_call) else 0.0, c.inference_calls,
                        _intensity(report.settings), c.pue)
        rows.append({"gpu_type": gpu, "epochs": budget, "role": role, "arch_hash": chosen["arch_hash"],
                     "search_kwh": lc.search_kwh, "training_kwh": lc.training_kwh,
                     "inference_kwh_per_call": per_call, "inference_calls": c.inference_calls,
                     "inference_kwh": lc.inference_kwh, "total_kwh": lc.total_kwh, "co2eq_g": lc.co2eq_g,
                     **{f"{k}_share": v for k, v in lc.shares().items()}})
    if rows:
        report.tables["life_cycle"] = pd.DataFrame(rows)


def _traces(report: Report, traces: Mapping[Any, pd.DataFrame]) -> None:
    from analysis.figures import power_trace_figure

    df = report.runs
    pairs = [(df[df["run_id"] == rid].iloc[0].to_dict(), tr) for rid, tr in traces.items()
             if len(tr) and (df["run_id"] == rid).any()]
    if not pairs:
        report.note("traces", "no power traces given")
        return
    report.figures.append(FigureSpec("power_trace.png", "Example power traces by protocol phase",
                                 partial(power_trace_figure, pairs, label=report.source_label), "traces"))


def example_runs(runs: pd.DataFrame, n: int) -> list[Any]:
    """Run ids whose traces the report draws: at the largest budget, one per architecture (the
    median-energy seed), up to ``n``."""
    df = runs[runs["status"] == "done"] if "status" in runs.columns else runs
    if df.empty or n <= 0:
        return []
    top = df[df["epochs"] == df["epochs"].max()]
    picks = []
    for _, grp in top.groupby("arch_hash", sort=True):
        grp = grp.sort_values("energy_j")
        picks.append(grp.iloc[(len(grp) - 1) // 2]["run_id"])
        if len(picks) == n:
            break
    return picks


# --------------------------------------------------------------------------------------------
# From the result store


def frames_from_store(store: Any, campaign_id: int, trace_examples: int = 2) -> dict[str, Any]:
    """The campaign's data through ``db.store.ResultStore``: ``runs`` (every attempt, with
    gpu_util_mean of its training phase), ``epochs``, ``phases`` and example ``traces``."""
    runs = pd.DataFrame(store.runs(campaign_id, status=None))
    if runs.empty:
        return {"runs": runs, "epochs": None, "phases": None, "traces": {}}
    ids = [int(r) for r in runs.loc[runs["status"] == "done", "run_id"]]
    epochs = pd.DataFrame(store.epochs(ids)) if ids else None
    phases = pd.DataFrame(store.phases(ids)) if ids else None
    util = {int(k): (math.nan if v is None else float(v)) for k, v in store.train_utilization(ids).items()}
    runs["gpu_util_mean"] = runs["run_id"].map(util)
    traces = {rid: pd.DataFrame(store.trace(int(rid))) for rid in example_runs(runs, trace_examples)}
    return {"runs": runs, "epochs": epochs, "phases": phases, "traces": traces}


def write_report(
    store: Any,
    info: Any,
    out: Path,
    analysis: Mapping[str, Any] | None = None,
    gpu_specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> ReportFiles:
    """Analyse campaign ``info`` from ``store`` and write the report folder ``out``.

    ``analysis``: the composed config's ``analysis`` section (default: the one recorded with the
    campaign); ``gpu_specs``: ``conf/gpu`` entries by name (``campaign.config.gpu_types()``).
    Returns the files written; ``str()`` of the result is the Markdown page.
    """
    t0 = time.perf_counter()
    settings = AnalysisSettings.from_mapping(analysis if analysis is not None else info.config.get("analysis"))
    recorded = (info.config.get("meter") or {}).get("carbon_intensity_g_per_kwh")
    if settings.carbon.intensity_g_per_kwh is None and recorded is not None:
        source = (info.config.get("meter") or {}).get("carbon_intensity_source") or "configured"
        settings = dataclasses.replace(settings, carbon=dataclasses.replace(
            settings.carbon, intensity_g_per_kwh=float(recorded),
            intensity_source=f"recorded with the campaign (meter.carbon_intensity_g_per_kwh: {source})"))
    data = frames_from_store(store, info.id, settings.trace_examples)
    runs = data["runs"]
    status = runs["status"].value_counts().to_dict() if not runs.empty else {}
    trials = store.status_rows(info.id)
    states = {k: sum(r[k] for r in trials) for k in ("pending", "running", "done", "failed", "cancelled")}
    if not status.get("done"):
        raise AnalysisError(f"campaign {info.name!r} has no finished run yet (trials: "
                            f"{', '.join(f'{v} {k}' for k, v in states.items() if v) or 'none'}); nothing to analyse")
    meta = {
        "sweep": info.sweep,
        "created (UTC)": f"{info.created_at:%Y-%m-%d %H:%M}",
        "code revision": info.code_revision,
        "trials": f"{sum(states.values())} ({', '.join(f'{v} {k}' for k, v in states.items() if v)})",
        "runs": f"{len(runs)} attempts ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))})",
    }
    report = analyze(runs, data["epochs"], gpu_specs=gpu_specs, settings=settings, traces=data["traces"],
                     phases=data["phases"], title=info.name, meta=meta)
    report.timings_s["reading the store"] = time.perf_counter() - t0 - sum(report.timings_s.values())
    files = report.write(out)
    files.seconds = time.perf_counter() - t0
    log.info("report %s written in %.1f s", files.page, time.perf_counter() - t0)
    return files


# --------------------------------------------------------------------------------------------
# The page: blocks rendered to Markdown and to HTML

Block = tuple[Any, ...]


def _page(report: Report, model_files: Sequence[Path]) -> list[Block]:
    s = report.settings
    figs: dict[str, list[FigureSpec]] = {}
    for f in report.figures:
        figs.setdefault(f.section, []).append(f)
    t = report.tables
    b: list[Block] = [("h1", f"Campaign {report.title}: energy analysis")]
    if report.simulated:
        b.append(("note", "**Simulated power.** Runs marked `simulated` had no power meter: their power follows "
                          "the real training load but is not a measurement of any device. Every energy, statistic, "
                          "estimator, front and CO2 figure below rests on simulated power."))
    if len(report.power_sources) > 1:
        b.append(("note", f"**Pooled power sources** ({', '.join(report.power_sources)}): "
                          "analysis.allow_mixed_sources=true was set; numbers below mix them."))
    # Summary
    b += [("h2", "Summary"), ("list", [f"{k}: {v}" for k, v in report.meta.items()])]
    b.append(("p", f"Choices: p-value correction `{s.p_adjust}`, alpha {s.alpha:g}, smallest group "
                   f"{s.min_group_size}; surrogate {s.surrogate.epochs} epochs; stable epoch "
                   f"{s.stable_epoch or 'detected'}, window {s.window}; carbon intensity "
                   f"{_intensity(s):g} g/kWh, PUE {s.carbon.pue:g}. All tables are in `tables/` "
                   "as CSV and Markdown."))
    if "runs_by_architecture" in t:
        b += [("h3", "Runs by GPU type, budget and architecture"), ("table", t["runs_by_architecture"], None)]
    if "phases" in t:
        b += [("h3", "Energy by protocol phase"), ("table", t["phases"], None)]
    # Statistics
    b += [("h2", "Statistics: energy per training image"),
          ("p", "Energy per training image = run energy / (training images per epoch x epochs). Per factor: "
                "Shapiro-Wilk per group and Levene (Brown-Forsythe) across groups, Kruskal-Wallis with "
                "eta squared = (H - k + 1) / (n - k), Dunn's post-hoc test with the "
                f"`{s.p_adjust}` correction; groups under {s.min_group_size} runs are left out and named.")]
    if "energy_per_image" in t:
        b.append(("table", t["energy_per_image"], None))
    for factor in s.factors:
        name = FACTOR_NAMES.get(factor, factor)
        b.append(("h3", f"By {name}"))
        b += [("fig", f.name, f.caption) for f in figs.get("statistics", []) if f.name == _factor_figure(name)]
        b.append(("p", report.factor_text.get(factor, "not analysed")))
        if factor in report.dunn:
            m = report.dunn[factor]
            if len(m) <= 12:
                b += [("p", f"Dunn's test, adjusted p-values ({s.p_adjust}):"), ("matrix", m)]
            else:
                b.append(("p", f"Dunn's test: {len(m)} groups; the matrix is in `tables/dunn.csv`."))
    for name, title in (("group_tests", "Kruskal-Wallis and Levene"), ("shapiro_wilk", "Shapiro-Wilk per group"),
                        ("dunn", "Dunn post-hoc pairs"), ("spearman", "Spearman correlations")):
        if name in t:
            b += [("h3", title), ("table", t[name], 40)]
    b += _notes(report, "statistics")
    # Surrogate
    from analysis.surrogate import N_FEATURES, SurrogateConfig

    ss = s.surrogate
    shape = "-".join(map(str, (N_FEATURES, *SurrogateConfig().hidden, 1)))
    b += [("h2", "Energy surrogate (EC-NAS)"),
          ("p", f"MLP {shape} with GELU, L1 loss on energy in Wh, Adam at lr "
                f"{ss.learning_rate:g}, batch {ss.batch_size}, {ss.epochs} epochs, split {list(ss.split)} by "
                "architecture (seed "
                f"{ss.seed}); one model per GPU type, predicting energy per epoch (budget x per-epoch energy). "
                "Pearson, Kendall tau and MAE on the test split only.")]
    if "surrogate_metrics" in t:
        b.append(("table", _metrics_view(t["surrogate_metrics"]), None))
    for m in model_files:
        b.append(("p", f"Model file: `{m.name}` (full path: {m})"))
    b += [("fig", f.name, f.caption) for f in figs.get("surrogate", [])]
    if "surrogate_predictions" in t:
        b += [("h3", f"Predicted energy at budgets {list(ss.predict_budgets)}"),
              ("table", t["surrogate_predictions"], 40)]
    b += _notes(report, "surrogate")
    # Estimators
    b += [("h2", "Energy estimators (online, offline, Green Algorithms, ML CO2 Impact)"),
          ("p", "Each estimator predicts the energy of the same held-out runs; RMSE and MAE in kJ, R2 against the "
                "measured energy (003 found the Green Algorithms and ML CO2 Impact formulas 20-30 times worse in "
                "RMSE than the online estimators).")]
    if "estimators" in t:
        b.append(("table", t["estimators"], None))
    b += [("fig", f.name, f.caption) for f in figs.get("estimators", [])]
    b += _notes(report, "estimators")
    # Pareto
    b += [("h2", "Pareto front: 1 - validation accuracy vs energy"),
          ("p", "Per GPU type and epoch budget, architectures averaged over seeds. Knee: the front point where the "
                "front turns most (segment directions by two-argument arctangent on min-max normalised "
                "objectives). Hypervolume in (error x kWh) against the stated reference point.")]
    b += [("fig", f.name, f.caption) for f in figs.get("pareto", [])]
    if "hypervolume" in t:
        b += [("h3", "Hypervolume"), ("table", t["hypervolume"], None)]
    if "pareto" in t:
        b += [("h3", "Extrema and knee (as EC-NAS table 2)"), ("table", t["pareto"], None)]
    b += _notes(report, "pareto")
    # Carbon
    c = s.carbon
    b += [("h2", "Carbon"),
          ("p", f"CO2eq = energy x PUE ({c.pue:g}) x carbon intensity ({_intensity(s):g} g/kWh, "
                f"{c.intensity_source}). Energies are at the device.")]
    if "carbon" in t:
        b.append(("table", t["carbon"], None))
    if "life_cycle" in t:
        b += [("h3", "Life cycle of the chosen architecture (004: E_life = CT + T + I x e)"),
              ("p", f"CT: every training of the campaign (the search); T: the chosen architecture's mean training "
                    f"energy; I: energy per inference from T = E x D x I x theta with theta = 1 / (1 - "
                    f"{c.overhead_share:g}); e = {c.inference_calls:g} inferences."),
              ("table", t["life_cycle"], None)]
    b += _notes(report, "carbon")
    # Traces
    b += [("h2", "Power traces by phase")]
    b += [("fig", f.name, f.caption) for f in figs.get("traces", [])]
    b += _notes(report, "traces")
    # Runs
    b += [("h2", "Runs"), ("p", "Every finished run (all columns in `tables/runs.csv`).")]
    b.append(("table", _runs_view(report.runs), 60))
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items() if v >= 0.05)
    b += [("h2", "Timings"), ("p", timings or "n/a")]
    return b


def _notes(report: Report, section: str) -> list[Block]:
    return [("note", n) for n in report.notes.get(section, [])]


def _metrics_view(df: pd.DataFrame) -> pd.DataFrame:
    """The surrogate's metrics with n/a and the reason where a number is missing."""
    out = df.copy().astype(object)
    for col in ("pearson", "kendall_tau", "mae_wh"):
        out[col] = [v if isinstance(v, float) and np.isfinite(v) else "n/a (see note)" for v in df[col]]
    return out.rename(columns={"pearson": "Pearson r", "kendall_tau": "Kendall tau", "mae_wh": "MAE (Wh)"})


RUN_VIEW = ("run_id", "arch_hash", "epochs", "gpu_type", "seed", "power_source", "duration_s", "energy_j",
            "energy_per_image_j", "mean_power_w", "gpu_util_mean", "valid_accuracy", "test_accuracy", "params")


def _runs_view(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[[c for c in RUN_VIEW if c in runs.columns]]


def _factor_figure(name: str) -> str:
    """The file name of a factor's box plot (``name`` as in FACTOR_NAMES)."""
    return f"energy_by_{_slug(name)}.png"


def _slug(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_").lower() or "x"


def _csv_ready(df: pd.DataFrame) -> pd.DataFrame:
    """Nested values (matrices, op lists) as JSON text, so the CSV parses back cell by cell."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, list | tuple | dict)).any():
            out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, list | tuple | dict) else v)
    return out


def _cell(v: Any) -> str:
    from analysis.figures import level_name

    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "n/a"
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, float | np.floating):
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        return " ".join(map(str, v))
    return level_name(v).replace("|", "/").replace("\n", " ")


def _rows(df: pd.DataFrame, limit: int | None) -> tuple[list[str], list[list[str]], str]:
    shown = df if limit is None or len(df) <= limit else df.head(limit)
    more = "" if shown is df else f"First {limit} of {len(df)} rows; all in the CSV."
    return [str(c) for c in df.columns], [[_cell(v) for v in row] for row in shown.itertuples(index=False)], more


def _md_table(df: pd.DataFrame, limit: int | None = None) -> str:
    header, rows, more = _rows(df, limit)
    if not header:
        return "(empty table)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + (f"\n\n{more}" if more else "")


def _matrix_frame(m: pd.DataFrame) -> pd.DataFrame:
    from analysis.figures import level_name

    out = m.copy()
    out.columns = [level_name(c) for c in m.columns]
    out.insert(0, str(m.index.name or ""), [level_name(i) for i in m.index])
    return out


def _render_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + blk[1], ""]
        elif kind == "p":
            out += [blk[1], ""]
        elif kind == "note":
            out += ["> " + blk[1], ""]
        elif kind == "list":
            out += [f"- {item}" for item in blk[1]] + [""]
        elif kind == "table":
            out += [_md_table(blk[1], blk[2]), ""]
        elif kind == "matrix":
            out += [_md_table(_matrix_frame(blk[1])), ""]
        elif kind == "fig":
            out += [f"![{blk[2]}]({blk[1]})", "", f"*{blk[2]}*", ""]
    return "\n".join(out)


def _inline_html(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _html_table(df: pd.DataFrame, limit: int | None = None) -> str:
    header, rows, more = _rows(df, limit)
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>" + (f"<p><i>{html.escape(more)}</i></p>" if more else "")


def _render_html(title: str, blocks: Sequence[Block]) -> str:
    body: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(blk[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(blk[1])}</p>")
        elif kind == "note":
            body.append(f"<blockquote>{_inline_html(blk[1])}</blockquote>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            body.append(_html_table(blk[1], blk[2]))
        elif kind == "matrix":
            body.append(_html_table(_matrix_frame(blk[1])))
        elif kind == "fig":
            body.append(f'<figure><img src="{html.escape(blk[1])}" alt="{html.escape(blk[2])}">'
                        f"<figcaption>{html.escape(blk[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
             "th{background:#f3f3f3}img{max-width:100%}blockquote{background:#fff4e5;border-left:4px solid #f0a030;"
             "margin:1em 0;padding:0.5em 1em}figcaption{font-size:13px;color:#444}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


__all__ = [
    "AnalysisError",
    "AnalysisSettings",
    "CarbonSettings",
    "ParetoSettings",
    "Report",
    "ReportFiles",
    "SurrogateSettings",
    "analyze",
    "check_sources",
    "example_runs",
    "frames_from_store",
    "gpu_specs_for",
    "prepare_runs",
    "write_report",
]
