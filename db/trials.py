"""The trial state machine: a campaign's trials are created pending, claimed by workers, kept
alive by heartbeats, and put back to pending when their worker died, was requeued or was
cancelled; and the campaign's lifecycle (cancel, delete).

Every transition is a compare-and-set update checked by row count, so two workers can never
claim the same trial and a finished trial is never reopened. A trial released while it already
holds a done run (a late result of an attempt declared stale) becomes done, not pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, case, delete, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from db.errors import CampaignError
from db.process import own as process_identity
from db.read import CampaignNotFound
from db.records import RunStatus, TrialState
from db.schema import (
    Architecture,
    Campaign,
    CampaignBudget,
    CarbontrackerEpoch,
    CarbontrackerRun,
    Epoch,
    EstimateGroup,
    LayerMeasurement,
    Run,
    RunPhase,
    Submission,
    TraceSeries,
    Trial,
)


class CampaignExists(CampaignError, RuntimeError):
    """A campaign of that name is already in the database."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def db_now(dialect: str) -> Any:
    """SQL for the database's current UTC time (millisecond resolution on SQLite)."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M:%f", "now")
    return func.now()


def _as_utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _release(conn: Connection, trial_id: int, worker_id: str | None = None) -> int:
    """Compare-and-set: a running trial (held by ``worker_id`` where given) back to pending, or to
    done where another attempt of it is already done. Returns the rows changed (0 or 1)."""
    has_done = exists().where(Run.trial_id == trial_id, Run.status == RunStatus.DONE)
    q = update(Trial).where(Trial.id == trial_id, Trial.state == TrialState.RUNNING)
    if worker_id is not None:
        q = q.where(Trial.worker_id == worker_id)
    state = case((has_done, TrialState.DONE.value), else_=TrialState.PENDING.value)
    return int(conn.execute(q.values(state=state, worker_id=None, updated_at=utcnow())).rowcount)


# The columns create_campaign fills per trial, in the order of its rows.
TRIAL_COLUMNS = ("campaign_id", "trial_key", "arch_hash", "epochs", "gpu_type", "seed", "order_index", "params",
                 "flops", "state", "attempts", "workload", "spec_json")
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_BATCH = 20_000  # rows per executemany (bounds the memory of one call)


def _insert_many(conn: Connection, table: Any, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert plain row tuples through the driver's own ``executemany`` (one prepared statement, no
    per-row work in SQLAlchemy), in batches, inside the caller's transaction; through SQLAlchemy's
    executemany where the driver's parameter style is not a positional one known here."""
    mark = _PLACEHOLDER.get(conn.dialect.paramstyle)
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        if not batch:
            return
        if mark is None:
            conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in batch])
        else:
            sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
                   f"VALUES ({', '.join([mark] * len(columns))})")
            conn.exec_driver_sql(sql, batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) >= _BATCH:
            flush()
    flush()


ARCH_COLUMNS = ("arch_hash", "matrix_json", "ops_json", "num_vertices", "num_edges")
_IN_CHUNK = 30_000  # bound parameters per IN (...): below SQLite's limit (32,766) and PostgreSQL's (65,535)
_SQLITE_CACHE_KIB = 262_144  # page cache for one campaign's insert on SQLite (its indexes stay in memory)


def _known_architectures(conn: Connection, hashes: Sequence[str]) -> set[str]:
    """Which of ``hashes`` the architecture table already holds (queried in chunks, so that a whole
    cell space of 423,624 hashes stays within the databases' bound-parameter limits)."""
    unique = sorted(set(hashes))
    known: set[str] = set()
    for i in range(0, len(unique), _IN_CHUNK):
        known.update(conn.execute(select(Architecture.arch_hash).where(
            Architecture.arch_hash.in_(unique[i:i + _IN_CHUNK]))).scalars())
    return known


@contextlib.contextmanager
def _big_cache(conn: Connection) -> Iterator[None]:
    """On SQLite, a page cache big enough to keep the trial table's indexes in memory while one
    campaign's trials are inserted (inserts into its unique key index land at random places); the
    connection's own setting is put back afterwards. Elsewhere nothing."""
    if conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before or -2000)}")


def _campaign_id(conn: Connection, name: str) -> int:
    cid = conn.execute(select(Campaign.id).where(Campaign.name == name)).scalar()
    if cid is None:
        raise CampaignNotFound(f"no campaign {name!r} in this database")
    return int(cid)


# The tables holding a campaign's rows below its runs, deleted before the runs (children first).
_RUN_CHILDREN = (TraceSeries, Epoch, RunPhase, CarbontrackerEpoch, CarbontrackerRun, LayerMeasurement)


@dataclasses.dataclass(frozen=True)
class ClaimedTrial:
    trial_id: int
    run_id: int
    attempt: int
    trial_key: str
    arch_hash: str | None  # None: a trial that trains no cell (another workload)
    matrix: list[list[int]]
    ops: list[str]
    epochs: int
    gpu_type: str
    seed: int
    params: int
    workload: str = "nasbench101"
    spec: dict[str, Any] | None = None  # the trial's spec as its workload planned it (None before 0008)


class TrialStore:
    """A campaign's creation and its trials' transitions (the planner's and the workers' writes),
    over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- planning ---------------------------------------------------------------------------
    def create_campaign(
        self,
        name: str,
        sweep: str,
        root: str,
        code_revision: str,
        config: dict[str, Any],
        archs: Sequence[Any],
        trials: Sequence[Any],
    ) -> int:
        """Record a campaign, its architectures and all its trials (pending) in one transaction."""
        with self.engine.begin() as conn:
            if conn.execute(select(Campaign.id).where(Campaign.name == name)).scalar() is not None:
                raise CampaignExists(f"campaign {name!r} already exists in this database; use `campaign resume {name}` or another name=")
            try:
                cid = conn.execute(
                    insert(Campaign).values(
                        name=name, sweep=sweep, created_at=utcnow(), root=root,
                        code_revision=code_revision, config_json=json.dumps(config, sort_keys=True),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            except IntegrityError as exc:  # a concurrent launch with the same name
                raise CampaignExists(f"campaign {name!r} already exists in this database") from exc
            unique = list({a.arch_hash: a for a in reversed(archs)}.values())[::-1]  # the first of each hash
            known = _known_architectures(conn, [a.arch_hash for a in unique])
            _insert_many(conn, Architecture.__table__, ARCH_COLUMNS, (
                (a.arch_hash, json.dumps(a.matrix), json.dumps(a.ops), a.num_vertices, a.num_edges)
                for a in unique if a.arch_hash not in known))
            sizes = {a.arch_hash: (a.params, a.flops) for a in unique}
            pending = TrialState.PENDING.value

            def row(t: Any) -> tuple[Any, ...]:
                params, flops = sizes.get(t.arch_hash) or (int(t.params or 0), int(t.flops or 0))  # other workloads
                spec = getattr(t, "spec", None)
                return (cid, t.trial_key, t.arch_hash, t.epochs, t.gpu_type, t.seed, t.order_index, params, flops,
                        pending, 0, getattr(t, "workload", "nasbench101"),
                        json.dumps(spec, sort_keys=True) if spec else None)

            with _big_cache(conn):
                _insert_many(conn, Trial.__table__, TRIAL_COLUMNS, map(row, trials))
        return int(cid)

    # -- the worker's transitions ------------------------------------------------------------
    def claim_next(self, campaign_id: int, gpu_type: str, worker_id: str, host: str,
                   keys: Sequence[str] | None = None, scheduler_job: str | None = None,
                   scheduler_partition: str | None = None) -> ClaimedTrial | None:
        """Claim the next pending trial in run order (optionally among ``keys``) and open its run.

        Compare-and-set on the trial's state: a trial another worker claimed first is skipped.
        """
        while True:
            with self.engine.begin() as conn:
                q = (select(Trial.id).where(Trial.campaign_id == campaign_id, Trial.gpu_type == gpu_type,
                                            Trial.state == TrialState.PENDING)
                     .order_by(Trial.order_index).limit(1))
                if keys is not None:
                    q = q.where(Trial.trial_key.in_(list(keys)))
                tid = conn.execute(q).scalar()
                if tid is None:
                    return None
                now = utcnow()
                won = conn.execute(
                    update(Trial).where(Trial.id == tid, Trial.state == TrialState.PENDING)
                    .values(state=TrialState.RUNNING, worker_id=worker_id, attempts=Trial.attempts + 1,
                            updated_at=now)
                ).rowcount
                if won != 1:
                    continue
                t = conn.execute(
                    select(Trial.attempts, Trial.trial_key, Trial.arch_hash, Trial.epochs, Trial.gpu_type,
                           Trial.seed, Trial.params, Trial.workload, Trial.spec_json, Architecture.matrix_json,
                           Architecture.ops_json)
                    .join(Architecture, Architecture.arch_hash == Trial.arch_hash, isouter=True)
                    .where(Trial.id == tid)
                ).one()
                run_id = conn.execute(insert(Run).values(
                    trial_id=tid, attempt=t.attempts, status=RunStatus.RUNNING, started_at=now,
                    heartbeat_at=db_now(conn.dialect.name), host=host, pid=os.getpid(), process=process_identity(),
                    worker_id=worker_id, scheduler_job=scheduler_job,
                    scheduler_partition=scheduler_partition)).inserted_primary_key[0]  # type: ignore[index]
                return ClaimedTrial(tid, int(run_id), t.attempts, t.trial_key, t.arch_hash,
                                    json.loads(t.matrix_json or "[]"), json.loads(t.ops_json or "[]"), t.epochs,
                                    t.gpu_type, t.seed, t.params, t.workload,
                                    json.loads(t.spec_json) if t.spec_json else None)

    def now(self) -> dt.datetime:
        """The database's clock (UTC): heartbeats and staleness never trust a node's clock."""
        with self.engine.connect() as conn:
            value = conn.execute(select(db_now(self.engine.dialect.name))).scalar()
        return _as_utc(value)

    def heartbeat(self, run_id: int) -> bool:
        """Record that the run's worker is alive. False when the run is no longer running (it was
        declared stale or cancelled): the worker must then abandon it."""
        with self.engine.begin() as conn:
            n = conn.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                             .values(heartbeat_at=db_now(self.engine.dialect.name))).rowcount
        return n == 1

    def recover_worker(self, worker_id: str, reason: str) -> list[str]:
        """A restarted worker (requeued after preemption or a time limit) closes the attempts it
        left running as failed and puts their trials back to pending. Returns their trial keys."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(Run.id, Run.trial_id, Trial.trial_key).join(Trial, Trial.id == Run.trial_id)
                                .where(Run.worker_id == worker_id, Run.status == RunStatus.RUNNING)).all()
            for run_id, trial_id, _ in rows:
                conn.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                             .values(status=RunStatus.FAILED, error=reason, ended_at=utcnow()))
                _release(conn, trial_id, worker_id)
        return [key for _, _, key in rows]

    def cancel_runs(self, campaign_id: int, worker_ids: Sequence[str] | None = None,
                    reason: str = "cancelled") -> list[str]:
        """The campaign's running attempts (of ``worker_ids`` only, where given) become
        ``cancelled`` with ``reason``, and their trials go back to pending (compare-and-set: only a
        trial its attempt's worker still holds; one already done elsewhere becomes done). A worker
        still running sees it at its next heartbeat and abandons the attempt; a result it stores
        later keeps the label. Returns the trial keys of the attempts cancelled."""
        q = (select(Run.id, Run.trial_id, Run.worker_id, Trial.trial_key).join(Trial, Trial.id == Run.trial_id)
             .where(Trial.campaign_id == campaign_id, Run.status == RunStatus.RUNNING).order_by(Run.id))
        if worker_ids is not None:
            q = q.where(Run.worker_id.in_(list(worker_ids)))
        keys = []
        with self.engine.begin() as conn:
            for run_id, trial_id, worker_id, key in conn.execute(q).all():
                n = conn.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                                 .values(status=RunStatus.CANCELLED, error=reason, ended_at=utcnow())).rowcount
                if n == 1:
                    _release(conn, trial_id, worker_id)
                    keys.append(key)
        return keys

    def cancel_campaign(self, name: str, reason: str = "cancelled by `campaign cancel`") -> list[str]:
        """``cancel_runs`` for every running attempt of the campaign called ``name``
        (CampaignNotFound when there is none). Its trials stay in the campaign, pending."""
        with self.engine.connect() as conn:
            campaign_id = _campaign_id(conn, name)
        return self.cancel_runs(campaign_id, reason=reason)

    def delete_campaign(self, name: str) -> dict[str, int]:
        """Delete the campaign called ``name`` with its trials, runs and every row below them, in
        one transaction (CampaignNotFound when there is none). Architectures and hardware rows are
        shared by campaigns and stay. Returns the rows deleted per table."""
        deleted: dict[str, int] = {}
        with self.engine.begin() as conn:
            campaign_id = _campaign_id(conn, name)
            trials = select(Trial.id).where(Trial.campaign_id == campaign_id).scalar_subquery()
            runs = select(Run.id).where(Run.trial_id.in_(trials)).scalar_subquery()
            # the samples (their points go with their series, by a trigger)
            deleted["trace_sample"] = int(conn.execute(select(func.coalesce(func.sum(TraceSeries.n), 0))
                                                       .where(TraceSeries.run_id.in_(runs))).scalar_one())
            for table in _RUN_CHILDREN:
                deleted[table.__tablename__] = conn.execute(delete(table).where(table.run_id.in_(runs))).rowcount
            deleted["run"] = conn.execute(delete(Run).where(Run.trial_id.in_(trials))).rowcount
            deleted["trial"] = conn.execute(delete(Trial).where(Trial.campaign_id == campaign_id)).rowcount
            for owned in (Submission, CampaignBudget, EstimateGroup):
                deleted[owned.__tablename__] = conn.execute(
                    delete(owned).where(owned.campaign_id == campaign_id)).rowcount
            deleted["campaign"] = conn.execute(delete(Campaign).where(Campaign.id == campaign_id)).rowcount
        return deleted

    def trial_states(self, campaign_id: int) -> list[dict[str, Any]]:
        """Each trial in run order with its state and its latest run, for resume decisions:
        trial_id, trial_key, gpu_type, epochs, state, worker_id, run_id and run_status (of the
        attempt with the highest number; None without any), heartbeat_at (UTC; that attempt's
        heartbeat while it is running, else None).

        Two plain queries (the trials, the latest attempts of the campaign) joined here: at 200,000
        trials this is what a resume reads, so no per-row work beyond one dict is done."""
        trials_q = (select(Trial.id, Trial.trial_key, Trial.gpu_type, Trial.epochs, Trial.state, Trial.worker_id,
                           Trial.order_index).where(Trial.campaign_id == campaign_id))
        latest = (select(Run.trial_id, func.max(Run.attempt).label("attempt")).join(Trial, Trial.id == Run.trial_id)
                  .where(Trial.campaign_id == campaign_id).group_by(Run.trial_id).subquery())
        running = RunStatus.RUNNING.value
        runs_q = (select(Run.trial_id, Run.id, Run.status, case((Run.status == running, Run.heartbeat_at)))
                  .join(latest, (latest.c.trial_id == Run.trial_id) & (latest.c.attempt == Run.attempt)))
        with self.engine.connect() as conn:
            runs = {tid: (rid, status, None if beat is None else _as_utc(beat))
                    for tid, rid, status, beat in conn.execute(runs_q)}
            result = conn.execute(trials_q)  # plain integer and string columns: the driver's tuples as they are
            trials = list(result.cursor.fetchall()) if result.cursor is not None else []
            result.close()
        trials.sort(key=itemgetter(6))
        none = (None, None, None)
        out = []
        for tid, key, gpu, epochs, state, worker, _ in trials:
            rid, status, beat = runs.get(tid, none)
            out.append({"trial_id": tid, "trial_key": key, "gpu_type": gpu, "epochs": epochs, "state": state,
                        "worker_id": worker, "run_id": rid, "run_status": status, "heartbeat_at": beat})
        return out

    def pending_ids(self, campaign_id: int) -> set[int]:
        """The ids of the campaign's pending trials (read from the state index alone)."""
        with self.engine.connect() as conn:
            return set(conn.execute(select(Trial.id).where(
                Trial.campaign_id == campaign_id, Trial.state == TrialState.PENDING.value)).scalars().all())

    def mark_stale(self, run_id: int, trial_id: int, cutoff: dt.datetime) -> bool:
        """Declare a running attempt stale if its heartbeat is still older than ``cutoff`` (checked
        in the same UPDATE), and put its trial back to pending."""
        with self.engine.begin() as conn:
            n = conn.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING,
                                               Run.heartbeat_at < cutoff)
                             .values(status=RunStatus.STALE, ended_at=utcnow(),
                                     error="stale: no heartbeat from its worker (died or lost)")).rowcount
            if n == 1:
                _release(conn, trial_id)
        return n == 1

    def reopen(self, trial_ids: Sequence[int]) -> int:
        """Failed or cancelled trials back to pending (never a done or running one)."""
        if not trial_ids:
            return 0
        with self.engine.begin() as conn:
            return int(conn.execute(update(Trial).where(Trial.id.in_(list(trial_ids)),
                                                        Trial.state.in_((TrialState.FAILED, TrialState.CANCELLED)))
                                    .values(state=TrialState.PENDING, worker_id=None, updated_at=utcnow())).rowcount)

    # -- what the launch side asks ------------------------------------------------------------
    def pending_counts(self, campaign_id: int) -> dict[str, int]:
        """Pending trials per GPU type (GPU types without any are left out)."""
        with self.engine.connect() as conn:
            got = conn.execute(select(Trial.gpu_type, func.count()).where(
                Trial.campaign_id == campaign_id, Trial.state == TrialState.PENDING).group_by(Trial.gpu_type)).all()
        return {str(g): int(n) for g, n in got if n}

    def next_pending_epochs(self, campaign_id: int, gpu_type: str) -> int | None:
        """The epoch budget of the next pending trial of the GPU type in run order (None: none)."""
        with self.engine.connect() as conn:
            value = conn.execute(select(Trial.epochs).where(
                Trial.campaign_id == campaign_id, Trial.gpu_type == gpu_type, Trial.state == TrialState.PENDING)
                .order_by(Trial.order_index).limit(1)).scalar()
        return None if value is None else int(value)

    def trial_walltimes(self, campaign_id: int, gpu_type: str, limit: int = 2000) -> dict[int, list[float]]:
        """Wall seconds (start to end of the attempt) of the GPU type's latest done runs in the
        campaign, per epoch budget: what a worker's deadline decision estimates from."""
        q = (select(Trial.epochs, Run.started_at, Run.ended_at).join(Trial, Trial.id == Run.trial_id)
             .where(Trial.campaign_id == campaign_id, Trial.gpu_type == gpu_type, Run.status == RunStatus.DONE,
                    Run.ended_at.is_not(None)).order_by(Run.id.desc()).limit(limit))
        out: dict[int, list[float]] = {}
        with self.engine.connect() as conn:
            for epochs, started, ended in conn.execute(q):
                seconds = (_as_utc(ended) - _as_utc(started)).total_seconds()
                if seconds >= 0:
                    out.setdefault(int(epochs), []).append(seconds)
        return out

    def running_attempts(self, campaign_id: int) -> list[dict[str, Any]]:
        """The campaign's running attempts: run_id, trial_id, trial_key, gpu_type, worker_id,
        scheduler_job and process (as the worker recorded them)."""
        q = (select(Run.id.label("run_id"), Run.trial_id, Trial.trial_key, Trial.gpu_type, Run.worker_id,
                    Run.scheduler_job, Run.process).join(Trial, Trial.id == Run.trial_id)
             .where(Trial.campaign_id == campaign_id, Run.status == RunStatus.RUNNING).order_by(Run.id))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def close_dead(self, run_id: int, trial_id: int, reason: str) -> bool:
        """A running attempt whose scheduler job has ended (killed, cancelled, node failed)
        becomes ``stale`` with ``reason`` at once, whatever its heartbeat says, and its trial goes
        back to pending (compare-and-set on the run's status)."""
        with self.engine.begin() as conn:
            n = conn.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                             .values(status=RunStatus.STALE, ended_at=utcnow(), error=reason)).rowcount
            if n == 1:
                _release(conn, trial_id)
        return n == 1
