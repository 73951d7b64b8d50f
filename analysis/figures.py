"""The report's figures: PNG files drawn from plain DataFrames with matplotlib's object API.

Every figure names its power source in its title (simulated power says so in capitals), carries
axis labels with units and a legend where colours mean something. Figures of per-run or
aggregated energy draw the stated uncertainty as error bars where it is recorded. No pyplot: figures are built
as ``matplotlib.figure.Figure`` objects, so nothing global is touched and no display is needed.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from analysis.pareto import ParetoResult

PHASE_COLORS = {"warmup": "#888888", "setup": "#ff7f0e", "idle": "#1f77b4", "train": "#d62728", "eval": "#2ca02c",
                "cooldown": "#9467bd"}
FACTOR_LABELS = {"arch_hash": "architecture (hash prefix)", "gpu_type": "GPU type", "epochs": "epoch budget"}
SIMULATED = "SIMULATED power (not a measurement)"
DPI = 130


def source_label(sources: Iterable[str]) -> str:
    """The power-source tag every figure carries: loud for simulated power, plain for measured."""
    from analysis.stats import power_kind

    names = sorted({str(s) for s in sources})
    if not names:
        return "no power source"
    kinds = {n: power_kind(n) for n in names}
    if all(k == "simulated" for k in kinds.values()):
        return SIMULATED
    if "simulated" in kinds.values():
        return f"MIXED power sources {', '.join(names)} (simulated runs are not measurements)"
    measured = [n for n in names if kinds[n] == "measured"]
    unknown = [n for n in names if kinds[n] == "unknown"]
    parts = [f"measured power ({', '.join(measured)})"] if measured else []
    if unknown:
        parts.append(f"power of unknown source ({', '.join(unknown)})")
    return "; ".join(parts)


def level_name(level: Any) -> str:
    """A short display name for a factor level (architecture hashes cut to 8 characters)."""
    text = str(level)
    return text[:8] if len(text) >= 32 and all(c in "0123456789abcdef" for c in text) else text


def epochs_text(n: Any) -> str:
    """``"1 epoch"``, ``"12 epochs"``."""
    return f"{n} epoch" if str(n) == "1" else f"{n} epochs"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def factor_boxplot(
    runs: pd.DataFrame,
    factor: str,
    path: str | Path,
    value: str = "energy_per_image_j",
    value_label: str = "energy per training image (J)",
    test_text: str = "",
    label: str = "",
    err: str | None = None,
) -> Path:
    """Box plot of ``value`` per level of ``factor`` with every run as a point; the test result
    (``test_text``) under the title. Points are coloured by power source when there are several;
    column ``err`` (where the runs have it) is drawn as each point's error bar."""
    err = err if err is not None and err in runs.columns else None
    sub = runs[[factor, value, "power_source", *([err] if err else [])]].dropna(subset=[factor, value])
    levels = sorted(sub[factor].unique(), key=lambda v: (0, float(v)) if isinstance(v, int | float | np.number)
                    else (1, str(v)))
    width = min(16.0, max(5.5, 1.0 + 0.6 * len(levels)))
    fig = _figure(width, 4.8)
    ax = fig.add_subplot()
    data = [sub.loc[sub[factor] == lv, value].to_numpy(dtype=np.float64) for lv in levels]
    if levels:
        ax.boxplot(data, tick_labels=[level_name(lv) for lv in levels], widths=0.5, showfliers=False)
    sources = sorted(sub["power_source"].fillna("unknown").unique())
    rng = np.random.default_rng(0)  # jitter only, so the figure is the same every time
    for k, src in enumerate(sources):
        for i, lv in enumerate(levels, start=1):
            rows = sub[(sub[factor] == lv) & (sub["power_source"].fillna("unknown") == src)]
            ys = rows[value]
            xs = i + rng.uniform(-0.12, 0.12, len(ys))
            ax.scatter(xs, ys, s=16, color=f"C{k}", alpha=0.8, zorder=3,
                       label=f"runs, {src}" if i == 1 else None)
            _error_bars(ax, xs, ys, rows[err] if err else None, f"C{k}")
    ax.set_xlabel(FACTOR_LABELS.get(factor, factor))
    ax.set_ylabel(value_label)
    if len(levels) > 6:
        ax.tick_params(axis="x", rotation=45)
    ax.grid(axis="y", alpha=0.3)
    if sources:
        ax.legend(fontsize=8, loc="best")
    ax.set_title(textwrap.fill(test_text, width=int(width * 13)), fontsize=8.5)
    fig.suptitle(f"{value_label.split(' (')[0].capitalize()} by {FACTOR_LABELS.get(factor, factor)}\n{label}",
                 fontsize=10)
    return _save(fig, path)


def _error_bars(ax: Axes, xs: Any, ys: Any, errs: Any, color: str, horizontal: bool = False) -> None:
    """Error bars of the points (xs, ys) where ``errs`` (None: none) is known."""
    if errs is None:
        return
    e = np.asarray(errs, dtype=np.float64)
    known = np.isfinite(e)
    if not known.any():
        return
    x, y = np.asarray(xs, dtype=np.float64)[known], np.asarray(ys, dtype=np.float64)[known]
    ax.errorbar(x, y, xerr=e[known] if horizontal else None, yerr=None if horizontal else e[known], fmt="none",
                ecolor=color, elinewidth=0.8, capsize=2, alpha=0.7, zorder=2)


def energy_totals_figure(table: pd.DataFrame, path: str | Path, label: str = "") -> Path:
    """Mean energy per run, total and above idle side by side, per (GPU type, budget) of
    ``analysis.energy.energy_by_gpu_budget``'s table; the mean stated uncertainty as error bars."""
    names = [f"{g}\n{epochs_text(e)}" for g, e in zip(table["gpu_type"], table["epochs"], strict=True)]
    x = np.arange(len(names), dtype=np.float64)
    fig = _figure(min(16.0, max(5.5, 1.2 + 1.1 * len(names))), 4.6)
    ax = fig.add_subplot()
    unc = table["mean_uncertainty_j"].to_numpy(dtype=np.float64)
    for k, (col, name) in enumerate((("mean_energy_total_j", "total"), ("mean_energy_above_idle_j", "above idle"))):
        xs = x + (k - 0.5) * 0.38
        ys = table[col].to_numpy(dtype=np.float64)
        ax.bar(xs, np.nan_to_num(ys), width=0.36, color=f"C{k}", label=f"energy {name}")
        _error_bars(ax, xs, ys, unc, "black")
    ax.set_xticks(x, names)
    ax.set_ylabel("mean energy per run (J)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="error bars: stated uncertainty", title_fontsize=7)
    fig.suptitle(f"Energy per run, total and above idle\n{label}", fontsize=10)
    return _save(fig, path)


def power_trace_figure(
    traces: Sequence[tuple[Mapping[str, Any], pd.DataFrame]], path: str | Path, label: str = ""
) -> Path:
    """One panel per run: power over time, coloured by protocol phase (warm-up, idle, train, eval,
    cool-down); ``traces`` pairs a run's row (run_id, arch_hash, epochs, seed) with its samples
    (t_s, phase, power_w, device)."""
    n = max(1, len(traces))
    fig = _figure(10, 2.8 * n + 0.6)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, (run, trace) in zip(axes, traces, strict=False):
        t0 = float(trace["t_s"].min()) if len(trace) else 0.0
        for phase, color in PHASE_COLORS.items():
            pts = trace[trace["phase"] == phase]
            if len(pts):
                ax.scatter(pts["t_s"] - t0, pts["power_w"], s=5, color=color, label=phase)
        other = trace[~trace["phase"].isin(list(PHASE_COLORS))]
        if len(other):
            ax.scatter(other["t_s"] - t0, other["power_w"], s=5, color="black", label="other")
        ax.set_ylabel("power (W)")
        ax.set_title(f"run {run['run_id']}: architecture {level_name(run['arch_hash'])}, {epochs_text(run['epochs'])}, "
                     f"seed {run['seed']}, {run.get('gpu_type', '?')}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(markerscale=3, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="phase")
    axes[-1].set_xlabel("time since the run's first sample (s)")
    fig.suptitle(f"Power traces by protocol phase\n{label}", fontsize=10)
    return _save(fig, path)


def epoch_energy_figure(
    epochs: pd.DataFrame,
    runs: pd.DataFrame,
    path: str | Path,
    label: str = "",
    stable_epoch: int | None = None,
    window: int | None = None,
    max_lines: int = 200,
    energy_label: str = "energy",
) -> Path:
    """Energy of each epoch against the epoch number, one line per run (at most ``max_lines`` per
    panel), one panel per epoch budget, coloured by architecture; the configured stable window
    shaded."""
    df = epochs.merge(runs[["run_id", "arch_hash", "epochs"]].rename(columns={"epochs": "budget"}), on="run_id")
    budgets = sorted(df["budget"].unique()) or [None]
    ncols = min(len(budgets), 3)
    nrows = math.ceil(len(budgets) / ncols)
    fig = _figure(4.6 * ncols, 3.8 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(budgets):]:
        ax.set_visible(False)
    archs = sorted(df["arch_hash"].unique())
    color = {a: f"C{i % 10}" for i, a in enumerate(archs)}
    for ax, budget in zip(axes, budgets, strict=False):
        sub = df[df["budget"] == budget]
        shown: set[str] = set()
        first = set(list(sub["run_id"].unique())[:max_lines])
        for _, r in sub[sub["run_id"].isin(first)].sort_values(["run_id", "epoch"]).groupby("run_id", sort=False):
            arch = str(r["arch_hash"].iloc[0])
            ax.plot(r["epoch"], r["energy_j"], marker="o", markersize=3, linewidth=1, alpha=0.7, color=color[arch],
                    label=level_name(arch) if arch not in shown and len(archs) <= 10 else None)
            _error_bars(ax, r["epoch"], r["energy_j"], r.get("uncertainty_j"),
                        color[arch])
            shown.add(arch)
        if stable_epoch is not None and window and budget is not None and stable_epoch + window - 1 <= budget:
            ax.axvspan(stable_epoch - 0.5, stable_epoch + window - 0.5, color="0.88", zorder=0,
                       label=f"stable window (epochs {stable_epoch}-{stable_epoch + window - 1})")
        ax.set_title(epochs_text(budget) if budget is not None else "no epochs recorded", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{energy_label} of the epoch (J)")
        ax.grid(alpha=0.3)
        if len(sub) and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, title="architecture" if len(archs) <= 10 else None, title_fontsize=7)
        if budget is not None and budget <= 12:
            ax.set_xticks(range(1, int(budget) + 1))
    fig.suptitle(f"Epoch {energy_label} over the epochs of each run\n{label}", fontsize=10)
    return _save(fig, path)


def surrogate_scatter(
    measured_wh: np.ndarray,
    predicted_wh: np.ndarray,
    budgets: np.ndarray | None,
    path: str | Path,
    metrics_text: str,
    title: str,
    label: str = "",
    measured_err_wh: np.ndarray | None = None,
    energy_label: str = "energy",
) -> Path:
    """Predicted against measured energy (Wh) of the surrogate's test runs, coloured by epoch
    budget (one series when ``budgets`` is None), with the identity line and the metrics; the
    measured energy's stated uncertainty (``measured_err_wh``) as horizontal error bars."""
    y = np.asarray(measured_wh, dtype=np.float64)
    p = np.asarray(predicted_wh, dtype=np.float64)
    fig = _figure(5.8, 5.4)
    ax = fig.add_subplot()
    if budgets is None:
        ax.scatter(y, p, s=16, alpha=0.75, color="C0", label=f"test architectures (n={y.size})")
    else:
        b = np.asarray(budgets)
        for k, budget in enumerate(sorted(set(b.tolist()))):
            m = b == budget
            ax.scatter(y[m], p[m], s=16, alpha=0.75, color=f"C{k}",
                       label=f"{epochs_text(budget)} (n={int(m.sum())})")
    _error_bars(ax, y, p, measured_err_wh, "0.4", horizontal=True)
    if y.size:
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="predicted = measured")
    ax.set_xlabel(f"measured {energy_label} (Wh)")
    ax.set_ylabel(f"predicted {energy_label} (Wh)")
    ax.text(0.03, 0.97, metrics_text, transform=ax.transAxes, va="top", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\n{label}", fontsize=10)
    return _save(fig, path)


def learning_curve_figure(curve: pd.DataFrame, path: str | Path, title: str, label: str = "",
                          size_unit: str = "runs") -> Path:
    """Test MAE (Wh) against the training-set size (in ``size_unit``), mean and std over
    initialisations."""
    fig = _figure(6.2, 4.6)
    ax = fig.add_subplot()
    n_inits = int(curve["n_inits"].iloc[0]) if len(curve) else 0
    ax.errorbar(curve["train_size"], curve["mae_mean_wh"], yerr=curve["mae_std_wh"].fillna(0.0), marker="o",
                capsize=4, label=f"mean ± std over {n_inits} initialisations")
    ax.set_xlabel(f"training-set size ({size_unit})")
    ax.set_ylabel("test MAE (Wh)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\n{label}", fontsize=10)
    return _save(fig, path)


def pareto_figure(
    panels: Sequence[tuple[str, pd.DataFrame, ParetoResult]],
    path: str | Path,
    label: str = "",
    error_col: str = "error",
    energy_col: str = "energy_kwh_mean",
    energy_label: str = "training energy",
) -> Path:
    """One panel per (GPU type, budget): every architecture (with the mean stated uncertainty of
    its energy as error bars, where recorded), the front as a step line (the edge of the region it
    dominates), its extrema and knee, and the hypervolume's reference point."""
    n = max(1, len(panels))
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig = _figure(5.6 * ncols, 4.6 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, (title, archs, res) in zip(axes, panels, strict=False):
        _pareto_panel(ax, title, archs, res, error_col, energy_col, energy_label)
    fig.suptitle(f"Pareto front of (1 - validation accuracy, {energy_label}) per epoch budget\n{label}", fontsize=10)
    return _save(fig, path)


def _pareto_panel(ax: Axes, title: str, archs: pd.DataFrame, res: ParetoResult, error_col: str = "error",
                  energy_col: str = "energy_kwh_mean", energy_label: str = "training energy") -> None:
    # energies are kWh per trial; drawn in Wh, where NAS-sized trials have readable numbers
    ax.scatter(archs[error_col], archs[energy_col] * 1e3, s=12, color="0.6", label=f"architectures (n={len(archs)})")
    unc = archs.get("energy_uncertainty_kwh_mean")
    _error_bars(ax, archs[error_col], archs[energy_col] * 1e3, None if unc is None else unc * 1e3, "0.6")
    f = res.front
    ax.step(f[error_col], f[energy_col] * 1e3, where="post", color="C0", linewidth=1.2, label="Pareto front")
    ax.scatter(f[error_col], f[energy_col] * 1e3, s=18, color="C0")
    marks = [("lowest error", res.min_error, "C2", "o"), ("lowest energy", res.min_energy, "C1", "s")]
    if res.knee is not None:
        marks.append(("knee", res.knee, "C3", "*"))
    for name, row, color, marker in marks:
        ax.scatter([row[error_col]], [row[energy_col] * 1e3], s=90, color=color, marker=marker, zorder=3,
                   label=f"{name}: {level_name(row['arch_hash'])}")
    rx, ry = res.reference
    ax.scatter([rx], [ry * 1e3], marker="x", color="black", s=40, label="hypervolume reference")
    ax.set_title(f"{title}; hypervolume {res.hypervolume:.3g} (error x kWh)", fontsize=9)
    ax.set_xlabel("1 - validation accuracy")
    ax.set_ylabel(f"{energy_label}, mean over seeds (Wh)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_pareto_fronts(
    archs: pd.DataFrame,
    results: Mapping[Any, ParetoResult],
    path: str | Path,
    by: str = "epochs",
    error_col: str = "error",
    energy_col: str = "energy_kwh_mean",
) -> Path:
    """`pareto_figure` of ``analysis.pareto.pareto_by_budget``'s results: one panel per budget
    (two per row) with all architectures, the front as a step line, extrema and knee; PNG."""
    panels = [(f"{level} epochs", archs[archs[by] == level], res) for level, res in results.items()]
    return pareto_figure(panels, path, error_col=error_col, energy_col=energy_col)
