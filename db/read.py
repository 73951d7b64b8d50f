"""The one read API of the results database: campaigns, their trials' progress, runs, phases,
epochs and traces, as plain rows.

``CampaignReader.open(url)`` opens a database read-only (``db.query.read_only_engine``: the
connection itself refuses writes) and never migrates it; a database whose schema is missing or
older than this code reads is refused with one line that names the fix. The writable store
(``db.store.ResultStore``) reads through the same class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from db.engine import DatabaseError, redact
from db.errors import CampaignError
from db.migrate import schema_problem
from db.query import database_errors, read_only_engine
from db.records import Phase, RunStatus, TrialState
from db.schema import Architecture, Campaign, Epoch, Hardware, Run, RunPhase, TraceSample, Trial
from db.views import run_summary

# The trial states ``list_campaigns`` counts per campaign (cancelled ones only count in "trials").
LISTED_STATES = (TrialState.PENDING, TrialState.RUNNING, TrialState.DONE, TrialState.FAILED)


class CampaignNotFound(CampaignError, LookupError):
    """No campaign of that name; the message names the ones that exist."""


class SchemaNotCurrent(DatabaseError):
    """The database has no campaign schema, or an older one than this code reads: a reader never
    migrates, so the message says to run ``campaign db upgrade``."""


@dataclasses.dataclass(frozen=True)
class CampaignInfo:
    id: int
    name: str
    sweep: str
    created_at: dt.datetime
    root: str
    code_revision: str
    config: dict[str, Any]


class CampaignReader:
    """Every read of a campaign's records, over one engine (read-only or not)."""

    def __init__(self, engine: Engine, url: str | None = None) -> None:
        self.engine = engine
        self._url = url  # what messages name (a read-only engine's own URL says nothing)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection whose driver errors become one-line DatabaseErrors (the driver's error as
        their cause: ``db.engine.is_connectivity_error`` still tells an outage)."""
        url = getattr(self, "_url", None) or self.engine.url.render_as_string(hide_password=True)
        with database_errors(url, "reading the database"), self.engine.connect() as conn:
            yield conn

    @staticmethod
    def open(url: str) -> CampaignReader:
        """A reader on ``url`` through a read-only engine. The schema is checked, never changed:
        SchemaNotCurrent (one line) where it is missing or older than this code's, DatabaseError
        where the database cannot be opened."""
        engine = read_only_engine(url)
        try:
            with database_errors(url, "opening the database"):
                problem = schema_problem(engine)
            if problem is not None:
                raise SchemaNotCurrent(f"{redact(url)} {problem}")
        except BaseException:
            engine.dispose()
            raise
        return CampaignReader(engine, url)

    def campaign(self, name: str) -> CampaignInfo:
        """The campaign called ``name``; CampaignNotFound names the ones that exist."""
        with self._connect() as conn:
            row = conn.execute(select(Campaign).where(Campaign.name == name)).one_or_none()
            if row is None:
                names = list(conn.execute(select(Campaign.name).order_by(Campaign.id)).scalars())
                hint = f"known: {', '.join(names[-10:])}" if names else "this database has no campaigns"
                raise CampaignNotFound(f"no campaign {name!r} in this database ({hint})")
        return CampaignInfo(row.id, row.name, row.sweep, row.created_at, row.root, row.code_revision,
                            json.loads(row.config_json))

    def list_campaigns(self) -> list[dict[str, Any]]:
        """One row per campaign with trial counts by state."""
        with self._connect() as conn:
            camps = conn.execute(select(Campaign.id, Campaign.name, Campaign.sweep, Campaign.created_at)
                                 .order_by(Campaign.id)).all()
            counts = conn.execute(select(Trial.campaign_id, Trial.state, func.count())
                                  .group_by(Trial.campaign_id, Trial.state)).all()
        by: dict[int, dict[str, int]] = {}
        for cid, state, n in counts:
            by.setdefault(cid, {})[state] = n
        return [
            {"name": c.name, "sweep": c.sweep, "created_at": c.created_at,
             "trials": sum(by.get(c.id, {}).values()), **{s.value: by.get(c.id, {}).get(s, 0)
                                                          for s in LISTED_STATES}}
            for c in camps
        ]

    def submissions(self, campaign_id: int) -> list[dict[str, Any]]:
        """The campaign's recorded submissions of worker tasks (``db.submissions``)."""
        from db.submissions import read_submissions

        with self._connect() as conn:
            return read_submissions(conn, campaign_id)

    def status_rows(self, campaign_id: int) -> list[dict[str, Any]]:
        """Per (GPU type, epoch budget): trials by state, and energy of finished runs (J)."""
        with self._connect() as conn:
            counts = conn.execute(select(Trial.gpu_type, Trial.epochs, Trial.state, func.count())
                                  .where(Trial.campaign_id == campaign_id)
                                  .group_by(Trial.gpu_type, Trial.epochs, Trial.state)).all()
            energy = conn.execute(select(Trial.gpu_type, Trial.epochs, func.sum(Run.energy_j),
                                         func.max(Run.power_source))
                                  .join(Run, Run.trial_id == Trial.id)
                                  .where(Trial.campaign_id == campaign_id, Run.status == RunStatus.DONE)
                                  .group_by(Trial.gpu_type, Trial.epochs)).all()
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for g, e, state, n in counts:
            r = rows.setdefault((g, e), {"gpu_type": g, "epochs": e, **{s.value: 0 for s in TrialState},
                                         "energy_j": 0.0, "power_source": None})
            r[state] = r.get(state, 0) + n
        for g, e, joules, source in energy:
            rows[(g, e)]["energy_j"] = float(joules or 0.0)
            rows[(g, e)]["power_source"] = source
        return [rows[k] for k in sorted(rows)]

    def runs(self, campaign_id: int, status: str | None = RunStatus.DONE) -> list[dict[str, Any]]:
        """Runs of a campaign joined with their trial and architecture, as plain rows (a trial of a
        workload that trains no cell has ``arch_hash``, ``matrix`` and ``ops`` None)."""
        run = Run.__table__
        q = (select(run, Trial.trial_key, Trial.workload, Trial.arch_hash, Trial.epochs, Trial.gpu_type, Trial.seed,
                    Trial.params, Trial.flops, Architecture.matrix_json, Architecture.ops_json)
             .join(Trial, Trial.id == run.c.trial_id)
             .join(Architecture, Architecture.arch_hash == Trial.arch_hash, isouter=True)
             .where(Trial.campaign_id == campaign_id).order_by(run.c.id))
        if status is not None:
            q = q.where(run.c.status == status)
        with self._connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for d in rows:
            d["run_id"] = d.pop("id")
            matrix, ops = d.pop("matrix_json"), d.pop("ops_json")
            d["matrix"] = None if matrix is None else json.loads(matrix)
            d["ops"] = None if ops is None else json.loads(ops)
        return rows

    def phases(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Pre-aggregated per-phase energy of the given runs."""
        table = RunPhase.__table__
        with self._connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(table).where(table.c.run_id.in_(list(run_ids))))]

    def trace(self, run_id: int) -> list[dict[str, Any]]:
        """A run's trace samples in time order."""
        table = TraceSample.__table__
        q = select(table).where(table.c.run_id == run_id).order_by(table.c.device, table.c.t_s)
        with self._connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def epochs(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Per-epoch rows of the given runs, by run and epoch."""
        table = Epoch.__table__
        q = select(table).where(table.c.run_id.in_(list(run_ids))).order_by(table.c.run_id, table.c.epoch)
        with self._connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def train_utilization(self, run_ids: Sequence[int]) -> dict[int, float | None]:
        """Mean device utilisation (%) over each run's training samples (None without readings)."""
        t = TraceSample.__table__
        q = (select(t.c.run_id, func.avg(t.c.gpu_util))
             .where(t.c.run_id.in_(list(run_ids)), t.c.phase == Phase.TRAIN).group_by(t.c.run_id))
        with self._connect() as conn:
            return {int(rid): (None if util is None else float(util)) for rid, util in conn.execute(q)}

    def run_hardware(self, run_ids: Sequence[int]) -> dict[int, dict[str, float | None]]:
        """Per run what its hardware was while it trained, where recorded: ``power_limit_w`` (the
        mean of its training samples' enforced power limit, as the meter read it) and
        ``job_memory_gb`` (the memory its job could use: the cgroup or Slurm limit the worker found,
        else None; never the node's whole memory, which a shared node's job does not have)."""
        t = TraceSample.__table__
        ids = list(run_ids)
        q = (select(t.c.run_id, func.avg(t.c.power_limit_w))
             .where(t.c.run_id.in_(ids), t.c.phase == Phase.TRAIN).group_by(t.c.run_id))
        hw = (select(Run.id, Hardware.details_json).join(Hardware, Hardware.id == Run.hardware_id)
              .where(Run.id.in_(ids)))
        out: dict[int, dict[str, float | None]] = {int(i): {"power_limit_w": None, "job_memory_gb": None} for i in ids}
        with self._connect() as conn:
            for rid, limit in conn.execute(q):
                out[int(rid)]["power_limit_w"] = None if limit is None else float(limit)
            for rid, details in conn.execute(hw):
                memory = _number(json.loads(details or "{}").get("memory_limit_gb"))
                out[int(rid)]["job_memory_gb"] = memory
        return out

    def done_run_figures(self) -> list[dict[str, Any]]:
        """Every done run of every campaign (run_summary) with a positive duration and budget: its
        arch_hash, epochs, gpu_type, energy_j, energy_above_idle_j, duration_s and idle_power_w,
        what a pre-launch estimate learns from."""
        v = run_summary
        q = (select(v.c.arch_hash, v.c.epochs, v.c.gpu_type, v.c.energy_j, v.c.energy_above_idle_j, v.c.duration_s,
                    v.c.idle_power_w)
             .where(v.c.energy_j.is_not(None), v.c.duration_s > 0, v.c.epochs > 0))
        with self._connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if x > 0 and x != float("inf") else None


def open_reader(url: str) -> CampaignReader:
    """``CampaignReader.open(url)``: a read-only reader whose schema is current."""
    return CampaignReader.open(url)
