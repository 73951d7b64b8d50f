"""The layer-wise predictors and the additivity factor on a synthetic device whose energy per pass
is a known function of each layer's configuration (with noise): nothing here is measured."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.layers import (
    LayerPredictor,
    SavedPredictor,
    evaluate,
    model_windows,
    rmspe,
    split_models,
    write_layer_report,
)

IDLE_W = 40.0


def layer(kind: str, rng: random.Random, batch: int, size: int) -> dict[str, Any]:
    """A layer's features (as db/layers.py stores them)."""
    c_in, c_out = rng.choice([16, 32, 64, 128]), rng.choice([16, 32, 64, 128])
    if kind == "conv2d":
        k, s = rng.choice([1, 3, 5]), rng.choice([1, 2])
        out = size // s
        return dict(layer_type=kind, in_channels=c_in, in_h=size, in_w=size, out_channels=c_out, out_h=out, out_w=out,
                    kernel_size=k, stride=s, padding=k // 2, groups=1, flops=2 * batch * c_out * out * out * c_in * k * k,
                    params=c_out * c_in * k * k + c_out, batch_size=batch)
    if kind == "linear":
        f_in, f_out = rng.choice([256, 512, 1024]), rng.choice([10, 100, 1000])
        return dict(layer_type=kind, in_channels=f_in, out_channels=f_out, in_features=f_in, out_features=f_out,
                    flops=2 * batch * f_in * f_out, params=f_in * f_out + f_out, batch_size=batch)
    return dict(layer_type=kind, in_channels=c_in, in_h=size, in_w=size, out_channels=c_in, out_h=size, out_w=size,
                flops=batch * c_in * size * size, params=2 * c_in if kind == "batchnorm2d" else 0, batch_size=batch)


def device_energy_j(f: dict[str, Any]) -> tuple[float, float]:
    """The synthetic device: (energy per pass in J, time per pass in s), a known function."""
    per_type = {"conv2d": 2e-11, "linear": 1e-11, "batchnorm2d": 4e-11, "relu": 3e-11, "maxpool2d": 3.5e-11}
    time_s = 5e-5 + f["flops"] * 1e-12 + f["batch_size"] * 1e-6
    energy = IDLE_W * time_s + per_type[f["layer_type"]] * f["flops"] + 2e-4 * f["batch_size"]
    return energy, time_s


def synthetic_rows(n_models: int = 24, noise: float = 0.01, seed: int = 0) -> list[dict[str, Any]]:
    """Models of independent layers: each layer alone and the whole model (its layers' sum, with
    noise) at batch 16/32/64, as layer-workload rows."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    run_id = 0
    for m in range(n_models):
        kinds = [rng.choice(["conv2d", "conv2d", "batchnorm2d", "relu", "maxpool2d"]) for _ in range(rng.randint(8, 20))]
        kinds.append("linear")
        size = rng.choice([8, 16, 32])
        layer_seed = rng.random()
        for batch in (16, 32, 64):
            run_id += 1
            lrng = random.Random(layer_seed)  # the same layers at every batch size
            total_e = total_t = 0.0
            model_rows = []
            for i, kind in enumerate(kinds):
                f = layer(kind, lrng, batch, size)
                e, t = device_energy_j(f)
                total_e, total_t = total_e + e, total_t + t
                e_meas = e * (1 + noise * nrng.standard_normal())
                model_rows.append({**f, "scope": "layer", "model_name": f"m{m}", "layer_name": f"l{i}", "calls": 1,
                                   "run_id": run_id, "energy_per_pass_j": e_meas, "time_per_pass_s": t,
                                   "mean_power_w": e_meas / t, "flops": f["flops"], "power_source": "simulated",
                                   "energy_method": "simulated", "valid": True, "input_size": size,
                                   "energy_above_idle_per_pass_j": e_meas - IDLE_W * t})
            e_model = total_e * (1 + noise * nrng.standard_normal())
            rows.append({"scope": "model", "layer_type": "model", "model_name": f"m{m}", "layer_name": None,
                         "calls": 1, "run_id": run_id, "batch_size": batch, "input_size": size,
                         "energy_per_pass_j": e_model, "time_per_pass_s": total_t, "mean_power_w": e_model / total_t,
                         "flops": sum(r["flops"] for r in model_rows), "params": sum(r["params"] for r in model_rows),
                         "power_source": "simulated", "energy_method": "simulated", "valid": True,
                         "energy_above_idle_per_pass_j": e_model - IDLE_W * total_t})
            rows += model_rows
    return rows


def test_rmspe_is_the_root_mean_square_of_relative_errors_in_percent() -> None:
    assert rmspe([1.0, 2.0], [1.1, 1.8]) == pytest.approx(math.sqrt((0.1**2 + 0.1**2) / 2) * 100)
    assert rmspe([2.0], [2.0]) == 0.0


def test_models_are_split_by_name_and_the_test_set_is_never_empty() -> None:
    train, test = split_models([f"m{i % 10}" for i in range(30)], 0.3, seed=1)
    assert len(test) == 3 and len(train) == 7 and not train & test
    assert split_models(["a", "b"], 0.3) in (({"a"}, {"b"}), ({"b"}, {"a"}))
    assert split_models(["a"], 0.3) == ({"a"}, set())


def test_the_predictors_recover_the_synthetic_device_on_held_out_models() -> None:
    rows = synthetic_rows()
    ev = evaluate(rows, "energy_per_pass_j", seed=0, test_fraction=0.3)
    assert len(ev.test_models) == 7 and not ev.test_models & ev.train_models
    assert ev.models["random_forest"] < 5.0, ev.models  # the study's overall-model figure, here on known truth
    assert ev.models["gradient_boosting"] < 10.0, ev.models
    assert set(ev.by_type) == {"conv2d", "linear", "batchnorm2d", "relu", "maxpool2d"}
    assert all(math.isfinite(v) for per in ev.by_type.values() for v in per.values())
    # held-out models are exactly additive here, so the fitted factor changes little
    assert ev.additivity_train == pytest.approx(1.0, abs=0.02)
    assert ev.models_additive["random_forest"] < 5.0


def test_the_additivity_factor_of_independent_layers_is_one_within_noise() -> None:
    windows = model_windows(synthetic_rows(noise=0.01))
    factors = np.array([w.additivity() for w in windows])
    assert len(factors) == 72
    assert abs(float(np.median(factors)) - 1.0) < 0.005 and float(np.max(np.abs(factors - 1))) < 0.05
    # a model whose whole pass costs 30 % more than its layers (an overhead between layers) is seen as such
    over = [{**r, "energy_per_pass_j": r["energy_per_pass_j"] * 1.3} if r["scope"] == "model" else r
            for r in synthetic_rows(n_models=3)]
    assert np.median([w.additivity() for w in model_windows(over)]) == pytest.approx(1.3, abs=0.02)


def test_a_saved_predictor_predicts_a_model_from_its_layer_rows(tmp_path: Path) -> None:
    rows = synthetic_rows(n_models=12)
    layers = [r for r in rows if r["scope"] == "layer"]
    saved = SavedPredictor("random_forest", LayerPredictor.fit(layers, "energy_per_pass_j", "random_forest"),
                           LayerPredictor.fit(layers, "time_per_pass_s", "random_forest"), 1.0, "simulated", "x")
    loaded = SavedPredictor.load(saved.save(tmp_path / "p.pkl"))
    new = synthetic_rows(n_models=1, seed=99)
    model = next(r for r in new if r["scope"] == "model")
    mine = [r for r in new if r["scope"] == "layer" and r["run_id"] == model["run_id"]]
    got = loaded.predict_model(mine)
    assert got["energy_per_pass_j"] == pytest.approx(model["energy_per_pass_j"], rel=0.1)
    assert got["mean_power_w"] == pytest.approx(got["energy_per_pass_j"] / got["time_per_pass_s"])
    unseen = [{**r, "layer_type": "gelu"} for r in mine[:2]]  # a type it never saw: the all-types model
    assert np.all(loaded.energy.predict(unseen) > 0)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    from analysis.layers import LayerAnalysisError

    with pytest.raises(LayerAnalysisError, match="is not a saved layer predictor"):
        SavedPredictor.load(tmp_path / "junk.pkl")


def test_the_report_gives_rmspe_additivity_and_flops_and_labels_simulated_data(tmp_path: Path) -> None:
    rows = synthetic_rows(n_models=8)
    page = write_layer_report(rows, "synthetic", tmp_path)
    text = page.read_text()
    for needle in ("RMSPE", "Additivity factor", "overall model", "FLOPs and power", "**simulated**",
                   "layer_predictor.pkl", "layers_additivity.png"):
        assert needle in text, needle
    assert (tmp_path / "layers_additivity.png").stat().st_size > 0 and (tmp_path / "layer_predictor.pkl").is_file()
