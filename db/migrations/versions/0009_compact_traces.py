"""compact traces: trace samples stored as series and points, trace_sample a view over them

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 05:00:00

- trace_series: consecutive samples of one run and device with one phase and epoch (at most 4096):
  their keys once, the id range of their points, and per measured column a base (and for time and
  the energy counter a step per sample), in whole quanta of the column (``db.views.TRACE_QUANTA``).
- trace_point: two consecutive samples a row, each measured value a small whole-number residual
  from its series' base (SQLite stores it in one to three bytes, a residual of 0 in none).
- trace_sample becomes a view with the table's columns, in plain SQL (``db.views.trace_sample_sql``);
  deleting a series deletes its points, a DELETE on the view deletes the points it names, and on
  SQLite an INSERT of a sample stores it as a series of one.

The samples already stored are moved run by run (in their id order), each value to its quantum;
on downgrade they go back into a table (ids kept).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db import traces, views
from db.records import SAMPLE_COLUMNS

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# each measured column's quantum, as the comments say it (frozen here)
_UNITS = {"t_s": "0.1 ms", "power_w": "mW", "energy_j": "mJ", "gpu_util": "0.1 %", "mem_util": "0.1 %",
          "mem_used_mb": "KiB", "temperature_c": "0.1 degree C", "sm_clock_mhz": "MHz", "mem_clock_mhz": "MHz",
          "power_limit_w": "mW", "cpu_util": "0.1 %", "rss_mb": "KiB"}


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    op.create_table(
        "trace_series",
        sa.Column("id", _ID, nullable=False, comment="series id, in write order"),
        sa.Column("run_id", sa.Integer(), nullable=False, comment="run the samples belong to"),
        sa.Column("source", sa.String(length=20), nullable=False, comment="nvml | simulated | ... (as the run)"),
        sa.Column("device", sa.Integer(), nullable=False, comment="device index within the job"),
        sa.Column("phase", sa.String(length=16), nullable=False,
                  comment="warmup | setup | idle | train | eval | cooldown"),
        sa.Column("epoch", sa.Integer(), nullable=True, comment="1-based training epoch, NULL outside an epoch"),
        sa.Column("n", sa.Integer(), nullable=False, comment="samples in the series"),
        sa.Column("first_id", sa.BigInteger(), nullable=False,
                  comment="sample id of the series' first sample (even: it starts a trace_point row)"),
        *(col for name, _, stepped in views.TRACE_QUANTA for col in (
            sa.Column(f"{name}_base", sa.Float(), nullable=name != "t_s", comment=f"{name} base, {_UNITS[name]}"),
            *([sa.Column(f"{name}_step", sa.Float(), nullable=name != "t_s",
                         comment=f"{name} step per sample, {_UNITS[name]}")] if stepped else []))),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_trace_series_run", "trace_series", ["run_id"], unique=False)
    op.create_table(
        "trace_point",
        sa.Column("id", _ID, autoincrement=False, nullable=False, comment="row id; its samples are 2 x id and 2 x id + 1"),
        *(sa.Column(views.trace_point_column(name, slot), sa.Float().with_variant(sa.BigInteger(), "sqlite"),
                    nullable=True, comment=f"{name} of sample 2 x id + {slot}: residual, {_UNITS[name]}")
          for slot in range(views.TRACE_SLOTS) for name, _, _ in views.TRACE_QUANTA),
        sa.PrimaryKeyConstraint("id"),
    )
    names = ", ".join(SAMPLE_COLUMNS)
    runs = [r for (r,) in bind.exec_driver_sql("SELECT DISTINCT run_id FROM trace_sample ORDER BY run_id")]
    for run_id in runs:
        rows = bind.exec_driver_sql(
            f"SELECT source, {names} FROM trace_sample WHERE run_id = {int(run_id)} ORDER BY id").all()
        by_source: dict[str, list[tuple[object, ...]]] = {}
        for row in rows:
            by_source.setdefault(row[0], []).append(tuple(row[1:]))
        for source, samples in by_source.items():
            cols = [list(c) for c in zip(*samples, strict=True)]
            traces.write(bind, int(run_id), source, cols, len(samples))
    op.drop_index("ix_trace_run", table_name="trace_sample")
    op.drop_table("trace_sample")
    for sql in views.trace_view_sql(dialect):
        op.execute(sql)


def downgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    for sql in views.drop_trace_view_sql(dialect):
        op.execute(sql)
    op.create_table(
        "trace_sample",
        sa.Column("id", _ID, nullable=False, comment="sample id"),
        sa.Column("run_id", sa.Integer(), nullable=False, comment="run the sample belongs to"),
        sa.Column("source", sa.String(length=20), nullable=False, comment="nvml | simulated | ... (as the run)"),
        sa.Column("device", sa.Integer(), nullable=False, comment="device index within the job"),
        sa.Column("t_s", sa.Float(), nullable=False, comment="monotonic seconds since the meter's wall-clock anchor"),
        sa.Column("phase", sa.String(length=16), nullable=False,
                  comment="warmup | setup | idle | train | eval | cooldown"),
        sa.Column("epoch", sa.Integer(), nullable=True, comment="1-based training epoch, NULL outside an epoch"),
        sa.Column("power_w", sa.Float(), nullable=False, comment="power draw of the device"),
        *(sa.Column(c, sa.Float(), nullable=True) for c in views.TRACE_MEASURED[2:]),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    cols = ", ".join(("id", "run_id", "source", *SAMPLE_COLUMNS))
    # the view's SELECT, as a subquery: plain SQL over the two tables
    op.execute(f"INSERT INTO trace_sample ({cols}) SELECT {cols} FROM ({views.trace_sample_sql(dialect)}) v ORDER BY id")
    op.create_index("ix_trace_run", "trace_sample", ["run_id"], unique=False)
    op.drop_index("ix_trace_series_run", table_name="trace_series")
    op.drop_table("trace_point")
    op.drop_table("trace_series")
