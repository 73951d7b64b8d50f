"""submission: every submission of worker tasks (launcher, GPU type, job or array ids, workers)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:30:00

- submission: one row per submission of worker tasks for one GPU type of a campaign (a launch, a
  resume, an automatic resubmission by a worker or by the launching process), numbered per
  campaign and GPU type (``seq``, unique: two resubmitters after the same submission race for the
  next number and one wins). Resume and status ask the scheduler about these ids.
- trial: index ix_trial_claim (campaign_id, gpu_type, state, order_index): a pull worker's claim of
  the next pending trial of its GPU type in run order is one index step at 200,000 trials.

Everything this revision creates is frozen here (columns, comments, constraint, index).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "submission",
        sa.Column("id", BigId, primary_key=True, comment="submission id"),
        sa.Column("campaign_id", sa.Integer(), sa.ForeignKey("campaign.id"), nullable=False, comment="campaign.id"),
        sa.Column("gpu_type", sa.String(length=50), nullable=False, comment="GPU type the workers run on"),
        sa.Column("seq", sa.Integer(), nullable=False, comment="1, 2, ... per campaign and GPU type (unique)"),
        sa.Column("launcher", sa.String(length=20), nullable=False, comment="local | slurm | ray"),
        sa.Column("submitted_by", sa.String(length=20), nullable=False,
                  comment="launch | resume | worker | follow"),
        sa.Column("job_ids", sa.Text(), nullable=False,
                  comment="JSON list of the scheduler's ids: Slurm array job ids, Ray task ids (ray:HEX), local ids"),
        sa.Column("array_sizes", sa.Text(), nullable=False,
                  comment="JSON list: tasks per Slurm array (one entry per job id)"),
        sa.Column("workers", sa.Integer(), nullable=False,
                  comment="worker tasks submitted (0 while being submitted)"),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False, comment="UTC"),
        sa.UniqueConstraint("campaign_id", "gpu_type", "seq", name="uq_submission_seq"),
    )
    op.create_index("ix_submission_campaign_id", "submission", ["campaign_id"])
    op.create_index("ix_trial_claim", "trial", ["campaign_id", "gpu_type", "state", "order_index"])


def downgrade() -> None:
    op.drop_index("ix_trial_claim", table_name="trial")
    op.drop_index("ix_submission_campaign_id", table_name="submission")
    op.drop_table("submission")
