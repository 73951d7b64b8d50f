"""carbontracker records and RAPL energy

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 01:14:35.878230
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db import views

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

VIEWS_0002 = {"run_summary": views.run_summary_v1, "trial_summary": views.trial_summary_v1}


def upgrade() -> None:
    op.create_table(
        "carbontracker_epoch",
        sa.Column("id", sa.Integer(), nullable=False, comment="row id"),
        sa.Column("run_id", sa.Integer(), nullable=False, comment="the run it measured"),
        sa.Column("epoch", sa.Integer(), nullable=False, comment="1-based"),
        sa.Column(
            "duration_s", sa.Float(), nullable=True, comment="epoch duration as logged (10 ms resolution)"
        ),
        sa.Column(
            "gpu_power_w", sa.Float(), nullable=True, comment="average GPU power over the epoch, all its GPUs"
        ),
        sa.Column("cpu_power_w", sa.Float(), nullable=True, comment="average CPU power (RAPL or TDP table)"),
        sa.Column("dram_power_w", sa.Float(), nullable=True, comment="average DRAM power (RAPL)"),
        sa.Column(
            "gpu_energy_j", sa.Float(), nullable=True, comment="GPU energy of the epoch, raw, without PUE"
        ),
        sa.Column(
            "cpu_energy_j", sa.Float(), nullable=True, comment="CPU energy of the epoch, raw, without PUE"
        ),
        sa.Column(
            "dram_energy_j", sa.Float(), nullable=True, comment="DRAM energy of the epoch, raw, without PUE"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "epoch", name="uq_carbontracker_epoch"),
    )
    op.create_table(
        "carbontracker_run",
        sa.Column("run_id", sa.Integer(), nullable=False, comment="the run it measured"),
        sa.Column(
            "status",
            sa.String(length=20),
            nullable=False,
            comment="ok | no_components | failed | not_started",
        ),
        sa.Column(
            "components",
            sa.String(length=100),
            nullable=False,
            comment="components measured, comma-separated (gpu, cpu)",
        ),
        sa.Column(
            "missing_components",
            sa.String(length=100),
            nullable=False,
            comment="requested but not present here",
        ),
        sa.Column("epochs", sa.Integer(), nullable=False, comment="epochs Carbontracker logged"),
        sa.Column("duration_s", sa.Float(), nullable=True, comment="sum of logged epoch durations"),
        sa.Column("pue", sa.Float(), nullable=True, comment="PUE factor Carbontracker applied"),
        sa.Column(
            "energy_kwh_reported",
            sa.Float(),
            nullable=True,
            comment="actual energy as reported (PUE included)",
        ),
        sa.Column("energy_j_raw", sa.Float(), nullable=True, comment="actual energy without PUE (J)"),
        sa.Column("co2eq_g", sa.Float(), nullable=True, comment="actual CO2eq as reported (g)"),
        sa.Column(
            "predicted_energy_kwh_reported",
            sa.Float(),
            nullable=True,
            comment="Carbontracker's prediction for the whole budget (PUE included)",
        ),
        sa.Column(
            "predicted_co2eq_g", sa.Float(), nullable=True, comment="predicted CO2eq for the whole budget (g)"
        ),
        sa.Column(
            "intensity_g_per_kwh", sa.Float(), nullable=True, comment="carbon intensity used (gCO2eq/kWh)"
        ),
        sa.Column("intensity_source", sa.Text(), nullable=True, comment="where the intensity came from"),
        sa.Column(
            "log_dir", sa.Text(), nullable=True, comment="folder of its log files in the campaign folder"
        ),
        sa.Column("messages", sa.Text(), nullable=True, comment="notes and errors, one per line"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "cpu_energy_j",
                sa.Float(),
                nullable=True,
                comment="RAPL package energy over train + eval (J); null where RAPL is not readable",
            )
        )
        batch_op.add_column(
            sa.Column(
                "dram_energy_j",
                sa.Float(),
                nullable=True,
                comment="RAPL DRAM energy over train + eval (J); null where RAPL is not readable",
            )
        )


def downgrade() -> None:
    # SQLite drops columns by rebuilding the table, which its views would block: take the views
    # down around it and put 0002's back.
    dialect = op.get_bind().dialect.name
    for sql in views.drop_views_sql():
        op.execute(sql)
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("dram_energy_j")
        batch_op.drop_column("cpu_energy_j")
    for sql in views.create_views_sql(dialect, VIEWS_0002):
        op.execute(sql)

    op.drop_table("carbontracker_run")
    op.drop_table("carbontracker_epoch")
