"""Energy, method and stated uncertainty on synthetic power curves with known integrals, through the
real sampling meter over the fake NVML library."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, cast

import pytest

from jobs.meters.accuracy import accuracies, combine, nvml_accuracy, simulated_accuracy, window_energy
from jobs.meters.base import Sample
from jobs.meters.fake_nvml import FakeClock, FakeGpu, FakeNvml
from jobs.meters.nvml import NvmlMeter
from jobs.protocol import summarise

RATE_HZ = 10.0
STEP_AT = 20.03  # off the sampling grid


def _step(t: float) -> float:
    return 100.0 if t < STEP_AT else 300.0


def _step_integral(t: float) -> float:
    return 100.0 * t if t < STEP_AT else 100.0 * STEP_AT + 300.0 * (t - STEP_AT)


def _ramp(t: float) -> float:
    return 50.0 + 5.0 * t


def _ramp_integral(t: float) -> float:
    return 50.0 * t + 2.5 * t * t


NOISE_W = 0.037  # the noise holds each value this long (not a multiple of the sampling period)
_RNG = random.Random(1)
_NOISE = [150.0 + 40.0 * _RNG.random() for _ in range(10_000)]


def _noise(t: float) -> float:
    return _NOISE[int(t / NOISE_W)]


def _noise_integral(t: float) -> float:
    k = int(t / NOISE_W)
    return sum(_NOISE[:k]) * NOISE_W + _NOISE[k] * (t - k * NOISE_W)


CURVES: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "step": (_step, _step_integral),
    "ramp": (_ramp, _ramp_integral),
    "noise": (_noise, _noise_integral),
}


def _measure(curve: Callable[[float], float], counter: bool, scale: float = 1.0) -> tuple[list[Sample], NvmlMeter]:
    """10 s idle then 60 s of training at 10 Hz (with a little jitter), sampled by the real meter."""
    clock = FakeClock()
    gpu = FakeGpu(power_w=curve, has_energy_counter=counter, energy_scale=scale)
    meter = NvmlMeter(rate_hz=RATE_HZ, nvml=FakeNvml([gpu], clock=clock), clock=clock, environ={}, run_thread=False)
    jitter = random.Random(0)
    meter.start()
    for phase, epoch, seconds in (("idle", None, 10.0), ("train", 1, 60.0)):
        meter.mark(phase, epoch)
        for _ in range(int(seconds * RATE_HZ)):
            clock.advance(1.0 / RATE_HZ + jitter.uniform(-0.003, 0.003))
            meter.sample_once()
    meter.mark("cooldown")
    meter.stop()
    return meter.drain(), meter


@pytest.mark.parametrize("counter", [False, True], ids=["power-integration", "counter"])
@pytest.mark.parametrize("name", sorted(CURVES))
def test_energy_within_half_a_percent_and_the_uncertainty_covers_the_error(name: str, counter: bool) -> None:
    curve, integral = CURVES[name]
    samples, meter = _measure(curve, counter)
    acc = accuracies(meter.hardware(), meter.source)
    train = [s for s in samples if s.phase == "train"]
    truth = integral(train[-1].t_s) - integral(train[0].t_s)
    s = summarise(samples, acc)
    got = s["phases"]["train"]
    assert got["method"] == ("nvml_counter" if counter else "nvml_power_integration")
    assert got["energy_j"] == pytest.approx(truth, rel=0.005)
    assert got["uncertainty_j"] > 0 and abs(got["energy_j"] - truth) <= got["uncertainty_j"]
    # the sampling's own part alone covers the sampling's error (the device accuracy is a calibration)
    w = window_energy(train, acc[0])
    sampling = combine({k: v for k, v in w.parts.items() if k != "device accuracy"})
    assert abs(w.energy_j - truth) <= sampling
    assert s["run"]["energy_uncertainty_j"] == pytest.approx(got["uncertainty_j"])
    assert name in ("step", "ramp", "noise") and s["run"]["error_basis"].startswith(got["method"])
    assert "disagreement" not in s["flags"]


def test_a_counter_that_disagrees_with_the_power_by_ten_percent_is_flagged() -> None:
    samples, meter = _measure(_ramp, counter=True, scale=1.1)
    s = summarise(samples, accuracies(meter.hardware(), meter.source), max_disagreement=0.05)
    run = s["run"]
    assert run["counter_energy_j"] == pytest.approx(1.1 * run["integrated_energy_j"], rel=0.005)
    assert run["energy_disagreement"] == pytest.approx(0.1 / 1.1, rel=0.05)
    assert "disagreement" in s["flags"]
    assert "disagreement" not in summarise(samples, accuracies(meter.hardware(), "nvml"), max_disagreement=0.2)["flags"]


def test_nvml_records_its_averaging_window_per_architecture() -> None:
    clock = FakeClock()
    gpus = [FakeGpu(name="NVIDIA A100-SXM4-40GB"), FakeGpu(name="NVIDIA L40S", architecture=8),
            FakeGpu(name="Tesla V100-SXM2-16GB", architecture=5)]
    meter = NvmlMeter(nvml=FakeNvml(gpus, clock=clock), clock=clock, environ={}, run_thread=False)
    devices = cast(list[dict[str, Any]], meter.hardware()["devices"])
    got = [(d["architecture"], d["accuracy"]["averaging_s"]) for d in devices]
    assert got == [("ampere", 0.0), ("ada", 1.0), ("volta", 0.0)]  # GA100 and older: instantaneous
    assert nvml_accuracy(None, None, False).averaging_s == 1.0  # unknown: the larger uncertainty


def test_a_simulated_window_says_so_and_states_an_uncertainty() -> None:
    samples = [Sample(t_s=0.1 * i, phase="train", epoch=1, power_w=30.0 + (i % 3), energy_j=0.0) for i in range(50)]
    s = summarise(samples, {0: simulated_accuracy(2.5)})
    assert s["method"] == "simulated" and s["run"]["counter_energy_j"] is None
    assert s["run"]["energy_uncertainty_j"] > 0 and "not a measurement" in s["run"]["error_basis"]
    assert math.isfinite(s["run"]["integrated_energy_j"])
