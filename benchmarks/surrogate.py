"""Benchmark: EC-NAS surrogate, 200 epochs on 4,300 synthetic architectures, on CPU.

Run ``python -m benchmarks.surrogate``. Its last line is one JSON object: seconds (training
time, wall clock, the figure the goal is about), cpu_seconds (the same training's CPU time,
which other load on a shared machine disturbs less), total_seconds (data generation + encoding + training +
scoring), pearson, kendall, mae (Wh, test split), and ratio = seconds / goal_seconds (below 1
meets the goal of 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import time

GOAL_SECONDS = 30.0


def main(argv: list[str] | None = None) -> dict[str, float | int]:
    """Generate the synthetic set, fit the surrogate, print a summary line and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4300, help="number of synthetic architectures")
    parser.add_argument("--epochs", type=int, default=200, help="training epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)

    from analysis.surrogate import SurrogateConfig, fit_surrogate, synthetic_dataset

    t0 = time.perf_counter()
    data = synthetic_dataset(args.n, seed=args.seed)
    fit = fit_surrogate(
        list(data["matrix"]),
        list(data["ops"]),
        data["params"].to_numpy(),
        data["epochs"].to_numpy(),
        data["energy_wh"].to_numpy(),
        SurrogateConfig(epochs=args.epochs, seed=args.seed, num_threads=args.threads),
        groups=data["arch_hash"].to_numpy(),
    )
    total = time.perf_counter() - t0
    result = {
        "n_architectures": args.n,
        "n_train": len(fit.train_index),
        "epochs": args.epochs,
        "threads": args.threads,
        "cpu_count": os.cpu_count() or 0,
        "seconds": round(fit.train_seconds, 3),
        "cpu_seconds": round(fit.train_cpu_seconds, 3),
        "total_seconds": round(total, 3),
        "pearson": round(fit.metrics.pearson, 5),
        "kendall": round(fit.metrics.kendall_tau, 5),
        "mae": round(fit.metrics.mae_wh, 5),
        "best_epoch": fit.best_epoch,
        "goal_seconds": GOAL_SECONDS,
        "ratio": round(fit.train_seconds / GOAL_SECONDS, 4),
    }
    print(
        f"surrogate: {args.n} architectures, {args.epochs} epochs in {fit.train_seconds:.1f} s "
        f"(goal {GOAL_SECONDS:.0f} s); test Pearson {fit.metrics.pearson:.4f}, "
        f"Kendall {fit.metrics.kendall_tau:.4f}, MAE {fit.metrics.mae_wh:.3f} Wh"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
