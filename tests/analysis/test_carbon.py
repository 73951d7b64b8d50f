"""analysis.carbon: unit conversions and 004's life-cycle model by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.carbon import (
    co2eq_g,
    co2eq_g_array,
    co2eq_g_from_j,
    energy_j_to_kwh,
    energy_kwh_to_j,
    life_cycle,
    life_cycle_energy_kwh,
    search_energy_kwh,
    training_energy_kwh,
)


def test_conversions() -> None:
    assert energy_j_to_kwh(3.6e6) == 1.0
    assert energy_kwh_to_j(0.5) == 1.8e6


def test_co2eq_with_pue() -> None:
    # 2 kWh at the device, PUE 1.5, 400 g/kWh -> 1200 g
    assert co2eq_g(2.0, 400.0, pue=1.5) == pytest.approx(1200.0)
    assert co2eq_g_from_j(7.2e6, 400.0) == pytest.approx(800.0)
    with pytest.raises(ValueError, match="PUE"):
        co2eq_g(1.0, 400.0, pue=0.9)
    with pytest.raises(ValueError, match="intensity"):
        co2eq_g(1.0, -1.0)


def test_co2eq_array_per_run_intensity() -> None:
    out = co2eq_g_array([3.6e6, 7.2e6, math.nan], [100.0, 200.0, 300.0], pue=1.2)
    np.testing.assert_allclose(out[:2], [120.0, 480.0])
    assert math.isnan(out[2])


def test_training_energy_with_80_percent_overhead() -> None:
    # 10 epochs x 50,000 samples x 1e-8 kWh per forward pass = 0.005 kWh of inference;
    # overhead is 80 % of the total, so the total is 5x that
    assert training_energy_kwh(10, 50_000, 1e-8) == pytest.approx(0.025)
    assert training_energy_kwh(10, 50_000, 1e-8, overhead_share=0.0) == pytest.approx(0.005)
    with pytest.raises(ValueError):
        training_energy_kwh(1, 1, 1.0, overhead_share=1.0)


def test_life_cycle_by_hand() -> None:
    ct = search_energy_kwh([0.2, 0.3, 0.5])  # three trainings during the search
    assert ct == pytest.approx(1.0)
    assert life_cycle_energy_kwh(ct, 0.5, 1e-6, 1e6) == pytest.approx(2.5)
    lc = life_cycle(ct, 0.5, 1e-6, 1e6, intensity_g_per_kwh=300.0, pue=1.2)
    assert lc.total_kwh == pytest.approx(2.5)
    assert lc.inference_kwh == pytest.approx(1.0)
    assert lc.co2eq_g == pytest.approx(2.5 * 1.2 * 300.0)
    assert lc.shares() == pytest.approx({"search": 0.4, "training": 0.2, "inference": 0.4})
    with pytest.raises(ValueError, match="inference_calls"):
        life_cycle(1.0, 1.0, 1e-6, -5, 300.0)
