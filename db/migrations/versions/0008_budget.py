"""a campaign's budget and the estimates made before it ran

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:00:00

- campaign_budget: one row per campaign with a budget: its limits (kWh, GPU-hours, kg CO2eq), the
  carbon intensity and PUE its CO2eq uses, and when and why the budget stopped the campaign.
- estimate_group: the estimate made before each launch and resume, per GPU type x epoch budget,
  per trial (energy and GPU-hours, low and high, and the source): what workers predict the
  remaining trials from until runs of their own group finish, and what `campaign analyze`
  calibrates against the measurements.

Everything this revision creates is frozen here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_budget",
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True,
                  comment="campaign the budget limits"),
        sa.Column("max_kwh", sa.Float(), nullable=True, comment="energy limit, kWh (all phases of all runs)"),
        sa.Column("max_gpu_hours", sa.Float(), nullable=True, comment="GPU-hours limit (all phases of all runs)"),
        sa.Column("max_co2_kg", sa.Float(), nullable=True, comment="CO2eq limit, kg"),
        sa.Column("carbon_intensity_g_per_kwh", sa.Float(), nullable=False,
                  comment="grid intensity the CO2eq uses, g/kWh"),
        sa.Column("pue", sa.Float(), nullable=False, comment="power usage effectiveness the CO2eq uses"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, comment="UTC time the limits were set"),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True,
                  comment="UTC time the budget stopped the campaign (null: not stopped)"),
        sa.Column("stopped_reason", sa.Text(), nullable=True, comment="the limit and the figures that stopped it"),
    )
    op.create_table(
        "estimate_group",
        sa.Column("id", sa.Integer(), primary_key=True, comment="row id"),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False,
                  comment="campaign estimated"),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False, comment="UTC time of the estimate"),
        sa.Column("purpose", sa.String(16), nullable=False, comment="launch | resume"),
        sa.Column("gpu_type", sa.String(50), nullable=False, comment="GPU type"),
        sa.Column("epochs", sa.Integer(), nullable=False, comment="epoch budget"),
        sa.Column("trials", sa.Integer(), nullable=False, comment="trials the estimate covered"),
        sa.Column("source", sa.String(100), nullable=False,
                  comment="measured | measured (per-epoch) | surrogate | rough bound (TDP) | mixed: ..."),
        sa.Column("energy_kwh_low", sa.Float(), nullable=False, comment="per trial, all phases but the warm-up, kWh"),
        sa.Column("energy_kwh_high", sa.Float(), nullable=False, comment="per trial, all phases but the warm-up, kWh"),
        sa.Column("gpu_hours_low", sa.Float(), nullable=False, comment="per trial, hours"),
        sa.Column("gpu_hours_high", sa.Float(), nullable=False, comment="per trial, hours"),
    )
    op.create_index("ix_estimate_group_campaign", "estimate_group", ["campaign_id"])


def downgrade() -> None:
    op.drop_index("ix_estimate_group_campaign", table_name="estimate_group")
    op.drop_table("estimate_group")
    op.drop_table("campaign_budget")
