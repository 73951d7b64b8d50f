"""A campaign's cost before launch: GPU-hours, energy (total and above idle), CO2eq and wall time,
per GPU type x epoch budget and in total, each as an interval (low, high), with the protocol's
share (warm-up, idle, cool-down) shown apart, and a budget check against the upper ends.

``estimate`` is pure over plain data. Each trial takes the best source available, named per line:

1. ``measured``: done runs of the same (architecture, epoch budget, GPU type) in this database (any
   campaign): their mean and the 95 % prediction interval of one more run (Student t; one run
   gives no spread) of energy_j, energy_above_idle_j and duration_s.
2. ``surrogate``: where the GPU type has done runs of at least ``SURROGATE_MIN_ARCHS`` architectures
   (and ``SURROGATE_MIN_RUNS`` runs), a log-linear least-squares fit of energy, energy above idle
   and time on log parameters, log FLOPs and log epochs (per epoch when the runs cover one budget
   only), with the regression's 95 % prediction interval: how energy grows with the budget is
   learnt from the runs, not assumed linear. Refitted from the database at each estimate.
   Where that budget has no run and no surrogate exists, the architecture's runs at other budgets
   of that GPU type are scaled per epoch (``measured (per-epoch)``).
3. ``rough bound (TDP)``: the GPU type's ``epoch_s_estimate`` x epochs as time, its TDP x time as
   the energy's upper end and ``estimate.tdp_low_fraction`` of it as the lower end; idle power from
   measured runs of that GPU type, else ``estimate.idle_fraction`` of the TDP.

Where two sources exist for the same trials (measured runs and the surrogate's leave-one-out
prediction, measured runs and the TDP bound), the notes say how far they agree.

Idle and cool-down take each trial's protocol time at idle power; warm-up takes one
``protocol.warmup_s`` per worker at the GPU type's training power.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from campaign.config import CampaignConfig, EstimateConfig
from db.errors import CampaignError
from db.intervals import prediction_interval, t95
from db.records import J_PER_KWH

if TYPE_CHECKING:
    from rich.console import Console

    from campaign.plan import Plan
    from db.read import CampaignReader

MEASURED = "measured"
SCALED = "measured (per-epoch)"
SURROGATE = "surrogate"
TDP = "rough bound (TDP)"
NONE = "no estimate (set tdp_w and epoch_s_estimate)"
PROTOCOL_ONLY = "protocol only (the workload's own part is not estimated)"
SURROGATE_NOTE = "surrogate: no GPU type has runs enough to fit one"
SURROGATE_MIN_ARCHS = 3  # architectures of a GPU type with done runs before a surrogate is fitted
SURROGATE_MIN_RUNS = 6


class BudgetExceeded(CampaignError):
    """A launch whose estimate's upper end exceeds a budget limit (budget.on_exceed=refuse)."""


@dataclasses.dataclass(frozen=True)
class Interval:
    low: float = 0.0
    high: float = 0.0

    def __add__(self, other: Interval) -> Interval:
        return Interval(self.low + other.low, self.high + other.high)

    def __mul__(self, k: float) -> Interval:
        return Interval(self.low * k, self.high * k)

    @staticmethod
    def spread(values: Sequence[float]) -> Interval:
        """The 95 % prediction interval of one more value (Student t; none from one value), never below 0."""
        r = prediction_interval(values)
        return Interval(r.low, r.high)


@dataclasses.dataclass(frozen=True)
class MeasuredRun:
    """The figures of one done run the estimate reads (from run_summary)."""

    arch_hash: str
    epochs: int
    gpu_type: str
    energy_j: float
    energy_above_idle_j: float | None
    duration_s: float
    idle_power_w: float | None
    params: int | None = None
    flops: int | None = None


@dataclasses.dataclass(frozen=True)
class GpuSpec:
    tdp_w: float | None
    epoch_s: float | None


@dataclasses.dataclass(frozen=True)
class Settings:
    """The configuration the estimate depends on, as plain numbers."""

    warmup_s: float = 0.0
    idle_s: float = 0.0
    cooldown_s: float = 0.0
    intensity_g_per_kwh: float = 0.0
    pue: float = EstimateConfig.pue  # the configured defaults, written once (campaign.config)
    tdp_low_fraction: float = EstimateConfig.tdp_low_fraction
    idle_fraction: float = EstimateConfig.idle_fraction
    workers: Mapping[str, int] = dataclasses.field(default_factory=dict)  # parallel workers per GPU type


@dataclasses.dataclass(frozen=True)
class Line:
    """One row of the estimate: a GPU type x epoch budget (``epochs`` None: that GPU type's warm-up;
    ``gpu_type`` "total": the whole campaign)."""

    gpu_type: str
    epochs: int | None
    trials: int
    source: str
    gpu_hours: Interval
    energy_kwh: Interval  # everything: training + eval, and the protocol's share
    above_idle_kwh: Interval  # training + eval above idle power
    protocol_kwh: Interval  # idle + cool-down (the warm-up has its own line)
    co2_kg: Interval
    wall_hours: Interval


@dataclasses.dataclass(frozen=True)
class Estimate:
    lines: list[Line]
    total: Line
    protocol: dict[str, tuple[float, Interval]]  # warm-up, idle, cool-down: GPU-hours, kWh
    notes: list[str]


@dataclasses.dataclass(frozen=True)
class _Trial:
    """One trial's figures: training + eval time (s), energy and energy above idle (J), idle power (W)."""

    source: str
    seconds: Interval
    energy_j: Interval
    above_j: Interval
    idle_w: float


def _by_key(runs: Iterable[MeasuredRun]) -> dict[tuple[str, str], list[MeasuredRun]]:
    out: dict[tuple[str, str], list[MeasuredRun]] = defaultdict(list)
    for r in runs:
        out[(r.arch_hash, r.gpu_type)].append(r)
    return out


def _idle_power(gpu_type: str, runs: Iterable[MeasuredRun], spec: GpuSpec, s: Settings) -> float:
    measured = [r.idle_power_w for r in runs if r.gpu_type == gpu_type and r.idle_power_w is not None]
    if measured:
        return statistics.fmean(measured)
    return s.idle_fraction * spec.tdp_w if spec.tdp_w else 0.0


def _above(r: MeasuredRun) -> float:
    if r.energy_above_idle_j is not None:
        return r.energy_above_idle_j
    return max(0.0, r.energy_j - (r.idle_power_w or 0.0) * r.duration_s)


TARGETS = ("energy_j", "above_j", "duration_s")


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """A GPU type's log-linear least-squares model of a trial's energy, energy above idle and time
    from log parameters, log FLOPs and log epochs (``per_epoch``: of the per-epoch figures, where the
    runs cover one budget), with the 95 % prediction interval of ordinary least squares."""

    per_epoch: bool
    coef: dict[str, list[float]]
    xtx_pinv: list[list[float]]
    resid_sd: dict[str, float]
    dof: int
    runs: int
    archs: int
    loo_abs_rel_error: float  # median |leave-one-out error| of the energy, as a fraction of the measured value

    @staticmethod
    def features(params: float, flops: float, epochs: int, per_epoch: bool) -> list[float]:
        x = [1.0, math.log(max(params, 1.0)), math.log(max(flops, 1.0))]
        return x if per_epoch else [*x, math.log(epochs)]

    @staticmethod
    def fit(runs: Sequence[MeasuredRun]) -> Surrogate | None:
        """The fit over ``runs`` (one GPU type); None with too few architectures or runs."""
        import numpy as np

        usable = [r for r in runs if r.params and r.flops and r.energy_j > 0 and r.duration_s > 0 and _above(r) > 0]
        archs = len({r.arch_hash for r in usable})
        if archs < SURROGATE_MIN_ARCHS or len(usable) < SURROGATE_MIN_RUNS:
            return None
        per_epoch = len({r.epochs for r in usable}) < 2
        x = np.array([Surrogate.features(float(r.params or 0), float(r.flops or 0), r.epochs, per_epoch)
                      for r in usable])
        scale = np.array([r.epochs if per_epoch else 1 for r in usable], dtype=float)
        pinv = np.linalg.pinv(x.T @ x)
        rank = int(np.linalg.matrix_rank(x))
        dof = len(usable) - rank
        if dof < 1:
            return None
        hat = np.einsum("ij,jk,ik->i", x, pinv, x)
        coef, sd = {}, {}
        loo = 0.0
        for target in TARGETS:
            y = np.log(np.array([getattr(r, target) if target != "above_j" else _above(r) for r in usable]) / scale)
            beta = pinv @ x.T @ y
            resid = y - x @ beta
            coef[target] = [float(b) for b in beta]
            sd[target] = float(np.sqrt(resid @ resid / dof))
            if target == "energy_j":  # leave-one-out residuals of OLS: e_i / (1 - h_ii)
                loo_resid = resid / np.clip(1 - hat, 1e-9, None)
                loo = float(np.median(np.abs(np.expm1(-loo_resid))))
        return Surrogate(per_epoch, coef, [[float(v) for v in row] for row in pinv], sd, dof, len(usable), archs, loo)

    def predict(self, params: float, flops: float, epochs: int) -> dict[str, Interval]:
        """Per target, the 95 % prediction interval of one trial (back-transformed from logs)."""
        x = self.features(params, flops, epochs, self.per_epoch)
        lev = sum(x[i] * self.xtx_pinv[i][j] * x[j] for i in range(len(x)) for j in range(len(x)))
        k = epochs if self.per_epoch else 1
        out = {}
        for target in TARGETS:
            mu = sum(b * v for b, v in zip(self.coef[target], x, strict=True))
            half = t95(self.dof) * self.resid_sd[target] * math.sqrt(1 + lev)
            out[target] = Interval(k * math.exp(mu - half), k * math.exp(mu + half))
        return out


def surrogates(runs: Sequence[MeasuredRun]) -> dict[str, Surrogate]:
    """One surrogate per GPU type whose runs allow one."""
    by_gpu: dict[str, list[MeasuredRun]] = defaultdict(list)
    for r in runs:
        by_gpu[r.gpu_type].append(r)
    out = {}
    for gpu_type, rs in by_gpu.items():
        fitted = Surrogate.fit(rs)
        if fitted is not None:
            out[gpu_type] = fitted
    return out


def _trial(epochs: int, same: list[MeasuredRun], spec: GpuSpec, idle_w: float, s: Settings,
           surrogate: Surrogate | None = None, features: tuple[int, int] | None = None) -> _Trial:
    if epochs <= 0:  # not a training trial (the layer workload): only its idle and cool-down are known
        return _Trial(PROTOCOL_ONLY, Interval(), Interval(), Interval(), idle_w)
    exact = [r for r in same if r.epochs == epochs]
    if exact:
        return _Trial(MEASURED, Interval.spread([r.duration_s for r in exact]),
                      Interval.spread([r.energy_j for r in exact]), Interval.spread([_above(r) for r in exact]), idle_w)
    if surrogate is not None and features is not None and features[0] > 0 and features[1] > 0:
        p = surrogate.predict(features[0], features[1], epochs)
        return _Trial(SURROGATE, p["duration_s"], p["energy_j"], p["above_j"], idle_w)
    if same:  # other budgets of the same architecture and GPU type, per epoch
        return _Trial(SCALED, Interval.spread([r.duration_s / r.epochs for r in same]) * epochs,
                      Interval.spread([r.energy_j / r.epochs for r in same]) * epochs,
                      Interval.spread([_above(r) / r.epochs for r in same]) * epochs, idle_w)
    if spec.tdp_w is None or spec.epoch_s is None:
        return _Trial(NONE, Interval(), Interval(), Interval(), idle_w)
    seconds = epochs * spec.epoch_s
    power = Interval(s.tdp_low_fraction * spec.tdp_w, spec.tdp_w)
    above = Interval(max(0.0, power.low - idle_w), max(0.0, power.high - idle_w))
    return _Trial(TDP, Interval(seconds, seconds), power * seconds, above * seconds, idle_w)


def _power(t: _Trial) -> Interval:
    """A trial's training power (W), the warm-up's too."""
    if t.seconds.high <= 0:
        return Interval()
    return Interval(t.energy_j.low / max(t.seconds.high, 1e-9), t.energy_j.high / max(t.seconds.low, 1e-9))


def _line(gpu_type: str, epochs: int | None, trials: int, sources: Iterable[str], seconds: Interval,
          energy_j: Interval, above_j: Interval, protocol_j: Interval, workers: int, s: Settings) -> Line:
    kwh = energy_j * (1 / J_PER_KWH)
    named = sorted(set(sources))
    return Line(gpu_type, epochs, trials, named[0] if len(named) == 1 else "mixed: " + ", ".join(named),
                seconds * (1 / 3600), kwh, above_j * (1 / J_PER_KWH), protocol_j * (1 / J_PER_KWH),
                kwh * (s.pue * s.intensity_g_per_kwh / 1000), seconds * (1 / 3600 / max(1, workers)))


def estimate(trials: Sequence[tuple[str, int, str]], gpus: Mapping[str, GpuSpec], runs: Sequence[MeasuredRun],
             s: Settings, features: Mapping[str, tuple[int, int]] | None = None) -> Estimate:
    """The estimate of ``trials`` (arch_hash, epochs, gpu_type) from ``runs`` and the GPU types' specs;
    ``features``: each architecture's (parameters, FLOPs), for the surrogate."""
    by_key = _by_key(runs)
    models = surrogates(runs) if features else {}
    idle = {g: _idle_power(g, runs, gpus.get(g, GpuSpec(None, None)), s) for g in {t[2] for t in trials}}
    groups: dict[tuple[str, int], list[_Trial]] = defaultdict(list)
    for arch, epochs, gpu_type in trials:
        spec = gpus.get(gpu_type, GpuSpec(None, None))
        groups[(gpu_type, epochs)].append(_trial(epochs, by_key.get((arch, gpu_type), []), spec, idle[gpu_type], s,
                                                 models.get(gpu_type), (features or {}).get(arch)))
    per_trial_s = s.idle_s + s.cooldown_s
    lines: list[Line] = []
    protocol = {"warm-up": (0.0, Interval()), "idle": (0.0, Interval()), "cool-down": (0.0, Interval())}
    power_of: dict[str, list[_Trial]] = defaultdict(list)
    for (gpu_type, epochs), ts in sorted(groups.items()):
        workers = s.workers.get(gpu_type, 1)
        seconds = sum((t.seconds + Interval(per_trial_s, per_trial_s) for t in ts), Interval())
        idle_j = sum(t.idle_w * s.idle_s for t in ts)
        cool_j = sum(t.idle_w * s.cooldown_s for t in ts)
        protocol_j = Interval(idle_j + cool_j, idle_j + cool_j)
        energy = sum((t.energy_j for t in ts), Interval()) + protocol_j
        lines.append(_line(gpu_type, epochs, len(ts), (t.source for t in ts), seconds, energy,
                           sum((t.above_j for t in ts), Interval()), protocol_j, workers, s))
        n = len(ts)
        for phase, phase_s, joules in (("idle", s.idle_s, idle_j), ("cool-down", s.cooldown_s, cool_j)):
            h, e = protocol[phase]
            protocol[phase] = (h + n * phase_s / 3600, e + Interval(joules, joules) * (1 / J_PER_KWH))
        power_of[gpu_type].extend(ts)
    for gpu_type, ts in sorted(power_of.items()):  # one warm-up per worker, at the GPU type's training power
        workers = min(s.workers.get(gpu_type, 1), len(ts))
        if s.warmup_s <= 0 or workers < 1:
            continue
        powers = [_power(t) for t in ts]
        power = Interval(min(p.low for p in powers), max(p.high for p in powers))
        warm_s = workers * s.warmup_s
        energy = power * warm_s
        lines.append(_line(gpu_type, None, 0, (t.source for t in ts), Interval(warm_s, warm_s), energy, Interval(),
                           Interval(), workers, s))
        h, e = protocol["warm-up"]
        protocol["warm-up"] = (h + warm_s / 3600, e + energy * (1 / J_PER_KWH))
    total = _total(lines, s)
    notes = agreement(runs, models, gpus, s) if models else [SURROGATE_NOTE]
    if not models and runs:
        notes += agreement(runs, {}, gpus, s)
    if any(line.source == PROTOCOL_ONLY for line in lines):
        notes.append("the layer workload's measured windows are not estimated: its lines count only the "
                     "protocol's idle and cool-down (a lower bound)")
    if any(line.source == NONE for line in lines):
        notes.append("some GPU types have no tdp_w or epoch_s_estimate in conf/gpu/: their trials count as 0")
    return Estimate(lines, total, protocol, notes)


def agreement(runs: Sequence[MeasuredRun], models: Mapping[str, Surrogate], gpus: Mapping[str, GpuSpec],
              s: Settings) -> list[str]:
    """How far the sources agree where two exist for the same runs: each surrogate's leave-one-out
    error on the measured runs, and the share of measured runs inside the TDP bound."""
    notes = []
    for gpu_type, m in sorted(models.items()):
        notes.append(f"surrogate {gpu_type}: fitted on {m.runs} runs of {m.archs} architectures"
                     f"{' (per epoch: one budget measured)' if m.per_epoch else ''}; leave-one-out median "
                     f"|error| {100 * m.loo_abs_rel_error:.1f} % of the measured energy")
    by_gpu: dict[str, list[MeasuredRun]] = defaultdict(list)
    for r in runs:
        by_gpu[r.gpu_type].append(r)
    for gpu_type, rs in sorted(by_gpu.items()):
        spec = gpus.get(gpu_type)
        if spec is None or spec.tdp_w is None or spec.epoch_s is None:
            continue
        inside = sum(1 for r in rs if s.tdp_low_fraction * spec.tdp_w * r.epochs * spec.epoch_s <= r.energy_j
                     <= spec.tdp_w * r.epochs * spec.epoch_s)
        notes.append(f"TDP bound {gpu_type}: {inside} of {len(rs)} measured runs inside it")
    return notes


def _total(lines: Sequence[Line], s: Settings) -> Line:
    def add(key: str) -> Interval:
        return sum((getattr(line, key) for line in lines), Interval())

    by_gpu: dict[str, Interval] = defaultdict(Interval)
    for line in lines:
        by_gpu[line.gpu_type] = by_gpu[line.gpu_type] + line.wall_hours
    wall = Interval(max((w.low for w in by_gpu.values()), default=0.0),
                    max((w.high for w in by_gpu.values()), default=0.0))  # GPU types run side by side
    sources = sorted({line.source for line in lines})
    return Line("total", None, sum(line.trials for line in lines), ", ".join(sources), add("gpu_hours"),
                add("energy_kwh"), add("above_idle_kwh"), add("protocol_kwh"), add("co2_kg"), wall)


def exceeded(est: Estimate, max_kwh: float | None, max_gpu_hours: float | None,
             max_co2_kg: float | None) -> list[tuple[str, str]]:
    """(budget key, phrase) per limit the estimate's upper end exceeds (empty: within budget)."""
    t = est.total
    out = []
    for key, limit, value, unit in (("max_kwh", max_kwh, t.energy_kwh.high, "kWh"),
                                    ("max_gpu_hours", max_gpu_hours, t.gpu_hours.high, "GPU-hours"),
                                    ("max_co2_kg", max_co2_kg, t.co2_kg.high, "kg CO2eq")):
        if limit is not None and value > limit:
            out.append((key, f"estimated up to {value:.4g} {unit} exceeds budget.{key}={limit:g} {unit}"))
    return out


def budget_message(est: Estimate, over: Sequence[tuple[str, str]]) -> str:
    """The one line a launch over budget is refused (or warned) with."""
    e = est.total.energy_kwh
    raise_ = " / ".join(f"budget.{key}" for key, _ in over)
    return (f"{'; '.join(phrase for _, phrase in over)} (estimate {fmt(e)} kWh, source: {est.total.source}); "
            f"raise {raise_} or shrink the sweep")


# --- from a configuration and a database -----------------------------------------------------------------


def settings_of(cfg: CampaignConfig, plan: Plan) -> Settings:
    """The plain settings of ``cfg``; workers per GPU type: one for the local launcher, else
    launcher.max_workers (at most launcher.max_parallel of them at once where set), never more than
    the GPU type's trials."""
    counts: dict[str, int] = defaultdict(int)
    for t in plan.trials:
        counts[t.gpu_type] += 1
    local = str(cfg.launcher.name) == "local"
    at_once = 1 if local else min(cfg.launcher.max_workers, cfg.launcher.max_parallel or cfg.launcher.max_workers)
    workers = {g: max(1, min(n, at_once)) for g, n in counts.items()}
    return Settings(cfg.protocol.warmup_s, cfg.protocol.idle_s, cfg.protocol.cooldown_s,
                    cfg.meter.carbon_intensity_g_per_kwh, cfg.estimate.pue, cfg.estimate.tdp_low_fraction,
                    cfg.estimate.idle_fraction, workers)


def measured_runs(reader: CampaignReader) -> list[MeasuredRun]:
    """Every done run of every campaign in the database, as the estimate reads them."""
    return [MeasuredRun(str(r["arch_hash"]), int(r["epochs"]), str(r["gpu_type"]), float(r["energy_j"]),
                        _float_or_none(r["energy_above_idle_j"]), float(r["duration_s"]),
                        _float_or_none(r["idle_power_w"]), _int_or_none(r.get("params")), _int_or_none(r.get("flops")))
            for r in reader.done_run_figures()]


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def database_runs(url: str) -> list[MeasuredRun]:
    """The measured runs of the database at ``url``, read-only; none where it does not exist yet
    (a SQLite file is never created here) or cannot be read."""
    from db.engine import parse_url
    from db.read import CampaignReader

    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and (not parsed.database or not Path(parsed.database).is_file()):
        return []
    try:
        reader = CampaignReader.open(url)
    except CampaignError:
        return []
    try:
        return measured_runs(reader)
    except Exception:  # an unreadable view: the estimate falls back to the TDP bound
        return []
    finally:
        reader.engine.dispose()


def campaign_estimate(cfg: CampaignConfig, plan: Plan) -> Estimate:
    """The estimate of ``plan`` under ``cfg`` from the configured database's done runs."""
    from campaign.config import db_url, gpu_types

    specs = {n: GpuSpec(g.tdp_w, g.epoch_s_estimate) for n, g in gpu_types().items()}
    trials = [(t.arch_hash or "", t.epochs, t.gpu_type) for t in plan.trials]  # "": no cell (another workload)
    features = {a.arch_hash: (a.params, a.flops) for a in plan.archs}
    return estimate(trials, specs, database_runs(db_url(cfg)), settings_of(cfg, plan), features)


def check_budget(cfg: CampaignConfig, est: Estimate) -> str | None:
    """Raise BudgetExceeded (one line) when the estimate's upper end exceeds a limit and the budget
    refuses; return the warning line when it warns; None within budget."""
    b = cfg.budget
    over = exceeded(est, b.max_kwh, b.max_gpu_hours, b.max_co2_kg)
    if not over:
        return None
    message = budget_message(est, over)
    if str(b.on_exceed) == "refuse":
        raise BudgetExceeded(message)
    return f"warning: {message}"


def fmt(i: Interval) -> str:
    """``low-high`` with 4 significant digits (one figure where both ends agree)."""
    if math.isclose(i.low, i.high, rel_tol=1e-9, abs_tol=1e-12):
        return f"{i.high:.4g}"
    return f"{i.low:.4g}-{i.high:.4g}"


def print_estimate(console: Console, est: Estimate) -> None:
    """The estimate as a table (one line per GPU type x epoch budget, each GPU type's warm-up, the
    total), the protocol's share and the notes."""
    from rich.table import Table

    table = Table(title="estimate before launch (low-high)")
    for col in ("GPU type", "epochs", "trials", "source", "GPU-hours", "wall hours", "energy kWh",
                "above idle kWh", "idle+cool-down kWh", "CO2eq kg"):
        table.add_column(col, justify="left" if col in ("GPU type", "source") else "right")
    for line in [*est.lines, est.total]:
        epochs = "warm-up" if line.epochs is None and line.gpu_type != "total" else str(line.epochs or "")
        table.add_row(line.gpu_type, epochs, str(line.trials or ""), line.source, fmt(line.gpu_hours),
                      fmt(line.wall_hours), fmt(line.energy_kwh), fmt(line.above_idle_kwh), fmt(line.protocol_kwh),
                      fmt(line.co2_kg))
    console.print(table)
    share = ", ".join(f"{phase} {h:.4g} GPU-hours / {fmt(kwh)} kWh" for phase, (h, kwh) in est.protocol.items())
    console.print(f"protocol share: {share} (of {fmt(est.total.gpu_hours)} GPU-hours, "
                  f"{fmt(est.total.energy_kwh)} kWh)")
    console.print("; ".join(est.notes))


def recordable(est: Estimate) -> list[dict[str, object]]:
    """The estimate per GPU type x epoch budget, per trial, as ``db.budget.record_estimate`` stores it
    (the warm-up lines are the workers', not a trial's)."""
    return [dict(gpu_type=line.gpu_type, epochs=line.epochs, trials=line.trials, source=line.source[:100],
                 energy_kwh_low=line.energy_kwh.low / line.trials, energy_kwh_high=line.energy_kwh.high / line.trials,
                 gpu_hours_low=line.gpu_hours.low / line.trials, gpu_hours_high=line.gpu_hours.high / line.trials)
            for line in est.lines if line.epochs is not None and line.trials > 0]
