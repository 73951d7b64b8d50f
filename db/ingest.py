"""The write path for results: a run's result (``db.records.RunResult``, read from its file by
``RunResult.from_json``) becomes rows, idempotently, in one transaction.

Trace samples never go in as ORM objects but through a bulk path, one batch per run, inside the
caller's transaction:

- SQLite: multi-row ``INSERT ... VALUES (...), (...)`` statements of ``_SQLITE_ROWS`` rows run by
  the DB-API ``executemany``, with the run's constant columns (run id, source, and any column
  that holds one value for the whole batch, such as a single GPU's index or its power limit)
  bound once per statement instead of once per row, and the varying columns' parameters laid out
  column by column (each statement's parameters are slices of the columns, copied, not values
  interleaved one by one). Per-row statements spend more CPU time in the driver's per-statement
  work than in SQLite itself (see ``benchmarks/ingest.py``). The WAL checkpoint that writes the
  pages a second time runs on the engine's checkpoint thread (``db.checkpoint``), not in the
  commit.
- PostgreSQL (psycopg 3): ``COPY trace_sample (...) FROM STDIN`` in binary format, on the same
  connection and so in the same transaction.
- Any other dialect: ``executemany`` on one tuple per sample.

Values round-trip exactly (floats are bound or copied as doubles), with one rule on every
backend: NaN is stored as NULL (SQLite cannot store NaN; PostgreSQL is made to agree, so that
queries give the same answers on both). Infinities are kept.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from db.carbon import insert_carbontracker
from db.layers import insert_layer_rows
from db.records import (
    FINAL_RUN_STATUSES,
    SAMPLE_COLUMNS,
    TRIAL_STATE_OF_RUN,
    RunResult,
    RunStatus,
    TrialState,
)
from db.schema import (
    ONE_DONE_RUN,
    Campaign,
    CarbontrackerEpoch,
    CarbontrackerRun,
    Epoch,
    Hardware,
    LayerMeasurement,
    Run,
    RunPhase,
    TraceSample,
    Trial,
)

log = logging.getLogger(__name__)

# PostgreSQL binary COPY types of ("run_id", "source", *SAMPLE_COLUMNS), as in db/schema.py.
_PG_TYPES = ("int4", "text", "int4", "float8", "text", "int4", *["float8"] * 11)
_FLOAT_COLUMNS = frozenset(c for c, t in zip(SAMPLE_COLUMNS, _PG_TYPES[2:], strict=True) if t == "float8")

# Rows per SQLite INSERT statement: 64 rows x 15 columns stays under 999 bound parameters, the
# limit of SQLite builds before 3.32; larger statements gain nothing measurable.
_SQLITE_ROWS = 64
_SQLITE_MAX_PARAMS = 999
# Page cache the SQLite connection may use while it writes a trace (KiB; the setting is given back
# afterwards), so that fewer of the table's and index's pages are spilled to the WAL mid-transaction
# and written again (a few per cent; no effect on durability).
_SQLITE_CACHE_KIB = 256 * 1024


_PLAIN_TYPES = frozenset((int, float, str, type(None)))


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def trace_columns(trace: Mapping[str, Sequence[Any]]) -> tuple[int, list[Sequence[Any] | None]]:
    """The number of samples of a columnar trace and its columns in ``SAMPLE_COLUMNS`` order
    (None for a column the trace lacks, stored as NULL).

    Raises ValueError for a column the schema does not have (its values would be lost) and for
    columns of unequal length."""
    unknown = sorted(set(trace) - set(SAMPLE_COLUMNS))
    if unknown:
        raise ValueError(
            f"trace columns {unknown} have no column in trace_sample (known: {', '.join(SAMPLE_COLUMNS)}); "
            "add them to db/schema.py with a migration before recording them"
        )
    cols: list[Sequence[Any] | None] = []
    n: int | None = None
    for name in SAMPLE_COLUMNS:
        col = trace.get(name)
        if col is not None:
            col = _plain(col)
            if n is None:
                n = len(col)
            elif len(col) != n:
                lengths = {c: len(v) for c, v in trace.items()}
                raise ValueError(
                    f"trace columns differ in length: {lengths}; every column needs one value per sample"
                )
        cols.append(col)
    return n or 0, cols


def _plain(col: Any) -> Sequence[Any]:
    """A column as a list or tuple of Python values: numpy arrays (and lists whose probed values
    are numpy scalars) are converted, since sqlite3 would store a numpy integer as a BLOB."""
    if hasattr(col, "tolist"):
        return col.tolist()
    if not isinstance(col, (list, tuple)):
        col = list(col)
    if col and not all(type(col[i]) in _PLAIN_TYPES for i in (0, len(col) // 2, -1)):
        col = [x.item() if hasattr(x, "item") else x for x in col]
    return col


def insert_samples(conn: Connection, run_id: int, source: str, trace: Mapping[str, Sequence[Any]]) -> int:
    """Bulk-insert a columnar trace (``SAMPLE_COLUMNS`` -> equal-length sequences) for a run,
    inside the caller's transaction; ``source`` goes into every sample's ``source`` column.

    Missing columns are stored as NULL, NaN as NULL. Returns the number of samples written."""
    n, cols = trace_columns(trace)
    if n == 0:
        return 0
    dialect = conn.dialect.name
    dbapi = conn.connection.dbapi_connection
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        if dialect == "sqlite":
            _insert_sqlite(dbapi, run_id, source, cols, n)
        elif dialect == "postgresql" and conn.dialect.driver == "psycopg":
            _copy_postgresql(dbapi, run_id, source, _nan_to_null(cols))
        else:
            _insert_executemany(conn, run_id, source, _nan_to_null(cols), n)
    except dbapi_error as exc:  # the driver's own error: raised as SQLAlchemy's, like every other statement
        what = f"bulk write of {n} samples of run {run_id} into {TraceSample.__tablename__}"
        raise DBAPIError.instance(what, None, exc, dbapi_error, dialect=conn.dialect) from exc
    log.debug("run %s: %d trace samples written (%s)", run_id, n, dialect)
    return n


def _constant(col: Sequence[Any]) -> bool:
    """Whether every value of a (non-empty) column equals its first, checked cheaply: three probes
    first, the full count only for a column that passes them."""
    first = col[0]
    return bool(first == col[-1] and first == col[len(col) // 2] and col.count(first) == len(col))


def _insert_sqlite(dbapi: Any, run_id: int, source: str, cols: list[Sequence[Any] | None], n: int) -> None:
    # Constant columns become numbered parameters bound once per statement (?1 .. ?k); the others
    # follow column by column (?k+1 .. ?k+rows are the first varying column of the statement's
    # rows, and so on), so that a statement's parameters are the constants and one slice of each
    # column: list slicing copies, where interleaving the columns row by row costs a Python step
    # per value. SQLite stores a NaN as NULL by itself.
    const_names = ["run_id", "source"]
    const_values: list[Any] = [run_id, source]
    var_names: list[str] = []
    var_cols: list[Sequence[Any]] = []
    for name, col in zip(SAMPLE_COLUMNS, cols, strict=True):
        if col is None or _constant(col):
            const_names.append(name)
            const_values.append(None if col is None else col[0])
        else:
            var_names.append(name)
            var_cols.append(col if isinstance(col, list) else list(col))
    k, v = len(const_values), len(var_names)
    columns = ", ".join([*const_names, *var_names])
    consts = ", ".join(f"?{i}" for i in range(1, k + 1))

    def statement(rows: int) -> str:
        values = (
            "(" + ", ".join([consts, *(f"?{k + j * rows + r + 1}" for j in range(v))]) + ")" for r in range(rows)
        )
        return f"INSERT INTO {TraceSample.__tablename__} ({columns}) VALUES {', '.join(values)}"

    def parameters(start: int, stop: int) -> list[Any]:
        params = const_values.copy()
        for col in var_cols:
            params += col[start:stop]
        return params

    per_statement = max(1, min(_SQLITE_ROWS, (_SQLITE_MAX_PARAMS - k) // max(v, 1)))
    whole = n // per_statement * per_statement
    cur = dbapi.cursor()
    cache_size = int(cur.execute("PRAGMA cache_size").fetchone()[0])  # < 0: KiB, > 0: pages
    grow = -cache_size < _SQLITE_CACHE_KIB
    try:
        if grow:
            cur.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
        if v == 0:  # every column constant: one row of parameters per sample
            cur.executemany(statement(1), itertools.repeat(const_values, n))
            return
        cur.executemany(
            statement(per_statement),
            (parameters(a, a + per_statement) for a in range(0, whole, per_statement)),
        )
        if whole < n:
            cur.execute(statement(n - whole), parameters(whole, n))
    finally:
        if grow:  # the setting is the connection's: the pool gets the connection back as it was
            cur.execute(f"PRAGMA cache_size = {cache_size}")
        cur.close()


def _copy_postgresql(dbapi: Any, run_id: int, source: str, cols: list[Sequence[Any] | None]) -> None:
    names = ", ".join(("run_id", "source", *SAMPLE_COLUMNS))
    rows = zip(itertools.repeat(run_id), itertools.repeat(source),
               *(itertools.repeat(None) if c is None else c for c in cols))  # fmt: skip
    with (
        dbapi.cursor() as cur,
        cur.copy(f"COPY {TraceSample.__tablename__} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(list(_PG_TYPES))
        for row in rows:
            copy.write_row(row)


def _insert_executemany(
    conn: Connection, run_id: int, source: str, cols: list[Sequence[Any] | None], n: int
) -> None:
    names = ("run_id", "source", *SAMPLE_COLUMNS)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {TraceSample.__tablename__} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    rows = list(zip(itertools.repeat(run_id, n), itertools.repeat(source, n),
                    *(itertools.repeat(None, n) if c is None else c for c in cols), strict=True))  # fmt: skip
    conn.exec_driver_sql(sql, rows)


def _nan_to_null(cols: list[Sequence[Any] | None]) -> list[Sequence[Any] | None]:
    """The columns with NaN replaced by None (as SQLite stores it). A column is copied only when
    it holds a NaN: its sum without None and zeros is NaN then (or when it holds both
    infinities), which a C loop finds; the exact test runs only in that case."""
    out = list(cols)
    for i, (name, col) in enumerate(zip(SAMPLE_COLUMNS, cols, strict=True)):
        if col is None or name not in _FLOAT_COLUMNS:
            continue
        try:
            total = sum(filter(None, col))
        except TypeError:  # not all numbers: leave it to the database to refuse or convert
            continue
        if isinstance(total, float) and math.isnan(total):
            out[i] = [None if isinstance(x, float) and math.isnan(x) else x for x in col]
    return out


def hardware_id(conn: Connection, hw: Mapping[str, Any]) -> int | None:
    """The id of this hardware description, inserting it the first time it is seen.

    Safe when workers of one node store their first results at once: the insert does nothing
    on a fingerprint that appeared meanwhile, and the row is read back."""
    if not hw:
        return None
    import hashlib

    upsert: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    blob = json.dumps(dict(hw), sort_keys=True, default=str)
    fp = hashlib.sha256(blob.encode()).hexdigest()[:32]
    found = conn.execute(select(Hardware.id).where(Hardware.fingerprint == fp)).scalar()
    if found is not None:
        return int(found)
    conn.execute(
        upsert(Hardware)
        .values(
            fingerprint=fp,
            host=str(hw.get("host", "?")),
            cpu_model=hw.get("cpu_model"),
            cpu_count=hw.get("cpu_count"),
            ram_gb=hw.get("ram_gb"),
            gpu_name=hw.get("gpu_name"),
            gpu_count=hw.get("gpu_count"),
            details_json=blob,
        )
        .on_conflict_do_nothing(index_elements=["fingerprint"])
    )
    return int(conn.execute(select(Hardware.id).where(Hardware.fingerprint == fp)).scalar_one())


def ingest(engine: Engine, result: RunResult) -> bool:
    """Store one run's result idempotently in a transaction of its own (see ``ingest_result``).

    Exactly once: when two attempts of a trial store a done result at the same moment, the
    database's unique index (one done run per trial) refuses the second one's transaction; it is
    then stored again, once, and finds the first one's result: it becomes ``superseded``.

    On SQLite the per-row foreign-key lookups are switched off for this transaction: every
    row written references the run that the same transaction has just looked up or created,
    so they are redundant, and on a long trace they are a fifth of the insert cost."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # only outside a transaction does SQLite honour this pragma
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            try:
                with conn.begin():
                    return ingest_result(conn, result)
            except IntegrityError as exc:
                if not _lost_race(exc):
                    raise
                log.info("trial %s attempt %d: stored again after a concurrent write of its trial",
                         result.trial_key, result.attempt)
            with conn.begin():
                return ingest_result(conn, result)
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


# What a unique key of the run table says when another writer stored the same trial first: the
# constraint's name (PostgreSQL) or its columns (SQLite).
_RUN_KEYS = (ONE_DONE_RUN, "uq_run_trial_attempt", "UNIQUE constraint failed: run.")


def _lost_race(exc: IntegrityError) -> bool:
    """Whether ``exc`` is a unique key of the run table (a concurrent result of the same trial),
    not a value the database refuses."""
    message = str(exc.orig)
    return any(key in message for key in _RUN_KEYS)


def ingest_result(conn: Connection, result: RunResult) -> bool:
    """Store one run's result (as written by the worker) inside the caller's transaction.

    Identified by (campaign, trial_key, attempt). A run already stored as done or superseded is
    left alone and False is returned; otherwise the run's rows are (re)written and, where this
    attempt may, the trial's state set.

    The rules (a trial has at most one done run, which the database enforces):

    - A done result becomes the trial's result unless another attempt of the trial is already
      done; then it is stored as ``superseded`` (kept, labelled, never counted). A concurrent
      writer that wins the race makes this transaction fail with an IntegrityError (``ingest``
      stores it again, as superseded).
    - A result that is not done, for a run already closed by someone else (declared ``stale``,
      or ``cancelled``), keeps that label and its reason.
    - Only the trial's newest attempt moves the trial, and only while no other worker holds it:
      a late result from an attempt declared stale never takes the trial from the attempt that
      claimed it since. A trial with a done run ends ``done``; a done trial never moves.
    """
    trial = conn.execute(
        select(Trial.id, Trial.state, Trial.worker_id, Trial.attempts)
        .join(Campaign, Campaign.id == Trial.campaign_id)
        .where(Campaign.name == result.campaign, Trial.trial_key == result.trial_key)
    ).one_or_none()
    if trial is None:
        raise LookupError(
            f"trial {result.trial_key} of campaign {result.campaign!r} is not in this database"
        )
    trial_id = trial.id
    existing = conn.execute(
        select(Run.id, Run.status, Run.error).where(Run.trial_id == trial_id, Run.attempt == result.attempt)
    ).one_or_none()
    if existing is not None and existing.status in FINAL_RUN_STATUSES:
        return False
    closed = existing is not None and existing.status in CLOSED_RUN_STATUSES
    status, error = result.status, result.error
    if status == RunStatus.DONE and _other_done_run(conn, trial_id, result.attempt):
        # Another attempt finished this trial first (this one was declared stale but lived on):
        # keep the measurement for the record, never as a second result.
        status = RunStatus.SUPERSEDED
    elif status != RunStatus.DONE and existing is not None and closed:
        status, error = RunStatus(existing.status), existing.error
    run_id = _write_run(conn, trial_id, existing, result, status, error)
    if result.attempt < trial.attempts or (closed and status not in FINAL_RUN_STATUSES):
        return True  # a newer attempt holds (or held) the trial; a closed attempt never reopens it
    state = TrialState.DONE if status in FINAL_RUN_STATUSES else TRIAL_STATE_OF_RUN.get(status, TrialState.FAILED)
    # A done trial never moves backwards; nor is a trial taken from another worker that holds it now.
    conn.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.state != TrialState.DONE)
        .where(or_(Trial.worker_id.is_(None), Trial.worker_id == result.worker_id))
        .values(state=state, worker_id=None, updated_at=dt.datetime.now(dt.UTC))
    )
    log.debug("run %s stored as %s", run_id, status)
    return True


# Run statuses set by someone other than the attempt's worker (a resume, a cancel): a late result
# that is not a measurement keeps them.
CLOSED_RUN_STATUSES = frozenset({RunStatus.STALE, RunStatus.CANCELLED})


def _other_done_run(conn: Connection, trial_id: int, attempt: int) -> bool:
    """Whether another attempt of the trial is stored as done."""
    return conn.execute(
        select(Run.id).where(Run.trial_id == trial_id, Run.status == RunStatus.DONE, Run.attempt != attempt).limit(1)
    ).first() is not None


def _write_run(conn: Connection, trial_id: int, existing: Any, result: RunResult, status: RunStatus,
               error: str | None) -> int:
    """The run's row (inserted, or the claimed row rewritten) and its child rows; its id."""
    values = dict(
        status=status,
        started_at=_ts(result.started_at),
        ended_at=_ts(result.ended_at),
        heartbeat_at=_ts(result.ended_at),
        host=result.host,
        worker_id=result.worker_id,
        scheduler_job=result.scheduler_job,
        scheduler_partition=result.scheduler_partition,
        power_source=result.power_source,
        energy_method=result.energy_method,
        dataset=result.dataset,
        device=result.device,
        hardware_id=hardware_id(conn, result.hardware),
        error=error,
        duration_s=result.duration_s,
        energy_j=result.energy_j,
        energy_above_idle_j=result.energy_above_idle_j,
        energy_uncertainty_j=result.energy_uncertainty_j,
        error_basis=result.error_basis,
        counter_energy_j=result.counter_energy_j,
        integrated_energy_j=result.integrated_energy_j,
        energy_disagreement=result.energy_disagreement,
        flags=",".join(result.flags) or None,
        start_temperature_c=result.start_temperature_c,
        idle_power_w=result.idle_power_w,
        cpu_energy_j=result.cpu_energy_j,
        dram_energy_j=result.dram_energy_j,
        valid_accuracy=result.valid_accuracy,
        test_accuracy=result.test_accuracy,
        train_images_per_s=result.train_images_per_s,
        train_images=result.train_images,
        trace_anchor_unix_s=result.trace_anchor_unix_s,
        result_path=result.result_path,
    )
    if existing is None:
        run_id = int(
            conn.execute(
                insert(Run).values(trial_id=trial_id, attempt=result.attempt, **values)
            ).inserted_primary_key[0]  # type: ignore[index]
        )
    else:
        run_id = int(existing.id)
        conn.execute(update(Run).where(Run.id == run_id).values(**values))
        # A rewritten run loses its old child rows first.
        for table in (Epoch, RunPhase, TraceSample, CarbontrackerEpoch, CarbontrackerRun, LayerMeasurement):
            conn.execute(delete(table).where(table.run_id == run_id))
    _insert_records(conn, Epoch, run_id, result.epochs)
    # run_phase: the worker's per-phase summary (jobs.protocol.summarise), pre-aggregated here so
    # that per-run questions never scan trace_sample.
    _insert_records(conn, RunPhase, run_id, result.phases)
    insert_samples(conn, run_id, result.power_source or "unknown", result.trace)
    insert_carbontracker(conn, run_id, result.carbontracker)
    # a workload's own rows (the layer workload's windows)
    insert_layer_rows(conn, run_id, result.records.get("layer_measurement") or ())
    return run_id


def _insert_records(conn: Connection, table: Any, run_id: int, records: Iterable[Any]) -> None:
    """Rows of ``table`` for the run from typed records (dataclasses named like its columns)."""
    payload = [{**dataclasses.asdict(r), "run_id": run_id} for r in records]
    if payload:
        conn.execute(insert(table), payload)
