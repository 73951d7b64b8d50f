"""A campaign's results as typed Arrow tables, and their export to Parquet or CSV files.

Runs and trials come from the views (``db/views.py``); epochs, phases and trace samples from
their tables, restricted to the campaign's finished runs and carrying the run's identifying
columns. Column types come from the schema, so an all-NULL column keeps its type. Trace
samples are many: they are read run by run and written in batches, never held whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Boolean, DateTime, Engine, Float, Integer, Select, select

from db.query import database_errors, read_only_engine, require_views
from db.read import CampaignInfo, CampaignReader
from db.schema import Epoch, RunPhase, TraceSample
from db.views import run_summary, trial_summary

if TYPE_CHECKING:
    import pyarrow as pa

FORMATS = ("parquet", "csv")
TRACE_BATCH_ROWS = 200_000
# run_summary columns repeated on every epoch, phase and trace row (to filter and group without a join)
RUN_KEYS = ("run_id", "arch_hash", "epochs", "gpu_type", "seed", "power_source", "power_kind")


def _arrow_type(sa_type: Any) -> pa.DataType:
    import pyarrow as pa

    if isinstance(sa_type, Boolean):
        return pa.bool_()
    if isinstance(sa_type, (Integer, BigInteger)):
        return pa.int64()
    if isinstance(sa_type, Float):
        return pa.float64()
    if isinstance(sa_type, DateTime):
        return pa.timestamp("us", tz="UTC")
    return pa.string()


def arrow_schema(query: Select[Any]) -> pa.Schema:
    """The Arrow schema of a query's result, from its columns' SQLAlchemy types."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in query.selected_columns])


def _to_arrow(schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> pa.Table:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.table([pa.array(list(col), type=f.type) for col, f in zip(columns, schema, strict=True)], schema=schema)


def runs_query(campaign_id: int) -> Select[Any]:
    return select(run_summary).where(run_summary.c.campaign_id == campaign_id).order_by(run_summary.c.run_id)


def trials_query(campaign_id: int) -> Select[Any]:
    t = trial_summary.c
    return (select(trial_summary).where(t.campaign_id == campaign_id)
            .order_by(t.epochs, t.arch_hash, t.gpu_type, t.power_source))


def _own_columns(table: Any) -> list[Any]:
    return [c for c in table.__table__.columns if c.name not in ("id", "run_id")]


def _per_run_query(table: Any, campaign_id: int, order: Sequence[Any]) -> Select[Any]:
    keys = [run_summary.c[k] for k in RUN_KEYS]
    own = _own_columns(table)
    return (select(*keys, *own).join_from(table, run_summary, run_summary.c.run_id == table.run_id)
            .where(run_summary.c.campaign_id == campaign_id).order_by(*order))


def epochs_query(campaign_id: int) -> Select[Any]:
    return _per_run_query(Epoch, campaign_id, (Epoch.run_id, Epoch.epoch))


def phases_query(campaign_id: int) -> Select[Any]:
    return _per_run_query(RunPhase, campaign_id, (RunPhase.run_id, RunPhase.phase))


def _trace_query(campaign_id: int, run_id: int) -> Select[Any]:
    q = _per_run_query(TraceSample, campaign_id, (TraceSample.device, TraceSample.t_s))
    return q.where(TraceSample.run_id == run_id)


def read_tables(engine: Engine, campaign_id: int) -> dict[str, pa.Table]:
    """The campaign's runs, trials, epochs and phases as Arrow tables."""
    out = {}
    with engine.connect() as conn:
        for name, q in (("runs", runs_query(campaign_id)), ("trials", trials_query(campaign_id)),
                        ("epochs", epochs_query(campaign_id)), ("phases", phases_query(campaign_id))):
            out[name] = _to_arrow(arrow_schema(q), conn.execute(q).all())
    return out


def trace_batches(engine: Engine, campaign_id: int, batch_rows: int = TRACE_BATCH_ROWS) -> Iterator[pa.Table]:
    """The trace samples of the campaign's finished runs, run by run, in tables of about
    ``batch_rows`` rows (at least one run's samples each)."""
    schema = arrow_schema(_trace_query(campaign_id, 0))
    # The run keys once (run_summary aggregates every run), then each run's samples by themselves:
    # the same rows as _trace_query's, without evaluating the view once per run.
    own = _own_columns(TraceSample)
    with engine.connect() as conn:
        runs = conn.execute(select(*(run_summary.c[k] for k in RUN_KEYS))
                            .where(run_summary.c.campaign_id == campaign_id).order_by(run_summary.c.run_id)).all()
        pending: list[Any] = []
        for keys in runs:
            samples = select(*own).where(TraceSample.run_id == keys.run_id).order_by(TraceSample.device, TraceSample.t_s)
            pending.extend((*keys, *row) for row in conn.execute(samples))
            if len(pending) >= batch_rows:
                yield _to_arrow(schema, pending)
                pending = []
        if pending or not runs:
            yield _to_arrow(schema, pending)


def trace_schema() -> pa.Schema:
    return arrow_schema(_trace_query(0, 0))


def open_campaign(url: str, name: str) -> tuple[Engine, CampaignInfo]:
    """A read-only engine on ``url`` and the campaign called ``name``; the views must exist."""
    engine = read_only_engine(url)
    with database_errors(url, f"reading campaign {name!r}"):
        info = CampaignReader(engine).campaign(name)
    require_views(engine, url)
    return engine, info


@dataclasses.dataclass(frozen=True)
class ExportedFile:
    path: Path
    rows: int | None  # None for campaign.json


class _Writer:
    """One output file, written under a temporary name and renamed when complete."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.partial")
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.writer: Any = pq.ParquetWriter(self.tmp, schema)
        else:
            import pyarrow.csv as pacsv

            self.writer = pacsv.CSVWriter(self.tmp, schema)
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> ExportedFile:
        self.writer.close()
        os.replace(self.tmp, self.path)
        return ExportedFile(self.path, self.rows)


def export_campaign(engine: Engine, info: CampaignInfo, out: Path, fmt: str,
                    traces: bool = False) -> list[ExportedFile]:
    """Write ``runs``, ``trials``, ``epochs``, ``phases`` (and with ``traces``, ``traces``) files in
    ``fmt`` and ``campaign.json`` (name, sweep, code revision, config) into ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r} is not supported (allowed: {', '.join(FORMATS)})")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in read_tables(engine, info.id).items():
        w = _Writer(out / f"{name}.{fmt}", fmt, table.schema)
        w.write(table)
        written.append(w.close())
    if traces:
        w = _Writer(out / f"traces.{fmt}", fmt, trace_schema())
        for batch in trace_batches(engine, info.id):
            w.write(batch)
        written.append(w.close())
    meta = {"name": info.name, "sweep": info.sweep, "created_at": info.created_at.isoformat(),
            "code_revision": info.code_revision, "config": info.config,
            "files": {f.path.stem: f.path.name for f in written}}
    (out / "campaign.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return [*written, ExportedFile(out / "campaign.json", None)]
