"""Benchmark: the per-run summary (energy, duration, mean power by phase) over 10 million samples on SQLite.

A fresh SQLite file gets ``--runs`` finished runs of ``--samples-per-run`` samples each (10
million in all by default), written the way the project writes them: each run's result, with
its NVML-like trace (``benchmarks.ingest.nvml_trace``) and the worker's per-phase summary of that
trace (``jobs.protocol.summarise``), goes through ``ResultStore.ingest`` as a worker's does, which stores the
samples in ``trace_sample`` and the summary in ``run_phase``. To keep the fill fast, the runs
cycle through ``--templates`` distinct traces (different seeds), each summarised once.

Then, on the warm file, best of ``--reps``:

- project: every run's summary from the pre-aggregated ``run_phase`` rows (the headline figure;
  goal under 1 s), and the ``run_summary`` view statisticians read (it pivots ``run_phase``);
- direct: the same figures aggregated from ``trace_sample`` itself, as one GROUP BY (duration as
  the span of the phase's timestamps and energy as mean power x that span: the cheapest direct
  form, and only exact for a phase that is one stretch of time), and as the exact computation
  (trapezoidal energy per stretch with window functions, the SQL twin of ``summarise``);
- one run: a single run's summary both ways (the direct one served by ``ix_trace_run``).

    python -m benchmarks.summary_query [--runs 1000] [--samples-per-run 10000] [--db PATH]

``--db PATH`` keeps the filled file at PATH and reuses it when it already holds the same runs.
The last line printed is one JSON object: ``seconds`` (project, all runs), ``ratio`` (seconds /
goal_seconds: below 1 meets the goal), ``direct_seconds`` and the other timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOAL_SECONDS = 1.0

PROJECT_SQL = """
SELECT run_id, phase, duration_s, energy_j, mean_power_w, samples
FROM run_phase
ORDER BY run_id, phase"""

VIEW_SQL = "SELECT * FROM run_summary ORDER BY run_id"

DIRECT_SQL = """
SELECT run_id, phase,
       MAX(t_s) - MIN(t_s) AS duration_s,
       AVG(power_w) * (MAX(t_s) - MIN(t_s)) AS energy_j,
       AVG(power_w) AS mean_power_w,
       COUNT(*) AS samples
FROM trace_sample
GROUP BY run_id, phase
ORDER BY run_id, phase"""

# Stretches of one (device, phase, epoch) in time order, as jobs.protocol.summarise cuts them:
# energy from the device counter where both ends of a step have it, else trapezoids; time on the
# run's first device.
DIRECT_EXACT_SQL = """
WITH marked AS (
  SELECT run_id, device, phase, t_s, power_w, energy_j,
         MIN(device) OVER (PARTITION BY run_id) AS clock_device,
         LAG(t_s) OVER w AS prev_t, LAG(power_w) OVER w AS prev_p, LAG(energy_j) OVER w AS prev_e,
         LAG(phase) OVER w = phase AND LAG(epoch) OVER w IS epoch AS same
  FROM trace_sample
  WINDOW w AS (PARTITION BY run_id, device ORDER BY t_s)
),
steps AS (
  SELECT run_id, device, clock_device, phase,
         CASE WHEN same THEN t_s - prev_t ELSE 0 END AS dt_s,
         CASE WHEN NOT same OR same IS NULL THEN 0
              WHEN energy_j IS NOT NULL AND prev_e IS NOT NULL THEN energy_j - prev_e
              ELSE 0.5 * (power_w + prev_p) * (t_s - prev_t) END AS energy_j
  FROM marked
)
SELECT run_id, phase,
       SUM(CASE WHEN device = clock_device THEN dt_s ELSE 0 END) AS duration_s,
       SUM(energy_j) AS energy_j,
       SUM(energy_j) / NULLIF(SUM(CASE WHEN device = clock_device THEN dt_s ELSE 0 END), 0) AS mean_power_w,
       COUNT(*) AS samples
FROM steps
GROUP BY run_id, phase
ORDER BY run_id, phase"""

ONE_RUN_PROJECT_SQL = (
    "SELECT phase, duration_s, energy_j, mean_power_w, samples FROM run_phase WHERE run_id = ?"
)
ONE_RUN_DIRECT_SQL = """
SELECT phase, MAX(t_s) - MIN(t_s), AVG(power_w) * (MAX(t_s) - MIN(t_s)), AVG(power_w), COUNT(*)
FROM trace_sample WHERE run_id = ? GROUP BY phase"""


def fill(path: Path, runs: int, per_run: int, templates: int) -> float:
    """Write the runs through ``ResultStore.ingest``, as workers do; returns the seconds it took."""
    from benchmarks.ingest import fresh_db, nvml_trace, phase_summary, result_for
    from db.store import ResultStore

    made = []
    for i in range(templates):
        trace = nvml_trace(per_run, seed=i)
        made.append((trace, phase_summary(trace)))
    _, engine = fresh_db(path.parent, path.stem, runs, runs=False)
    store = ResultStore(engine, upgrade=False)
    began = time.perf_counter()
    for i in range(runs):
        trace, phases = made[i % templates]
        store.ingest(result_for(f"t{i}", trace, phases))
        if (i + 1) % max(1, runs // 10) == 0:
            print(f"filled {i + 1}/{runs} runs ({(i + 1) * per_run:,} samples)", flush=True)
    seconds = time.perf_counter() - began
    engine.dispose()
    return seconds


def _holds(path: Path, runs: int, per_run: int) -> bool:
    if not path.exists():
        return False
    con = sqlite3.connect(path)
    try:
        n_runs = con.execute("SELECT COUNT(*) FROM run WHERE status = 'done'").fetchone()[0]
        n = con.execute("SELECT MAX(id) FROM trace_sample").fetchone()[0]
        return bool(n_runs == runs and n == runs * per_run)
    except sqlite3.Error:
        return False
    finally:
        con.close()


def best_of(reps: int, label: str, query: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    """Fastest wall time of ``reps`` runs of ``query`` (rows fetched included) and its rows."""
    times = []
    rows: list[Any] = []
    for _ in range(reps):
        began = time.perf_counter()
        rows = query()
        times.append(time.perf_counter() - began)
    print(f"{label:34s} {min(times):9.4f} s  ({len(rows)} rows; runs: {', '.join(f'{t:.4f}' for t in times)})",
          flush=True)  # fmt: skip
    return min(times), rows


def max_rel_diff(a: list[Any], b: list[Any], column: int) -> float:
    """Largest relative difference of ``column`` between rows of a and b matched on (run_id, phase)."""
    other = {(r[0], r[1]): r[column] for r in b}
    worst = 0.0
    for r in a:
        x, y = r[column], other.get((r[0], r[1]))
        if y is None or x is None:
            return float("inf")
        worst = max(worst, abs(x - y) / max(abs(x), 1e-12))
    return worst if len(a) == len(b) else float("inf")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples-per-run", type=int, default=10_000)
    parser.add_argument("--templates", type=int, default=10, help="distinct traces the runs cycle through")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each fast query")
    parser.add_argument(
        "--direct-reps", type=int, default=2, help="repetitions of the direct GROUP BY (a full scan)"
    )
    parser.add_argument(
        "--exact-reps", type=int, default=1, help="repetitions of the exact direct query (0: skip)"
    )
    parser.add_argument(
        "--db", default=None, help="SQLite file to fill (kept) or reuse; default: a temporary one"
    )
    args = parser.parse_args(argv)

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.db) if args.db else Path(tmp) / "summary.db"
        fill_s = None
        if not _holds(path, args.runs, args.samples_per_run):
            fill_s = fill(path, args.runs, args.samples_per_run, args.templates)
        n = args.runs * args.samples_per_run
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        plan = [row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + DIRECT_SQL)]
        mid = args.runs // 2
        project_s, project_rows = best_of(
            args.reps, "project: run_phase, all runs", lambda: con.execute(PROJECT_SQL).fetchall()
        )
        view_s, _ = best_of(args.reps, "project: run_summary view", lambda: con.execute(VIEW_SQL).fetchall())
        one_project_s, _ = best_of(
            args.reps, "project: one run", lambda: con.execute(ONE_RUN_PROJECT_SQL, (mid,)).fetchall()
        )
        one_direct_s, _ = best_of(
            args.reps, "direct: one run (index)", lambda: con.execute(ONE_RUN_DIRECT_SQL, (mid,)).fetchall()
        )
        direct_s, direct_rows = best_of(
            args.direct_reps, "direct: GROUP BY, all runs", lambda: con.execute(DIRECT_SQL).fetchall()
        )
        exact_s, exact_rows = float("nan"), list[Any]()
        if args.exact_reps > 0:
            exact_s, exact_rows = best_of(
                args.exact_reps,
                "direct: exact (windows), all runs",
                lambda: con.execute(DIRECT_EXACT_SQL).fetchall(),
            )
        con.close()
        size_mb = (
            sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}")) / 2**20
        )
    figures: dict[str, Any] = {
        "samples": n,
        "runs": args.runs,
        "seconds": round(project_s, 5),
        "goal_seconds": GOAL_SECONDS,
        "ratio": round(project_s / GOAL_SECONDS, 5),
        "direct_seconds": round(direct_s, 3),
        "direct_exact_seconds": round(exact_s, 3) if exact_rows else None,
        "direct_to_project_ratio": round(direct_s / project_s, 1),
        "view_seconds": round(view_s, 5),
        "one_run_project_seconds": round(one_project_s, 6),
        "one_run_direct_seconds": round(one_direct_s, 6),
        "rows": len(project_rows),
        "direct_rows": len(direct_rows),
        # the exact direct computation must give run_phase's figures: same question, same answer
        "exact_vs_project_energy_max_rel_diff": max_rel_diff(project_rows, exact_rows, 3)
        if exact_rows
        else None,
        "exact_vs_project_duration_max_rel_diff": max_rel_diff(project_rows, exact_rows, 2)
        if exact_rows
        else None,
        "direct_plan": "; ".join(plan),
        "fill_seconds": None if fill_s is None else round(fill_s, 1),
        "db_mb": round(size_mb),
        "meets_goal": project_s < GOAL_SECONDS,
        "sqlite_version": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "wall_s": round(time.perf_counter() - began, 1),
    }
    print(f"per-run summary of {args.runs} runs ({n:,} samples): {project_s * 1000:.1f} ms from run_phase, "
          f"{direct_s:.1f} s aggregating trace_sample ({exact_s:.1f} s exactly); goal under {GOAL_SECONDS:.0f} s")  # fmt: skip
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
