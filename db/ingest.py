"""The write path for results: a run's result (``db.records.RunResult``, read from its file by
``RunResult.from_json``) becomes rows, idempotently, in one transaction.

Trace samples never go in as ORM objects but as series and points (``db.traces``), one batch per
run, inside the caller's transaction: the samples of each device are cut where the phase or the
epoch changes, each measured value is stored in whole quanta as a small residual from its series'
base, and the points go in through multi-row ``INSERT`` statements run by the DB-API's
``executemany`` (SQLite; the columns that hold one value throughout bound once per statement) or
``COPY ... FROM STDIN`` in binary format (PostgreSQL, psycopg 3). ``trace_sample`` is a view over
them in plain SQL (``db.views.trace_sample_sql``). The WAL checkpoint that writes the pages a
second time runs on the engine's checkpoint thread (``db.checkpoint``), not in the commit.

One rule on every backend: NaN is stored as NULL (SQLite cannot store NaN; PostgreSQL is made to
agree, so that queries give the same answers on both). Infinities are kept.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from db import traces
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
    TraceSeries,
    Trial,
)

log = logging.getLogger(__name__)



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


def encode_trace(trace: Mapping[str, Sequence[Any]] | None, dialect: str | None = None) -> traces.Encoded | None:
    """A columnar trace encoded for ``insert_samples`` (None when it has no sample), with its SQLite
    INSERTs built too for ``dialect`` "sqlite". ValueError (one line) for a column the schema does
    not have, columns of unequal length, a column that holds something other than numbers, or a
    sample without a device, phase, time or power."""
    n, cols = trace_columns(trace or {})
    if n == 0:
        return None
    enc = traces.encode(cols, n)
    if dialect == "sqlite":
        traces.sqlite_batches(enc)
    return enc


def insert_samples(conn: Connection, run_id: int, source: str,
                   trace: Mapping[str, Sequence[Any]] | traces.Encoded | None) -> int:
    """Write a run's trace as series and points (``db.traces``), inside the caller's transaction;
    ``source`` goes into every series. ``trace``: columns (``SAMPLE_COLUMNS`` -> equal-length
    sequences), or encoded already by ``encode_trace``.

    Missing columns are stored as NULL, NaN as NULL, each value to its quantum. Returns the number
    of samples written. ValueError (one line) as ``encode_trace``."""
    enc = trace if isinstance(trace, traces.Encoded) or trace is None else encode_trace(trace, conn.dialect.name)
    if enc is None:
        return 0
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        traces.write(conn, run_id, source, enc, enc.n)
    except dbapi_error as exc:  # the driver's own error: raised as SQLAlchemy's, like every other statement
        what = f"bulk write of {enc.n} samples of run {run_id} into trace_point"
        raise DBAPIError.instance(what, None, exc, dbapi_error, dialect=conn.dialect) from exc
    log.debug("run %s: %d trace samples written (%s)", run_id, enc.n, conn.dialect.name)
    return enc.n


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class PreparedResult:
    """A run's result with its trace encoded (``prepare``): what ``ingest`` writes. The work that
    needs no database (checking and encoding the samples, building the INSERTs) is done once,
    before the transaction, so that the database's write lock is held only for the writes and a
    result retried while the database is away is not encoded again."""

    result: RunResult
    trace: traces.Encoded | None
    dialect: str | None


def prepare(result: RunResult | PreparedResult, dialect: str | None = None) -> PreparedResult:
    """``result`` ready for ``ingest`` into a database of ``dialect`` (its SQLite INSERTs built
    too where that is "sqlite"). ValueError (one line) for a trace the database cannot take, before
    anything is written."""
    if isinstance(result, PreparedResult):
        if result.dialect == dialect or result.trace is None:
            return result
        result = result.result
    return PreparedResult(result, encode_trace(result.trace, dialect), dialect)


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


def ingest(engine: Engine, result: RunResult | PreparedResult) -> bool:
    """Store one run's result idempotently in a transaction of its own (see ``ingest_result``).

    The trace is encoded first, outside the transaction (``prepare``; a result prepared already
    is not encoded again), so that a bad trace is refused before anything is written and the
    database is locked only while the rows go in.

    Exactly once: when two attempts of a trial store a done result at the same moment, the
    database's unique index (one done run per trial) refuses the second one's transaction; it is
    then stored again, once, and finds the first one's result: it becomes ``superseded``.

    On SQLite the per-row foreign-key lookups are switched off for this transaction: every
    row written references the run that the same transaction has just looked up or created,
    so they are redundant, and on a long trace they are a fifth of the insert cost."""
    prepared = prepare(result, engine.dialect.name)
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:  # only outside a transaction does SQLite honour this pragma
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            try:
                with conn.begin():
                    return ingest_result(conn, prepared)
            except IntegrityError as exc:
                if not _lost_race(exc):
                    raise
                log.info("trial %s attempt %d: stored again after a concurrent write of its trial",
                         prepared.result.trial_key, prepared.result.attempt)
            with conn.begin():
                return ingest_result(conn, prepared)
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


def ingest_result(conn: Connection, result: RunResult | PreparedResult) -> bool:
    """Store one run's result (as written by the worker; or ``prepare``d) inside the caller's transaction.

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
    prepared = prepare(result, conn.dialect.name)
    result = prepared.result
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
    run_id = _write_run(conn, trial_id, existing, prepared, status, error)
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


def _write_run(conn: Connection, trial_id: int, existing: Any, prepared: PreparedResult, status: RunStatus,
               error: str | None) -> int:
    """The run's row (inserted, or the claimed row rewritten) and its child rows; its id."""
    result = prepared.result
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
        for table in (Epoch, RunPhase, TraceSeries, CarbontrackerEpoch, CarbontrackerRun, LayerMeasurement):
            conn.execute(delete(table).where(table.run_id == run_id))
    _insert_records(conn, Epoch, run_id, result.epochs)
    # run_phase: the worker's per-phase summary (jobs.protocol.summarise), pre-aggregated here so
    # that per-run questions never scan trace_sample.
    _insert_records(conn, RunPhase, run_id, result.phases)
    insert_samples(conn, run_id, result.power_source or "unknown", prepared.trace)
    insert_carbontracker(conn, run_id, result.carbontracker)
    # a workload's own rows (the layer workload's windows)
    insert_layer_rows(conn, run_id, result.records.get("layer_measurement") or ())
    return run_id


def _insert_records(conn: Connection, table: Any, run_id: int, records: Iterable[Any]) -> None:
    """Rows of ``table`` for the run from typed records (dataclasses named like its columns)."""
    payload = [{**dataclasses.asdict(r), "run_id": run_id} for r in records]
    if payload:  # a Core insert of the table: the ORM's bulk path costs more per row than SQLite does
        conn.execute(insert(getattr(table, "__table__", table)), payload)
