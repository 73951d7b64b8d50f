"""The meter port: one small interface every power source implements.

A meter samples in a background thread from ``start()`` to ``stop()``. The training loop
tags what follows with ``mark(phase, epoch)``; ``drain()`` hands over (and forgets) the
samples taken since the previous drain, so a worker that runs many trials with one meter
stores each trial's trace with its run.

The phases and the sample's columns are the ground floor's (``db.records.PHASES``,
``db.records.SAMPLE_COLUMNS``); ``Sample`` is checked against those columns on import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from db.errors import CampaignError
from db.records import PHASES, SAMPLE_COLUMNS, Phase

# The boundary between the tag a sample carries and what its reader measured (see check_fields).
_TAG_FIELDS = ("t_s", "phase", "epoch", "power_w", "device")


class MeterError(CampaignError, RuntimeError):
    """A meter could not start or read its device; the message says what to do."""


def check_phase(phase: str) -> None:
    """Refuse a phase tag that is not one of ``PHASES`` (every meter's ``mark`` calls this)."""
    if phase not in PHASES:
        raise MeterError(f"phase {str(phase)!r} is not one of {', '.join(PHASES)}")


@dataclasses.dataclass
class Sample:
    """One reading of one device.

    ``t_s`` is seconds on the monotonic clock since the meter's ``anchor`` (the wall-clock
    time of its start). ``energy_j`` is the device's cumulative energy counter relative to
    the meter's start where the device has one, else None.
    """

    t_s: float
    phase: str
    epoch: int | None
    power_w: float
    device: int = 0
    energy_j: float | None = None
    gpu_util: float | None = None
    mem_util: float | None = None
    mem_used_mb: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    power_limit_w: float | None = None
    cpu_util: float | None = None
    rss_mb: float | None = None


def check_fields(fields: Sequence[str], columns: Sequence[str] = SAMPLE_COLUMNS) -> None:
    """Refuse a ``Sample`` that is out of step with the ``trace_sample`` columns: the same names,
    and after the tag fields (``t_s``, ``phase``, ``epoch``, ``power_w``, ``device``, which the
    table orders differently) the same order."""
    head = len(_TAG_FIELDS)
    if (
        set(fields) != set(columns)
        or tuple(fields[:head]) != _TAG_FIELDS
        or ([c for c in columns if c not in _TAG_FIELDS] != list(fields[head:]))
    ):
        raise TypeError(
            f"jobs.meters.base.Sample fields {tuple(fields)} are out of step with db.records.SAMPLE_COLUMNS "
            f"{tuple(columns)}: change both together"
        )


check_fields([f.name for f in dataclasses.fields(Sample)])
# The trace's columns, as the trace_sample table has them (one definition: db.records).
SAMPLE_FIELDS: tuple[str, ...] = SAMPLE_COLUMNS


@runtime_checkable
class PowerMeter(Protocol):
    """What the job needs of a power source (NVML, simulated, ...)."""

    source: str  # recorded with every run and sample: "nvml", "simulated", ...
    anchor_unix_s: float  # wall-clock time at which t_s == 0

    def start(self) -> None: ...

    def mark(self, phase: str, epoch: int | None = None) -> None: ...

    def drain(self) -> list[Sample]: ...

    def latest(self) -> list[Sample]: ...

    def stop(self) -> None: ...

    def hardware(self) -> dict[str, object]: ...


def integrate_power_j(t_s: Sequence[float], power_w: Sequence[float]) -> float:
    """Trapezoidal integral of power over time, in joules (0 for fewer than two samples)."""
    total = 0.0
    for i in range(1, len(t_s)):
        total += 0.5 * (power_w[i] + power_w[i - 1]) * (t_s[i] - t_s[i - 1])
    return total


def energy_j(samples: Iterable[Sample]) -> tuple[float, str]:
    """Energy of a contiguous stretch of samples from one device, and how it was obtained.

    The device counter is preferred where every sample has one ("counter"); otherwise the
    sampled power is integrated ("integrated").
    """
    rows = list(samples)
    if len(rows) < 2:
        return 0.0, "integrated"
    if all(s.energy_j is not None for s in rows):
        return float(rows[-1].energy_j - rows[0].energy_j), "counter"  # type: ignore[operator]
    return integrate_power_j([s.t_s for s in rows], [s.power_w for s in rows]), "integrated"


__all__ = [
    "PHASES",
    "SAMPLE_FIELDS",
    "MeterError",
    "Phase",
    "PowerMeter",
    "Sample",
    "check_fields",
    "check_phase",
    "energy_j",
    "integrate_power_j",
]
