"""A synthetic campaign database of any size, for timing `campaign analyze` (and anything else that
reads a campaign).

``make_database(path, runs)`` writes a fresh SQLite file with the project's schema at its head
revision (``db.migrate.upgrade``) holding one campaign, ``synthetic-<runs>``, of ``runs`` finished
runs: architectures x epoch budgets (4, 12, 36, 108) x GPU types (v100, a100) x seeds, in that
order, the last architecture cut short where ``runs`` is not a multiple. Every run has its
per-epoch rows and its phases (setup, idle, train, eval, cool-down); a handful of runs (three
architectures at the largest budget) have a short power trace, written through
``db.ingest.insert_samples`` as a worker's are. The numbers are generated, not
measured: the energy method and the power source are ``simulated`` and the hardware says so.

Energy follows the architecture (``analysis.surrogate.synthetic_energy_wh_per_epoch``, scaled
by the GPU type), with a slower first epoch, per-run and per-epoch noise; accuracy grows with the
budget and the parameters. Rows go in through sqlite3 ``executemany`` in a few transactions, so
50,000 runs (about 2 million epoch rows) take well under a minute.

    python -m benchmarks.synthetic_campaign PATH RUNS [--seed 0] [--archs N]

prints the database URL and the campaign name, then one JSON object (runs, seconds, bytes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

BUDGETS: tuple[int, ...] = (4, 12, 36, 108)
GPU_TYPES: tuple[str, ...] = ("v100", "a100")
#: Per GPU type: (TDP W, relative throughput, energy per epoch relative to the v100).
GPU_MODEL: dict[str, tuple[float, float, float]] = {"v100": (300.0, 1.0, 1.0), "a100": (400.0, 1.6, 0.8)}
SEEDS = 3
TRAIN_IMAGES = 40_000
TRACE_ARCHS = 3  # architectures (first by hash) whose runs at the largest budget get a trace
TRACE_SAMPLES_PER_EPOCH = 4
SOURCE = "simulated"


def campaign_name(runs: int) -> str:
    """The name of the campaign ``make_database(path, runs)`` writes."""
    return f"synthetic-{runs}"


def _cells(n: int, rng: random.Random) -> list[tuple[str, list[list[int]], list[str]]]:
    """``n`` distinct random NAS-Bench-101 cells as (hash, matrix, ops)."""
    from analysis.surrogate import random_cell

    cells: list[tuple[str, list[list[int]], list[str]]] = []
    seen: set[str] = set()
    tries = 0
    while len(cells) < n:
        m, ops = random_cell(rng)
        h = hashlib.md5((json.dumps(m) + ",".join(ops)).encode()).hexdigest()
        tries += 1
        if h in seen:
            if tries > 50 * n:
                raise ValueError(f"could not draw {n} distinct cells")
            continue
        seen.add(h)
        cells.append((h, m, ops))
    return cells


def make_database(path: Path, runs: int, seed: int = 0, archs: int | None = None) -> str:
    """Write a new SQLite database at ``path`` (replacing one there) with one campaign of ``runs``
    finished, simulated runs; returns its SQLAlchemy URL.

    ``archs``: architectures (default: enough for 3 seeds of every budget and GPU type); the
    seeds per (architecture, budget, GPU type) follow from it."""
    from analysis.surrogate import synthetic_energy_wh_per_epoch, synthetic_params
    from db.engine import make_engine
    from db.migrate import upgrade

    if runs < 1:
        raise ValueError(f"runs must be at least 1, not {runs}")
    per_arch_seed = len(BUDGETS) * len(GPU_TYPES)
    if archs is None:
        n_archs = max(1, math.ceil(runs / (per_arch_seed * SEEDS)))
        seeds = SEEDS
    else:
        if archs < 1:
            raise ValueError(f"archs must be at least 1, not {archs}")
        n_archs = archs
        seeds = max(1, math.ceil(runs / (per_arch_seed * archs)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    cells = _cells(n_archs, rng)
    arch_rows = []
    arch_info = {}
    for h, m, ops in cells:
        params = synthetic_params(m, ops)
        arch_info[h] = (params, synthetic_energy_wh_per_epoch(m, ops, params))
        arch_rows.append((h, json.dumps(m), json.dumps(ops), len(ops), sum(map(sum, m))))
    trials = [(h, e, g, s) for h, _, _ in cells for e in BUDGETS for g in GPU_TYPES for s in range(seeds)][:runs]
    trace_archs = set(sorted(h for h, _, _ in cells)[:TRACE_ARCHS])

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    name = campaign_name(runs)
    config = {"sweep": "synthetic", "note": "synthetic campaign (benchmarks.synthetic_campaign): simulated energy",
              "meter": {"power_source": SOURCE}}
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA foreign_keys=OFF")
        with con:
            con.execute("INSERT INTO campaign (id, name, sweep, created_at, root, code_revision, config_json) "
                        "VALUES (1, ?, 'synthetic', ?, ?, 'synthetic', ?)",
                        (name, now.isoformat(sep=" "), str(path.parent), json.dumps(config)))
            con.executemany("INSERT INTO architecture (arch_hash, matrix_json, ops_json, num_vertices, num_edges) "
                            "VALUES (?, ?, ?, ?, ?)", arch_rows)
            hw = []
            for i, g in enumerate(GPU_TYPES):
                tdp = GPU_MODEL[g][0]
                details = {"simulated": True, "gpu": g, "power_limit_w": tdp, "gpu_memory_mb": 32768 if g == "v100"
                           else 40960}
                hw.append((i + 1, hashlib.md5(f"synthetic-{g}".encode()).hexdigest(), f"node-{g}", "simulated CPU",
                           16, 128.0, f"simulated {g}", 1, json.dumps(details)))
            con.executemany("INSERT INTO hardware (id, fingerprint, host, cpu_model, cpu_count, ram_gb, gpu_name, "
                            "gpu_count, details_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", hw)
            traces = _write_runs(con, trials, arch_info, trace_archs, nrng, now, name)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    _write_traces(url, traces)
    return url


def _write_traces(url: str, traces: dict[int, dict[str, list[Any]]]) -> None:
    """The few example traces, through the project's own sample path (``db.ingest.insert_samples``)."""
    from db.engine import make_engine
    from db.ingest import insert_samples

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for run_id, trace in traces.items():
                insert_samples(conn, run_id, SOURCE, trace)
    finally:
        engine.dispose()


def _write_runs(con: sqlite3.Connection, trials: list[tuple[str, int, str, int]],
                arch_info: dict[str, tuple[int, float]], trace_archs: set[str], nrng: np.random.Generator,
                now: dt.datetime, name: str) -> dict[int, dict[str, list[Any]]]:
    """Trials, their one done run each, epochs and phases; returns the few example traces
    (run id -> columnar samples) for `_write_traces`."""
    n = len(trials)
    ts = now.isoformat(sep=" ")
    run_noise = nrng.normal(1.0, 0.04, n)
    speed_noise = nrng.normal(1.0, 0.02, n)
    acc_noise = nrng.normal(0.0, 0.01, n)
    trial_rows: list[tuple[Any, ...]] = []
    run_rows: list[tuple[Any, ...]] = []
    epoch_rows: list[tuple[Any, ...]] = []
    phase_rows: list[tuple[Any, ...]] = []
    traces: dict[int, dict[str, list[Any]]] = {}
    order = nrng.permutation(n)
    for i, (h, epochs, gpu, seed) in enumerate(trials):
        rid = i + 1
        params, wh = arch_info[h]
        tdp, speed, rel = GPU_MODEL[gpu]
        epoch_j = wh * 3600.0 * rel * float(run_noise[i])
        epoch_s = (20.0 + 60.0 * wh / 10.0) / speed * float(speed_noise[i])
        power = epoch_j / epoch_s
        idle_w = 0.15 * tdp
        key = hashlib.md5(f"{name}|{h}|{epochs}|{gpu}|{seed}".encode()).hexdigest()
        trial_rows.append((rid, 1, key, h, epochs, gpu, seed, int(order[i]), params, params * 900, "done", 1, "w1",
                           ts))
        # per-epoch figures: the first epoch pays for warm-up, then 2 % noise
        factors = 1.0 + 0.02 * nrng.standard_normal(epochs)
        factors[0] += 0.3
        durations = epoch_s * factors
        energies = durations * power
        duration = float(durations.sum())
        energy = float(energies.sum())
        above = energy - idle_w * duration
        valid = min(0.95, 0.55 + 0.07 * math.log(epochs + 1) + 0.02 * math.log(params / 1e5 + 1)
                    + float(acc_noise[i]))
        for e in range(epochs):
            d, j = float(durations[e]), float(energies[e])
            epoch_rows.append((rid, e + 1, d, j, j / d, j - idle_w * d, 0.01 * j, 2.0 / (e + 1),
                               min(0.99, valid + 0.05 * e / epochs), min(0.95, valid * (0.8 + 0.2 * (e + 1) / epochs))))
        phases = {"setup": (5.0, 5.0 * idle_w * 1.2), "idle": (10.0, 10.0 * idle_w),
                  "train": (duration * 0.9, energy * 0.92), "eval": (duration * 0.1, energy * 0.08),
                  "cooldown": (10.0, 10.0 * idle_w * 1.1)}
        for phase, (d, j) in phases.items():
            phase_rows.append((rid, phase, d, j, j / d, max(1, int(d)), j - idle_w * d, 0.01 * j, SOURCE, 1))
        hw = GPU_TYPES.index(gpu) + 1
        trace_anchor = None
        if epochs == max(BUDGETS) and h in trace_archs:
            trace_anchor = now.timestamp()
            samples: list[tuple[Any, ...]] = [(0, float(k), "idle", None, idle_w, 2.0, tdp) for k in range(10)]
            t = 10.0
            for e in range(epochs):
                step = float(durations[e]) / TRACE_SAMPLES_PER_EPOCH
                for k in range(TRACE_SAMPLES_PER_EPOCH):
                    phase = "eval" if k == TRACE_SAMPLES_PER_EPOCH - 1 else "train"
                    samples.append((0, t, phase, e + 1, power * (0.8 if phase == "eval" else 1.0), 70.0, tdp))
                    t += step
            names = ("device", "t_s", "phase", "epoch", "power_w", "gpu_util", "power_limit_w")
            traces[rid] = {k: [row[i] for row in samples] for i, k in enumerate(names)}
        run_rows.append((rid, rid, 1, "done", ts, ts, ts, "synthetic-node", "w1", SOURCE, SOURCE, "synthetic",
                         "cuda", hw, duration, energy, above, 0.01 * energy,
                         "simulated: 1 % stated for the generated numbers", energy, 45.0, idle_w, valid,
                         valid - 0.01, TRAIN_IMAGES / epoch_s, TRAIN_IMAGES, trace_anchor))
    con.executemany("INSERT INTO trial (id, campaign_id, trial_key, arch_hash, epochs, gpu_type, seed, order_index, "
                    "params, flops, state, attempts, worker_id, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", trial_rows)
    con.executemany("INSERT INTO run (id, trial_id, attempt, status, started_at, ended_at, heartbeat_at, host, "
                    "worker_id, power_source, energy_method, dataset, device, hardware_id, duration_s, energy_j, "
                    "energy_above_idle_j, energy_uncertainty_j, error_basis, integrated_energy_j, "
                    "start_temperature_c, idle_power_w, valid_accuracy, test_accuracy, train_images_per_s, "
                    "train_images, trace_anchor_unix_s) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    run_rows)
    con.executemany("INSERT INTO epoch (run_id, epoch, duration_s, energy_j, mean_power_w, energy_above_idle_j, "
                    "uncertainty_j, train_loss, train_accuracy, valid_accuracy) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", epoch_rows)
    con.executemany("INSERT INTO run_phase (run_id, phase, duration_s, energy_j, mean_power_w, samples, "
                    "energy_above_idle_j, uncertainty_j, method, valid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    phase_rows)
    return traces


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="SQLite file to write (replaced)")
    parser.add_argument("runs", type=int, help="finished runs in the campaign")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--archs", type=int, default=None, help="architectures (default: runs / 24)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    url = make_database(args.path, args.runs, args.seed, args.archs)
    seconds = time.perf_counter() - began
    print(f"{url} campaign {campaign_name(args.runs)}")
    print(json.dumps({"runs": args.runs, "seconds": round(seconds, 2), "bytes": args.path.stat().st_size}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
