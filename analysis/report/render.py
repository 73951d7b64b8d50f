"""The report's page: its sections as blocks (headings, paragraphs, notes, tables, figures), and
those blocks rendered to Markdown and to HTML; tables as Markdown and as CSV-ready frames.

Text only: which files are written where is `analysis.report.model.Report.write`'s business.
The page reads a report through `PageSource` (what `Report` holds), so this module needs
nothing of the report's own module.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from analysis.energy import ABOVE_IDLE_UNCERTAINTY, TARGET_NAMES, mixed_methods_text
from analysis.figures import level_name
from analysis.report.parts import FigureSpec, factor_figure, factor_name
from analysis.settings import AnalysisSettings, EnergyTarget
from analysis.surrogate import N_FEATURES

#: One element of the page: (kind, text or table, ...); kinds h1-h3, p, note, list, table, matrix, fig.
Block = tuple[Any, ...]
#: Columns of the page's runs table (every column is in ``tables/runs.csv``).
RUN_VIEW = ("run_id", "arch_hash", "epochs", "gpu_type", "seed", "power_source", "energy_method", "duration_s",
            "energy_total_j", "energy_above_idle_j", "energy_uncertainty_j", "energy_per_image_j", "mean_power_w",
            "gpu_util_mean", "valid_accuracy", "test_accuracy", "params", "flags")


class PageSource(Protocol):
    """What the page shows of a report (``analysis.report.model.Report``)."""

    title: str
    settings: AnalysisSettings
    power_sources: dict[str, int]
    meta: dict[str, Any]
    runs: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    notes: dict[str, list[str]]
    figures: list[FigureSpec]
    factor_text: dict[str, str]
    dunn: dict[str, pd.DataFrame]
    timings_s: dict[str, float]
    left_out: dict[str, int]

    @property
    def simulated(self) -> bool: ...


Figures = dict[str, list[FigureSpec]]
Part = Callable[[PageSource, Figures, Sequence[Path]], list[Block]]


def page(report: PageSource, model_files: Sequence[Path] = ()) -> list[Block]:
    """The page's blocks: the warnings on power, then one part per section, then the timings."""
    figs: Figures = {}
    for f in report.figures:
        figs.setdefault(f.section, []).append(f)
    blocks = _heading(report)
    for part in PARTS:
        blocks += part(report, figs, model_files)
    return blocks


def _heading(report: PageSource) -> list[Block]:
    b: list[Block] = [("h1", f"Campaign {report.title}: energy analysis")]
    if report.simulated:
        b.append(("note", "**Simulated power.** Runs marked `simulated` had no power meter: their power follows "
                          "the real training load but is not a measurement of any device. Every energy, statistic, "
                          "estimator, front and CO2 figure below rests on simulated power."))
    if len(report.power_sources) > 1:
        b.append(("note", f"**Pooled power sources** ({', '.join(report.power_sources)}): "
                          "analysis.allow_mixed_sources=true was set; numbers below mix them."))
    s = report.settings
    target = TARGET_NAMES[s.energy]
    how = (" (energy - the trial's idle power x duration, the idle power from the same trial's idle window)"
           if s.energy == EnergyTarget.above_idle else "")
    b.append(("p", f"**Energy target: {target}** (analysis.energy={s.energy}): the statistics, the estimators, the "
                   f"surrogate and the Pareto fronts compare each run's {target}{how}. The summary shows the total "
                   "energy and the energy above idle side by side, each with its stated uncertainty; the carbon "
                   "figures use the total energy."))
    if s.power_source is None:
        b.append(("p", f"**Power source: every run** (analysis.power_source=null): {len(report.runs)} finished "
                       "run(s) analysed; set analysis.power_source=measured or simulated to analyse one kind."))
    else:
        left = sum(report.left_out.values())
        detail = f" ({', '.join(f'{k}: {v}' for k, v in report.left_out.items())})" if left else ""
        b.append(("p", f"**Power source selected: {s.power_source}** (analysis.power_source={s.power_source}): "
                       f"{len(report.runs)} finished run(s) analysed, {left} left out{detail}."))
    flagged = report.tables.get("flagged_runs")
    if flagged is not None and len(flagged):
        b.append(("note", f"**Flagged measurements.** {len(flagged)} run(s) carry flags on their measurement "
                          f"({', '.join(sorted({f for v in flagged['flags'] for f in str(v).split(',')}))}): "
                          "they are included in every figure, statistic and total below, and named under "
                          "Flagged measurements."))
    if mixed := mixed_methods_text(report.runs):
        b.append(("note", f"**Mixed energy methods.** The totals below {mixed}."))
    return b


def _figs(figs: Figures, section: str) -> list[Block]:
    return [("fig", f.name, f.caption) for f in figs.get(section, [])]


def _notes(report: PageSource, section: str) -> list[Block]:
    return [("note", n) for n in report.notes.get(section, [])]


def design_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    b: list[Block] = [("h2", "Design"),
                      ("p", "The design factors, their levels, the runs in each cell of their full crossing "
                            "(seeds are the replicates), and whether every cell holds the same number of runs. "
                            "What this campaign's size allows and does not:")]
    if "design" in report.tables:
        b.insert(1, ("table", report.tables["design"], None))
    return b + _notes(report, "design")


def summary_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    s, t = report.settings, report.tables
    b: list[Block] = [("h2", "Summary"), ("list", [f"{k}: {v}" for k, v in report.meta.items()])]
    b.append(("p", f"Choices: p-value correction `{s.p_adjust}`, alpha {s.alpha:g}, smallest group "
                   f"{s.min_group_size}; surrogate {s.surrogate.epochs} epochs; stable epoch "
                   f"{s.stable_epoch if s.stable_epoch is not None else 'detected'}"
                   + (f" ({s.stable_epoch_base}-based: window from epoch {s.window_start()})"
                      if s.stable_epoch is not None else "")
                   + f", window {s.window}; images per epoch: {s.images_per_epoch}; carbon intensity "
                   f"{s.carbon.intensity():g} g/kWh, PUE {s.carbon.pue:g}. All tables are in `tables/` "
                   "as CSV and Markdown."))
    if "energy_by_gpu_budget" in t:
        b += [("h3", "Energy total and above idle, with uncertainty, by GPU type and budget"),
              ("p", "Sums over the runs and means per run; ± the stated uncertainty of the measured energy (summed "
                    f"linearly over runs: a device's error is systematic); {ABOVE_IDLE_UNCERTAINTY}. n/a: a run "
                    "states no uncertainty or records no idle power."),
              ("table", _energy_view(t["energy_by_gpu_budget"]), None), *_figs(figs, "summary")]
    if "energy_methods" in t:
        b += [("h3", "Energy methods"),
              ("p", "How each run's energy was obtained, and the share of the runs; `simulated` wherever the power "
                    "is simulated."),
              ("table", t["energy_methods"], None)]
    if "flagged_runs" in t:
        flagged = t["flagged_runs"]
        b.append(("h3", "Flagged measurements"))
        b.append(("p", f"{len(flagged)} run(s) with flags (e.g. short_window:PHASE: too few samples or too low a "
                       "rate in that window; disagreement: counter and sampled power disagree beyond the limit). "
                       "The figures and statistics include them." if len(flagged) else
                       "No run's measurement is flagged."))
        if len(flagged):
            b.append(("table", flagged, 60))
    if "runs_by_architecture" in t:
        b += [("h3", "Runs by GPU type, budget and architecture"), ("table", t["runs_by_architecture"], 40)]
    if "phases" in t:
        b += [("h3", "Energy by protocol phase"), ("table", t["phases"], None)]
    return b


def statistics_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    s, t = report.settings, report.tables
    target = TARGET_NAMES[s.energy]
    b: list[Block] = [
        ("h2", f"Statistics: {target} per training image"),
        ("p", f"{target.capitalize()} per training image = the run's {target} / (training images per epoch x "
              "epochs). Per factor: "
              "Shapiro-Wilk per group and Levene (Brown-Forsythe) across groups, Kruskal-Wallis with "
              "eta squared = (H - k + 1) / (n - k), Dunn's post-hoc test with the "
              f"`{s.p_adjust}` correction; groups under {s.min_group_size} runs are left out and named. "
              "Each factor is tested within each combination of the other design factors (the `stratum` "
              "column; `runs` names the runs a test rests on), and pooled over every run (stratum `all`) only "
              "where the design is balanced. Eta squared has a percentile bootstrap interval "
              f"({s.bootstrap} resamples within groups, seed {s.seed}). Beside the non-parametric tests: Welch's "
              "ANOVA, Games-Howell pairs, Cliff's delta with its bootstrap interval and the median difference "
              f"(`tables/pairwise_effects.csv`). Shapiro-Wilk needs {s.normality_min_n} runs in a group "
              "(analysis.normality_min_n); smaller groups are \"not assessable\".")]
    shown = None
    if "architecture_ranking" in t:
        ranking = t["architecture_ranking"]
        shown = set(ranking.loc[ranking["shown"], "arch_hash"])
    if "energy_per_image" in t:
        b.append(("table", _only_shown(t["energy_per_image"], shown), 40))
    if shown is not None:
        b += [("h3", "Architectures ranked by median energy per image (the top and bottom shown)"),
              ("p", f"{len(ranking)} architectures; the page shows the {len(shown)} at both ends of the ranking, "
                    "every architecture is in `tables/architecture_ranking.csv` and the other tables' CSV files."),
              ("table", ranking[ranking["shown"]], None)]
    for factor in s.factors:
        name = factor_name(factor)
        b.append(("h3", f"By {name}"))
        b += [blk for blk in _figs(figs, "statistics") if blk[1] == factor_figure(name)]
        b.append(("p", report.factor_text.get(factor, "not analysed")))
        if factor in report.dunn:
            m = report.dunn[factor]
            if len(m) <= 12:
                b += [("p", f"Dunn's test, adjusted p-values ({s.p_adjust}):"), ("matrix", m)]
            else:
                b.append(("p", f"Dunn's test: {len(m)} groups; the matrix is in `tables/dunn.csv`."))
    for name, title in (("group_tests", "Kruskal-Wallis, Welch's ANOVA and Levene, within strata"),
                        ("shapiro_wilk", "Shapiro-Wilk per group"), ("dunn", "Dunn post-hoc pairs"),
                        ("pairwise_effects", "Games-Howell, Cliff's delta and median difference per pair"),
                        ("spearman", "Spearman correlations"),
                        ("seed_spread", "Within-architecture variability over seeds")):
        if name in t:
            b += [("h3", title), ("table", _only_shown(t[name], shown), 40)]
    return b + _notes(report, "statistics")


def _only_shown(df: pd.DataFrame, shown: set[Any] | None) -> pd.DataFrame:
    """The rows of ``df`` about the architectures the page shows (all rows when ``shown`` is None):
    rows with an arch_hash column, or of factor arch_hash with a level / group column."""
    if shown is None:
        return df
    if "arch_hash" in df.columns:
        return df[df["arch_hash"].isin(shown)]
    for col in ("level", "group"):
        if "factor" in df.columns and col in df.columns:
            return df[(df["factor"] != "arch_hash") | df[col].isin(shown)]
    return df


def surrogate_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    ss, t = report.settings.surrogate, report.tables
    shape = "-".join(map(str, (N_FEATURES, *ss.hidden, 1)))
    b: list[Block] = [
        ("h2", "Energy surrogate (EC-NAS)"),
        ("p", f"MLP {shape} with GELU, L1 loss on energy in Wh, Adam at lr "
              f"{ss.learning_rate:g}, batch {ss.batch_size}, {ss.epochs} epochs, split {list(ss.split)} by "
              "architecture (seed "
              f"{ss.seed}); one model per GPU type, predicting energy per epoch (budget x per-epoch energy). "
              "Pearson, Kendall tau and MAE on the test split only.")]
    if "surrogate_metrics" in t:
        b.append(("table", _metrics_view(t["surrogate_metrics"]), None))
    for m in model_files:
        b.append(("p", f"Model file: `{m.name}` (full path: {m})"))
    b += _figs(figs, "surrogate")
    if "surrogate_predictions" in t:
        b += [("h3", f"Predicted energy at budgets {list(ss.predict_budgets)}"),
              ("p", "Rows with extrapolation = True predict a budget outside the measured ones; "
                    "budget_ratio_to_nearest is their distance from the training data. They are not results."),
              ("table", t["surrogate_predictions"], 40)]
    return b + _notes(report, "surrogate")


def estimators_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    b: list[Block] = [
        ("h2", "Energy estimators (online, offline, Green Algorithms, ML CO2 Impact)"),
        ("p", "Each estimator predicts the energy of the same held-out runs; RMSE and MAE in kJ, R2 against the "
              "measured energy of this campaign's runs" + (" (simulated power: the scores rank the estimators on "
                                                          "generated numbers, not on a measurement)"
                                                          if report.simulated else "") + ".")]
    if "estimators" in report.tables:
        b.append(("table", report.tables["estimators"], None))
    return b + _figs(figs, "estimators") + _notes(report, "estimators")


def pareto_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    t = report.tables
    b: list[Block] = [
        ("h2", "Pareto front: 1 - validation accuracy vs energy"),
        ("p", "Per GPU type and epoch budget, architectures averaged over seeds. Knee: the front point where the "
              "front turns most (segment directions by two-argument arctangent on min-max normalised "
              "objectives). Hypervolume in (error x kWh) against the stated reference point.")]
    b += _figs(figs, "pareto")
    if "hypervolume" in t:
        b += [("h3", "Hypervolume"), ("table", t["hypervolume"], None)]
    if "pareto" in t:
        b += [("h3", "Extrema and knee (as EC-NAS table 2)"), ("table", t["pareto"], None)]
    return b + _notes(report, "pareto")


def carbon_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    c, t = report.settings.carbon, report.tables
    b: list[Block] = [
        ("h2", "Carbon"),
        ("p", f"CO2eq = energy x PUE ({c.pue:g}) x carbon intensity ({c.intensity():g} g/kWh, "
              f"{c.intensity_source}). Energies are the total energy at the device, whatever analysis.energy "
              "selects.")]
    if "carbon" in t:
        b.append(("table", t["carbon"], None))
    if "life_cycle" in t:
        defaults = life_cycle_defaults(c)
        b += [("h3", "Life cycle of the chosen architecture (004: E_life = CT + T + I x e)"),
              ("p", f"CT: every training of the campaign (the search); T: the chosen architecture's mean training "
                    f"energy; I: energy per inference from T = E x D x I x theta with theta = 1 / (1 - "
                    f"{c.overhead_share:g}); e = {c.inference_calls:g} inferences."),
              ("table", t["life_cycle"], None)]
        if defaults:
            b.append(("note", "**The shares rest on defaults.** CT and T are this campaign's energies, but "
                              f"{' and '.join(defaults)} are default values, not inputs of this campaign: the "
                              "inference energy and the search / training / inference shares follow from those "
                              "defaults (column `inputs`). Set analysis.carbon.inference_calls and "
                              "analysis.carbon.overhead_share to the deployment's own figures."))
    return b + _notes(report, "carbon")


def life_cycle_defaults(c: Any) -> list[str]:
    """The life-cycle inputs that are at their default value (``analysis.carbon.*``), as text."""
    from analysis.settings import CarbonSettings

    d = CarbonSettings()
    out = []
    if c.inference_calls == d.inference_calls:
        out.append(f"the inference count (analysis.carbon.inference_calls={c.inference_calls:g})")
    if c.overhead_share == d.overhead_share:
        out.append(f"the training overhead share (analysis.carbon.overhead_share={c.overhead_share:g}, 004's "
                   "figure)")
    return out


#: What the source studies report, quoted apart from this campaign's results (never beside them).
STUDY_QUOTES: tuple[tuple[str, str], ...] = (
    ("003 (architecture and training-environment energy study)",
     "the online epoch-energy estimator had the lowest RMSE on its test set (7.23 kJ); the Green Algorithms "
     "and ML CO2 Impact formulas were 20-30 times worse in RMSE than the online estimators"),
    ("003", "energy per image counts the images processed per epoch, training and validation in whole batches "
            "(33,952 per epoch for 23,807 training images); power is stable after epoch 10 (ten unstable "
            "epochs), window of 5 epochs"),
    ("EC-NAS (000)", "the energy surrogate reached a Pearson correlation of 0.9977 on its test split"),
    ("004 (life-cycle carbon model)", "training overhead (backpropagation) near 80 % of the training energy"),
)


def studies_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    return [("h2", "What the source studies report"),
            ("p", "Quoted from the studies this analysis follows, for orientation only: their numbers come from "
                  "other hardware, models, data and protocols, and are not results of this campaign nor "
                  "comparable with its figures above."),
            ("list", [f"{who}: {what}." for who, what in STUDY_QUOTES])]


def traces_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    return [("h2", "Power traces by phase"), *_figs(figs, "traces"), *_notes(report, "traces")]


def runs_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    target = TARGET_NAMES[report.settings.energy]
    return [("h2", "Runs"), ("p", f"Every finished run (all columns in `tables/runs.csv`, where `energy_j` is the "
                                  f"energy target: {target})."),
            ("table", report.runs[[c for c in RUN_VIEW if c in report.runs.columns]], 60)]


def timings_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in report.timings_s.items() if v >= 0.05)
    return [("h2", "Timings"), ("p", timings or "n/a")]


#: The page's parts in order: one per section (analysis.report.parts.SECTIONS), then the timings.
def calibration_part(report: PageSource, figs: Figures, model_files: Sequence[Path]) -> list[Block]:
    """The pre-launch estimate against what was measured (``analysis.calibration``; only where the
    report was made from a database)."""
    if "calibration" not in report.tables and not report.notes.get("calibration"):
        return []
    b: list[Block] = [("h2", "Calibration of the pre-launch estimate"),
                      ("p", "Per GPU type and epoch budget, the estimate recorded before the launch (per trial, in kWh, "
                            "and the source it came from) beside the done runs' measured cost per trial (every phase "
                            "but the worker's warm-up, as the estimate counts them): how far to trust the next "
                            "estimate.")]
    if "calibration" in report.tables:
        b.append(("table", report.tables["calibration"], None))
    return b + _notes(report, "calibration")


PARTS: tuple[Part, ...] = (design_part, summary_part, statistics_part, surrogate_part, estimators_part, pareto_part,
                           carbon_part, calibration_part, traces_part, runs_part, studies_part, timings_part)


def _plus_minus(values: pd.Series, errs: pd.Series) -> list[str]:
    return [f"{_cell(v)} ± {_cell(e)}" for v, e in zip(values, errs, strict=True)]


def _energy_view(df: pd.DataFrame) -> pd.DataFrame:
    """The energy per GPU type and budget with each energy as ``value ± uncertainty`` (J)."""
    keep = ["gpu_type", "epochs", "runs", "power_kind", "methods"]
    return df[keep].assign(**{
        "energy total (J)": _plus_minus(df["energy_total_j"], df["uncertainty_j"]),
        "energy above idle (J)": _plus_minus(df["energy_above_idle_j"], df["uncertainty_j"]),
        "mean per run, total (J)": _plus_minus(df["mean_energy_total_j"], df["mean_uncertainty_j"]),
        "mean per run, above idle (J)": _plus_minus(df["mean_energy_above_idle_j"], df["mean_uncertainty_j"]),
        "flagged runs": df["flagged_runs"],
    })


def _metrics_view(df: pd.DataFrame) -> pd.DataFrame:
    """The surrogate's metrics with n/a and the reason where a number is missing."""
    out = df.copy().astype(object)
    for col in ("pearson", "kendall_tau", "mae_wh"):
        out[col] = [v if isinstance(v, float) and np.isfinite(v) else "n/a (see note)" for v in df[col]]
    return out.rename(columns={"pearson": "Pearson r", "kendall_tau": "Kendall tau", "mae_wh": "MAE (Wh)"})


# --------------------------------------------------------------------------------------------
# Tables


def csv_ready(df: pd.DataFrame) -> pd.DataFrame:
    """Nested values (matrices, op lists) as JSON text, so the CSV parses back cell by cell."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(lambda v: isinstance(v, list | tuple | dict)).any():
            out[col] = out[col].map(lambda v: json.dumps(v) if isinstance(v, list | tuple | dict) else v)
    return out


def _cell(v: Any) -> str:
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


def md_table(df: pd.DataFrame, limit: int | None = None) -> str:
    """``df`` as a Markdown table (the first ``limit`` rows, and a line saying so)."""
    header, rows, more = _rows(df, limit)
    if not header:
        return "(empty table)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + (f"\n\n{more}" if more else "")


def _matrix_frame(m: pd.DataFrame) -> pd.DataFrame:
    out = m.copy()
    out.columns = [level_name(c) for c in m.columns]
    out.insert(0, str(m.index.name or ""), [level_name(i) for i in m.index])
    return out


# --------------------------------------------------------------------------------------------
# Markdown and HTML


def render_markdown(blocks: Sequence[Block]) -> str:
    """The page as Markdown (figures referenced by file name)."""
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
            out += [md_table(blk[1], blk[2]), ""]
        elif kind == "matrix":
            out += [md_table(_matrix_frame(blk[1])), ""]
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


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """The page as one HTML file (figures referenced by file name)."""
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
