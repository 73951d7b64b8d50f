"""run_summary and trial_summary of every workload

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 09:00:00

- The views become version 3 (``db/views.py``): run_summary has the trial's ``workload`` and
  ``spec_json`` and the done runs of every workload (a layer campaign's runs were missing: the view
  joined the architecture table, which only cells are in; their architecture columns are NULL
  now); trial_summary groups by the workload and its spec too.

Everything this revision creates is the versioned view functions it names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from alembic import op

from db import views

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

VIEWS_BEFORE = {"run_summary": views.run_summary_v2, "trial_summary": views.trial_summary_v2}
VIEWS_AFTER = {"run_summary": views.run_summary_v3, "trial_summary": views.trial_summary_v3}


def _recreate_views(versions: Mapping[str, Callable[[str], str]]) -> None:
    for statement in views.drop_views_sql():
        op.execute(statement)
    views.create_views(op.execute, op.get_bind(), versions)


def upgrade() -> None:
    _recreate_views(VIEWS_AFTER)


def downgrade() -> None:
    _recreate_views(VIEWS_BEFORE)
