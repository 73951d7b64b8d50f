"""A campaign's cost before launch: GPU-hours, energy (total and above idle), CO2eq and wall time,
per GPU type x epoch budget and in total, each as an interval (low, high), with the protocol's
share (warm-up, idle, cool-down) shown apart, and a budget check against the upper ends.

``estimate`` is pure over plain data. Each trial takes the best source available, named per line:

1. ``measured``: done runs of the same (architecture, epoch budget, GPU type) in this database (any
   campaign): mean +- 2 standard deviations of energy_j, energy_above_idle_j and duration_s; where
   that budget has no run, the architecture's runs at other budgets of that GPU type scaled per
   epoch (``measured (per-epoch)``).
2. a surrogate: not used (yet).
3. ``rough bound (TDP)``: the GPU type's ``epoch_s_estimate`` x epochs as time, its TDP x time as
   the energy's upper end and ``estimate.tdp_low_fraction`` of it as the lower end; idle power from
   measured runs of that GPU type, else ``estimate.idle_fraction`` of the TDP.

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

if TYPE_CHECKING:
    from rich.console import Console

    from campaign.plan import Plan
    from db.read import CampaignReader

J_PER_KWH = 3.6e6
MEASURED = "measured"
SCALED = "measured (per-epoch)"
TDP = "rough bound (TDP)"
NONE = "no estimate (set tdp_w and epoch_s_estimate)"
SURROGATE_NOTE = "surrogate: not used"
MAX_REMOTE_WORKERS = 64  # a Slurm or Ray launch without launcher.max_parallel: one task per chunk, at most this


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
        """mean +- 2 standard deviations (no spread from one value), never below 0."""
        mean = statistics.fmean(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return Interval(max(0.0, mean - 2 * sd), mean + 2 * sd)


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


def _trial(epochs: int, same: list[MeasuredRun], spec: GpuSpec, idle_w: float, s: Settings) -> _Trial:
    exact = [r for r in same if r.epochs == epochs]
    if exact:
        return _Trial(MEASURED, Interval.spread([r.duration_s for r in exact]),
                      Interval.spread([r.energy_j for r in exact]), Interval.spread([_above(r) for r in exact]), idle_w)
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
             s: Settings) -> Estimate:
    """The estimate of ``trials`` (arch_hash, epochs, gpu_type) from ``runs`` and the GPU types' specs."""
    by_key = _by_key(runs)
    groups: dict[tuple[str, int], list[_Trial]] = defaultdict(list)
    for arch, epochs, gpu_type in trials:
        spec = gpus.get(gpu_type, GpuSpec(None, None))
        idle_w = _idle_power(gpu_type, runs, spec, s)
        groups[(gpu_type, epochs)].append(_trial(epochs, by_key.get((arch, gpu_type), []), spec, idle_w, s))
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
    notes = [SURROGATE_NOTE]
    if any(line.source == NONE for line in lines):
        notes.append("some GPU types have no tdp_w or epoch_s_estimate in conf/gpu/: their trials count as 0")
    return Estimate(lines, total, protocol, notes)


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
    """The plain settings of ``cfg``; workers per GPU type: launcher.max_parallel, else one for the
    local launcher, else one per trial up to 64."""
    counts: dict[str, int] = defaultdict(int)
    for t in plan.trials:
        counts[t.gpu_type] += 1
    local = str(cfg.launcher.name) == "local"
    workers = {g: max(1, min(n, cfg.launcher.max_parallel or (1 if local else MAX_REMOTE_WORKERS)))
               for g, n in counts.items()}
    return Settings(cfg.protocol.warmup_s, cfg.protocol.idle_s, cfg.protocol.cooldown_s,
                    cfg.meter.carbon_intensity_g_per_kwh, cfg.estimate.pue, cfg.estimate.tdp_low_fraction,
                    cfg.estimate.idle_fraction, workers)


def measured_runs(reader: CampaignReader) -> list[MeasuredRun]:
    """Every done run of every campaign in the database, as the estimate reads them."""
    return [MeasuredRun(str(r["arch_hash"]), int(r["epochs"]), str(r["gpu_type"]), float(r["energy_j"]),
                        _float_or_none(r["energy_above_idle_j"]), float(r["duration_s"]),
                        _float_or_none(r["idle_power_w"]))
            for r in reader.done_run_figures()]


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
    trials = [(t.arch_hash, t.epochs, t.gpu_type) for t in plan.trials]
    return estimate(trials, specs, database_runs(db_url(cfg)), settings_of(cfg, plan))


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
