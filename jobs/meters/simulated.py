"""A simulated power source for machines without a GPU: power that follows the real load.

The reader takes this process's CPU time between readings and maps its utilisation of the
available cores onto a GPU-like power curve (idle power + utilisation x dynamic range, with a
little seeded noise). The numbers are not a measurement of any device: every run and sample
that uses them is labelled ``simulated`` so analysis never mixes them with measured power.
Given a ``HostReader``, the samples also carry the host's CPU utilization and the process's RSS,
which are real readings (as the NVML meter records them). Timing, phases and the thread are the
``SamplingMeter``'s.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Unpack

from jobs.meters.accuracy import simulated_accuracy
from jobs.meters.base import Sample
from jobs.meters.sampler import MeterOptions, SamplingMeter, Tick


class SimulatedReader:
    """The simulated device: power from this process's CPU load, an energy counter that is the
    trapezoid integral of that power, and the power limit ``max_w``."""

    source = "simulated"
    opens_phases = True
    samples_at_stop = False  # nothing to close: the last sample is the last one taken
    MIN_INTERVAL_S = 0.02

    def __init__(
        self,
        idle_w: float = 30.0,
        max_w: float = 250.0,
        seed: int = 0,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self.idle_w = idle_w
        self.max_w = max_w
        self.noise_w = 0.01 * max_w  # the seeded noise on every sample (its standard deviation)
        self._rng = random.Random(seed)
        self._cpu_time = cpu_time
        self._cores = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        self._last_cpu = 0.0
        self._last_t = 0.0  # time of the last load measurement (s since start)
        self._last_sample_t = 0.0
        self._last_util = 0.0
        self._energy_j = 0.0
        self._last_power = idle_w

    def open(self) -> None:
        """Take the CPU-time baseline (the meter's start is t = 0)."""
        self._last_cpu = self._cpu_time()
        self._last_t = self._last_sample_t = 0.0
        self._energy_j, self._last_power = 0.0, self.idle_w

    def read_samples(self, tick: Tick) -> list[Sample]:
        """One sample of the simulated device."""
        now = tick.now()
        cpu = self._cpu_time()
        dt = now - self._last_t
        if dt < self.MIN_INTERVAL_S:
            # Too short to measure a load (phase boundaries sample twice): keep the last one.
            util = self._last_util
        else:
            util = min(1.0, max(0.0, (cpu - self._last_cpu) / dt / self._cores))
            self._last_t, self._last_cpu, self._last_util = now, cpu, util
        noise = self._rng.gauss(0.0, self.noise_w)
        power = max(0.0, self.idle_w + util * (self.max_w - self.idle_w) + noise)
        self._energy_j += 0.5 * (power + self._last_power) * max(now - self._last_sample_t, 0.0)
        self._last_sample_t, self._last_power = now, power
        return [
            tick.sample(
                now,
                power,
                energy_j=self._energy_j,
                gpu_util=100.0 * util,
                power_limit_w=self.max_w,
                cpu_util=100.0 * util,  # the host reading's, where the meter has a HostReader
            )
        ]

    def close(self) -> None:
        """Nothing to release."""

    def hardware(self) -> dict[str, object]:
        """A description that says plainly the device is simulated."""
        return {
            "gpu_name": "simulated (no GPU; power follows process CPU load)",
            "gpu_count": 0,
            "power_limit_w": self.max_w,
            "devices": [{"index": 0, "accuracy": simulated_accuracy(self.noise_w).to_dict()}],
        }


class SimulatedMeter(SamplingMeter[SimulatedReader]):
    """PowerMeter whose power is driven by this process's real CPU load (``SimulatedReader``).

    ``stop()`` takes no closing sample (the simulated device has nothing to close). ``options``
    are the ``SamplingMeter``'s (``host``, ``clock``, ``wall_clock``, ``run_thread``, ...).
    """

    MIN_INTERVAL_S = SimulatedReader.MIN_INTERVAL_S

    def __init__(
        self,
        rate_hz: float = 10.0,
        idle_w: float = 30.0,
        max_w: float = 250.0,
        seed: int = 0,
        **options: Unpack[MeterOptions],
    ) -> None:
        super().__init__(SimulatedReader(idle_w=idle_w, max_w=max_w, seed=seed), rate_hz, **options)


__all__ = ["SimulatedMeter", "SimulatedReader"]
