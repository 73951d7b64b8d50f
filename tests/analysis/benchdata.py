"""Generated data for the benchmark and search tests: a small space's cells and a simulated
campaign's runs on some of them (energy from the synthetic function, labelled simulated)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.surrogate import synthetic_energy_wh_per_epoch
from campaign.cli_bench import cell_table
from jobs.network import NetworkConfig
from jobs.space import cell_space


def space_and_runs(space: str = "4v", n_cells: int = 40, budgets: tuple[int, ...] = (4, 12), seeds: int = 2,
                   seed: int = 0) -> tuple[Any, pd.DataFrame]:
    """The space's `CellTable` and runs of ``n_cells`` of its cells at ``budgets`` x ``seeds``."""
    cells = cell_table(space, NetworkConfig())
    sp = cell_space(*{"4v": (4, 9), "5v": (5, 9)}[space])
    rng = np.random.default_rng(seed)
    rows = []
    for i in rng.choice(len(sp), size=n_cells, replace=False):
        spec = sp.spec(int(i))
        per_epoch = synthetic_energy_wh_per_epoch(spec.matrix, spec.ops, float(cells.params[i]))
        acc = 0.6 + 0.02 * len(spec.ops) + 0.01 * spec.ops.count("conv3x3-bn-relu")
        for e in budgets:
            for _ in range(seeds):
                wh = (e + 0.5) * per_epoch * float(np.exp(rng.normal(0, 0.01)))
                rows.append({"arch_hash": spec.arch_hash, "matrix": [list(r) for r in spec.matrix],
                             "ops": list(spec.ops), "params": int(cells.params[i]), "flops": int(cells.flops[i]),
                             "epochs": e, "gpu_type": "sim", "power_kind": "simulated", "energy_j": wh * 3600.0,
                             "duration_s": wh * 10.0, "valid_accuracy": acc + float(rng.normal(0, 0.005)),
                             "test_accuracy": acc - 0.01})
    return cells, pd.DataFrame(rows)
