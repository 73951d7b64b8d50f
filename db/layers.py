"""The layer workload's table: one row per measured window (a whole model, one of its layers
alone, or a layer spec) of a run, at the run's batch and input size, with the figures per pass.

The table (``LayerMeasurement``) is in ``db/schema.py`` with every other; created by revision 0007. Energy figures come from the run's trace
(``jobs.protocol.summarise`` of the window, labelled by ``energy_method``; a simulated source is
never a measurement: see ``run.power_source``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select

from db.schema import Campaign, LayerMeasurement, Run, Trial

TABLE = "layer_measurement"


COLUMNS: tuple[str, ...] = tuple(c.name for c in LayerMeasurement.__table__.columns if c.name not in ("id", "run_id"))


def insert_layer_rows(conn: Connection, run_id: int, rows: Iterable[Mapping[str, Any]]) -> int:
    """The run's rows (its old ones replaced), inside the caller's transaction; how many."""
    conn.execute(delete(LayerMeasurement).where(LayerMeasurement.run_id == run_id))
    payload = [{**{k: r.get(k) for k in COLUMNS}, "run_id": run_id} for r in rows]
    if payload:
        conn.execute(insert(LayerMeasurement), payload)
    return len(payload)


def store_layer_rows(engine: Engine, campaign: str, trial_key: str, attempt: int,
                     rows: Sequence[Mapping[str, Any]]) -> int:
    """Store rows for the run (campaign, trial_key, attempt), which must be stored; how many.
    LookupError where the run is not."""
    with engine.begin() as conn:
        run_id = conn.execute(
            select(Run.id).join(Trial, Trial.id == Run.trial_id).join(Campaign, Campaign.id == Trial.campaign_id)
            .where(Campaign.name == campaign, Trial.trial_key == trial_key, Run.attempt == attempt)
        ).scalar_one_or_none()
        if run_id is None:
            raise LookupError(f"run {trial_key} attempt {attempt} of campaign {campaign!r} is not in this database")
        return insert_layer_rows(conn, int(run_id), rows)


def layer_rows(engine: Engine, campaign_id: int, done_only: bool = True) -> list[dict[str, Any]]:
    """The campaign's layer measurements with their run's and trial's identity (trial_key, seed,
    gpu_type, run_id, power_source, idle_power_w), as plain dicts."""
    t = LayerMeasurement.__table__
    q = (select(*t.columns, Run.power_source, Run.idle_power_w, Run.status, Trial.trial_key, Trial.seed,
                Trial.gpu_type)
         .join(Run, Run.id == t.c.run_id).join(Trial, Trial.id == Run.trial_id)
         .where(Trial.campaign_id == campaign_id).order_by(t.c.run_id, t.c.position))
    if done_only:
        q = q.where(Run.status == "done")
    out = []
    with engine.connect() as conn:
        for row in conn.execute(q):
            d = dict(row._mapping)
            d.pop("id", None)
            d["spec"] = json.loads(d["spec_json"]) if d.get("spec_json") else None
            out.append(d)
    return out


def has_layer_table(engine: Engine) -> bool:
    """Whether the database has the layer table (revision 0007 or later)."""
    from sqlalchemy import inspect

    return TABLE in inspect(engine).get_table_names()
