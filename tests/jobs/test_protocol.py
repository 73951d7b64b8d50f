"""Per-phase and per-epoch energy from a tagged trace."""

from __future__ import annotations

import pytest

from jobs.meters.base import Sample
from jobs.protocol import summarise


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
