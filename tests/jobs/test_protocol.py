"""Per-phase and per-epoch energy from a tagged trace."""

from __future__ import annotations

import time

import pytest

from jobs.meters.base import Sample
from jobs.protocol import WindowRule, cool_down, summarise


def _trace() -> list[Sample]:
    tags = [("idle", None)] * 3 + [("train", 1)] * 5 + [("eval", 1)] * 2 + [("train", 2)] * 5 + [("eval", None)] * 2
    out = []
    for i, (phase, epoch) in enumerate(tags):
        power = {"idle": 10.0, "train": 100.0, "eval": 50.0}[phase]
        out.append(Sample(t_s=float(i), phase=phase, epoch=epoch, power_w=power))
    return out


def test_phases_and_epochs_by_integration() -> None:
    s = summarise(_trace())
    assert s["method"] == "integrated"
    assert s["phases"]["idle"]["energy_j"] == pytest.approx(20.0)  # 2 s at 10 W
    assert s["phases"]["idle"]["mean_power_w"] == pytest.approx(10.0)
    assert s["phases"]["train"]["energy_j"] == pytest.approx(800.0)  # two 4 s segments at 100 W
    assert s["epochs"] == {1: pytest.approx(450.0), 2: pytest.approx(400.0)}
    assert s["phases"]["eval"]["samples"] == 4


def test_two_devices_add_energy_but_not_time() -> None:
    trace = _trace()
    both = trace + [Sample(**{**vars(x), "device": 1}) for x in trace]
    one, two = summarise(trace), summarise(both)
    assert two["phases"]["train"]["energy_j"] == pytest.approx(2 * one["phases"]["train"]["energy_j"])
    assert two["phases"]["train"]["duration_s"] == pytest.approx(one["phases"]["train"]["duration_s"])


def _hand_trace() -> list[Sample]:
    """Idle 10 s at 50 W, train epoch 1 10 s at 150 W, eval epoch 1 2 s at 100 W, at 10 Hz, with the
    meter's boundary samples (the closing reading, retagged, opens the next phase)."""
    out: list[Sample] = []
    t0 = 0.0
    for phase, epoch, seconds, watts in (("idle", None, 10.0, 50.0), ("train", 1, 10.0, 150.0),
                                         ("eval", 1, 2.0, 100.0)):
        n = round(seconds * 10)
        out += [Sample(t_s=t0 + i / 10, phase=phase, epoch=epoch, power_w=watts) for i in range(n + 1)]
        t0 += seconds
    return out


def test_energy_above_idle_is_the_hand_computed_value() -> None:
    s = summarise(_hand_trace())
    assert s["idle_power_w"] == pytest.approx(50.0)
    phases = s["phases"]
    assert phases["train"]["energy_above_idle_j"] == pytest.approx(1500.0 - 50.0 * 10.0)
    assert phases["eval"]["energy_above_idle_j"] == pytest.approx(200.0 - 50.0 * 2.0)
    assert phases["idle"]["energy_above_idle_j"] == pytest.approx(0.0)
    assert s["run"]["energy_j"] == pytest.approx(1700.0) and s["run"]["duration_s"] == pytest.approx(12.0)
    assert s["run"]["energy_above_idle_j"] == pytest.approx(1700.0 - 50.0 * 12.0)
    assert s["epoch_figures"][1]["energy_above_idle_j"] == pytest.approx(1100.0)


def test_a_window_with_too_few_samples_or_too_slow_a_rate_is_flagged_never_averaged_in_silence() -> None:
    s = summarise(_hand_trace(), rule=WindowRule(min_samples=60, min_rate_hz=1.0))
    assert {k: v["valid"] for k, v in s["phases"].items()} == {"idle": True, "train": True, "eval": False}
    assert s["flags"] == ["short_window:eval"]
    slow = [Sample(t_s=2.0 * i, phase="idle", epoch=None, power_w=50.0) for i in range(70)]  # 0.5 Hz
    assert summarise(slow, rule=WindowRule(60, 1.0))["flags"] == ["short_window:idle"]
    assert summarise(slow, rule=WindowRule(60, 0.4))["flags"] == []


def test_the_cool_down_waits_for_the_idle_temperature_or_its_limit() -> None:
    temps = iter([80.0, 70.0, 61.0, 55.0] + [55.0] * 100)

    def latest() -> list[Sample]:
        return [Sample(t_s=0.0, phase="cooldown", epoch=None, power_w=60.0, temperature_c=next(temps))]

    took = cool_down(30.0, within_c=2.0, idle_temperature_c={0: 54.0}, latest=latest, poll_s=0.01)
    assert took < 5.0 and next(temps) == 55.0  # stopped at the first reading within 2 degrees
    hot = cool_down(0.2, within_c=2.0, idle_temperature_c={0: 20.0}, latest=latest, poll_s=0.05)
    assert 0.2 <= hot < 2.0  # never cool enough: the limit
    started = time.monotonic()
    assert cool_down(0.1, within_c=2.0, idle_temperature_c={}, latest=latest) == 0.1  # no thermometer
    assert time.monotonic() - started >= 0.1
