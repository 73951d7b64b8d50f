"""Benchmark: the tabular benchmark of the whole cell space at EC-NAS's 4 budgets, and its queries.

Run ``python -m benchmarks.tabular`` (``--space 5v`` for a quick run). It enumerates the space
(``jobs.space``), computes parameters and FLOPs (``campaign.cli_bench.cell_table``), fits the
energy, time and accuracy models on a simulated campaign (``--cells`` random cells of the space x 2
budgets x 2 seeds, energy from ``analysis.surrogate``'s synthetic function: simulated, not
measurements), predicts every cell at 4, 12, 36 and 108 epochs, writes the Parquet file to a
temporary folder, loads it (checksum verified) and times ``query_hash`` on random cells.

The last line is one JSON object: cells, rows, space_seconds (enumeration), cells_seconds
(parameters and FLOPs), generate_seconds (models, predictions, table, checksum), write_seconds,
seconds (all of these: the goal's figure, goal 120 s on one CPU), load_seconds,
query_hash_per_s (200,000 queries of random cells, each row queried for the first time or not),
query_hash_repeat_per_s (one cell, as NAS-Bench-101 users loop), ratio = seconds / goal.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_SECONDS = 120.0
BUDGETS = (4, 12, 36, 108)


def simulated_runs(space: Any, cells: Any, n: int, seed: int = 0) -> Any:
    """A simulated campaign: ``n`` random cells of the space x 2 budgets x 2 seeds."""
    import numpy as np
    import pandas as pd

    from analysis.surrogate import synthetic_energy_wh_per_epoch

    rng = np.random.default_rng(seed)
    rows = []
    for i in rng.choice(len(space), size=min(n, len(space)), replace=False):
        spec = space.spec(int(i))
        per_epoch = synthetic_energy_wh_per_epoch(spec.matrix, spec.ops, float(cells.params[i]))
        for epochs in (4, 12):
            for _ in range(2):
                wh = (epochs + 0.7) * per_epoch * float(np.exp(rng.normal(0, 0.01)))
                rows.append({"arch_hash": spec.arch_hash, "matrix": [list(r) for r in spec.matrix], "ops": list(spec.ops),
                             "params": int(cells.params[i]), "flops": int(cells.flops[i]), "epochs": epochs,
                             "gpu_type": "simulated", "power_kind": "simulated", "energy_j": wh * 3600.0,
                             "duration_s": wh * 12.0, "valid_accuracy": float(rng.uniform(0.8, 0.95)),
                             "test_accuracy": float(rng.uniform(0.8, 0.95))})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="all", help="all | 4v | 5v | 7v")
    parser.add_argument("--cells", type=int, default=500, help="simulated measured cells")
    parser.add_argument("--queries", type=int, default=200_000)
    args = parser.parse_args(argv)

    import numpy as np

    from analysis.benchmark import Benchmark, generate, write
    from campaign.cli_bench import SPACES, cell_table
    from jobs.network import NetworkConfig
    from jobs.space import cell_space

    network = NetworkConfig()
    t0 = time.perf_counter()
    space = cell_space(*SPACES[args.space])
    t1 = time.perf_counter()
    cells = cell_table(args.space, network)
    t2 = time.perf_counter()
    runs = simulated_runs(space, cells, args.cells)
    t3 = time.perf_counter()
    table, _ = generate(cells, runs, BUDGETS, campaign="simulated", space=cells.description)
    t4 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = write(table, Path(tmp) / "benchmark.parquet")
        t5 = time.perf_counter()
        size = path.stat().st_size
        bench = Benchmark.load(path)
        t6 = time.perf_counter()
    rng = np.random.default_rng(1)
    hashes = [bench.hash_at(int(i)) for i in rng.integers(0, len(bench), size=args.queries)]
    budgets = [BUDGETS[int(i)] for i in rng.integers(0, len(BUDGETS), size=args.queries)]
    q0 = time.perf_counter()
    for h, b in zip(hashes, budgets, strict=True):
        bench.query_hash(h, b)
    q1 = time.perf_counter()
    one = hashes[0]
    for _ in range(args.queries):
        bench.query_hash(one, 4)
    q2 = time.perf_counter()
    seconds = (t2 - t0) + (t4 - t3) + (t5 - t4)
    result = {
        "space": args.space, "cells": len(cells), "rows": table.num_rows, "file_mb": round(size / 1e6, 2),
        "space_seconds": round(t1 - t0, 3), "cells_seconds": round(t2 - t1, 3),
        "generate_seconds": round(t4 - t3, 3), "write_seconds": round(t5 - t4, 3), "seconds": round(seconds, 3),
        "load_seconds": round(t6 - t5, 3),
        "query_hash_per_s": round(args.queries / (q1 - q0)), "query_hash_repeat_per_s": round(args.queries / (q2 - q1)),
        "cpu_count": os.cpu_count() or 0, "goal_seconds": GOAL_SECONDS, "ratio": round(seconds / GOAL_SECONDS, 4),
    }
    print(f"tabular benchmark: {len(cells):,} cells x {len(BUDGETS)} budgets = {table.num_rows:,} rows in "
          f"{seconds:.1f} s (goal {GOAL_SECONDS:.0f} s; space {t1 - t0:.1f} s, params/FLOPs {t2 - t1:.1f} s, "
          f"models and table {t4 - t3:.1f} s, write {t5 - t4:.1f} s); load {t6 - t5:.1f} s; "
          f"{result['query_hash_per_s']:,} query_hash/s")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
