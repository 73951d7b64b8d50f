"""compact traces: trace samples stored as packed chunks, trace_sample a view over them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 03:00:00

- trace_chunk: consecutive samples of one run and device with one phase and epoch (at most 4096),
  each measured column packed as one value (``db.traces``: on SQLite a byte-shuffled, compressed
  BLOB, a constant or NULL; on PostgreSQL a ``double precision[]``). Exact, NULLs kept.
- trace_index: the positions 0 .. 4095 within a chunk, which the SQLite view joins chunks with.
- trace_sample becomes a view with the table's columns (``db.views.trace_sample_sql``); on SQLite
  it unpacks with the function ``trace_value`` the project registers on its connections. A DELETE
  on it deletes the chunks of the runs it names; on SQLite an INSERT of a sample stores a chunk
  of one.

The samples already stored are moved into chunks run by run (in their id order), and back on
downgrade (sample ids are then given anew, in chunk order).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION

from db import traces, views
from db.records import SAMPLE_COLUMNS

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

PACKED = views.TRACE_PACKED
CHUNK_MAX = views.TRACE_CHUNK_MAX
_BATCH = 500  # chunk rows per INSERT


def _packed_type() -> Any:
    return sa.LargeBinary().with_variant(ARRAY(DOUBLE_PRECISION()), "postgresql")


def _chunk_table() -> sa.TableClause:
    return sa.table("trace_chunk", *(sa.column(c) for c in ("run_id", "source", "device", "phase", "epoch", "n",
                                                             *PACKED)))


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    op.create_table(
        "trace_chunk",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, comment="chunk id, in write order"),
        sa.Column("run_id", sa.Integer(), nullable=False, comment="run the samples belong to"),
        sa.Column("source", sa.String(length=20), nullable=False, comment="nvml | simulated | ... (as the run)"),
        sa.Column("device", sa.Integer(), nullable=False, comment="device index within the job"),
        sa.Column("phase", sa.String(length=16), nullable=False,
                  comment="warmup | setup | idle | train | eval | cooldown"),
        sa.Column("epoch", sa.Integer(), nullable=True, comment="1-based training epoch, NULL outside an epoch"),
        sa.Column("n", sa.Integer(), nullable=False, comment="samples in the chunk"),
        *(sa.Column(c, _packed_type(), nullable=True, comment=f"{c} of each sample, packed (db.traces)")
          for c in PACKED),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trace_chunk_run", "trace_chunk", ["run_id"], unique=False)
    index = op.create_table(
        "trace_index",
        sa.Column("i", sa.Integer(), autoincrement=False, nullable=False, comment="position in a chunk"),
        sa.PrimaryKeyConstraint("i"),
    )
    op.bulk_insert(index, [{"i": i} for i in range(CHUNK_MAX)])

    chunk = _chunk_table()
    names = ", ".join(SAMPLE_COLUMNS)
    runs = [r for (r,) in bind.exec_driver_sql("SELECT DISTINCT run_id FROM trace_sample ORDER BY run_id")]
    for run_id in runs:
        rows = bind.exec_driver_sql(
            f"SELECT source, {names} FROM trace_sample WHERE run_id = {int(run_id)} ORDER BY id").all()
        by_source: dict[str, list[Any]] = {}
        for row in rows:
            by_source.setdefault(row[0], []).append(row[1:])
        batch: list[dict[str, Any]] = []
        for source, samples in by_source.items():
            cols = [list(c) for c in zip(*samples, strict=True)]
            for r in traces.chunk_rows(cols, len(samples), postgres=dialect == "postgresql"):
                batch.append({"run_id": run_id, "source": source, **r})
        for a in range(0, len(batch), _BATCH):
            bind.execute(chunk.insert(), batch[a:a + _BATCH])
    op.drop_index("ix_trace_run", table_name="trace_sample")
    op.drop_table("trace_sample")
    for sql in views.trace_view_sql(dialect):
        op.execute(sql)


def _samples(bind: Any) -> Iterator[dict[str, Any]]:
    """The chunks' samples, one dict per sample, chunk by chunk (in chunk id order)."""
    cols = ", ".join(("run_id", "source", "device", "phase", "epoch", "n", *PACKED))
    last = 0
    while True:
        rows = bind.exec_driver_sql(
            f"SELECT id, {cols} FROM trace_chunk WHERE id > {last} ORDER BY id LIMIT {_BATCH}").all()
        if not rows:
            return
        for row in rows:
            last = row[0]
            run_id, source, device, phase, epoch, n = row[1:7]
            values: dict[str, Any] = {c: (list(v) if isinstance(v, list) else ([None] * n if v is None else None))
                      for c, v in zip(PACKED, row[7:], strict=True)}
            for c, v in zip(PACKED, row[7:], strict=True):
                if values[c] is None:
                    values[c] = traces.unpack_values(v, n)
            for i in range(n):
                yield {"run_id": run_id, "source": source, "device": device, "phase": phase, "epoch": epoch,
                       **{c: values[c][i] for c in PACKED}}


def downgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    for sql in views.drop_trace_view_sql(dialect):
        op.execute(sql)
    table = op.create_table(
        "trace_sample",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, comment="sample id"),
        sa.Column("run_id", sa.Integer(), nullable=False, comment="run the sample belongs to"),
        sa.Column("source", sa.String(length=20), nullable=False, comment="nvml | simulated | ... (as the run)"),
        sa.Column("device", sa.Integer(), nullable=False, comment="device index within the job"),
        sa.Column("t_s", sa.Float(), nullable=False, comment="monotonic seconds since the meter's wall-clock anchor"),
        sa.Column("phase", sa.String(length=16), nullable=False,
                  comment="warmup | setup | idle | train | eval | cooldown"),
        sa.Column("epoch", sa.Integer(), nullable=True, comment="1-based training epoch, NULL outside an epoch"),
        sa.Column("power_w", sa.Float(), nullable=False, comment="power draw of the device"),
        *(sa.Column(c, sa.Float(), nullable=True) for c in PACKED[2:]),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    batch: list[dict[str, Any]] = []
    for sample in _samples(bind):
        batch.append(sample)
        if len(batch) >= 5000:
            bind.execute(table.insert(), batch)
            batch.clear()
    if batch:
        bind.execute(table.insert(), batch)
    op.create_index("ix_trace_run", "trace_sample", ["run_id"], unique=False)
    op.drop_index("ix_trace_chunk_run", table_name="trace_chunk")
    op.drop_table("trace_chunk")
    op.drop_table("trace_index")
