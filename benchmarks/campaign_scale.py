"""Benchmark: a campaign of 200,000 trials, planned, recorded, resumed, fanned out and analysed.

Everything goes under a fresh temporary folder (``TMPDIR``); nothing is written into the checkout.
Each timed step that matters for memory runs in its own process, so that its peak resident memory
(``wait4``'s ``ru_maxrss``) is its own:

- plan + record: ``+sweep=cifar_cells`` with 5,556 sampled architectures x 4 epoch budgets x 3 GPU
  types (a100, v100, rtx3060) x 3 seeds = 200,016 trials, planned (``campaign.plan``) and recorded
  (``TrialStore.create_campaign``) into a new SQLite file, as ``campaign launch`` does;
- enumerate all: ``architectures.source=all`` over the whole 7-vertex, 9-edge space
  (``campaign.plan.resolve_architectures``: the cells, their hashes, parameters and FLOPs);
- resume decision: on that database, what ``campaign resume`` decides and applies from the trial
  rows (``trial_states``, ``campaign.resume.decide`` and ``apply``, ``pending_counts``,
  ``workers_needed``), with a third of the trials marked done, a few running with a stale
  heartbeat and a few failed;
- Slurm: the arrays ``campaign.launchers.slurm.plan_arrays`` gives for the pending trials per GPU
  type with MaxArraySize 1001 and ``launcher.max_workers`` 256;
- analyze: ``campaign analyze`` as a subprocess on synthetic databases of 10,000 and 50,000 done
  runs (``benchmarks.synthetic_campaign``: SIMULATED numbers, not measurements);
- traces: SQLite file bytes per stored trace sample (a 10 Hz NVML-like trace,
  ``benchmarks.ingest.nvml_trace``, ingested through ``ResultStore.ingest``; the file with the
  same runs without traces is subtracted), and the ingest rate (``benchmarks.ingest``'s project
  figure: results prepared by their worker, stored by ``ResultStore.ingest``; its pace of prepare
  and store in one process is in the notes; on 500,000 samples in 20 runs, best of its 5
  interleaved repetitions, its own default: on a shared machine
  the rate of one repetition swings by a third, and the raw sqlite3 baseline with it).

    python -m benchmarks.campaign_scale [--budget-s 570] [--skip-50k]

The last line printed is one JSON object; its keys are fixed by the acceptance check (trials,
plan_record_s, plan_record_peak_mb, enumerate_all_s, enumerate_all_cells, resume_decision_s,
slurm_arrays, slurm_gpu_types, slurm_tasks_total, analyze_10k_s, analyze_10k_peak_mb,
analyze_50k_s, trace_bytes_per_sample, ingest_samples_per_s) plus context (load, notes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARCHS = 5_556
EPOCHS = (4, 12, 36, 108)
GPUS = ("a100", "v100", "rtx3060")
SEEDS = 3
MAX_ARRAY_SIZE = 1001
MAX_WORKERS = 256
TRACE_SAMPLES = 200_000
TRACE_RUNS = 20
CAMPAIGN = "scale"


def _overrides(folder: Path, db: Path) -> list[str]:
    return ["+sweep=cifar_cells", f"architectures.n={ARCHS}", "architectures.seed=0",
            f"epochs=[{','.join(map(str, EPOCHS))}]", f"gpus=[{','.join(GPUS)}]", f"seeds={SEEDS}",
            f"root={folder}", f"db.url=sqlite:///{db}", f"name={CAMPAIGN}"]


# --- the parts, each run in its own process (``--part NAME``) -----------------------------------

def part_plan_record(folder: Path, db: Path) -> dict[str, Any]:
    """Plan and record the campaign as ``campaign launch`` does (compose outside the clock)."""
    from campaign.config import compose

    cfg = compose(_overrides(folder, db))
    began, cpu = time.perf_counter(), time.process_time()
    from campaign.plan import make_plan, resolve_architectures
    from campaign.session import open_store

    plan = make_plan(cfg, resolve_architectures(cfg))
    planned, planned_cpu = time.perf_counter(), time.process_time()
    store = open_store(cfg)
    campaign_id = store.create_campaign(CAMPAIGN, cfg.sweep, str(folder), "benchmark", cfg.to_dict(), plan.archs,
                                        plan.trials)
    done, done_cpu = time.perf_counter(), time.process_time()
    store.engine.dispose()
    return {"trials": len(plan.trials), "archs": len(plan.archs), "campaign_id": campaign_id,
            "plan_s": round(planned - began, 3), "record_s": round(done - planned, 3),
            "plan_record_s": round(done - began, 3), "plan_cpu_s": round(planned_cpu - cpu, 3),
            "record_cpu_s": round(done_cpu - planned_cpu, 3), "pending": _pending(plan)}


def _pending(plan: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in plan.trials:
        out[t.gpu_type] = out.get(t.gpu_type, 0) + 1
    return out


def part_enumerate(folder: Path, db: Path) -> dict[str, Any]:
    """architectures.source=all over the whole space, as planning resolves it."""
    from campaign.config import compose

    cfg = compose([*_overrides(folder, db), "architectures.source=all", "architectures.max_vertices=7",
                   "architectures.max_edges=9"])
    from campaign.plan import resolve_architectures

    began = time.perf_counter()
    cpu = time.process_time()
    archs = resolve_architectures(cfg)
    from jobs.space import _workers

    # cpu_s is this process's: the hashing runs in `workers` processes of their own when there are 2+ CPUs
    return {"enumerate_all_s": round(time.perf_counter() - began, 3), "enumerate_all_cpu_s": round(time.process_time() - cpu, 3),
            "enumerate_all_workers": _workers(), "enumerate_all_cells": len({a.arch_hash for a in archs})}


def part_resume(folder: Path, db: Path) -> dict[str, Any]:
    """The resume decision on the recorded campaign: a third done, some stale, some failed."""
    import datetime as dt

    from sqlalchemy import text

    from campaign.config import compose
    from campaign.session import open_store

    cfg = compose(_overrides(folder, db))
    store = open_store(cfg)
    info = store.campaign(CAMPAIGN)
    old = dt.datetime(2026, 1, 1)
    with store.engine.begin() as conn:  # a campaign in progress (bulk SQL, outside the clock)
        conn.execute(text("UPDATE trial SET state = 'done', attempts = 1 WHERE campaign_id = :c AND id % 3 = 0"),
                     {"c": info.id})
        conn.execute(text("UPDATE trial SET state = 'failed', attempts = 1 WHERE campaign_id = :c AND id % 997 = 1"),
                     {"c": info.id})
        stale = conn.execute(text("SELECT id FROM trial WHERE campaign_id = :c AND id % 1009 = 2"),
                             {"c": info.id}).scalars().all()
        conn.execute(text("UPDATE trial SET state = 'running', attempts = 1 WHERE campaign_id = :c AND id % 1009 = 2"),
                     {"c": info.id})
        for tid in stale:
            conn.execute(text("INSERT INTO run (trial_id, attempt, status, worker_id, host, started_at, heartbeat_at) "
                              "VALUES (:t, 1, 'running', 'w', 'h', :o, :o)"), {"t": tid, "o": old})
    from campaign.launchers.base import workers_needed
    from campaign.resume import apply, decide

    stale_s = cfg.launcher.stale_after_s
    began, cpu = time.perf_counter(), time.process_time()
    now = store.now()
    rows = store.trial_states(info.id)
    actions = apply(store, info.id, decide(rows, now, stale_s), now, stale_s)
    pending = store.pending_counts(info.id)
    workers = workers_needed(pending, {}, MAX_WORKERS, one_each=False)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    store.engine.dispose()
    return {"resume_decision_s": round(seconds, 3), "resume_decision_cpu_s": round(cpu, 3), "resume_trials": len(rows), "resume_to_run": actions.to_run,
            "resume_done": actions.done, "resume_stale": len(actions.mark_stale), "resume_reopened": len(actions.reopen),
            "resume_workers": sum(workers.values())}


def part_traces(folder: Path, db: Path) -> dict[str, Any]:
    """SQLite bytes per trace sample: the same runs ingested with and without their traces."""
    from benchmarks.ingest import fresh_db, nvml_trace, phase_summary, result_for, split
    from db.store import ResultStore

    traces = split(nvml_trace(TRACE_SAMPLES, seed=1), TRACE_RUNS)
    sizes = {}
    for name, with_trace in (("with", True), ("without", False)):
        path, engine = fresh_db(folder, f"traces-{name}", TRACE_RUNS, runs=False)
        store = ResultStore(engine, upgrade=False)
        for i, t in enumerate(traces):
            result = result_for(f"t{i}", t, phase_summary(t))
            if not with_trace:
                import dataclasses

                result = dataclasses.replace(result, trace={})
            store.ingest(result)
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        sizes[name] = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())
    return {"trace_bytes_per_sample": round((sizes["with"] - sizes["without"]) / TRACE_SAMPLES, 1),
            "trace_file_bytes": sizes}


PARTS = {"plan_record": part_plan_record, "enumerate": part_enumerate, "resume": part_resume, "traces": part_traces}


# --- the driver ------------------------------------------------------------------------------------

def _child(args: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[int, float, float, str]:
    """Run a child process: (exit status, wall seconds, peak resident MB, stdout)."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(args, stdout=out, stderr=errors, env=env)
        deadline = began + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                status = -9
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - began
        proc.returncode = 0  # reaped above
        errors.seek(0)
        err = errors.read().decode(errors="replace")
        out.seek(0)
        text = out.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status) if status != -9 else -9
    if code != 0:
        print(f"child {' '.join(args[:6])} ... exited {code}: {err.strip().splitlines()[-1:] if err.strip() else ''}",
              file=sys.stderr)
    return code, seconds, usage.ru_maxrss / 1024.0, text


def _part(name: str, folder: Path, db: Path, timeout_s: float) -> tuple[dict[str, Any], float, float]:
    code, seconds, peak_mb, out = _child(
        [sys.executable, "-m", "benchmarks.campaign_scale", "--part", name, "--folder", str(folder), "--db", str(db)],
        timeout_s)
    lines = [line for line in out.splitlines() if line.strip()]
    if code != 0 or not lines:
        return {}, seconds, peak_mb
    return json.loads(lines[-1]), seconds, peak_mb


def _ingest_rate(folder: Path, timeout_s: float) -> dict[str, Any]:
    code, _, _, out = _child([sys.executable, "-m", "benchmarks.ingest", "--samples", "500000", "--runs", "20",
                              "--reps", "5", "--orm-samples", "5000", "--dir", str(folder)], timeout_s,
                             env={k: v for k, v in os.environ.items() if k != "CAMPAIGN_TEST_PG_URL"})
    lines = [line for line in out.splitlines() if line.strip()]
    return json.loads(lines[-1]) if code == 0 and lines else {}


def _analyze(folder: Path, runs: int, timeout_s: float) -> tuple[float | None, float | None, dict[str, Any]]:
    """``campaign analyze`` on a synthetic (SIMULATED) database of ``runs`` done runs."""
    from benchmarks.synthetic_campaign import campaign_name, make_database

    path = folder / f"synthetic-{runs}.db"
    began = time.perf_counter()
    url = make_database(path, runs)
    made = time.perf_counter() - began
    campaign = Path(sys.executable).with_name("campaign")
    command = [str(campaign)] if campaign.exists() else [sys.executable, "-m", "campaign.cli"]
    code, seconds, peak_mb, _ = _child([*command, "analyze", campaign_name(runs), "-q", f"root={folder / 'reports'}",
                                        f"db.url={url}"], timeout_s)
    note = {"runs": runs, "fill_s": round(made, 1), "exit": code}
    return (round(seconds, 2) if code == 0 else None), (round(peak_mb, 1) if code == 0 else None), note


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--budget-s", type=float, default=570.0, help="stop starting steps after this many seconds")
    parser.add_argument("--skip-50k", action="store_true", help="leave out analyze on 50,000 runs")
    args = parser.parse_args(argv)
    if args.part:
        figures = PARTS[args.part](Path(args.folder), Path(args.db))
        print(json.dumps(figures))
        return figures

    began = time.perf_counter()

    def left() -> float:
        return max(1.0, args.budget_s - (time.perf_counter() - began))

    load = [round(os.getloadavg()[0], 2)]
    out: dict[str, Any] = {}
    notes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="campaign-scale-") as tmp:
        folder = Path(tmp)
        db = folder / "scale.db"
        plan, seconds, peak = _part("plan_record", folder, db, left())
        out["trials"] = plan.get("trials")
        out["plan_record_s"] = plan.get("plan_record_s")
        out["plan_record_peak_mb"] = round(peak, 1) if plan else None
        notes["plan_record"] = {k: plan.get(k) for k in ("archs", "plan_s", "record_s", "plan_cpu_s", "record_cpu_s")} | {"process_s": round(seconds, 2)}

        enum, _, peak = _part("enumerate", folder, db, left())
        out["enumerate_all_s"] = enum.get("enumerate_all_s")
        out["enumerate_all_cells"] = enum.get("enumerate_all_cells")
        notes["enumerate_all"] = {"cpu_s_main_process": enum.get("enumerate_all_cpu_s"),
                                  "hash_workers": enum.get("enumerate_all_workers"), "peak_mb": round(peak, 1)}

        pending = plan.get("pending") or {}
        from campaign.launchers.slurm import plan_arrays

        arrays = plan_arrays(pending, MAX_WORKERS, MAX_ARRAY_SIZE) if pending else {}
        out["slurm_arrays"] = [size for gpu in sorted(arrays) for size in arrays[gpu]]
        out["slurm_gpu_types"] = len(arrays)
        out["slurm_tasks_total"] = sum(out["slurm_arrays"])
        notes["slurm"] = {"pending_per_gpu": pending, "max_array_size": MAX_ARRAY_SIZE, "max_workers": MAX_WORKERS}

        resume, _, _ = _part("resume", folder, db, left()) if plan else ({}, 0.0, 0.0)
        out["resume_decision_s"] = resume.get("resume_decision_s")
        notes["resume"] = {k: v for k, v in resume.items() if k != "resume_decision_s"}

        traces, _, _ = _part("traces", folder, db, left())
        out["trace_bytes_per_sample"] = traces.get("trace_bytes_per_sample")
        ingest = _ingest_rate(folder, left())
        out["ingest_samples_per_s"] = ingest.get("project_samples_per_s")
        notes["traces"] = {"samples": TRACE_SAMPLES, "rate_hz": 10, "file_bytes": traces.get("trace_file_bytes"),
                           "ingest_cpu_s": ingest.get("cpu_seconds"),
                           "ingest_one_process_samples_per_s": ingest.get("one_process_samples_per_s"),
                           "ingest_path": ingest.get("project_path")}

        out["analyze_10k_s"], out["analyze_10k_peak_mb"], notes["analyze_10k"] = _analyze(folder, 10_000, left())
        if not args.skip_50k:
            out["analyze_50k_s"], _, notes["analyze_50k"] = _analyze(folder, 50_000, left())
        notes["analyze_data"] = "SIMULATED runs (benchmarks.synthetic_campaign), not measurements"
    load.append(round(os.getloadavg()[0], 2))
    out["notes"] = notes
    out["load_avg_1min"] = load
    out["cpus"] = os.cpu_count()
    out["wall_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
