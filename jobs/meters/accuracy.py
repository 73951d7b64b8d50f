"""How exactly a power source's readings give energy: the method, and a stated uncertainty in joules.

Every energy figure of a run names the method that produced it and an uncertainty with its basis.
A device's ``Accuracy`` (recorded per device in its meter's hardware description, under
``accuracy``) says what is known about its readings; ``window_energy`` turns one contiguous
stretch of one device's samples (a window) into its energy, both ways where both exist, and the
parts of its uncertainty:

- ``device accuracy``: NVIDIA documents power readings as accurate to +-5 % or +-5 W, whichever is
  larger. The error is a calibration offset, so it is the same sign over a window and adds up
  linearly (per interval for sampled power; over the window's energy and duration for the counter,
  which is fed by the same sensor);
- ``integration``: the bound on the trapezoid's error from the sampling rate, half the spread
  between the left- and right-point Riemann sums taken per interval (``0.5 sum |p_i - p_i-1| dt_i``;
  exact for a step anywhere in an interval or a monotone stretch between two samples);
- ``reading resolution``: half the unit a power reading is rounded to (1 mW for NVML), over the window;
- ``averaging window``: where a power reading is the mean of the last ``averaging_s`` seconds (1 s on
  Ampere and later except GA100; instantaneous before), the integral of the readings is the true
  integral shifted by up to ``averaging_s / 2`` times the power change at the window's ends;
- ``counter ends``: the energy counter's resolution (1 mJ) and update period (about 100 ms from
  Volta on) at each end of the window: resolution plus power x update period, per end;
- ``simulation``: for the simulated source, nothing is measured; its own stated error is its seeded
  noise (independent per sample) on top of the integration bound.

Independent parts are combined in quadrature (``combine``); the same part of several windows adds
linearly (they are bounds, and the calibration offset is shared).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.meters.base import Sample, integrate_power_j

NVML_POWER_REL = 0.05  # NVIDIA: power readings accurate to +-5 % ...
NVML_POWER_ABS_W = 5.0  # ... or +-5 W, whichever is larger
NVML_COUNTER_RESOLUTION_J = 0.001  # nvmlDeviceGetTotalEnergyConsumption counts millijoules
NVML_COUNTER_UPDATE_S = 0.1  # about 100 ms from Volta on
NVML_AVERAGING_S = 1.0  # nvmlDeviceGetPowerUsage is a 1 s mean on Ampere and later, except GA100

PARTS = ("device accuracy", "integration", "reading resolution", "averaging window", "counter ends", "simulation")
NVML_POWER_RESOLUTION_W = 0.001  # nvmlDeviceGetPowerUsage counts milliwatts


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """What is known about one device's readings (see the module docstring)."""

    source: str  # nvml | simulated | rapl | ... (names the method: <source>_counter, <source>_power_integration)
    power_rel: float = 0.0  # documented accuracy of a power reading, as a fraction of it ...
    power_abs_w: float = 0.0  # ... or this many watts, whichever is larger
    averaging_s: float = 0.0  # a power reading is the mean over this many seconds (0: instantaneous)
    counter: bool = False  # the device has an energy counter of its own (the simulated one is not)
    counter_resolution_j: float = 0.0
    counter_update_s: float = 0.0
    power_resolution_w: float = 0.0  # the unit a power reading is rounded to
    simulated: bool = False
    noise_w: float = 0.0  # simulated: the seeded noise of each sample (standard deviation)
    note: str = ""  # what the figures rest on, in words

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Accuracy:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def method(self, counter: bool) -> str:
        """The method name of energy taken from the counter (``counter``) or from sampled power."""
        if self.simulated:
            return "simulated"
        if not self.source:  # nothing known of the source: the generic names
            return "counter" if counter else "integrated"
        return f"{self.source}_counter" if counter else f"{self.source}_power_integration"


# A source nothing is known of: its counter is used where every sample has one, no device accuracy.
UNKNOWN = Accuracy(source="", counter=True, note="no documented accuracy of the readings: none included")


def nvml_accuracy(architecture: str | None, name: str | None, has_counter: bool) -> Accuracy:
    """An NVML device's accuracy from its architecture and name (GA100: A100, A30 average nothing).

    An unknown architecture is assumed to average over 1 s (the larger uncertainty)."""
    arch = (architecture or "").lower()
    ga100 = any(tag in (name or "") for tag in ("A100", "A30"))
    older = arch in ("kepler", "maxwell", "pascal", "volta", "turing")
    averaging = 0.0 if (older or ga100) else NVML_AVERAGING_S
    why = "instantaneous power readings" if averaging == 0 else f"power readings are {averaging:g} s means"
    return Accuracy(
        source="nvml", power_rel=NVML_POWER_REL, power_abs_w=NVML_POWER_ABS_W, averaging_s=averaging,
        counter=has_counter, counter_resolution_j=NVML_COUNTER_RESOLUTION_J if has_counter else 0.0,
        counter_update_s=NVML_COUNTER_UPDATE_S if has_counter else 0.0, power_resolution_w=NVML_POWER_RESOLUTION_W,
        note=f"NVIDIA-documented +-5 % or +-5 W; {why} ({architecture or 'unknown architecture'})",
    )  # fmt: skip


def simulated_accuracy(noise_w: float) -> Accuracy:
    return Accuracy(source="simulated", simulated=True, noise_w=noise_w,
                    note="simulated: not a measurement; integration bound and the simulation's noise only")


def rapl_accuracy() -> Accuracy:
    return Accuracy(source="rapl", counter=True, counter_resolution_j=1e-6, counter_update_s=0.001,
                    note="RAPL counter (1 uJ, ~1 ms updates); RAPL's own accuracy is not documented, not included")


def accuracies(hardware: Mapping[str, Any] | None, source: str | None) -> dict[int, Accuracy]:
    """Per device index, the ``accuracy`` its meter's hardware description records."""
    out: dict[int, Accuracy] = {}
    for i, dev in enumerate((hardware or {}).get("devices") or ()):
        if isinstance(dev, Mapping) and isinstance(dev.get("accuracy"), Mapping):
            out[int(dev.get("index", i))] = Accuracy.from_dict(dev["accuracy"])
    if not out and source == "simulated":
        out[0] = simulated_accuracy(0.0)
    return out


@dataclasses.dataclass(frozen=True)
class WindowEnergy:
    """One window of one device: its energy both ways, the method used and the uncertainty's parts."""

    energy_j: float
    method: str
    integrated_j: float
    counter_j: float | None  # from a real device counter covering the window, else None
    parts: dict[str, float]  # joules per part of PARTS (bounds; combine in quadrature)


def combine(parts: Mapping[str, float]) -> float:
    """Independent parts of an uncertainty, in quadrature."""
    return math.sqrt(sum(v * v for v in parts.values()))


def add_parts(total: dict[str, float], parts: Mapping[str, float]) -> None:
    """The same part of several windows adds linearly."""
    for k, v in parts.items():
        total[k] = total.get(k, 0.0) + v


def describe_parts(method: str, parts: Mapping[str, float], notes: Sequence[str] = ()) -> str:
    """The basis of an uncertainty in words: the method, each part in joules, and the notes."""
    shown = ", ".join(f"{k} {parts[k]:.3g} J" for k in PARTS if parts.get(k))
    text = f"{method}: quadrature of {shown}" if shown else f"{method}: no stated part"
    return "; ".join([text, *dict.fromkeys(n for n in notes if n)])


def window_energy(samples: Sequence[Sample], acc: Accuracy = UNKNOWN) -> WindowEnergy:
    """Energy of a contiguous window of one device's samples, with the uncertainty's parts."""
    t = [s.t_s for s in samples]
    p = [s.power_w for s in samples]
    dts = [b - a for a, b in zip(t, t[1:], strict=False)]
    steps = [abs(b - a) for a, b in zip(p, p[1:], strict=False)]
    integrated = integrate_power_j(t, p)
    duration = t[-1] - t[0] if t else 0.0
    has_counter = acc.counter and len(samples) > 1 and all(s.energy_j is not None for s in samples)
    counter = float(samples[-1].energy_j - samples[0].energy_j) if has_counter else None  # type: ignore[operator]
    parts: dict[str, float] = {}
    if counter is not None:
        parts["device accuracy"] = max(acc.power_rel * abs(counter), acc.power_abs_w * duration)
        parts["counter ends"] = 2 * acc.counter_resolution_j + acc.counter_update_s * (abs(p[0]) + abs(p[-1]))
    else:
        parts["device accuracy"] = sum(
            dt * max(acc.power_rel * 0.5 * abs(a + b), acc.power_abs_w) for dt, a, b in zip(dts, p, p[1:], strict=False)
        )
        parts["integration"] = 0.5 * sum(d * dt for d, dt in zip(steps, dts, strict=True))
        parts["reading resolution"] = 0.5 * acc.power_resolution_w * duration
        if acc.averaging_s > 0 and samples:
            ends = [x for x, tx in zip(p, t, strict=True) if tx - t[0] <= acc.averaging_s or t[-1] - tx <= acc.averaging_s]
            parts["averaging window"] = 0.5 * min(acc.averaging_s, duration) * (max(ends) - min(ends))
        if acc.simulated:
            parts["simulation"] = acc.noise_w * math.sqrt(sum(dt * dt for dt in dts))
    parts = {k: v for k, v in parts.items() if v > 0}
    energy = counter if counter is not None else integrated
    return WindowEnergy(energy, acc.method(counter is not None), integrated, counter, parts)


__all__ = [
    "PARTS",
    "UNKNOWN",
    "Accuracy",
    "WindowEnergy",
    "accuracies",
    "add_parts",
    "combine",
    "describe_parts",
    "nvml_accuracy",
    "rapl_accuracy",
    "simulated_accuracy",
    "window_energy",
]
