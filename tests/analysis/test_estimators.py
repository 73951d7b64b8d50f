"""analysis.estimators on synthetic power curves whose true energy is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.estimators import (
    ESTIMATORS,
    GpuSpec,
    GreenAlgorithmsConfig,
    OfflineConfig,
    OnlineConfig,
    compare_estimators,
    detect_stable_epoch,
    error_metrics,
    fit_offline,
    green_algorithms_energy_wh,
    ml_co2_impact_energy_wh,
    offline_features,
    online_epoch_energy_estimate_j,
    online_power_estimate_j,
    split_runs,
)

SPECS = {
    "v100": GpuSpec("v100", tdp_w=300, memory_gb=32, cuda_cores=5120, fp32_tflops=15.7),
    "a100": GpuSpec("a100", tdp_w=400, memory_gb=80, cuda_cores=6912, fp32_tflops=19.5),
    "t4": GpuSpec("t4", tdp_w=70, memory_gb=16, cuda_cores=2560, fp32_tflops=8.1),
}


def _epochs(energy_j: list[float], duration_s: list[float], run_id: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": run_id,
            "epoch": np.arange(1, len(energy_j) + 1),
            "energy_j": energy_j,
            "duration_s": duration_s,
            "mean_power_w": np.asarray(energy_j) / np.asarray(duration_s),
        }
    )


def synthetic_campaign(n_runs: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs whose stable power and epoch time follow the GPU and the model's GFLOPs, after a
    warm-up of 2-6 epochs at higher, falling power; true energy = sum of the epochs' energy."""
    rng = np.random.default_rng(seed)
    runs, epochs = [], []
    for rid in range(n_runs):
        gpu = rng.choice(sorted(SPECS))
        spec = SPECS[gpu]
        gflops = float(rng.uniform(0.5, 10.0))
        n_epochs = int(rng.choice([20, 30, 40]))
        warmup = int(rng.integers(2, 7))
        util = min(0.95, 0.3 + 0.06 * gflops)
        power_w = 0.2 * spec.tdp_w + 0.6 * spec.tdp_w * util
        epoch_s = 40_000 * gflops * 3e9 / (float(spec.fp32_tflops or 10.0) * 1e12 * util)
        p = power_w * (1 + rng.normal(0, 0.003, n_epochs))
        d = epoch_s * (1 + rng.normal(0, 0.003, n_epochs))
        p[:warmup] *= np.linspace(1.35, 1.1, warmup)
        d[:warmup] *= np.linspace(1.5, 1.1, warmup)
        e = p * d
        epochs.append(_epochs(list(e), list(d), rid))
        runs.append(
            {
                "run_id": rid,
                "arch_hash": f"arch{rid % 7}",
                "gpu_type": gpu,
                "epochs": n_epochs,
                "flops": gflops * 1e9,
                "train_images": 40_000,
                "energy_j": float(e.sum()),
                "duration_s": float(d.sum()),
                "gpu_util_mean": 100 * util,
                "true_warmup": warmup,
                "true_stable_power_w": power_w,
            }
        )
    return pd.DataFrame(runs), pd.concat(epochs, ignore_index=True)


def test_gpu_spec_from_mapping_ignores_extra_keys_and_names_missing_ones() -> None:
    spec = GpuSpec.from_mapping(
        "h100", {"tdp_w": 700, "memory_gb": 80, "cuda_cores": 16896, "vendor": "nvidia"}
    )
    assert spec.tdp_w == 700 and spec.fp32_tflops is None
    with pytest.raises(ValueError, match="cuda_cores"):
        GpuSpec.from_mapping("x", {"tdp_w": 1, "memory_gb": 2})


def test_detect_stable_epoch_finds_end_of_warmup() -> None:
    energy = [180.0, 150.0, 120.0, 101.0, 100.0, 100.5, 99.5, 100.2, 99.9, 100.1]
    assert detect_stable_epoch(energy, window=5, cv_threshold=0.02) == 4
    assert detect_stable_epoch([100.0] * 8, window=5) == 1
    assert detect_stable_epoch([100.0, 200.0, 100.0, 200.0, 100.0, 200.0], window=3) is None


def test_online_estimators_are_exact_on_a_clean_curve() -> None:
    # two warm-up epochs, then 8 epochs of 100 J in 1 s each (100 W)
    energy = [200.0, 150.0] + [100.0] * 8
    duration = [1.5, 1.2] + [1.0] * 8
    ep = _epochs(energy, duration)
    truth = sum(energy)
    assert online_epoch_energy_estimate_j(ep, total_epochs=10, stable_epoch=3, window=5) == pytest.approx(
        truth
    )
    assert online_power_estimate_j(ep, duration_s=sum(duration), stable_epoch=3, window=5) == pytest.approx(
        100.0 * sum(duration)
    )


def test_online_epoch_energy_extrapolates_beyond_recorded_epochs() -> None:
    # only 8 of 100 epochs recorded: E = E_w * s / w + E_u
    ep = _epochs([300.0, 120.0] + [100.0] * 6, [1.0] * 8)
    est = online_epoch_energy_estimate_j(ep, total_epochs=100, stable_epoch=3, window=5)
    assert est == pytest.approx(500.0 * 98 / 5 + 420.0)


def test_online_window_must_fit_in_the_run() -> None:
    ep = _epochs([100.0] * 12, [1.0] * 12)
    with pytest.raises(ValueError, match="exceeds"):
        online_epoch_energy_estimate_j(ep, total_epochs=12, stable_epoch=10, window=5)


def test_online_estimators_recover_true_energy_on_synthetic_runs() -> None:
    runs, epochs = synthetic_campaign(12, seed=1)
    for run in runs.itertuples():
        ep = epochs[epochs.run_id == run.run_id]
        stable = detect_stable_epoch(ep["energy_j"].to_numpy())
        assert stable is not None and stable == pytest.approx(run.true_warmup + 1, abs=1)
        for start in (stable, 10):  # detected, and 003's configured epoch 10
            e1 = online_power_estimate_j(ep, run.duration_s, start, 5)
            e2 = online_epoch_energy_estimate_j(ep, run.epochs, start, 5)
            # power-based charges the whole run at the stable power (by design it misses the
            # warm-up's extra power); epoch-energy-based adds the warm-up epochs' own energy
            assert e1 == pytest.approx(run.true_stable_power_w * run.duration_s, rel=0.005)
            assert e2 == pytest.approx(run.energy_j, rel=0.005)


def test_green_algorithms_formula_by_hand() -> None:
    cfg = GreenAlgorithmsConfig(
        pue=1.5, n_cpu_cores=4, cpu_power_per_core_w=10.0, cpu_usage=0.5, memory_gb=16
    )
    # (4 x 10 x 0.5 + 1 x 300 x 0.8 + 16 x 0.3725) W x 1.5 x 2 h
    expected = (20.0 + 240.0 + 5.96) * 1.5 * 2.0
    assert green_algorithms_energy_wh(7200.0, 300.0, cfg, gpu_usage=0.8) == pytest.approx(expected)
    assert green_algorithms_energy_wh(3600.0, 300.0) == pytest.approx(300.0)  # defaults: GPU at full use only
    assert green_algorithms_energy_wh(3600.0, 300.0, GreenAlgorithmsConfig(psf=3)) == pytest.approx(900.0)


def test_ml_co2_impact_is_tdp_times_hours() -> None:
    assert ml_co2_impact_energy_wh(7200.0, 300.0) == pytest.approx(600.0)
    assert ml_co2_impact_energy_wh(1800.0, 400.0, n_gpus=2) == pytest.approx(400.0)


def test_offline_features_use_specs_flops_and_constants() -> None:
    runs, _ = synthetic_campaign(3)
    feats = offline_features(runs, SPECS)
    assert list(feats.columns) == [
        "tdp_w",
        "memory_gb",
        "cuda_cores",
        "gflops",
        "train_images",
        "valid_images",
        "batch_size",
        "input_size",
    ]
    assert feats["tdp_w"].tolist() == [SPECS[g].tdp_w for g in runs.gpu_type]
    assert feats["gflops"].tolist() == pytest.approx((runs.flops / 1e9).tolist())
    assert (feats["batch_size"] == 256).all()
    with pytest.raises(ValueError, match="no GPU spec"):
        offline_features(runs.assign(gpu_type="mi300"), SPECS)


def test_offline_power_regression_generalizes() -> None:
    train, _ = synthetic_campaign(80, seed=2)
    test, _ = synthetic_campaign(30, seed=3)
    est = fit_offline(train, SPECS, "power")
    m = error_metrics(test.energy_j, est.predict_energy_j(test, SPECS))
    assert m["r2"] > 0.95
    est_e = fit_offline(train, SPECS, "epoch_energy", OfflineConfig(cv_folds=3))
    assert error_metrics(test.energy_j, est_e.predict_energy_j(test, SPECS))["r2"] > 0.8


def test_error_metrics_by_hand() -> None:
    m = error_metrics([1.0, 2.0, 3.0, np.nan], [1.0, 2.0, 5.0, 1.0])
    assert m["n"] == 3
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["r2"] == pytest.approx(1 - 4 / 2)


def test_split_runs_grouped_keeps_groups_together() -> None:
    runs, _ = synthetic_campaign(40)
    train, test = split_runs(runs, 0.3, seed=0, group_by="arch_hash")
    assert not set(train.arch_hash) & set(test.arch_hash)
    train, test = split_runs(runs, 0.3, seed=0)
    assert len(test) == 12 and len(train) == 28


def test_compare_estimators_table() -> None:
    runs, epochs = synthetic_campaign(90, seed=4)
    short = split_runs(runs, 0.3, seed=1)[1].index[0]
    runs.loc[short, "epochs"] = 12  # a test run too short for 003's window, epochs 10..14
    res = compare_estimators(runs, epochs, SPECS, online=OnlineConfig(stable_epoch=10, window=5), seed=1)
    table = res.table.set_index("estimator")
    assert list(table.index) == list(ESTIMATORS)
    assert len(res.test_run_ids) == 27 and not set(res.test_run_ids) & set(res.train_run_ids)
    assert (table.loc[["offline_power", "green_algorithms", "ml_co2_impact"], "n_runs"] == 27).all()
    online = table.loc["online_epoch_energy"]
    assert online["n_runs"] == 26 and "1 test run(s) without a usable window" in online["note"]
    why = res.predictions.query("run_id == @short and estimator == 'online_power'")["note"].iloc[0]
    assert "exceeds" in why
    # the online estimators beat the TDP-based baselines by far on these curves
    assert online["rmse_kj"] < 0.1 * table.loc["ml_co2_impact", "rmse_kj"]
    assert online["r2"] > 0.99
    assert table.loc["offline_power", "r2"] > 0.9
    assert set(res.predictions.estimator) == set(ESTIMATORS)
    assert len(res.predictions) == 27 * len(ESTIMATORS)
