"""Benchmark: the project's energy model against EC-NAS's MLP, on EC-NAS's protocol.

Run ``python -m benchmarks.surrogate``. The data: EC-NAS's measured 5-vertex cells at 4 epochs
(``ecnas_5v9e_4epochs_runs.csv`` in the folder ``ECNAS_DEV_DIR`` names); when that variable is not
set, or the folder lacks the file, it says so and uses the synthetic set of ``analysis.surrogate``
instead (labelled ``"data": "synthetic"``).

Protocol, per seed: EC-NAS's 70/10/20 split by cell (``analysis.surrogate.split_indices`` with
the seed); EC-NAS's MLP re-fitted as the paper describes it (``fit_surrogate``: 36 features,
36-128-64-32-32-1 GELU, L1, Adam lr 5e-3, batch 32, 200 epochs, best validation epoch) and the
project's model (``fit_energy_model``: the extended features, an ensemble; fitted on the same
training rows with the same validation rows) both scored on the same test rows. Fit time is the
wall time of each whole fit call (encoding included), the two fits alternating in order from
seed to seed. With the 4-vertex file present it also fits the budget model on it
(energy = f(cell) x (epochs + alpha)) and reports alpha and the linear and power-law fits.

The last line is one JSON object: project_mae_wh, ecnas_mlp_mae_wh, project_fit_s,
ecnas_mlp_fit_s (means over the seeds), project_pearson, ecnas_mlp_pearson, per_seed (a list),
data, n_cells, and budget (when the 4-vertex file is there).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FILE_5V = "ecnas_5v9e_4epochs_runs.csv"
FILE_4V = "ecnas_4v9e_runs.csv"


def _read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    df["matrix"] = df["matrix"].map(json.loads)
    df["ops"] = df["ops"].map(json.loads)
    return df


def _flops(df: pd.DataFrame) -> np.ndarray:
    from jobs.cell import CellSpec
    from jobs.network import NetworkConfig, count_flops

    cfg = NetworkConfig()
    return np.array([count_flops(CellSpec.create(m, o), cfg) for m, o in zip(df["matrix"], df["ops"], strict=True)],
                    dtype=np.float64)


def load_data() -> tuple[pd.DataFrame, str, pd.DataFrame | None]:
    """The 5-vertex runs (or the synthetic set), the data's label and the 4-vertex runs (or None)."""
    folder = os.environ.get("ECNAS_DEV_DIR")
    if folder and (Path(folder) / FILE_5V).is_file():
        runs = _read(Path(folder) / FILE_5V).rename(columns={"trainable_params": "params"})
        four = _read(Path(folder) / FILE_4V) if (Path(folder) / FILE_4V).is_file() else None
        return runs, f"EC-NAS development data ({FILE_5V}, measured, Carbontracker, PUE 1.59 included)", four
    from analysis.surrogate import synthetic_dataset

    why = "ECNAS_DEV_DIR is not set" if not folder else f"{folder} has no {FILE_5V}"
    print(f"note: {why}; using the synthetic set (simulated energy, not measurements)")
    return synthetic_dataset(2500, seed=0), "synthetic", None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of split seeds (0, 1, ...)")
    parser.add_argument("--members", type=int, default=None, help="ensemble size (default EnsembleConfig's)")
    args = parser.parse_args(argv)

    from analysis.surrogate import (
        EnsembleConfig,
        SurrogateConfig,
        evaluate,
        fit_budget_offset,
        fit_energy_model,
        fit_surrogate,
        split_indices,
    )

    config = EnsembleConfig() if args.members is None else EnsembleConfig(members=args.members)
    runs, label, four = load_data()
    flops = _flops(runs)
    matrices, ops = list(runs["matrix"]), list(runs["ops"])
    params = runs["params"].to_numpy(dtype=np.float64)
    y = runs["energy_wh"].to_numpy(dtype=np.float64)
    ep = runs["epochs"].to_numpy(dtype=np.float64)
    groups = runs["arch_hash"].astype(str).to_numpy()
    import torch  # imported before any timing, so that neither fit pays for it

    torch.manual_seed(0)
    per_seed = []
    for seed in range(args.seeds):
        # fit_surrogate draws this very split from the seed; the project's model gets the same rows
        tr, va, te = split_indices(len(y), SurrogateConfig().split, seed, groups)

        def ecnas(seed: int = seed) -> tuple[Any, float]:
            t0 = time.perf_counter()
            fit = fit_surrogate(matrices, ops, params, ep, y, SurrogateConfig(seed=seed), groups=groups)
            return fit, time.perf_counter() - t0

        def project(seed: int = seed, tr: np.ndarray = tr, va: np.ndarray = va, te: np.ndarray = te
                    ) -> tuple[np.ndarray, float]:
            rows = np.concatenate([tr, va])
            t0 = time.perf_counter()
            model = fit_energy_model([matrices[i] for i in rows], [ops[i] for i in rows], params[rows], ep[rows],
                                     y[rows], flops=flops[rows], validation=np.arange(len(tr), len(rows)),
                                     split_seed=seed, init_seed=seed, groups=groups[rows], config=config,
                                     budget_offset=0.0)
            seconds = time.perf_counter() - t0
            return model.predict([matrices[i] for i in te], [ops[i] for i in te], params[te], ep[te],
                                 flops[te])[0], seconds

        if seed % 2 == 0:  # alternate the order, so that neither fit always runs on a warmer machine
            fit, ecnas_s = ecnas()
            pred, project_s = project()
        else:
            pred, project_s = project()
            fit, ecnas_s = ecnas()
        if not np.array_equal(fit.test_index, te):
            raise RuntimeError("fit_surrogate's test split differs from split_indices'")
        m = evaluate(y[fit.test_index], pred)
        per_seed.append({"seed": seed, "n_test": m.n, "project_mae_wh": m.mae_wh, "project_pearson": m.pearson,
                         "project_fit_s": project_s, "ecnas_mlp_mae_wh": fit.metrics.mae_wh,
                         "ecnas_mlp_pearson": fit.metrics.pearson, "ecnas_mlp_fit_s": ecnas_s})
        print(f"seed {seed}: project MAE {m.mae_wh:.4f} Wh (r {m.pearson:.4f}) in {project_s:.1f} s; "
              f"EC-NAS MLP MAE {fit.metrics.mae_wh:.4f} Wh (r {fit.metrics.pearson:.4f}) in {ecnas_s:.1f} s",
              flush=True)
    mean = pd.DataFrame(per_seed).mean(numeric_only=True)
    result: dict[str, Any] = {
        "project_mae_wh": round(float(mean["project_mae_wh"]), 5),
        "ecnas_mlp_mae_wh": round(float(mean["ecnas_mlp_mae_wh"]), 5),
        "project_fit_s": round(float(mean["project_fit_s"]), 3),
        "ecnas_mlp_fit_s": round(float(mean["ecnas_mlp_fit_s"]), 3),
        "project_pearson": round(float(mean["project_pearson"]), 5),
        "ecnas_mlp_pearson": round(float(mean["ecnas_mlp_pearson"]), 5),
        "members": config.members,
        "data": label,
        "n_cells": int(len(y)),
        "cpu_count": os.cpu_count() or 0,
        "per_seed": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in per_seed],
    }
    if four is not None:
        alpha, info = fit_budget_offset(four["arch_hash"].to_numpy(), four["epochs"].to_numpy(),
                                        four["energy_wh"].to_numpy())
        result["budget"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items()}
        print(f"budget model on {FILE_4V}: energy = f(cell) x (epochs + {alpha:.3f}); sum of squares of log energy "
              f"{info['sse_affine']:.3f} (linear {info['sse_linear']:.3f}, power law epochs^"
              f"{info['power_law_exponent']:.3f} {info['sse_power_law']:.3f})")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
