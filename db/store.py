"""The result store: campaigns, trials and their state transitions, and the read queries.

State changes are compare-and-set updates checked by row count, so two workers can never
claim the same trial and a finished trial is never reopened.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from db.ingest import ingest_result
from db.migrate import ensure_schema
from db.schema import Architecture, Campaign, Run, RunPhase, TraceSample, Trial


class CampaignExists(RuntimeError):
    pass


class CampaignNotFound(LookupError):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclasses.dataclass(frozen=True)
class ClaimedTrial:
    trial_id: int
    run_id: int
    attempt: int
    trial_key: str
    arch_hash: str
    matrix: list[list[int]]
    ops: list[str]
    epochs: int
    gpu_type: str
    seed: int
    params: int


@dataclasses.dataclass(frozen=True)
class CampaignInfo:
    id: int
    name: str
    sweep: str
    created_at: dt.datetime
    root: str
    code_revision: str
    config: dict[str, Any]


class ResultStore:
    """Everything the CLI and workers do with the database, over one engine."""

    def __init__(self, engine: Engine, upgrade: bool = True) -> None:
        self.engine = engine
        if upgrade:
            ensure_schema(engine)

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
            known = set(conn.execute(select(Architecture.arch_hash).where(
                Architecture.arch_hash.in_([a.arch_hash for a in archs]))).scalars())
            new_archs = [
                dict(arch_hash=a.arch_hash, matrix_json=json.dumps(a.matrix), ops_json=json.dumps(a.ops),
                     num_vertices=a.num_vertices, num_edges=a.num_edges)
                for a in archs if a.arch_hash not in known
            ]
            if new_archs:
                conn.execute(insert(Architecture), new_archs)
            by_hash = {a.arch_hash: a for a in archs}
            conn.execute(
                insert(Trial),
                [
                    dict(campaign_id=cid, trial_key=t.trial_key, arch_hash=t.arch_hash, epochs=t.epochs,
                         gpu_type=t.gpu_type, seed=t.seed, order_index=t.order_index,
                         params=by_hash[t.arch_hash].params, flops=by_hash[t.arch_hash].flops,
                         state="pending", attempts=0)
                    for t in trials
                ],
            )
        return int(cid)

    def campaign(self, name: str) -> CampaignInfo:
        """The campaign called ``name``; CampaignNotFound names the ones that exist."""
        with self.engine.connect() as conn:
            row = conn.execute(select(Campaign).where(Campaign.name == name)).one_or_none()
            if row is None:
                names = list(conn.execute(select(Campaign.name).order_by(Campaign.id)).scalars())
                hint = f"known: {', '.join(names[-10:])}" if names else "this database has no campaigns"
                raise CampaignNotFound(f"no campaign {name!r} in this database ({hint})")
        return CampaignInfo(row.id, row.name, row.sweep, row.created_at, row.root, row.code_revision,
                            json.loads(row.config_json))

    def list_campaigns(self) -> list[dict[str, Any]]:
        """One row per campaign with trial counts by state."""
        with self.engine.connect() as conn:
            camps = conn.execute(select(Campaign.id, Campaign.name, Campaign.sweep, Campaign.created_at)
                                 .order_by(Campaign.id)).all()
            counts = conn.execute(select(Trial.campaign_id, Trial.state, func.count())
                                  .group_by(Trial.campaign_id, Trial.state)).all()
        by: dict[int, dict[str, int]] = {}
        for cid, state, n in counts:
            by.setdefault(cid, {})[state] = n
        return [
            {"name": c.name, "sweep": c.sweep, "created_at": c.created_at,
             "trials": sum(by.get(c.id, {}).values()), **{s: by.get(c.id, {}).get(s, 0)
                                                          for s in ("pending", "running", "done", "failed")}}
            for c in camps
        ]

    # -- the worker's transitions ------------------------------------------------------------
    def claim_next(self, campaign_id: int, gpu_type: str, worker_id: str, host: str,
                   keys: Sequence[str] | None = None) -> ClaimedTrial | None:
        """Claim the next pending trial in run order (optionally among ``keys``) and open its run.

        Compare-and-set on the trial's state: a trial another worker claimed first is skipped.
        """
        while True:
            with self.engine.begin() as conn:
                q = (select(Trial.id).where(Trial.campaign_id == campaign_id, Trial.gpu_type == gpu_type,
                                            Trial.state == "pending")
                     .order_by(Trial.order_index).limit(1))
                if keys is not None:
                    q = q.where(Trial.trial_key.in_(list(keys)))
                tid = conn.execute(q).scalar()
                if tid is None:
                    return None
                now = utcnow()
                won = conn.execute(
                    update(Trial).where(Trial.id == tid, Trial.state == "pending")
                    .values(state="running", worker_id=worker_id, attempts=Trial.attempts + 1, updated_at=now)
                ).rowcount
                if won != 1:
                    continue
                t = conn.execute(
                    select(Trial.attempts, Trial.trial_key, Trial.arch_hash, Trial.epochs, Trial.gpu_type,
                           Trial.seed, Trial.params, Architecture.matrix_json, Architecture.ops_json)
                    .join(Architecture, Architecture.arch_hash == Trial.arch_hash)
                    .where(Trial.id == tid)
                ).one()
                run_id = conn.execute(insert(Run).values(
                    trial_id=tid, attempt=t.attempts, status="running", started_at=now, heartbeat_at=now,
                    host=host, worker_id=worker_id)).inserted_primary_key[0]  # type: ignore[index]
                return ClaimedTrial(tid, int(run_id), t.attempts, t.trial_key, t.arch_hash,
                                    json.loads(t.matrix_json), json.loads(t.ops_json), t.epochs,
                                    t.gpu_type, t.seed, t.params)

    def heartbeat(self, run_id: int) -> None:
        """Record that the run's worker is alive."""
        with self.engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(heartbeat_at=utcnow()))

    def ingest(self, result: dict[str, Any]) -> bool:
        """Store a result file's content idempotently (see ``db.ingest.ingest_result``)."""
        with self.engine.begin() as conn:
            return ingest_result(conn, result)

    # -- reading ----------------------------------------------------------------------------
    def status_rows(self, campaign_id: int) -> list[dict[str, Any]]:
        """Per (GPU type, epoch budget): trials by state, and energy of finished runs (J)."""
        with self.engine.connect() as conn:
            counts = conn.execute(select(Trial.gpu_type, Trial.epochs, Trial.state, func.count())
                                  .where(Trial.campaign_id == campaign_id)
                                  .group_by(Trial.gpu_type, Trial.epochs, Trial.state)).all()
            energy = conn.execute(select(Trial.gpu_type, Trial.epochs, func.sum(Run.energy_j),
                                         func.max(Run.power_source))
                                  .join(Run, Run.trial_id == Trial.id)
                                  .where(Trial.campaign_id == campaign_id, Run.status == "done")
                                  .group_by(Trial.gpu_type, Trial.epochs)).all()
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for g, e, state, n in counts:
            r = rows.setdefault((g, e), {"gpu_type": g, "epochs": e, "pending": 0, "running": 0, "done": 0,
                                         "failed": 0, "cancelled": 0, "energy_j": 0.0, "power_source": None})
            r[state] = r.get(state, 0) + n
        for g, e, joules, source in energy:
            rows[(g, e)]["energy_j"] = float(joules or 0.0)
            rows[(g, e)]["power_source"] = source
        return [rows[k] for k in sorted(rows)]

    def runs(self, campaign_id: int, status: str | None = "done") -> list[dict[str, Any]]:
        """Runs of a campaign joined with their trial and architecture, as plain rows."""
        run = Run.__table__
        q = (select(run, Trial.trial_key, Trial.arch_hash, Trial.epochs, Trial.gpu_type, Trial.seed, Trial.params,
                    Trial.flops, Architecture.matrix_json, Architecture.ops_json)
             .join(Trial, Trial.id == run.c.trial_id)
             .join(Architecture, Architecture.arch_hash == Trial.arch_hash)
             .where(Trial.campaign_id == campaign_id).order_by(run.c.id))
        if status is not None:
            q = q.where(run.c.status == status)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for d in rows:
            d["run_id"] = d.pop("id")
            d["matrix"] = json.loads(d.pop("matrix_json"))
            d["ops"] = json.loads(d.pop("ops_json"))
        return rows

    def phases(self, run_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Pre-aggregated per-phase energy of the given runs."""
        table = RunPhase.__table__
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(table).where(table.c.run_id.in_(list(run_ids))))]

    def trace(self, run_id: int) -> list[dict[str, Any]]:
        """A run's trace samples in time order."""
        table = TraceSample.__table__
        q = select(table).where(table.c.run_id == run_id).order_by(table.c.device, table.c.t_s)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
