"""A simulated power source for machines without a GPU: power that follows the real load.

The sampler reads this process's CPU time between samples and maps its utilisation of the
available cores onto a GPU-like power curve (idle power + utilisation x dynamic range, with a
little seeded noise). The numbers are not a measurement of any device: every run and sample
that uses them is labelled ``simulated`` so analysis never mixes them with measured power.
Given a ``HostReader``, the samples also carry the host's CPU utilization and the process's RSS,
which are real readings (as the NVML meter records them).
"""

from __future__ import annotations

import os
import random
import threading
import time

from jobs.meters.base import MeterError, Sample, check_phase
from jobs.meters.host import HostReader


class SimulatedMeter:
    """PowerMeter whose power is driven by this process's real CPU load."""

    source = "simulated"
    MIN_INTERVAL_S = 0.02

    def __init__(
        self,
        rate_hz: float = 10.0,
        idle_w: float = 30.0,
        max_w: float = 250.0,
        seed: int = 0,
        clock=time.monotonic,
        host: HostReader | None = None,
    ) -> None:
        if rate_hz <= 0:
            raise MeterError(f"meter.rate_hz={rate_hz} must be > 0")
        self.rate_hz = rate_hz
        self.idle_w = idle_w
        self.max_w = max_w
        self._rng = random.Random(seed)
        self._clock = clock
        self._host = host
        self._cores = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._phase = "idle"
        self._epoch: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.anchor_unix_s = 0.0
        self._t0 = 0.0
        self._last_cpu = 0.0
        self._last_t = 0.0
        self._last_sample_t = 0.0
        self._last_util = 0.0
        self._energy_j = 0.0
        self._last_power = idle_w

    def start(self) -> None:
        """Start sampling; the wall-clock anchor is taken now."""
        if self._thread is not None:
            raise MeterError("simulated meter already started")
        self.anchor_unix_s = time.time()
        self._t0 = self._clock()
        self._last_t = self._last_sample_t = self._t0
        self._last_cpu = time.process_time()
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="simulated-meter", daemon=True)
        self._thread.start()

    def mark(self, phase: str, epoch: int | None = None) -> None:
        """Tag the samples that follow with ``phase`` and ``epoch``; a sample is taken at the boundary."""
        check_phase(phase)
        self.sample_once()  # close the previous phase at the boundary
        with self._lock:
            self._phase, self._epoch = phase, epoch
        self.sample_once()

    def sample_once(self) -> Sample:
        """Take one sample now (used by the thread, at phase boundaries, and by tests)."""
        now = self._clock()
        cpu = time.process_time()
        with self._lock:
            dt = now - self._last_t
            if dt < self.MIN_INTERVAL_S:
                # Too short to measure a load (phase boundaries sample twice): keep the last one.
                util = self._last_util
            else:
                util = min(1.0, max(0.0, (cpu - self._last_cpu) / dt / self._cores))
                self._last_t, self._last_cpu, self._last_util = now, cpu, util
            noise = self._rng.gauss(0.0, 0.01 * self.max_w)
            power = max(0.0, self.idle_w + util * (self.max_w - self.idle_w) + noise)
            self._energy_j += 0.5 * (power + self._last_power) * max(now - self._last_sample_t, 0.0)
            self._last_sample_t, self._last_power = now, power
            host = None if self._host is None else self._host.read()
            sample = Sample(
                t_s=now - self._t0,
                phase=self._phase,
                epoch=self._epoch,
                power_w=power,
                energy_j=self._energy_j,
                gpu_util=100.0 * util,
                power_limit_w=self.max_w,
                cpu_util=100.0 * util if host is None else host.cpu_util_pct,
                rss_mb=None if host is None else host.rss_mb,
            )
            self._samples.append(sample)
        return sample

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        while not self._stop.wait(period):
            self.sample_once()

    def drain(self) -> list[Sample]:
        """Samples since the previous drain, oldest first; a closing sample is taken first."""
        if self._thread is not None:
            self.sample_once()
        with self._lock:
            out, self._samples = self._samples, []
        return out

    def stop(self) -> None:
        """Stop the sampler thread (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def hardware(self) -> dict[str, object]:
        """A description that says plainly the device is simulated."""
        return {
            "gpu_name": "simulated (no GPU; power follows process CPU load)",
            "gpu_count": 0,
            "power_limit_w": self.max_w,
        }
