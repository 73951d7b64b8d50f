"""The simulated source: labelled, phase-tagged, and driven by the real process load."""

from __future__ import annotations

import time

import pytest

from jobs.meters import make_meter
from jobs.meters.base import MeterError, Sample, energy_j, integrate_power_j
from jobs.meters.simulated import SimulatedMeter


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def test_power_follows_the_load_and_samples_carry_phase_and_epoch() -> None:
    clock = FakeClock()
    meter = SimulatedMeter(rate_hz=1e-6, clock=clock)  # the thread never fires: samples are taken by hand
    meter.start()
    try:
        meter.mark("idle")
        clock.t += 1.0
        [idle] = meter.sample_once()  # one device: one sample
        meter.mark("train", 1)
        _busy(0.3)
        clock.t += 0.3  # 0.3 s of CPU in 0.3 s of (fake) wall time: full load of one core
        [busy] = meter.sample_once()
    finally:
        meter.stop()
    assert idle.phase == "idle" and idle.epoch is None
    assert busy.phase == "train" and busy.epoch == 1
    assert busy.power_w > idle.power_w + 50
    samples = meter.drain()
    assert all(s.t_s >= 0 for s in samples)
    assert meter.source == "simulated" and "simulated" in str(meter.hardware()["gpu_name"])


def test_energy_counter_equals_the_integral_of_its_power() -> None:
    clock = FakeClock()
    meter = SimulatedMeter(rate_hz=1e-6, clock=clock)
    meter.start()
    for _ in range(20):
        clock.t += 0.1
        meter.sample_once()
    meter.stop()
    samples = meter.drain()
    counter, method = energy_j(samples)
    assert method == "counter"
    assert counter == pytest.approx(integrate_power_j([s.t_s for s in samples], [s.power_w for s in samples]))


def test_energy_falls_back_to_integration_without_a_counter() -> None:
    samples = [Sample(t_s=t, phase="train", epoch=1, power_w=100.0) for t in (0.0, 1.0, 2.5)]
    assert energy_j(samples) == (250.0, "integrated")


def test_sampler_thread_runs_and_stops() -> None:
    meter = SimulatedMeter(rate_hz=200)
    meter.start()
    deadline = time.monotonic() + 5
    got: list[Sample] = []
    while len(got) < 5 and time.monotonic() < deadline:
        got += meter.drain()
    meter.stop()
    assert len(got) >= 5
    assert [s.t_s for s in got] == sorted(s.t_s for s in got)


def test_bad_phase_and_rate_are_refused() -> None:
    with pytest.raises(MeterError, match="rate_hz"):
        SimulatedMeter(rate_hz=0)
    meter = SimulatedMeter()
    with pytest.raises(MeterError, match="'training'"):
        meter.mark("training")


def test_auto_selection_is_simulated_without_a_gpu() -> None:
    assert make_meter("auto").source == "simulated"
    with pytest.raises(MeterError, match="allowed: auto, nvml, simulated"):
        make_meter("rapl-only")


def test_the_meters_make_meter_builds_record_host_cpu_and_rss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated samples carry real psutil readings: host CPU utilization (0-100, None for the
    first reading, which has no interval behind it) and this process's RSS."""
    clock = FakeClock()
    meter = make_meter("simulated", rate_hz=0.01)  # the thread stays out of the way: two samples
    assert isinstance(meter, SimulatedMeter)
    meter._clock = clock  # deterministic sample times; the host readings stay real
    meter.start()
    _busy(0.05)
    clock.t += 0.5
    meter.sample_once()
    meter.stop()
    samples = meter.drain()
    assert len(samples) == 2
    assert all(s.rss_mb is not None and s.rss_mb > 1.0 for s in samples)
    assert samples[0].cpu_util is None
    assert samples[1].cpu_util is not None and 0.0 <= samples[1].cpu_util <= 100.0
    # NVML gets the same host reader where a GPU is visible
    import jobs.meters.nvml as nvml

    monkeypatch.setattr(nvml, "nvml_available", lambda: True)
    gpu_meter = make_meter("auto")
    assert isinstance(gpu_meter, nvml.NvmlMeter) and gpu_meter._host is not None
