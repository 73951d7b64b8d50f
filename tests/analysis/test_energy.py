"""analysis.energy: the energy above idle (recorded, else from the run's idle power), methods that
say simulated, flags as text, and databases without the newer columns read as NULL."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.energy import (
    above_idle_j,
    energy_by_gpu_budget,
    flagged_runs,
    flags_text,
    method_label,
    mixed_methods_text,
    phase_energy,
    with_energy_columns,
)


def test_above_idle_is_recorded_else_computed_from_the_idle_power() -> None:
    runs = pd.DataFrame({"energy_j": [1000.0, 1000.0, 1000.0], "idle_power_w": [30.0, 30.0, None],
                         "duration_s": [10.0, 10.0, 10.0], "energy_above_idle_j": [650.0, None, None]})
    assert above_idle_j(runs).tolist()[:2] == [650.0, 1000.0 - 30.0 * 10.0]
    assert math.isnan(above_idle_j(runs).iloc[2])
    assert above_idle_j(runs.drop(columns="energy_above_idle_j")).iloc[1] == 700.0


def test_labels_and_flags() -> None:
    assert method_label("simulated", "integrated") == "simulated (integrated)"
    assert method_label("simulated", None) == "simulated"
    assert method_label("simulated", "simulated") == "simulated"
    assert method_label("nvml", "nvml_counter") == "nvml_counter"
    assert method_label("nvml", float("nan")) == "unknown"
    assert flags_text(None) == "" and flags_text(float("nan")) == ""
    assert flags_text("short_window:idle, disagreement") == "short_window:idle,disagreement"
    assert flags_text(("disagreement",)) == "disagreement"


def test_an_older_database_reads_as_null() -> None:
    """No uncertainty, method or flags columns: n/a, unknown and none; nothing crashes."""
    runs = pd.DataFrame({"run_id": [1, 2], "gpu_type": "cpu", "epochs": [1, 1], "power_source": "simulated",
                         "energy_j": [100.0, 300.0], "duration_s": [2.0, 4.0], "idle_power_w": [10.0, 10.0]})
    df = with_energy_columns(runs, "above_idle")
    assert df["energy_j"].tolist() == [80.0, 260.0] and df["energy_total_j"].tolist() == [100.0, 300.0]
    assert df["energy_uncertainty_j"].isna().all() and set(df["energy_method"]) == {"simulated"}
    assert set(df["flags"]) == {""} and flagged_runs(df).empty and mixed_methods_text(df) == ""
    table = energy_by_gpu_budget(df).iloc[0]
    assert table["energy_total_j"] == 400.0 and table["energy_above_idle_j"] == 340.0
    assert math.isnan(table["uncertainty_j"])  # an uncertainty not stated is not zero
    phases = pd.DataFrame({"run_id": [1, 1, 2], "phase": ["idle", "train", "train"], "duration_s": [1.0, 2.0, 4.0],
                           "energy_j": [10.0, 100.0, 300.0], "valid": [False, True, None]})
    p = phase_energy(phases, df).set_index("phase")
    assert p.loc["idle", "mean_energy_above_idle_j"] == pytest.approx(0.0)
    assert p.loc["idle", "invalid_windows"] == 1 and p.loc["train", "invalid_windows"] == 0
    assert p.loc["train", "mean_energy_above_idle_j"] == pytest.approx((80.0 + 260.0) / 2)


def test_several_methods_are_never_summed_silently() -> None:
    runs = pd.DataFrame({"gpu_type": "v100", "epochs": 1, "power_source": "nvml", "energy_j": [1.0, 2.0, 3.0],
                         "duration_s": 1.0, "energy_method": ["nvml_counter", "nvml_counter", "counter"],
                         "flags": [None, "disagreement", ""], "run_id": [1, 2, 3]})
    df = with_energy_columns(runs)
    assert mixed_methods_text(df) == "sums energies of different methods (nvml_counter: 2, counter: 1 runs)"
    assert energy_by_gpu_budget(df).iloc[0]["methods"] == "nvml_counter: 2, counter: 1"
    assert flagged_runs(df)["run_id"].tolist() == [2]
