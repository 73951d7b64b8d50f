"""Energy accounting of a campaign's runs: the total and the energy above idle, the stated
uncertainty, the method behind every figure and the validity flags, as columns and tables.

Every function takes plain DataFrames (a run per row, as ``db.read.CampaignReader.runs`` or the
``run_summary`` view gives them) and tolerates databases written before these columns existed: a
missing column is read as NULL, and the energy above idle is then computed from the run's own
idle power (``energy_j - idle_power_w x duration_s``).

Columns added by `with_energy_columns`:

- ``energy_total_j``: the recorded energy of training and evaluation;
- ``energy_above_idle_j``: recorded, else computed as above; NaN where neither is known;
- ``energy_uncertainty_j``: the stated uncertainty of the recorded energy (NaN: not recorded);
- ``energy_method``: how the energy was obtained, with ``simulated`` in it for every run whose
  power is simulated (``simulated (integrated)`` for an older simulated run);
- ``flags``: what is wrong with the measurement, comma-separated ("" for none);
- ``power_kind``: measured, simulated or unknown;
- ``energy_j``: the energy target the analysis compares (``analysis.energy``), and
  ``energy_per_image_j`` / ``energy_per_image_uncertainty_j`` of it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.settings import EnergyTarget
from analysis.stats import energy_per_image_j, images_per_epoch, power_kind

TOTAL = "energy_total_j"
ABOVE_IDLE = "energy_above_idle_j"
UNCERTAINTY = "energy_uncertainty_j"
#: How the page names each energy target.
TARGET_NAMES = {EnergyTarget.total: "total energy", EnergyTarget.above_idle: "energy above idle"}
#: The statement that goes with the stated uncertainty of an energy above idle.
ABOVE_IDLE_UNCERTAINTY = ("the uncertainty of an energy above idle is the one stated for the measured energy; "
                          "the idle baseline's own uncertainty is not added")


def numeric(df: pd.DataFrame, col: str) -> pd.Series:
    """Column ``col`` of ``df`` as floats (NaN where missing or not a number; all NaN without the column)."""
    if col not in df.columns:
        return pd.Series(math.nan, index=df.index, dtype="float64")
    return pd.to_numeric(df[col], errors="coerce").astype("float64")


def above_idle_j(df: pd.DataFrame, energy: str = "energy_j") -> pd.Series:
    """The recorded ``energy_above_idle_j`` of each row, else ``energy - idle_power_w x duration_s``
    (runs, or epochs and phases with their run's ``idle_power_w``); NaN where neither is known."""
    computed = numeric(df, energy) - numeric(df, "idle_power_w") * numeric(df, "duration_s")
    return numeric(df, ABOVE_IDLE).fillna(computed)


def flags_text(value: Any) -> str:
    """A run's flags as comma-separated text ("" for none), from text, a list or NULL."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    items = value if isinstance(value, list | tuple | np.ndarray) else str(value).split(",")
    return ",".join(s for s in (str(i).strip() for i in items) if s)


def method_label(source: Any, method: Any) -> str:
    """How a run's energy was obtained, saying ``simulated`` wherever its power is simulated."""
    name = "unknown" if method is None or (isinstance(method, float) and math.isnan(method)) else str(method)
    if power_kind(source) == "simulated" and "simulated" not in name:
        return "simulated" if name == "unknown" else f"simulated ({name})"
    return name


def with_energy_columns(runs: pd.DataFrame, target: EnergyTarget | str = EnergyTarget.total,
                        images: str = "training", batch_size: int = 256, valid_images: int = 10_000) -> pd.DataFrame:
    """A copy of ``runs`` with the columns of the module's docstring; ``energy_j`` becomes ``target``.
    ``images``, ``batch_size``, ``valid_images``: the images an epoch counts in energy per image
    (``analysis.stats.images_per_epoch``)."""
    target = EnergyTarget(target)
    df = runs.copy()
    recorded_per_image = df.get("energy_per_image_j")
    df[TOTAL] = numeric(df, "energy_j")
    df[ABOVE_IDLE] = above_idle_j(df)
    df[UNCERTAINTY] = numeric(df, UNCERTAINTY)
    source = df["power_source"] if "power_source" in df.columns else pd.Series(None, index=df.index)
    method = df["energy_method"] if "energy_method" in df.columns else pd.Series(None, index=df.index)
    df["energy_method"] = [method_label(s, m) for s, m in zip(source, method, strict=True)]
    df["flags"] = [flags_text(v) for v in df["flags"]] if "flags" in df.columns else ""
    df["power_kind"] = [power_kind(s) for s in source]
    df["energy_j"] = df[TOTAL] if target == EnergyTarget.total else df[ABOVE_IDLE]
    if {"train_images", "epochs"} <= set(df.columns):
        conv = (str(images), batch_size, valid_images)
        df["images_per_epoch"] = images_per_epoch(df, *conv)
        df["energy_per_image_j"] = energy_per_image_j(df, *conv)
        df["energy_per_image_uncertainty_j"] = energy_per_image_j(df.assign(energy_j=df[UNCERTAINTY]), *conv)
    else:
        recorded = df.get("energy_above_idle_per_image_j") if target == EnergyTarget.above_idle else recorded_per_image
        df["energy_per_image_j"] = math.nan if recorded is None else pd.to_numeric(recorded, errors="coerce")
        df["energy_per_image_uncertainty_j"] = math.nan
    return df


def with_epoch_energy(epochs: pd.DataFrame, runs: pd.DataFrame, target: EnergyTarget | str) -> pd.DataFrame:
    """``epochs`` with energy_total_j and energy_above_idle_j (recorded, else from the run's idle
    power), ``energy_j`` the target, and ``uncertainty_j`` (NaN where not recorded)."""
    out = epochs.copy()
    idle = runs.set_index("run_id")["idle_power_w"] if "idle_power_w" in runs.columns else None
    with_idle = out.assign(idle_power_w=out["run_id"].map(idle) if idle is not None else math.nan)
    out[TOTAL] = numeric(out, "energy_j")
    out[ABOVE_IDLE] = above_idle_j(with_idle).to_numpy()
    out["uncertainty_j"] = numeric(out, "uncertainty_j")
    out["energy_j"] = out[TOTAL] if EnergyTarget(target) == EnergyTarget.total else out[ABOVE_IDLE]
    return out


def sum_known(values: pd.Series) -> float:
    """The sum of ``values``, NaN when any is unknown (an uncertainty not stated is not zero)."""
    return float(values.sum()) if len(values) and values.notna().all() else math.nan


def counts_text(values: pd.Series) -> str:
    """``"nvml_counter: 3, simulated: 2"``: each value and how many rows hold it, most first."""
    return ", ".join(f"{k}: {v}" for k, v in values.value_counts().items())


def methods_of(runs: pd.DataFrame) -> list[str]:
    """The energy methods of ``runs`` (as `with_energy_columns` labels them), sorted."""
    return sorted(set(runs["energy_method"])) if "energy_method" in runs.columns else []


def mixed_methods_text(runs: pd.DataFrame) -> str:
    """A sentence for beside any sum of ``runs``' energies when they come from several methods, else ""."""
    if len(methods_of(runs)) < 2:
        return ""
    return f"sums energies of different methods ({counts_text(runs['energy_method'])} runs)"


def energy_by_gpu_budget(runs: pd.DataFrame) -> pd.DataFrame:
    """Per GPU type and budget: the total and the above-idle energy side by side (sum over runs and
    mean per run), each with its stated uncertainty (sums linear: the device's error is systematic),
    the methods, the power kind and the flagged runs."""
    g = runs.groupby(["gpu_type", "epochs"], sort=True)
    out = pd.DataFrame({
        "runs": g.size(),
        "power_kind": g["power_kind"].agg(lambda s: ", ".join(sorted(set(s)))),
        "methods": g["energy_method"].agg(counts_text),
        "energy_total_j": g[TOTAL].sum(),
        "energy_above_idle_j": g[ABOVE_IDLE].agg(sum_known),
        "uncertainty_j": g[UNCERTAINTY].agg(sum_known),
        "mean_energy_total_j": g[TOTAL].mean(),
        "mean_energy_above_idle_j": g[ABOVE_IDLE].mean(),
        "mean_uncertainty_j": g[UNCERTAINTY].agg(lambda s: s.mean() if s.notna().all() else math.nan),
        "flagged_runs": g["flags"].agg(lambda s: int((s != "").sum())),
    })
    return out.reset_index()


def method_shares(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs per energy method (and power kind), with their share of the runs."""
    g = runs.groupby(["energy_method", "power_kind"], sort=True)
    out = pd.DataFrame({"runs": g.size(), "energy_total_j": g[TOTAL].sum()}).reset_index()
    out.insert(3, "share", out["runs"] / max(1, len(runs)))
    return out.rename(columns={"energy_method": "method"})


#: Columns of the flagged-runs table (those the runs have).
FLAGGED_VIEW = ("run_id", "arch_hash", "epochs", "gpu_type", "seed", "power_source", "energy_method", "flags",
                TOTAL, ABOVE_IDLE, UNCERTAINTY, "energy_disagreement", "counter_energy_j", "integrated_energy_j")


def flagged_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs whose measurement is flagged (non-empty ``flags``), with their flags."""
    df = runs[runs["flags"] != ""] if "flags" in runs.columns else runs.iloc[0:0]
    return df[[c for c in FLAGGED_VIEW if c in runs.columns]].reset_index(drop=True)


def phase_energy(phases: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per budget and protocol phase: runs, mean duration, mean energy total and above idle (recorded,
    else from the run's idle power), mean stated uncertainty, mean power and invalid windows."""
    cols = [c for c in ("run_id", "epochs", "idle_power_w") if c in runs.columns]
    p = phases[phases["run_id"].isin(runs["run_id"])].merge(runs[cols], on="run_id")
    p = p.assign(above=above_idle_j(p).to_numpy(), unc=numeric(p, "uncertainty_j").to_numpy(),
                 invalid=[v is not None and not pd.isna(v) and not bool(v) for v in p.get("valid", [None] * len(p))])
    pg = p.groupby(["epochs", "phase"], sort=True)
    return pd.DataFrame({
        "runs": pg["run_id"].nunique(),
        "mean_duration_s": pg["duration_s"].mean(),
        "mean_energy_j": pg["energy_j"].mean(),
        "mean_energy_above_idle_j": pg["above"].mean(),
        "mean_uncertainty_j": pg["unc"].mean(),
        "mean_power_w": pg["energy_j"].sum() / pg["duration_s"].sum().where(pg["duration_s"].sum() > 0),
        "invalid_windows": pg["invalid"].sum().astype(int),
    }).reset_index()


__all__ = [
    "ABOVE_IDLE",
    "TARGET_NAMES",
    "TOTAL",
    "UNCERTAINTY",
    "above_idle_j",
    "counts_text",
    "energy_by_gpu_budget",
    "flagged_runs",
    "flags_text",
    "method_label",
    "method_shares",
    "methods_of",
    "mixed_methods_text",
    "numeric",
    "phase_energy",
    "sum_known",
    "with_energy_columns",
    "with_epoch_energy",
]
