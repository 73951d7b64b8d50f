"""Benchmark: ingesting trace samples into SQLite, the project's path against an ORM baseline and raw sqlite3.

One realistic NVML trace of ``--samples`` samples (one GPU at 10 Hz: idle, epochs of training
and evaluation, cool-down; every column filled, in the units NVML and psutil give) is split into
``--runs`` runs and written, each condition into its own fresh SQLite file with the project's
schema (``db.migrate.upgrade``) and connection settings (WAL, synchronous=NORMAL):

- project: ``ResultStore.ingest`` per run (``db.ingest.ingest_result``) of results as the worker
  hands them to its store: prepared on its node (``ResultStore.prepare``: the trace checked and
  encoded, its INSERT parameter lists built, no database work; timed apart as ``prepare``) before
  the database is touched, as the raw baseline's tuples are built before its clock starts; one
  transaction per run does (run row, phases, epochs, the trace's series and points), commits
  included; the engine's WAL checkpoint thread (``db.checkpoint``) runs beside it, and the clock
  stops only once it has checkpointed the last commit. This is the time a result holds the
  database's write lock, which every worker of a campaign shares;
- one process: the same of results not prepared (prepare and store one after the other): the
  pace of a single worker that does both;
- raw: ``sqlite3`` ``executemany`` of one prepared tuple per sample into a table of one row per
  sample (``ROW_TABLE``: the layout trace_sample had before revision 0009, with its index), one
  transaction per run (the rows are built before the clock starts), under the settings the
  project writes with (WAL checkpointed by a thread and timed to the end, foreign-key lookups off):
  the practical limit of per-row inserts from Python, so that the ratio compares the paths alone;
- orm: ``Session.add_all`` of one ORM object per sample into that row table, one commit per run,
  on ``--orm-samples`` samples only (it is slow); its rate is per sample, so it compares as is;
- sqlite alone: ``INSERT INTO`` the row table ``SELECT`` from an in-memory table that already
  holds the samples, a transaction per run, under the same settings: SQLite's own cost of a row
  per sample, with no Python in the loop, i.e. the ceiling of any per-row path from Python.

The project's path stores the samples as series and points (``db.traces``: each value a residual
in whole quanta, two samples a row), so it is measured against the per-row baselines that the
row layout allowed. ``project_bytes_per_sample`` is the project file's
growth per sample (file bytes with the traces minus a file with the same runs without them, WAL
checkpointed).

The project, raw and sqlite-alone conditions take the best of ``--reps`` interleaved repetitions
(the machine is shared); the CPU seconds of this process are reported too, which the machine's
other load inflates much less than wall time.
With ``CAMPAIGN_TEST_PG_URL`` set (or ``--pg-url``), the project's path on PostgreSQL (series, and points by COPY)
is also timed against psycopg's ``executemany`` into the row table on ``--pg-samples``
samples; those figures go under "postgresql".

    python -m benchmarks.ingest [--samples 1000000] [--runs 20] [--reps 5] [--orm-samples 100000]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from db.ingest import PreparedResult
    from db.records import PhaseRecord, RunResult

GOAL_SAMPLES_PER_S = 500_000
# A table of one row per sample: trace_sample as it was before revision 0009 (the baselines' table).
ROW_TABLE = "trace_rows"
GOAL_RAW_RATIO = 0.6
CAMPAIGN = "bench"
SOURCE = "nvml"


def nvml_trace(n: int, seed: int = 0, epochs: int = 10, rate_hz: float = 10.0) -> dict[str, list[Any]]:
    """A columnar trace of one GPU as the NVML meter records it (``jobs.worker`` layout).

    Idle and cool-down of about 30 s each, ``epochs`` epochs of training (90 %) and evaluation
    (10 %) between; power, utilisations, memory, temperature and SM clock vary, the memory clock,
    power limit and device index are constant. Values in the units NVML and psutil give them:
    power in whole milliwatts, the energy counter in millijoules, utilisation, temperature and
    clocks in whole numbers, device memory in 2 MiB pages, CPU load to 0.1 %, RSS in 4 KiB pages.
    Sample times as the sampler takes them (``jobs.meters.sampler``: paced on absolute deadlines
    k / rate, each woken up to 4 ms late)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    edge = max(1, min(300, n // 20))
    body = max(0, n - 2 * edge)
    phase: list[str] = ["idle"] * min(edge, n)
    epoch: list[int | None] = [None] * len(phase)
    per_epoch = body // epochs if epochs else 0
    for e in range(1, epochs + 1):
        size = per_epoch if e < epochs else body - per_epoch * (epochs - 1)
        train = size - size // 10
        phase += ["train"] * train + ["eval"] * (size - train)
        epoch += [e] * size
    phase += ["cooldown"] * (n - len(phase))
    epoch += [None] * (n - len(epoch))
    code = np.array([{"idle": 0, "train": 1, "eval": 2, "cooldown": 3}[p] for p in phase])
    busy = (code == 1) | (code == 2)
    t_s = np.arange(n) / rate_hz + rng.uniform(0.0, 0.004, n)
    dt_s = np.diff(t_s, prepend=0.0)
    power = np.round(np.choose(code, [60.0, 250.0, 180.0, 70.0]) + rng.normal(0.0, 1.0, n) * np.choose(
        code, [2, 30, 20, 3]
    ), 3)  # NVML: whole milliwatts
    energy = np.floor(np.cumsum(power * dt_s) * 1000.0) / 1000.0  # NVML counts mJ
    gpu_util = np.where(
        busy, np.minimum(100, rng.integers(85, 101, n) - 25 * (code == 2)), rng.integers(0, 3, n)
    )
    mem_util = np.where(busy, rng.integers(30, 60, n), 0)
    mem_used = (np.where(busy, 6.5e9, 0.6e9) // 2**21 + rng.integers(0, 32, n)) * 2.0  # MiB, 2 MiB pages
    temperature = np.where(busy, rng.integers(62, 76, n), rng.integers(35, 41, n))
    sm_clock = np.where(busy, rng.choice([1380.0, 1395.0, 1410.0], n), 210.0)
    cpu_util = np.round(np.where(busy, rng.uniform(40, 100, n), rng.uniform(0, 5, n)), 1)
    rss = (2.2e9 // 4096 + rng.integers(0, 2**14, n)) * 4096 / 2**20  # 4 KiB pages, within 64 MiB
    return {
        "device": [0] * n,
        "t_s": t_s.tolist(),
        "phase": phase,
        "epoch": epoch,
        "power_w": power.tolist(),
        "energy_j": energy.tolist(),
        "gpu_util": gpu_util.astype(float).tolist(),
        "mem_util": mem_util.astype(float).tolist(),
        "mem_used_mb": mem_used.tolist(),
        "temperature_c": temperature.astype(float).tolist(),
        "sm_clock_mhz": sm_clock.tolist(),
        "mem_clock_mhz": [1215.0] * n,
        "power_limit_w": [400.0] * n,
        "cpu_util": cpu_util.tolist(),
        "rss_mb": rss.tolist(),
    }


def split(trace: dict[str, list[Any]], parts: int) -> list[dict[str, list[Any]]]:
    """The trace cut into ``parts`` consecutive traces of (nearly) equal length."""
    n = len(trace["t_s"])
    bounds = [n * i // parts for i in range(parts + 1)]
    return [{k: v[a:b] for k, v in trace.items()} for a, b in zip(bounds, bounds[1:], strict=False)]


def phase_summary(trace: dict[str, list[Any]]) -> list[PhaseRecord]:
    """Per-phase records for ``run_phase``, as ``jobs.protocol.summarise`` computes them from the
    worker's samples (energy from the device counter, which every sample has here)."""
    from db.records import PhaseRecord
    from jobs.meters.base import Sample
    from jobs.protocol import summarise

    names = list(trace)
    samples = [Sample(**dict(zip(names, row, strict=True))) for row in zip(*trace.values(), strict=True)]
    return [PhaseRecord(phase=k, **v) for k, v in summarise(samples)["phases"].items()]


def result_for(trial_key: str, trace: dict[str, list[Any]], phases: list[PhaseRecord]) -> RunResult:
    """The result a worker (``jobs.worker.run_trial``) reports for a finished run with this trace."""
    from db.records import TRAINING_PHASES, RunResult, RunStatus

    energy = sum(p.energy_j for p in phases if p.phase in TRAINING_PHASES)
    return RunResult(
        campaign=CAMPAIGN, trial_key=trial_key, attempt=1, status=RunStatus.DONE,
        started_at="2026-01-01T00:00:00+00:00", ended_at="2026-01-01T02:00:00+00:00", host="node1",
        worker_id="node1-1", power_source=SOURCE, dataset="cifar10", device="cuda:0",
        energy_method="nvml_counter", counter_energy_j=energy, energy_uncertainty_j=0.05 * energy,
        error_basis="nvml power accuracy +-5 %", hardware={"host": "node1", "gpu_name": "NVIDIA A100-SXM4-40GB", "gpu_count": 1},
        trace_anchor_unix_s=1767225600.0, phases=tuple(phases), trace=trace,
        energy_j=energy, duration_s=trace["t_s"][-1] - trace["t_s"][0] if trace["t_s"] else 0.0,
        valid_accuracy=0.9, test_accuracy=0.9, train_images_per_s=1000.0, train_images=40000,
    )  # fmt: skip


def seed_campaign(conn: Any, trials: int, runs: bool, root: str = "/") -> None:
    """One campaign with ``trials`` trials (keys ``t0``, ``t1``, ...): pending, or with ``runs``
    running with one running run each (ids 1 ..)."""
    from sqlalchemy import insert

    from db.schema import Architecture, Campaign, Run, Trial

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    conn.execute(insert(Campaign).values(id=1, name=CAMPAIGN, sweep="bench", created_at=now, root=root,
                                         code_revision="bench", config_json="{}"))  # fmt: skip
    conn.execute(insert(Architecture).values(arch_hash="a" * 32, matrix_json="[[0, 1], [0, 0]]",
                                             ops_json='["input", "output"]', num_vertices=2, num_edges=1))  # fmt: skip
    conn.execute(insert(Trial), [
        dict(id=i + 1, campaign_id=1, trial_key=f"t{i}", arch_hash="a" * 32, epochs=10, gpu_type="a100", seed=i,
             order_index=i, params=1, flops=1, state="running" if runs else "pending", attempts=1 if runs else 0)
        for i in range(trials)
    ])  # fmt: skip
    if runs:
        conn.execute(insert(Run), [
            dict(id=i + 1, trial_id=i + 1, attempt=1, status="running", started_at=now, host="node1",
                 worker_id="node1-1", power_source=SOURCE)
            for i in range(trials)
        ])  # fmt: skip


def fresh_db(folder: Path, name: str, trials: int, runs: bool) -> tuple[str, Any]:
    """A new SQLite file with the project's schema and ``seed_campaign``'s rows."""
    from db.engine import make_engine
    from db.migrate import upgrade

    path = folder / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.begin() as conn:
        seed_campaign(conn, trials, runs, root=str(folder))
    return str(path), engine


def row_table(con: Any) -> None:
    """Create ``ROW_TABLE`` (one row per sample, indexed by run) on a DB-API connection."""
    from db.records import SAMPLE_COLUMNS

    types = {"device": "INTEGER NOT NULL", "phase": "VARCHAR(16) NOT NULL", "epoch": "INTEGER",
             "t_s": "FLOAT NOT NULL", "power_w": "FLOAT NOT NULL"}
    cols = ", ".join(f"{c} {types.get(c, 'FLOAT')}" for c in SAMPLE_COLUMNS)
    con.execute(f"CREATE TABLE {ROW_TABLE} (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL "
                f"REFERENCES run (id) ON DELETE CASCADE, source VARCHAR(20) NOT NULL, {cols})")
    con.execute(f"CREATE INDEX ix_{ROW_TABLE}_run ON {ROW_TABLE} (run_id)")


def _row_db(folder: Path, name: str, trials: int) -> str:
    """A fresh project file (``fresh_db``, with running runs) that also has ``ROW_TABLE``."""
    path, engine = fresh_db(folder, name, trials, runs=True)
    engine.dispose()
    con = sqlite3.connect(path)
    row_table(con)
    con.commit()
    con.close()
    return path


class Clock:
    """Wall and CPU seconds (this process: SQLite works in it) from creation to ``stop()``."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_project(folder: Path, results: Sequence[RunResult | PreparedResult]) -> tuple[float, float]:
    """(wall, CPU) seconds to ingest every result as workers do (``ResultStore.ingest``: one
    transaction per run); results not prepared yet are prepared inside the timing."""
    from db.engine import wal_checkpointer
    from db.store import ResultStore

    _, engine = fresh_db(folder, "project", len(results), runs=False)
    store = ResultStore(engine, upgrade=False)
    with engine.connect():  # open the pooled connection before the clock starts
        pass
    checkpointer = wal_checkpointer(engine)
    assert checkpointer is not None
    clock = Clock()
    for result in results:
        store.ingest(result)
    checkpointer.flush()  # the clock includes the last checkpoint the thread runs
    seconds = clock.stop()
    engine.dispose()
    return seconds


def prepare_all(results: Sequence[RunResult]) -> tuple[list[PreparedResult], tuple[float, float]]:
    """The results as a worker prepares them for a SQLite store (``ResultStore.prepare``: the trace
    checked and encoded, its INSERTs built, no database work), and the (wall, CPU) seconds it took."""
    from db.ingest import prepare

    clock = Clock()
    prepared = [prepare(r, "sqlite") for r in results]
    return prepared, clock.stop()


def file_bytes_per_sample(folder: Path, results: list[RunResult]) -> float:
    """SQLite file bytes per stored sample: the runs ingested with their traces, minus the same
    runs without them (WAL checkpointed into the file first)."""
    import dataclasses

    from db.store import ResultStore

    sizes = {}
    for name, keep in (("bytes-with", True), ("bytes-without", False)):
        path, engine = fresh_db(folder, name, len(results), runs=False)
        store = ResultStore(engine, upgrade=False)
        for result in results:
            store.ingest(result if keep else dataclasses.replace(result, trace={}))
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        sizes[keep] = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())
    n = sum(len(r.trace.get("t_s", ())) for r in results)
    return round((sizes[True] - sizes[False]) / n, 2)


def _connect(path: str) -> tuple[sqlite3.Connection, Any]:
    """A plain sqlite3 connection with the settings the project's ingest writes under (WAL,
    synchronous=NORMAL, the checkpoint left to a ``db.checkpoint.WalCheckpointer``, foreign-key
    lookups off as ``ResultStore.ingest`` turns them off), and that checkpointer."""
    from db.checkpoint import BACKSTOP_PAGES, WalCheckpointer

    con = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "busy_timeout=60000", "foreign_keys=OFF", "synchronous=NORMAL",
                   f"wal_autocheckpoint={BACKSTOP_PAGES}"):  # fmt: skip
        con.execute(f"PRAGMA {pragma}")
    return con, WalCheckpointer(path)


def sample_rows(run_id: int, trace: dict[str, list[Any]]) -> Iterator[tuple[Any, ...]]:
    """One tuple per sample: (run_id, source, *SAMPLE_COLUMNS), for per-row inserts."""
    from db.records import SAMPLE_COLUMNS

    n = len(trace["t_s"])
    return zip([run_id] * n, [SOURCE] * n, *(trace[c] for c in SAMPLE_COLUMNS), strict=True)


def _time_transactions(
    con: sqlite3.Connection, checkpointer: Any, writes: Sequence[Callable[[], Any]]
) -> tuple[float, float]:
    """(wall, CPU) seconds to run each write in a transaction of its own, the WAL checkpointed by
    ``checkpointer`` after each commit and its last checkpoint inside the clock; closes both."""
    clock = Clock()
    for write in writes:
        con.execute("BEGIN")
        write()
        con.execute("COMMIT")
        checkpointer.notify()
    checkpointer.flush()
    seconds = clock.stop()
    checkpointer.close()
    con.close()
    return seconds


def time_raw(folder: Path, traces: list[dict[str, list[Any]]]) -> tuple[float, float]:
    """(wall, CPU) seconds for sqlite3 ``executemany`` of prepared tuples, a transaction per run,
    under the project's settings (``_connect``)."""
    from db.records import SAMPLE_COLUMNS

    path = _row_db(folder, "raw", len(traces))
    rows = [list(sample_rows(i + 1, t)) for i, t in enumerate(traces)]
    names = ("run_id", "source", *SAMPLE_COLUMNS)
    sql = f"INSERT INTO {ROW_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    con, checkpointer = _connect(path)
    return _time_transactions(con, checkpointer, [functools.partial(con.executemany, sql, r) for r in rows])


def time_engine(folder: Path, traces: list[dict[str, list[Any]]]) -> tuple[float, float]:
    """(wall, CPU) seconds for SQLite alone: ``INSERT INTO`` the row table ``SELECT`` from an
    in-memory temporary table already holding the samples, a transaction per run, under the
    project's settings (``_connect``). No Python, no binding: what a row per sample (table and
    index) costs SQLite on this machine."""
    from db.records import SAMPLE_COLUMNS

    path = _row_db(folder, "engine", len(traces))
    con, checkpointer = _connect(path)
    con.execute("PRAGMA temp_store=MEMORY")
    names = ("run_id", "source", *SAMPLE_COLUMNS)
    con.execute(f"CREATE TEMP TABLE src ({', '.join(names)})")
    bounds = [0]
    con.execute("BEGIN")
    for i, t in enumerate(traces):
        con.executemany(f"INSERT INTO src VALUES ({', '.join('?' * len(names))})", sample_rows(i + 1, t))
        bounds.append(bounds[-1] + len(t["t_s"]))
    con.execute("COMMIT")
    sql = f"INSERT INTO {ROW_TABLE} ({', '.join(names)}) SELECT * FROM src WHERE rowid BETWEEN ? AND ?"
    writes = [functools.partial(con.execute, sql, (a + 1, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
    return _time_transactions(con, checkpointer, writes)


def time_orm(folder: Path, traces: list[dict[str, list[Any]]]) -> tuple[float, float]:
    """(wall, CPU) seconds for ``Session.add_all`` of one ORM object per sample (the row table)
    and a commit per run."""
    from sqlalchemy.orm import Session

    from db.engine import make_engine

    path = _row_db(folder, "orm", len(traces))
    engine = make_engine(f"sqlite:///{path}")
    Row = _row_class()
    clock = Clock()
    with Session(engine) as session:
        for i, t in enumerate(traces):
            names = list(t)
            session.add_all([Row(run_id=i + 1, source=SOURCE, **dict(zip(names, row, strict=True)))
                             for row in zip(*t.values(), strict=True)])  # fmt: skip
            session.commit()
    seconds = clock.stop()
    engine.dispose()
    return seconds


@functools.cache
def _row_class() -> Any:
    """An ORM class on ``ROW_TABLE`` (its own metadata: never part of the project's schema)."""
    from sqlalchemy import Float, Integer, String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from db.records import SAMPLE_COLUMNS

    class RowBase(DeclarativeBase):
        pass

    kinds: dict[str, Any] = {"device": Integer, "epoch": Integer, "phase": String(16)}
    attrs: dict[str, Any] = {
        "__tablename__": ROW_TABLE,
        "id": mapped_column(Integer, primary_key=True),
        "run_id": mapped_column(Integer),
        "source": mapped_column(String(20)),
        "__annotations__": {"id": Mapped[int], "run_id": Mapped[int], "source": Mapped[str]},
    }
    for c in SAMPLE_COLUMNS:
        attrs[c] = mapped_column(kinds.get(c, Float), nullable=True)
        attrs["__annotations__"][c] = Mapped[Any]
    return type("RowSample", (RowBase,), attrs)


def time_postgresql(url: str, traces: list[dict[str, list[Any]]]) -> dict[str, Any]:
    """The project's series and points (``insert_samples``) against psycopg ``executemany`` of tuples into the row
    table, each in a fresh schema."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from db.engine import make_engine
    from db.ingest import insert_samples
    from db.migrate import upgrade
    from db.records import SAMPLE_COLUMNS

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    n = sum(len(t["t_s"]) for t in traces)
    figures: dict[str, Any] = {"samples": n, "runs": len(traces)}

    def schema_url(schema: str) -> str:
        parsed = make_url(url)
        options = " ".join(filter(None, [parsed.query.get("options"), f"-csearch_path={schema}"]))  # type: ignore[list-item]
        return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)

    def in_fresh_schema(write: Callable[[Any, int, dict[str, list[Any]]], None]) -> float:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        engine = make_engine(schema_url(schema))
        try:
            upgrade(engine)
            with engine.begin() as conn:  # the runs the samples belong to
                seed_campaign(conn, len(traces), runs=True)
            began = time.perf_counter()
            for i, t in enumerate(traces):
                with engine.begin() as conn:
                    write(conn, i + 1, t)
            return time.perf_counter() - began
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))

    def copy(conn: Any, run_id: int, t: dict[str, list[Any]]) -> None:
        insert_samples(conn, run_id, SOURCE, t)

    names = ("run_id", "source", *SAMPLE_COLUMNS)
    sql = f"INSERT INTO {ROW_TABLE} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"

    def executemany(conn: Any, run_id: int, t: dict[str, list[Any]]) -> None:
        if run_id == 1:
            _row_class().metadata.create_all(conn)
        conn.connection.dbapi_connection.cursor().executemany(sql, list(sample_rows(run_id, t)))

    copy_s = in_fresh_schema(copy)  # the project's path (series, and points by COPY)
    many_s = in_fresh_schema(executemany)
    admin.dispose()
    figures.update(project_samples_per_s=round(n / copy_s), executemany_samples_per_s=round(n / many_s),
                   project_to_executemany_ratio=round(many_s / copy_s, 2))  # fmt: skip
    return figures


def _timed(label: str, rep: int, measure: Callable[[], tuple[float, float]], n: int) -> tuple[float, float]:
    wall, cpu = measure()
    print(
        f"{label:8s} rep {rep + 1}: {n / wall:12,.0f} samples/s ({wall:.2f} s, CPU {cpu:.2f} s)", flush=True
    )
    return wall, cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=1_000_000, help="trace samples ingested per repetition"
    )
    parser.add_argument("--runs", type=int, default=20, help="runs the samples are split into")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the project and raw conditions")
    parser.add_argument(
        "--orm-samples", type=int, default=100_000, help="samples for the (slow) ORM baseline"
    )
    parser.add_argument("--pg-url", default=os.environ.get("CAMPAIGN_TEST_PG_URL"),
                        help="PostgreSQL URL for the PostgreSQL figures (default: $CAMPAIGN_TEST_PG_URL)")  # fmt: skip
    parser.add_argument("--pg-samples", type=int, default=200_000)
    parser.add_argument("--dir", default=None, help="folder for the SQLite files (default: a temporary one)")
    args = parser.parse_args(argv)

    began = time.perf_counter()
    trace = nvml_trace(args.samples, seed=0)
    traces = split(trace, args.runs)
    results = [result_for(f"t{i}", t, phase_summary(t)) for i, t in enumerate(traces)]
    orm_traces = split(
        {k: v[: args.orm_samples] for k, v in trace.items()},
        max(1, args.runs * args.orm_samples // args.samples),
    )
    n = args.samples
    load_before = os.getloadavg()[0]
    timings: dict[str, list[tuple[float, float]]] = {"project": [], "one_process": [], "prepare": [], "raw": [],
                                                     "engine": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        for rep in range(args.reps):  # interleaved, so that a change in the machine's load hits all
            prepared, took = prepare_all(results)
            timings["prepare"].append(took)
            timings["project"].append(_timed("project", rep, functools.partial(time_project, folder, prepared), n))
            del prepared  # the parameter lists of a million samples: not kept beside the next condition
            timings["one_process"].append(_timed("1 proc", rep, lambda: time_project(folder, results), n))
            timings["raw"].append(_timed("raw", rep, lambda: time_raw(folder, traces), n))
            timings["engine"].append(_timed("engine", rep, lambda: time_engine(folder, traces), n))
        bytes_per_sample = file_bytes_per_sample(folder, results)
        orm_s, orm_cpu_s = _timed("orm", 0, lambda: time_orm(folder, orm_traces), args.orm_samples)
    best = {k: min(w for w, _ in v) for k, v in timings.items()}
    cpu = {k: min(c for _, c in v) for k, v in timings.items()}
    project, raw, engine = n / best["project"], n / best["raw"], n / best["engine"]
    one_process = n / best["one_process"]
    orm = args.orm_samples / orm_s
    figures: dict[str, Any] = {
        "samples": n,
        "runs": args.runs,
        "reps": args.reps,
        "project_samples_per_s": round(project),
        "raw_samples_per_s": round(raw),
        "orm_samples_per_s": round(orm),
        "project_to_raw_ratio": round(project / raw, 3),
        # prepare and ingest in one process, one after the other: a single worker's own pace
        "one_process_samples_per_s": round(one_process),
        "project_to_orm_ratio": round(project / orm, 1),
        "orm_samples": args.orm_samples,
        "orm_note": f"ORM baseline on the first {args.orm_samples} samples only; its rate is per sample",
        "project_path": ("ResultStore.ingest per run of results as the worker prepares them on its node before it "
                         "stores them (ResultStore.prepare: the trace checked and encoded, its INSERTs built; timed "
                         "apart: cpu_seconds.prepare), as the raw baseline's tuples are built off the clock: run rows, "
                         "series and points (each value a residual in whole quanta, two samples a row), commits; "
                         "FK lookups off; WAL checkpointed by a thread, last checkpoint timed"),
        "one_process_path": "ResultStore.ingest per run of results not prepared: prepare and store in one process",
        "project_bytes_per_sample": bytes_per_sample,
        "raw_path": (f"sqlite3 executemany of prepared tuples, one INSERT per sample into a row per sample ({ROW_TABLE}, "
                     "the layout before revision 0009), same settings (WAL thread, FK lookups off)"),
        # Nested figures (goals, CPU time, SQLite alone) are context, not the measured path's rate.
        "goal": {"samples_per_s": GOAL_SAMPLES_PER_S, "raw_ratio": GOAL_RAW_RATIO},
        "meets_goal": project >= GOAL_SAMPLES_PER_S and project / raw >= GOAL_RAW_RATIO,
        # CPU seconds of this process (SQLite included), best repetition: what the machine's
        # other load does not inflate
        "cpu_seconds": {"project": round(cpu["project"], 2), "prepare": round(cpu["prepare"], 2),
                        "one_process": round(cpu["one_process"], 2), "raw": round(cpu["raw"], 2),
                        "sqlite_alone": round(cpu["engine"], 2), "orm": round(orm_cpu_s, 2)},
        # INSERT ... SELECT from an in-memory table into the row table: SQLite's own cost of a row
        # per sample, without Python (the project writes a row per two samples, so it may pass it)
        "sqlite_alone": {"samples_per_s": round(engine), "project_fraction": round(project / engine, 3),
                         "project_fraction_cpu": round(cpu["engine"] / cpu["project"], 3)},
        "sqlite_version": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip
    if args.pg_url:
        pg_traces = split(
            {k: v[: args.pg_samples] for k, v in trace.items()}, max(1, args.runs * args.pg_samples // n)
        )
        figures["postgresql"] = time_postgresql(args.pg_url, pg_traces)
        print(f"postgres series+points {figures['postgresql']['project_samples_per_s']:,} samples/s, "
              f"executemany {figures['postgresql']['executemany_samples_per_s']:,} samples/s")  # fmt: skip
    figures["wall_s"] = round(time.perf_counter() - began, 1)
    print(f"prepare (on the worker) {best['prepare']:.2f} s, CPU {cpu['prepare']:.2f} s; prepare and store in one "
          f"process {one_process:,.0f} samples/s = {one_process / raw:.2f} x raw")
    print(f"project {project:,.0f} samples/s = {project / raw:.2f} x raw sqlite3 ({raw:,.0f}/s) "
          f"= {project / orm:.0f} x ORM ({orm:,.0f}/s) = {project / engine:.0%} of SQLite alone ({engine:,.0f}/s); "
          f"goal {GOAL_SAMPLES_PER_S:,}/s and {GOAL_RAW_RATIO:.0%} of raw")  # fmt: skip
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
