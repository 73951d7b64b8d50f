"""the layer workload: trial.workload and trial.spec_json, layer_measurement

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:40:00

- trial: ``workload`` (the workload that runs it; every existing trial is NAS-Bench-101 training,
  ``nasbench101``), ``spec_json`` (the trial's spec as its workload planned it; null for trials
  planned before), and ``arch_hash`` becomes nullable (a layer trial trains no cell).
- layer_measurement: one row per measured window of a layer-workload run (``db/layers.py``).

On SQLite the trial table is rebuilt (a column becomes nullable), which a view reading it would
break: the views are dropped first and recreated afterwards from their own stored SQL, whatever
version they are at. Everything this revision creates is frozen here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WORKLOAD_COMMENT = "what the trial runs: nasbench101 (training a cell) | layers (forward passes of layers and models)"
SPEC_COMMENT = "the trial's spec as its workload planned it, JSON; null for trials planned before revision 0007"
ARCH_COMMENT = "architecture trained"


def _columns() -> list[Any]:
    c = sa.Column
    return [
        c("id", sa.Integer(), primary_key=True, comment="row id"),
        c("run_id", sa.Integer(), sa.ForeignKey("run.id", ondelete="CASCADE"), nullable=False,
          comment="run the window belongs to"),
        c("position", sa.Integer(), nullable=False, comment="1-based window in the run; the trace's epoch column"),
        c("scope", sa.String(16), nullable=False, comment="model (a whole forward pass) | layer (one layer alone)"),
        c("model_name", sa.String(200), nullable=True,
          comment="torchvision name or cell:<hash>; null for a layer spec measured on its own"),
        c("layer_name", sa.String(300), nullable=True, comment="module path in the model; null otherwise"),
        c("layer_type", sa.String(50), nullable=False, comment="conv2d | linear | maxpool2d | ... | model"),
        c("calls", sa.Integer(), nullable=False, comment="calls of this layer with this input in one model pass"),
        c("batch_size", sa.Integer(), nullable=False, comment="inputs per pass"),
        c("input_size", sa.Integer(), nullable=True,
          comment="the model's (or spec's) square input size in pixels; null for a linear spec"),
        c("backward", sa.Boolean(), nullable=False, comment="forward and backward passes (else forward only)"),
        c("in_channels", sa.Integer(), nullable=True, comment="channels (or features) of the layer's input"),
        c("in_h", sa.Integer(), nullable=True, comment="input height, pixels"),
        c("in_w", sa.Integer(), nullable=True, comment="input width, pixels"),
        c("out_channels", sa.Integer(), nullable=True, comment="channels (or features) of the output"),
        c("out_h", sa.Integer(), nullable=True, comment="output height, pixels"),
        c("out_w", sa.Integer(), nullable=True, comment="output width, pixels"),
        c("kernel_size", sa.Integer(), nullable=True, comment="kernel (or pooling) size"),
        c("stride", sa.Integer(), nullable=True, comment="stride"),
        c("padding", sa.Integer(), nullable=True, comment="padding, pixels per side"),
        c("groups", sa.Integer(), nullable=True, comment="convolution groups"),
        c("in_features", sa.Integer(), nullable=True, comment="linear: input features"),
        c("out_features", sa.Integer(), nullable=True, comment="linear: output features"),
        c("flops", sa.BigInteger(), nullable=False, comment="FLOPs of one forward pass over the batch (2 per MAC)"),
        c("params", sa.BigInteger(), nullable=False, comment="trainable parameters"),
        c("passes", sa.Integer(), nullable=False, comment="passes run in the window"),
        c("wall_time_s", sa.Float(), nullable=False, comment="wall time of the passes (device synchronised)"),
        c("time_per_pass_s", sa.Float(), nullable=False, comment="wall_time_s / passes"),
        c("window_s", sa.Float(), nullable=True, comment="the window's duration on the trace's clock"),
        c("energy_j", sa.Float(), nullable=True, comment="energy of the window (J), by energy_method"),
        c("energy_per_pass_j", sa.Float(), nullable=True, comment="energy_j / passes"),
        c("energy_above_idle_per_pass_j", sa.Float(), nullable=True,
          comment="(energy_j - the run's idle power x window_s) / passes"),
        c("uncertainty_per_pass_j", sa.Float(), nullable=True,
          comment="stated uncertainty of energy_per_pass_j (basis: run.error_basis)"),
        c("mean_power_w", sa.Float(), nullable=True, comment="energy_j / window_s"),
        c("energy_method", sa.String(50), nullable=True, comment="how energy_j was obtained"),
        c("samples", sa.Integer(), nullable=False, comment="trace samples in the window (the clock's device)"),
        c("valid", sa.Boolean(), nullable=False, comment="the window meets the validity rule"),
        c("memory_mb", sa.Float(), nullable=True, comment="memory of one pass, MiB (see memory_method)"),
        c("memory_method", sa.String(30), nullable=True,
          comment="cuda_max_allocated (measured) | tensor_bytes (parameters + input + output, counted)"),
        c("spec_json", sa.Text(), nullable=True, comment="the layer or model spec, JSON"),
        sa.UniqueConstraint("run_id", "position", name="uq_layer_measurement_run_position"),
    ]


def _sqlite_views(bind: sa.engine.Connection) -> list[tuple[str, str]]:
    """(name, CREATE VIEW statement) of every view, as SQLite stored them, dropped here."""
    rows = [(r[0], r[1]) for r in bind.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))]
    for name, _ in reversed(rows):
        op.execute(f'DROP VIEW IF EXISTS "{name}"')
    return rows


def _alter_trial(bind: sa.engine.Connection, up: bool) -> None:
    views = _sqlite_views(bind) if bind.dialect.name == "sqlite" else []
    with op.batch_alter_table("trial", schema=None) as batch_op:
        if up:
            batch_op.add_column(sa.Column("workload", sa.String(50), nullable=False, server_default="nasbench101",
                                          comment=WORKLOAD_COMMENT))
            batch_op.add_column(sa.Column("spec_json", sa.Text(), nullable=True, comment=SPEC_COMMENT))
            batch_op.alter_column("arch_hash", existing_type=sa.String(64), nullable=True,
                                  existing_comment=ARCH_COMMENT)
        else:
            batch_op.alter_column("arch_hash", existing_type=sa.String(64), nullable=False,
                                  existing_comment=ARCH_COMMENT)
            batch_op.drop_column("spec_json")
            batch_op.drop_column("workload")
    for _, sql in views:
        op.execute(sql)


def upgrade() -> None:
    bind = op.get_bind()
    _alter_trial(bind, up=True)
    op.create_table("layer_measurement", *_columns())
    op.create_index("ix_layer_measurement_run_id", "layer_measurement", ["run_id"])


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_index("ix_layer_measurement_run_id", table_name="layer_measurement")
    op.drop_table("layer_measurement")
    # Layer trials have no architecture: they cannot stay in a schema that requires one.
    op.execute("DELETE FROM trial WHERE arch_hash IS NULL")
    _alter_trial(bind, up=False)
