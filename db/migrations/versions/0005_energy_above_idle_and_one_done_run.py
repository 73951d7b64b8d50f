"""energy above idle, method and uncertainty; at most one done run per trial

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 09:00:00

- run: the energy above idle, the stated uncertainty and its basis, the counter and integrated
  energies and their disagreement, the measurement's flags and the start temperature (nullable:
  runs stored before have none); energy_method widens to 50 characters (it now names the method,
  e.g. nvml_power_integration).
- run_phase: energy above idle, uncertainty, method and validity of each phase; epoch: energy
  above idle and uncertainty.
- Exactly once: a partial unique index on run (trial_id) WHERE status = 'done'. Before it is
  created, a trial holding more than one done run (a stale attempt whose late result was stored
  as a second result) keeps its earliest-ended one; the others become 'superseded' (kept, never a
  result). The downgrade drops the index and leaves those runs superseded.
- The views become version 2 (``db/views.py``): the setup phase, the energy above idle, the
  uncertainty columns.

Everything this revision creates is frozen here (columns, comments, the index), apart from the
versioned view functions it names.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db import views

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

VIEWS_BEFORE = {"run_summary": views.run_summary_v1, "trial_summary": views.trial_summary_v1}
VIEWS_AFTER = {"run_summary": views.run_summary_v2, "trial_summary": views.trial_summary_v2}

ONE_DONE_RUN = "uq_run_one_done_per_trial"
ONE_DONE_WHERE = "status = 'done'"

ENERGY_METHOD_BEFORE = "counter | integrated"
ENERGY_METHOD_AFTER = (
    "how energy_j was obtained: nvml_counter | nvml_power_integration | rapl_counter | simulated | ... "
    "(runs stored before these names: counter | integrated)"
)
# (table, column) -> (comment at 0004, comment now)
COMMENTS = {
    ("run_phase", "phase"): ("warmup | idle | train | eval | cooldown",
                             "warmup | setup | idle | train | eval | cooldown"),
    ("trace_sample", "phase"): ("warmup | idle | train | eval | cooldown",
                                "warmup | setup | idle | train | eval | cooldown"),
}

ABOVE_IDLE = "energy_j - the run's idle_power_w x duration_s (J)"
RUN_COLUMNS = (
    ("energy_above_idle_j", sa.Float(), "energy_j - idle_power_w x duration_s: the dynamic energy of train + eval (J)"),
    ("energy_uncertainty_j", sa.Float(), "stated uncertainty of energy_j (J), made of what error_basis says"),
    ("error_basis", sa.Text(),
     "what the uncertainty is made of (device accuracy, counter resolution, integration bound)"),
    ("counter_energy_j", sa.Float(), "train + eval energy from the device's energy counter (J); null without one"),
    ("integrated_energy_j", sa.Float(), "train + eval energy from the sampled power, integrated (J)"),
    ("energy_disagreement", sa.Float(),
     "|counter_energy_j - integrated_energy_j| / counter_energy_j, a fraction; null unless both"),
    ("flags", sa.Text(),
     "what is wrong with the measurement, comma-separated (e.g. short_window:idle); null when none"),
    ("start_temperature_c", sa.Float(), "GPU temperature when the trial started, degrees Celsius"),
)
EPOCH_COLUMNS = (
    ("energy_above_idle_j", sa.Float(), ABOVE_IDLE),
    ("uncertainty_j", sa.Float(), "stated uncertainty of energy_j (J; basis: run.error_basis)"),
)
RUN_PHASE_COLUMNS = (
    ("energy_above_idle_j", sa.Float(), ABOVE_IDLE),
    ("uncertainty_j", sa.Float(), "stated uncertainty of energy_j (J)"),
    ("method", sa.String(length=50), "how energy_j was obtained (as run.energy_method)"),
    ("valid", sa.Boolean(),
     "the window meets the validity rule (enough samples at a high enough rate); false: flagged, never "
     "silently averaged"),
)
NEW_COLUMNS = {"run": RUN_COLUMNS, "epoch": EPOCH_COLUMNS, "run_phase": RUN_PHASE_COLUMNS}

# Of a trial's done runs, all but the earliest-ended (then the lowest id; a run without an end
# time counts as last) become superseded.
SUPERSEDE_EXTRA_DONE_RUNS = """
UPDATE run SET status = 'superseded',
  error = COALESCE(error, 'superseded: another attempt of the trial had finished it first')
WHERE status = 'done' AND EXISTS (
  SELECT 1 FROM run o
  WHERE o.trial_id = run.trial_id AND o.status = 'done' AND o.id <> run.id
    AND (o.ended_at < run.ended_at
         OR (o.ended_at IS NOT NULL AND run.ended_at IS NULL)
         OR ((o.ended_at = run.ended_at OR (o.ended_at IS NULL AND run.ended_at IS NULL)) AND o.id < run.id))
)"""


def upgrade() -> None:
    bind = op.get_bind()
    for statement in views.drop_views_sql():  # the run table is rebuilt on SQLite; PostgreSQL retypes a column
        op.execute(statement)
    for table, columns in NEW_COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name, type_, comment in columns:
                batch_op.add_column(sa.Column(name, type_, nullable=True, comment=comment))
            if table == "run":
                batch_op.alter_column("energy_method", existing_type=sa.String(length=20), type_=sa.String(length=50),
                                      existing_nullable=True, comment=ENERGY_METHOD_AFTER,
                                      existing_comment=ENERGY_METHOD_BEFORE)
    if bind.dialect.supports_comments:
        for (table, column), (old, new) in COMMENTS.items():
            op.alter_column(table, column, comment=new, existing_comment=old)
    op.execute(SUPERSEDE_EXTRA_DONE_RUNS)
    op.create_index(ONE_DONE_RUN, "run", ["trial_id"], unique=True,
                    sqlite_where=sa.text(ONE_DONE_WHERE), postgresql_where=sa.text(ONE_DONE_WHERE))
    views.create_views(op.execute, bind, VIEWS_AFTER)


def downgrade() -> None:
    bind = op.get_bind()
    for statement in views.drop_views_sql():
        op.execute(statement)
    op.drop_index(ONE_DONE_RUN, table_name="run")
    # the method names of this revision back into 0004's 20 characters
    op.execute("UPDATE run SET energy_method = CASE WHEN energy_method LIKE '%counter' THEN 'counter' "
               "WHEN energy_method LIKE '%integration' THEN 'integrated' ELSE substr(energy_method, 1, 20) END "
               "WHERE length(energy_method) > 20")
    if bind.dialect.supports_comments:
        for (table, column), (old, new) in COMMENTS.items():
            op.alter_column(table, column, comment=old, existing_comment=new)
    for table, columns in NEW_COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table == "run":
                batch_op.alter_column("energy_method", existing_type=sa.String(length=50), type_=sa.String(length=20),
                                      existing_nullable=True, comment=ENERGY_METHOD_BEFORE,
                                      existing_comment=ENERGY_METHOD_AFTER)
            for name, _, _ in reversed(columns):
                batch_op.drop_column(name)
    views.create_views(op.execute, bind, VIEWS_BEFORE)
