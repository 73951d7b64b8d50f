"""analysis.pareto on hand-checked point sets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.figures import plot_pareto_fronts
from analysis.pareto import (
    aggregate_architectures,
    extrema_line_distances,
    hypervolume_2d,
    hypervolume_table,
    knee_index,
    pareto_by_budget,
    pareto_front,
    pareto_mask,
    pareto_table,
    reference_point,
    turn_angles_deg,
)


def test_pareto_mask_by_hand() -> None:
    pts = [
        (0.10, 5.0),  # front
        (0.20, 3.0),  # front
        (0.15, 6.0),  # dominated by (0.10, 5)
        (0.30, 3.0),  # same energy, worse error: dominated
        (0.20, 3.0),  # duplicate of a front point: kept once
        (0.40, 1.0),  # front
        (math.nan, 0.0),  # never on the front
    ]
    assert pareto_mask(pts).tolist() == [True, True, False, False, False, True, False]


def test_hypervolume_by_hand() -> None:
    front = [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    # staircase under (4, 4): 1x1 + 1x2 + 1x3
    assert hypervolume_2d(front, (4.0, 4.0)) == pytest.approx(6.0)
    # dominated and out-of-box points add nothing
    assert hypervolume_2d([*front, (2.5, 2.5), (5.0, 0.5), (0.5, 4.0)], (4.0, 4.0)) == pytest.approx(6.0)
    assert hypervolume_2d([(1.0, 1.0)], (2.0, 3.0)) == pytest.approx(2.0)
    assert hypervolume_2d([(5.0, 5.0)], (4.0, 4.0)) == 0.0


def test_reference_point_is_1_1_times_nadir() -> None:
    assert reference_point(np.array([[0.1, 3.0], [0.3, 1.0]])) == pytest.approx((0.33, 3.3))
    assert reference_point(np.array([[0.0, 2.0]])) == pytest.approx((0.1, 2.2))


def test_knee_by_hand() -> None:
    # normalized: (0, 1), (0.1, 0.2), (0.2, 0.15), (1, 0); segment directions by arctan2:
    # -82.87, -26.57, -10.62 degrees -> turns 56.31 at point 1 and 15.95 at point 2
    front = np.array([[0.0, 10.0], [1.0, 2.0], [2.0, 1.5], [10.0, 0.0]])
    angles = turn_angles_deg(front)
    assert math.isnan(angles[0]) and math.isnan(angles[-1])
    assert angles[1] == pytest.approx(56.31, abs=0.01)
    assert angles[2] == pytest.approx(15.95, abs=0.01)
    assert knee_index(front) == 1
    assert knee_index(front[:2]) is None


def test_knee_is_scale_free() -> None:
    front = np.array([[0.05, 0.9], [0.06, 0.2], [0.2, 0.1], [0.5, 0.05]])
    for method in ("turn", "extrema_line"):
        assert knee_index(front, method) == knee_index(front * [1.0, 1000.0], method) == 1


def test_knee_methods_on_a_jagged_front() -> None:
    # already normalized: the front bends at B = (0.3, 0.3) (1 - x - y = 0.4); D = (0.61, 0.02) is a
    # small zigzag (turn 81 degrees, 1 - x - y = 0.37) that the local turn picks and the extrema line does not
    front = np.array([[0.0, 1.0], [0.3, 0.3], [0.6, 0.12], [0.61, 0.02], [1.0, 0.0]])
    assert knee_index(front, "turn") == 3
    assert knee_index(front, "extrema_line") == 1
    assert knee_index(front) == 1  # the default
    d = extrema_line_distances(front)
    assert math.isnan(d[0]) and math.isnan(d[-1])
    assert d[1] == pytest.approx(0.4 / math.sqrt(2)) and d[3] == pytest.approx(0.37 / math.sqrt(2))
    with pytest.raises(ValueError, match="knee method 'angle'"):
        knee_index(front, "angle")


def test_pareto_front_takes_the_knee_method() -> None:
    archs = pd.DataFrame({"error": [0.0, 0.3, 0.6, 0.61, 1.0], "energy": [1.0, 0.3, 0.12, 0.02, 0.0],
                          "arch_hash": list("ABCDE")})
    default, turn = pareto_front(archs, energy_col="energy"), pareto_front(archs, energy_col="energy", knee_method="turn")
    assert default.knee is not None and default.knee["arch_hash"] == "B"
    assert turn.knee is not None and turn.knee["arch_hash"] == "D"


def _runs() -> pd.DataFrame:
    # (arch, 1 - valid acc, energy kWh) for budget 4; budget 12 has 3x energy, error - 0.02
    archs = {"a": (0.10, 0.60), "b": (0.12, 0.10), "c": (0.20, 0.06), "d": (0.40, 0.05), "e": (0.15, 0.50)}
    rows = []
    for epochs, scale, shift in ((4, 1.0, 0.0), (12, 3.0, -0.02)):
        for h, (err, kwh) in archs.items():
            for seed, jitter in enumerate((-0.01, 0.01)):
                rows.append(
                    {
                        "arch_hash": h,
                        "epochs": epochs,
                        "seed": seed,
                        "valid_accuracy": 1.0 - (err + shift) + jitter,
                        "energy_j": kwh * scale * 3.6e6 * (1 + jitter),
                        "duration_s": 100.0 * scale,
                        "params": 5_000_000,
                    }
                )
    return pd.DataFrame(rows)


def test_aggregate_architectures_means_over_seeds() -> None:
    agg = aggregate_architectures(_runs()).set_index(["arch_hash", "epochs"])
    row = agg.loc[("b", 4)]
    assert row["n_runs"] == 2
    assert row["error"] == pytest.approx(0.12)
    assert row["energy_kwh_mean"] == pytest.approx(0.10)
    assert row["energy_kwh_std"] == pytest.approx(np.std([0.099, 0.101], ddof=1))
    assert row["params_m"] == pytest.approx(5.0)


def test_pareto_per_budget_and_table() -> None:
    agg = aggregate_architectures(_runs())
    results = pareto_by_budget(agg)
    assert list(results) == [4, 12]
    r4 = results[4]
    assert list(r4.front["arch_hash"]) == ["a", "b", "c", "d"]  # e is dominated by b
    assert r4.min_error["arch_hash"] == "a" and r4.min_energy["arch_hash"] == "d"
    assert r4.knee is not None and r4.knee["arch_hash"] == "b"
    # hypervolume by hand, reference 1.1 x nadir = (0.44, 0.66)
    assert r4.reference == pytest.approx((0.44, 0.66))
    expected = 0.02 * (0.66 - 0.60) + 0.08 * (0.66 - 0.10) + 0.20 * (0.66 - 0.06) + 0.04 * (0.66 - 0.05)
    assert r4.hypervolume == pytest.approx(expected)
    table = pareto_table(results)
    assert list(table["role"]) == ["min_error", "knee", "min_energy"] * 2
    assert {"arch_hash", "params_m", "duration_s_mean", "valid_accuracy_mean", "energy_kwh_mean"} <= set(
        table.columns
    )
    hv = hypervolume_table(results)
    assert list(hv["n_front"]) == [4, 4] and list(hv["n_architectures"]) == [5, 5]


def test_shared_reference_point() -> None:
    agg = aggregate_architectures(_runs())
    results = pareto_by_budget(agg, reference=(1.0, 2.0))
    assert all(r.reference == (1.0, 2.0) for r in results.values())
    assert results[4].hypervolume > results[12].hypervolume  # same errors - 0.02 but 3x energy


def test_small_fronts() -> None:
    agg = pd.DataFrame({"arch_hash": ["a", "b"], "error": [0.1, 0.2], "energy_kwh_mean": [1.0, 2.0]})
    res = pareto_front(agg)
    assert len(res.front) == 1 and res.knee is None
    assert res.min_error["arch_hash"] == res.min_energy["arch_hash"] == "a"
    assert res.hypervolume == pytest.approx((0.11 - 0.1) * (1.1 - 1.0))


def test_plot_pareto_fronts(tmp_path: Path) -> None:
    agg = aggregate_architectures(_runs())
    path = plot_pareto_fronts(agg, pareto_by_budget(agg), tmp_path / "pareto.png")
    assert path.stat().st_size > 10_000
