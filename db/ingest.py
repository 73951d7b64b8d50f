"""The write path for results: a run's result file becomes rows, idempotently, in one transaction.

Trace samples go in through a bulk path (DB-API executemany on tuples), never as ORM objects.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, or_, select, update

from db.schema import Campaign, Epoch, Hardware, Run, RunPhase, TraceSample, Trial

SAMPLE_COLUMNS = (
    "device", "t_s", "phase", "epoch", "power_w", "energy_j", "gpu_util", "mem_util", "mem_used_mb",
    "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "power_limit_w", "cpu_util", "rss_mb",
)  # fmt: skip


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def insert_samples(conn: Connection, run_id: int, source: str, trace: dict[str, Sequence[Any]]) -> int:
    """Bulk-insert a columnar trace (``SAMPLE_COLUMNS`` -> equal-length sequences) for a run.

    Missing columns are stored as NULL. Returns the number of samples written."""
    n = len(trace.get("t_s", ()))
    if n == 0:
        return 0
    nulls = [None] * n
    cols = [trace.get(c, nulls) for c in SAMPLE_COLUMNS]
    rows = list(zip([run_id] * n, [source] * n, *cols, strict=True))
    names = ("run_id", "source", *SAMPLE_COLUMNS)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {TraceSample.__tablename__} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    conn.exec_driver_sql(sql, rows)  # type: ignore[arg-type]
    return n


def hardware_id(conn: Connection, hw: dict[str, Any]) -> int | None:
    """The id of this hardware description, inserting it the first time it is seen.

    Safe when workers of one node store their first results at once: the insert does nothing
    on a fingerprint that appeared meanwhile, and the row is read back."""
    if not hw:
        return None
    import hashlib

    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    blob = json.dumps(hw, sort_keys=True, default=str)
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


def ingest_result(conn: Connection, result: dict[str, Any]) -> bool:
    """Store one run's result (as written by the worker) inside the caller's transaction.

    Identified by (campaign, trial_key, attempt). A run already stored as done is left alone
    and False is returned; otherwise the run's rows are (re)written and the trial's state set.
    """
    trial = conn.execute(
        select(Trial.id, Trial.state, Trial.worker_id)
        .join(Campaign, Campaign.id == Trial.campaign_id)
        .where(Campaign.name == result["campaign"], Trial.trial_key == result["trial_key"])
    ).one_or_none()
    if trial is None:
        raise LookupError(f"trial {result['trial_key']} of campaign {result['campaign']!r} is not in this database")
    trial_id = trial.id
    existing = conn.execute(
        select(Run.id, Run.status).where(Run.trial_id == trial_id, Run.attempt == result["attempt"])
    ).one_or_none()
    if existing is not None and existing.status in ("done", "superseded"):
        return False
    status = result["status"]
    if status == "done" and trial.state == "done":
        # Another attempt finished this trial first (this one was declared stale but lived on):
        # keep the measurement for the record, never as a second result.
        status = "superseded"
    values = dict(
        status=status,
        started_at=_ts(result["started_at"]),
        ended_at=_ts(result.get("ended_at")),
        heartbeat_at=_ts(result.get("ended_at")),
        host=result["host"],
        worker_id=result["worker_id"],
        scheduler_job=result.get("scheduler_job"),
        scheduler_partition=result.get("scheduler_partition"),
        power_source=result.get("power_source"),
        energy_method=result.get("energy_method"),
        dataset=result.get("dataset"),
        device=result.get("device"),
        hardware_id=hardware_id(conn, result.get("hardware") or {}),
        error=result.get("error"),
        duration_s=result.get("duration_s"),
        energy_j=result.get("energy_j"),
        idle_power_w=result.get("idle_power_w"),
        valid_accuracy=result.get("valid_accuracy"),
        test_accuracy=result.get("test_accuracy"),
        train_images_per_s=result.get("train_images_per_s"),
        train_images=result.get("train_images"),
        trace_anchor_unix_s=result.get("trace_anchor_unix_s"),
        result_path=result.get("result_path"),
    )
    if existing is None:
        run_id = int(
            conn.execute(insert(Run).values(trial_id=trial_id, attempt=result["attempt"], **values)).inserted_primary_key[0]  # type: ignore[index]
        )
    else:
        run_id = int(existing.id)
        conn.execute(update(Run).where(Run.id == run_id).values(**values))
        for table in (Epoch, RunPhase, TraceSample):
            conn.execute(delete(table).where(table.run_id == run_id))
    _insert_many(conn, Epoch, run_id, result.get("epochs", ()))
    _insert_many(conn, RunPhase, run_id, result.get("phases", ()))
    insert_samples(conn, run_id, result.get("power_source") or "unknown", result.get("trace") or {})
    if status == "superseded":
        return True
    state = {"done": "done", "failed": "failed", "cancelled": "cancelled"}.get(status, "failed")
    # A later attempt may already have finished the trial: never move a done trial backwards.
    # Nor take a trial away from another worker that holds it now.
    conn.execute(
        update(Trial)
        .where(Trial.id == trial_id, Trial.state != "done")
        .where(or_(Trial.worker_id.is_(None), Trial.worker_id == result["worker_id"]))
        .values(state=state, worker_id=None, updated_at=dt.datetime.now(dt.UTC))
    )
    return True


def _insert_many(conn: Connection, table: Any, run_id: int, rows: Iterable[dict[str, Any]]) -> None:
    payload = [{**r, "run_id": run_id} for r in rows]
    if payload:
        conn.execute(insert(table), payload)
