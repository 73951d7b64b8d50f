"""The measurement protocol's pieces that are not training: warm-up load, timed pauses, the
cool-down, and turning a tagged trace into per-phase, per-epoch and per-run energy, each with the
method that produced it, a stated uncertainty, the energy above idle and the validity rule.

Energy above idle. ``energy_above_idle_j = energy_j - idle_power_w x duration_s`` for a run (its
training phases, train + eval), an epoch (its train and eval windows) and a phase, where
``idle_power_w`` is the mean power of the same trial's idle window (all devices of the job), taken
minutes at most before the trial trains, on the same device in the same thermal state. The
alternative, a per-worker baseline (one idle window per worker, e.g. after its warm-up, used for
all its trials), costs less idle time per trial but drifts with temperature and anything else
that changes over a worker's hours; it can be computed from the stored traces (the warm-up's
neighbourhood or the first trial's idle window) if wanted, and is not what is recorded.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobs.meters.accuracy import UNKNOWN, Accuracy, add_parts, combine, describe_parts, window_energy
from jobs.meters.base import Sample


def warm_up(duration_s: float, device: str, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Run a compute-bound dummy load (square matmuls) on ``device`` for ``duration_s``.

    Returns the number of iterations done. The point is to bring the device to its steady
    thermal and clock state before the first measured trial."""
    if duration_s <= 0:
        return 0
    import torch

    n = 2048 if device.startswith("cuda") else 256
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    deadline = time.monotonic() + duration_s
    iterations = 0
    while time.monotonic() < deadline and not should_stop():
        a = torch.tanh(a @ b)
        iterations += 1
        if device.startswith("cuda") and iterations % 50 == 0:
            torch.cuda.synchronize()
    return iterations


def pause(duration_s: float) -> None:
    """An idle or cool-down window of the protocol (the device is left idle on purpose)."""
    if duration_s > 0:
        time.sleep(duration_s)


def _segments(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Contiguous runs of samples with the same (device, phase, epoch), per device in time order."""
    out: list[list[Sample]] = []
    by_device: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_device[s.device].append(s)
    for dev_samples in by_device.values():
        for _, group in itertools.groupby(dev_samples, key=lambda s: (s.phase, s.epoch)):
            out.append(list(group))
    return out


TRAINING_PHASES = ("train", "eval")  # a run's energy, duration and per-epoch energy are theirs


def training_energy_j(phases: dict[str, dict[str, Any]]) -> float:
    """Energy of the training phases in ``summarise(...)["phases"]``: a run's ``energy_j``."""
    return sum(phases[p]["energy_j"] for p in TRAINING_PHASES if p in phases)


@dataclasses.dataclass(frozen=True)
class WindowRule:
    """The validity rule of a measured window (MLPerf's power rules have one like it): at least
    ``min_samples`` samples at ``min_rate_hz`` or more (on the device that keeps the time)."""

    min_samples: int = 60
    min_rate_hz: float = 1.0

    def holds(self, samples: int, intervals: int, duration_s: float) -> bool:
        return samples >= self.min_samples and duration_s > 0 and intervals / duration_s >= self.min_rate_hz


@dataclasses.dataclass
class _Tally:
    """Windows added up: a phase, an epoch or the run."""

    duration_s: float = 0.0  # on the device that keeps the time
    energy_j: float = 0.0  # all devices
    integrated_j: float = 0.0
    counter_j: float | None = 0.0  # None once a window has no counter
    samples: int = 0  # all devices
    clock_samples: int = 0
    clock_intervals: int = 0
    parts: dict[str, float] = dataclasses.field(default_factory=dict)
    methods: set[str] = dataclasses.field(default_factory=set)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, seg: Sequence[Sample], acc: Accuracy, on_clock: bool) -> None:
        w = window_energy(seg, acc)
        self.energy_j += w.energy_j
        self.integrated_j += w.integrated_j
        self.counter_j = None if (self.counter_j is None or w.counter_j is None) else self.counter_j + w.counter_j
        self.samples += len(seg)
        if on_clock:
            self.duration_s += seg[-1].t_s - seg[0].t_s
            self.clock_samples += len(seg)
            self.clock_intervals += len(seg) - 1
        add_parts(self.parts, w.parts)
        self.methods.add(w.method)
        self.notes.append(acc.note)

    @property
    def method(self) -> str | None:
        return "+".join(sorted(self.methods)) or None

    @property
    def uncertainty_j(self) -> float:
        return combine(self.parts)

    def above(self, idle_power_w: float | None) -> float | None:
        return None if idle_power_w is None else self.energy_j - idle_power_w * self.duration_s


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(
    samples: Sequence[Sample],
    accuracy: Mapping[int, Accuracy] | None = None,
    rule: WindowRule | None = None,
    max_disagreement: float = 0.05,
) -> dict[str, Any]:
    """Per-phase, per-epoch and per-run energy of a tagged trace (all devices summed), each with
    its method and stated uncertainty, the energy above the trial's idle power, and the flags.

    ``accuracy`` is per device (``jobs.meters.accuracy.accuracies`` of the meter's hardware
    description); a device without one is read with the generic rule (its counter where every
    sample has one, else integrated power; no device accuracy). Returns a dict:

    - ``phases``: ``{phase: {...}}`` with exactly ``db.records.PhaseRecord``'s fields;
    - ``epochs``: ``{epoch: energy_j}`` (train and eval of the epoch);
    - ``epoch_figures``: ``{epoch: {energy_j, duration_s, energy_above_idle_j, uncertainty_j, method}}``;
    - ``method``: the method of the run's energy (train + eval; the whole trace where it has none);
    - ``run``: the run's ``energy_j``, ``duration_s`` (of the trace's train + eval),
      ``energy_above_idle_j``, ``energy_uncertainty_j``, ``error_basis``, ``counter_energy_j``,
      ``integrated_energy_j``, ``energy_disagreement``;
    - ``flags``: ``short_window:<phase>`` for each phase that breaks ``rule``, ``disagreement`` where
      the counter and the integrated power of the run differ by more than ``max_disagreement``;
    - ``idle_power_w``; ``idle_temperature_c``: ``{device: mean temperature in the idle window}``.
    """
    rule = WindowRule() if rule is None else rule
    accuracy = accuracy or {}
    phases: dict[str, _Tally] = {}
    epochs: dict[int, _Tally] = defaultdict(_Tally)
    run, whole = _Tally(), _Tally()
    clock_device = min((s.device for s in samples), default=0)  # time is counted on one device
    for seg in _segments(samples):
        head = seg[0]
        acc, on_clock = accuracy.get(head.device, UNKNOWN), head.device == clock_device
        tallies = [phases.setdefault(head.phase, _Tally()), whole]
        if head.phase in TRAINING_PHASES:
            tallies.append(run)
            if head.epoch is not None:
                tallies.append(epochs[head.epoch])
        for tally in tallies:
            tally.add(seg, acc, on_clock)
    idle = phases.get("idle")
    idle_power = idle.energy_j / idle.duration_s if idle is not None and idle.duration_s > 0 else None
    out_phases: dict[str, dict[str, Any]] = {}
    flags: list[str] = []
    for name, t in phases.items():
        valid = rule.holds(t.clock_samples, t.clock_intervals, t.duration_s)
        if not valid:
            flags.append(f"short_window:{name}")
        out_phases[name] = {
            "duration_s": t.duration_s, "energy_j": t.energy_j, "samples": t.samples,
            "mean_power_w": t.energy_j / t.duration_s if t.duration_s > 0 else None,
            "energy_above_idle_j": t.above(idle_power), "uncertainty_j": t.uncertainty_j, "method": t.method,
            "valid": valid,
        }  # fmt: skip
    counter, disagreement = run.counter_j if run.samples and run.counter_j is not None else None, None
    if counter is not None and counter > 0:
        disagreement = abs(counter - run.integrated_j) / counter
        if disagreement > max_disagreement:
            flags.append("disagreement")
    main = run if run.samples else whole
    temps: dict[int, list[float]] = defaultdict(list)
    for s in samples:
        if s.phase == "idle" and s.temperature_c is not None and math.isfinite(s.temperature_c):
            temps[s.device].append(s.temperature_c)
    return {
        "phases": out_phases,
        "epochs": {e: t.energy_j for e, t in epochs.items()},
        "epoch_figures": {
            e: {"energy_j": t.energy_j, "duration_s": t.duration_s, "energy_above_idle_j": t.above(idle_power),
                "uncertainty_j": t.uncertainty_j, "method": t.method}
            for e, t in epochs.items()
        },  # fmt: skip
        "method": main.method,
        "run": {
            "energy_j": run.energy_j, "duration_s": run.duration_s, "energy_above_idle_j": run.above(idle_power),
            "energy_uncertainty_j": run.uncertainty_j if run.samples else None,
            "error_basis": describe_parts(main.method or "none", main.parts, main.notes) if run.samples else None,
            "counter_energy_j": counter, "integrated_energy_j": run.integrated_j if run.samples else None,
            "energy_disagreement": disagreement,
        },  # fmt: skip
        "flags": flags,
        "idle_power_w": idle_power,
        "idle_temperature_c": {d: v for d, vs in temps.items() if (v := _mean(vs)) is not None},
    }


def cool_down(
    duration_s: float,
    within_c: float | None = None,
    idle_temperature_c: Mapping[int, float] | None = None,
    latest: Callable[[], Sequence[Sample]] = lambda: [],
    poll_s: float = 1.0,
    stop: threading.Event | None = None,
) -> float:
    """The cool-down after a trial; returns how long it lasted.

    Without ``within_c`` (or without an idle temperature for any device: a meter without a
    thermometer) it is ``pause(duration_s)``. With it, it ends once every device's latest
    temperature (``latest()``, polled every ``poll_s``) is within ``within_c`` degrees of its idle
    temperature, and after ``duration_s`` at most."""
    idle = dict(idle_temperature_c or {})
    if within_c is None or not idle:
        pause(duration_s)
        return max(duration_s, 0.0)
    wait = stop if stop is not None else threading.Event()
    started = time.monotonic()
    deadline = started + max(duration_s, 0.0)
    while True:
        now_temps = {s.device: s.temperature_c for s in latest() if s.temperature_c is not None}
        if now_temps and all(now_temps.get(d, math.inf) - t <= within_c for d, t in idle.items()):
            break
        left = deadline - time.monotonic()
        if left <= 0 or wait.wait(min(poll_s, left)):
            break
    return time.monotonic() - started
