"""How far to trust the pre-launch estimate: each finished group's estimate against what was measured.

For every GPU type x epoch budget of a campaign, the estimate recorded before its launch (per
trial: energy and GPU-hours, low and high, and the source it came from) beside the done runs'
measured cost per trial (every phase but the worker's warm-up: setup, idle, training, evaluation
and cool-down, as the estimate counts them): the measured mean, its ratio to the estimate's
midpoint and the share of runs inside the estimate's interval. A good estimate holds about 95 %
of runs inside its interval with a ratio near 1; a rough bound (TDP) holds them all with a ratio
far from 1.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
from sqlalchemy import Engine

from db.budget import estimates, first_estimate, run_costs
from db.records import J_PER_KWH, RunStatus


@dataclasses.dataclass(frozen=True)
class CalibrationRow:
    gpu_type: str
    epochs: int
    source: str  # the estimate's source for this group
    estimated_trials: int
    estimate_kwh_low: float  # per trial
    estimate_kwh_high: float
    runs: int  # done runs measured
    measured_kwh_mean: float | None  # per trial
    ratio: float | None  # measured mean / the estimate's midpoint
    inside: float | None  # share of done runs whose energy lies inside the interval
    hours_inside: float | None  # the same for GPU-hours


def calibration(engine: Engine, campaign_id: int) -> list[CalibrationRow]:
    """One row per group that had a pre-launch estimate (empty: none was recorded)."""
    first = first_estimate(estimates(engine, campaign_id, purpose="launch"))
    done: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in run_costs(engine, campaign_id):
        if r.status == RunStatus.DONE:
            done.setdefault((r.gpu_type, r.epochs), []).append((r.trial_energy_j / J_PER_KWH, r.trial_seconds / 3600))
    out = []
    for (gpu_type, epochs), est in sorted(first.items()):
        low, high = float(est["energy_kwh_low"]), float(est["energy_kwh_high"])
        h_low, h_high = float(est["gpu_hours_low"]), float(est["gpu_hours_high"])
        runs = done.get((gpu_type, epochs), [])
        mean = math.fsum(k for k, _ in runs) / len(runs) if runs else None
        mid = (low + high) / 2
        out.append(CalibrationRow(
            gpu_type, epochs, str(est["source"]), int(est["trials"]), low, high, len(runs), mean,
            mean / mid if mean is not None and mid > 0 else None,
            sum(1 for k, _ in runs if low <= k <= high) / len(runs) if runs else None,
            sum(1 for _, h in runs if h_low <= h <= h_high) / len(runs) if runs else None))
    return out


def overall_inside(rows: list[CalibrationRow]) -> float | None:
    """The share of all done runs inside their group's interval (None: no run)."""
    runs = sum(r.runs for r in rows)
    if not runs:
        return None
    return sum((r.inside or 0.0) * r.runs for r in rows) / runs


def frame(rows: list[CalibrationRow]) -> pd.DataFrame:
    """The calibration table as a DataFrame (one row per GPU type x epoch budget)."""
    return pd.DataFrame([dataclasses.asdict(r) for r in rows])


def summary(rows: list[CalibrationRow]) -> str:
    """One sentence: the share of done runs inside their interval, or why there is nothing to say."""
    if not rows:
        return ("No pre-launch estimate was recorded for this campaign (it was launched before estimates were "
                "kept), so there is nothing to calibrate.")
    share = overall_inside(rows)
    if share is None:
        return "No run is done yet: nothing to compare the pre-launch estimate with."
    return (f"{100 * share:.0f} % of the done runs lie inside their pre-launch interval (a 95 % prediction interval "
            "should hold about 95 %; a rough bound from the TDP holds nearly all and says little).")


def markdown(rows: list[CalibrationRow]) -> list[str]:
    """The calibration table as Markdown lines (a sentence where no estimate was recorded)."""
    if not rows:
        return ["No pre-launch estimate was recorded for this campaign (it was launched before estimates were "
                "kept), so there is nothing to calibrate."]
    lines = ["| GPU type | epochs | source | trials | estimate kWh/trial (low-high) | done runs | measured kWh/trial "
             "| measured / estimate | runs inside (energy) | runs inside (GPU-hours) |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.0f} %"

    for r in rows:
        lines.append(f"| {r.gpu_type} | {r.epochs} | {r.source} | {r.estimated_trials} | "
                     f"{r.estimate_kwh_low:.4g}-{r.estimate_kwh_high:.4g} | {r.runs} | "
                     f"{'' if r.measured_kwh_mean is None else f'{r.measured_kwh_mean:.4g}'} | "
                     f"{'' if r.ratio is None else f'{r.ratio:.2f}'} | {pct(r.inside)} | {pct(r.hours_inside)} |")
    share = overall_inside(rows)
    if share is not None:
        lines += ["", f"{100 * share:.0f} % of the done runs lie inside their pre-launch interval (a 95 % "
                      "prediction interval should hold about 95 %; a rough bound from the TDP holds nearly all and "
                      "says little)."]
    return lines
