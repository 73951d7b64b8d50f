"""A campaign's budget while it runs: its limits, the estimate made before launch, and the figures a
worker checks before it claims a trial.

Two tables. ``campaign_budget`` holds one campaign's limits (kWh, GPU-hours, kg CO2eq, any of
them), the carbon intensity and PUE its CO2eq is computed with, and, once the budget stopped it,
when and why. ``estimate_group`` holds the estimate made before each launch or resume, per GPU
type x epoch budget, per trial: what ``campaign analyze`` calibrates against the runs.

The running check (``over_budget``) adds what the campaign has measured so far (every recorded
phase of every run, the warm-up where a worker recorded it with its first trial) to the predicted cost of
the trials still pending or running. A trial's prediction is the mean of the done runs of its GPU
type x epoch budget in this campaign (every phase but the worker's warm-up) where there are any (with a Student-t prediction interval
from two runs on), else the recorded pre-launch estimate: the prediction improves as runs finish
without refitting anything per trial. Workers stop claiming when the central figure exceeds a
limit; the campaign is then marked stopped by budget until a resume sets a larger one. Two
workers checking at the same moment may both claim one more trial: the budget is kept to within
one trial per worker.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Engine,
    case,
    func,
    insert,
    select,
    update,
)

from db.intervals import Range, prediction_interval
from db.records import J_PER_KWH, Phase, RunStatus, TrialState
from db.schema import CampaignBudget, EstimateGroup, Run, RunPhase, Trial

LIMIT_UNITS = {"max_kwh": "kWh", "max_gpu_hours": "GPU-hours", "max_co2_kg": "kg CO2eq"}
@dataclasses.dataclass(frozen=True)
class Limits:
    max_kwh: float | None = None
    max_gpu_hours: float | None = None
    max_co2_kg: float | None = None
    carbon_intensity_g_per_kwh: float = 0.0
    pue: float = 1.0

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_kwh, self.max_gpu_hours, self.max_co2_kg))

    def co2_kg(self, kwh: float) -> float:
        return kwh * self.pue * self.carbon_intensity_g_per_kwh / 1000.0


@dataclasses.dataclass(frozen=True)
class Group:
    """One GPU type x epoch budget of a running campaign."""

    gpu_type: str
    epochs: int
    remaining: int  # trials pending or running
    done: int  # done runs measured
    kwh_per_trial: Range
    gpu_hours_per_trial: Range
    source: str  # "measured (this campaign, n runs)" | the pre-launch estimate's source | "no estimate"


@dataclasses.dataclass(frozen=True)
class Figures:
    """Measured so far and predicted for what remains."""

    measured_kwh: float
    measured_gpu_hours: float
    predicted_kwh: Range
    predicted_gpu_hours: Range
    remaining: int
    groups: list[Group]

    def total_kwh(self) -> Range:
        return Range(self.measured_kwh, self.measured_kwh, self.measured_kwh) + self.predicted_kwh


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- writing ---------------------------------------------------------------------------------------------------


def set_limits(engine: Engine, campaign_id: int, limits: Limits) -> None:
    """Set (or replace) a campaign's limits; a campaign the budget had stopped is no longer stopped
    (its workers check the new limits before their next claim)."""
    values = dict(max_kwh=limits.max_kwh, max_gpu_hours=limits.max_gpu_hours, max_co2_kg=limits.max_co2_kg,
                  carbon_intensity_g_per_kwh=limits.carbon_intensity_g_per_kwh, pue=limits.pue,
                  updated_at=utcnow(), stopped_at=None, stopped_reason=None)
    with engine.begin() as conn:
        done = conn.execute(update(CampaignBudget).where(CampaignBudget.campaign_id == campaign_id)
                            .values(**values)).rowcount
        if not done:
            conn.execute(insert(CampaignBudget).values(campaign_id=campaign_id, **values))


def record_estimate(engine: Engine, campaign_id: int, purpose: str, groups: Sequence[Mapping[str, Any]]) -> None:
    """Record an estimate's groups: mappings with gpu_type, epochs, trials, source and per-trial
    energy_kwh_low/high and gpu_hours_low/high."""
    if not groups:
        return
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(EstimateGroup), [dict(campaign_id=campaign_id, made_at=now, purpose=purpose, **g)
                                             for g in groups])


def stop(engine: Engine, campaign_id: int, reason: str) -> None:
    """Mark the campaign stopped by its budget (the first reason stays)."""
    with engine.begin() as conn:
        conn.execute(update(CampaignBudget).where(CampaignBudget.campaign_id == campaign_id,
                                                  CampaignBudget.stopped_at.is_(None))
                     .values(stopped_at=utcnow(), stopped_reason=reason))


# --- reading ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class State:
    """A campaign's budget as recorded: its limits and whether it stopped the campaign."""

    limits: Limits
    stopped_at: dt.datetime | None
    stopped_reason: str | None


def limits_of(engine: Engine, campaign_id: int) -> State | None:
    """The campaign's budget (None: no budget was ever set)."""
    with engine.connect() as conn:
        row = conn.execute(select(CampaignBudget.__table__)
                           .where(CampaignBudget.campaign_id == campaign_id)).first()
    if row is None:
        return None
    return State(Limits(row.max_kwh, row.max_gpu_hours, row.max_co2_kg, row.carbon_intensity_g_per_kwh, row.pue),
                 row.stopped_at, row.stopped_reason)


def estimates(engine: Engine, campaign_id: int, purpose: str | None = None) -> list[dict[str, Any]]:
    """The recorded estimate groups, oldest first (``purpose``: only launch or resume ones)."""
    q = select(EstimateGroup.__table__).where(EstimateGroup.campaign_id == campaign_id)
    if purpose is not None:
        q = q.where(EstimateGroup.purpose == purpose)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(EstimateGroup.made_at, EstimateGroup.id))]


def first_estimate(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], Mapping[str, Any]]:
    """The earliest estimate of each group (the one made before the trials ran)."""
    out: dict[tuple[str, int], Mapping[str, Any]] = {}
    for r in rows:
        out.setdefault((str(r["gpu_type"]), int(r["epochs"])), r)
    return out


@dataclasses.dataclass(frozen=True)
class RunCost:
    """What one stored run of a campaign cost: all its phases, and its trial's share (every phase but
    the worker's warm-up)."""

    gpu_type: str
    epochs: int
    status: str
    energy_j: float
    seconds: float
    trial_energy_j: float
    trial_seconds: float


def run_costs(engine: Engine, campaign_id: int) -> list[RunCost]:
    """Every stored run of the campaign with its phases summed."""
    trial_of_run = select(Run.id).join(Trial, Trial.id == Run.trial_id).where(Trial.campaign_id == campaign_id)
    warm = RunPhase.phase == Phase.WARMUP
    per_run = (select(RunPhase.run_id, func.sum(RunPhase.energy_j).label("j"),
                      func.sum(RunPhase.duration_s).label("s"),
                      func.sum(case((warm, 0.0), else_=RunPhase.energy_j)).label("trial_j"),
                      func.sum(case((warm, 0.0), else_=RunPhase.duration_s)).label("trial_s"))
               .where(RunPhase.run_id.in_(trial_of_run)).group_by(RunPhase.run_id).subquery())
    with engine.connect() as conn:
        rows = conn.execute(select(Trial.gpu_type, Trial.epochs, Run.status, per_run.c.j, per_run.c.s,
                                   per_run.c.trial_j, per_run.c.trial_s)
                            .join(Run, Run.id == per_run.c.run_id).join(Trial, Trial.id == Run.trial_id)).all()
    return [RunCost(str(r.gpu_type), int(r.epochs), str(r.status), float(r.j or 0.0), float(r.s or 0.0),
                    float(r.trial_j or 0.0), float(r.trial_s or 0.0)) for r in rows]


def figures(engine: Engine, campaign_id: int) -> Figures:
    """What the campaign measured so far (every phase of every run) and what its pending and running
    trials are predicted to cost."""
    rows = run_costs(engine, campaign_id)
    with engine.connect() as conn:
        remaining = conn.execute(
            select(Trial.gpu_type, Trial.epochs, func.count())
            .where(Trial.campaign_id == campaign_id, Trial.state.in_([TrialState.PENDING, TrialState.RUNNING]))
            .group_by(Trial.gpu_type, Trial.epochs)).all()
    first = first_estimate(estimates(engine, campaign_id))
    measured_j = math.fsum(r.energy_j for r in rows)
    measured_s = math.fsum(r.seconds for r in rows)
    done: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in rows:
        if r.status == RunStatus.DONE:  # a trial's cost: its worker's warm-up apart
            done.setdefault((r.gpu_type, r.epochs), []).append((r.trial_energy_j, r.trial_seconds))
    left = {(str(g), int(e)): int(n) for g, e, n in remaining}
    groups: list[Group] = []
    for key in sorted(set(left) | set(done)):
        runs = done.get(key, [])
        est = first.get(key)
        if runs:
            kwh = prediction_interval([j / J_PER_KWH for j, _ in runs])
            hours = prediction_interval([s / 3600 for _, s in runs])
            source = f"measured (this campaign, {len(runs)} run{'s' if len(runs) != 1 else ''})"
            if len(runs) == 1 and est is not None:  # one run: its value, the estimate's spread around it
                kwh = Range(min(kwh.mid, est["energy_kwh_low"]), kwh.mid, max(kwh.mid, est["energy_kwh_high"]))
                hours = Range(min(hours.mid, est["gpu_hours_low"]), hours.mid, max(hours.mid, est["gpu_hours_high"]))
        elif est is not None:
            kwh = Range(est["energy_kwh_low"], (est["energy_kwh_low"] + est["energy_kwh_high"]) / 2,
                        est["energy_kwh_high"])
            hours = Range(est["gpu_hours_low"], (est["gpu_hours_low"] + est["gpu_hours_high"]) / 2,
                          est["gpu_hours_high"])
            source = str(est["source"])
        else:
            kwh, hours, source = Range(), Range(), "no estimate"
        groups.append(Group(key[0], key[1], left.get(key, 0), len(runs), kwh, hours, source))
    predicted_kwh = sum((g.kwh_per_trial * g.remaining for g in groups), Range())
    predicted_hours = sum((g.gpu_hours_per_trial * g.remaining for g in groups), Range())
    return Figures(measured_j / J_PER_KWH, measured_s / 3600, predicted_kwh, predicted_hours,
                   sum(g.remaining for g in groups), groups)


def exceeded(f: Figures, limits: Limits) -> list[str]:
    """One phrase per limit that measured so far plus the central prediction exceeds."""
    out = []
    kwh = f.measured_kwh + f.predicted_kwh.mid
    hours = f.measured_gpu_hours + f.predicted_gpu_hours.mid
    for key, limit, value in (("max_kwh", limits.max_kwh, kwh), ("max_gpu_hours", limits.max_gpu_hours, hours),
                              ("max_co2_kg", limits.max_co2_kg, limits.co2_kg(kwh))):
        if limit is not None and value > limit:
            unit = LIMIT_UNITS[key]
            measured = (f.measured_kwh if key == "max_kwh" else f.measured_gpu_hours if key == "max_gpu_hours"
                        else limits.co2_kg(f.measured_kwh))
            out.append(f"measured {measured:.4g} {unit} + predicted {value - measured:.4g} {unit} for "
                       f"{f.remaining} trial(s) left = {value:.4g} {unit} > budget.{key}={limit:g} {unit}")
    return out


def over_budget(engine: Engine, campaign_id: int) -> str | None:
    """Before a worker claims: None to go on; else the reason the campaign stops (recorded once,
    the campaign marked stopped by budget). Without a budget this is one primary-key read."""
    state = limits_of(engine, campaign_id)
    if state is None:
        return None
    if state.stopped_at is not None:
        return str(state.stopped_reason)
    limits = state.limits
    if not limits.any:
        return None
    over = exceeded(figures(engine, campaign_id), limits)
    if not over:
        return None
    reason = "stopped by budget: " + "; ".join(over)
    stop(engine, campaign_id, reason)
    return reason
