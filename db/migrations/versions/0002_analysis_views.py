"""analysis views run_summary and trial_summary; column comments for the schema page

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 02:00:00

Creates version 1 of the views (``db/views.py``) and, on PostgreSQL, comments on their columns
and on the table columns whose comment 0001 lacked or that changed since (SQLite keeps no
comments; the schema page reads them from the models). No table changes: rows are untouched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from db import views

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEW_VERSIONS = {"run_summary": views.run_summary_v1, "trial_summary": views.trial_summary_v1}

# (table, column) -> (comment at 0001, comment now), frozen here. Most columns had none; run.status
# gained 'superseded' (db.schema.RUN_STATUSES) after 0001.
COMMENTS = {
    ('architecture', 'num_vertices'): (None, 'vertices of the pruned cell (input and output included)'),
    ('architecture', 'num_edges'): (None, 'edges of the pruned cell'),
    ('campaign', 'id'): (None, 'campaign id'),
    ('hardware', 'id'): (None, 'hardware id'),
    ('hardware', 'host'): (None, 'node host name'),
    ('hardware', 'cpu_model'): (None, 'CPU model name'),
    ('hardware', 'cpu_count'): (None, 'logical CPUs visible to the job'),
    ('hardware', 'ram_gb'): (None, 'host memory, GiB'),
    ('hardware', 'gpu_name'): (None, 'device name as the meter reports it (simulated: says so)'),
    ('hardware', 'gpu_count'): (None, 'GPUs measured (0 without a GPU)'),
    ('trial', 'id'): (None, 'trial id'),
    ('trial', 'campaign_id'): (None, 'campaign of the trial'),
    ('trial', 'arch_hash'): (None, 'architecture trained'),
    ('trial', 'gpu_type'): (None, 'GPU type to run on, a name from conf/gpu/ (cpu for none)'),
    ('trial', 'seed'): (None, 'training seed (0 .. seeds-1)'),
    ('trial', 'updated_at'): (None, 'UTC time of the last state change'),
    ('run', 'id'): (None, 'run id'),
    ('run', 'trial_id'): (None, 'trial this run attempts'),
    ('run', 'status'): ('running|done|failed|stale|cancelled', 'running|done|failed|stale|cancelled|superseded'),
    ('run', 'started_at'): (None, 'UTC time the run was claimed'),
    ('run', 'ended_at'): (None, 'UTC time the run finished'),
    ('run', 'heartbeat_at'): (None, "UTC time of the worker's last sign of life"),
    ('run', 'hardware_id'): (None, 'node and devices measured'),
    ('run', 'error'): (None, 'why a failed run failed (exception: message)'),
    ('epoch', 'id'): (None, 'epoch row id'),
    ('epoch', 'run_id'): (None, 'run of this epoch'),
    ('epoch', 'epoch'): (None, '1-based epoch number'),
    ('epoch', 'mean_power_w'): (None, "mean power over this epoch's samples"),
    ('epoch', 'train_loss'): (None, 'mean training cross-entropy loss of the epoch'),
    ('run_phase', 'id'): (None, 'phase row id'),
    ('run_phase', 'run_id'): (None, 'run of this phase'),
    ('run_phase', 'duration_s'): (None, 'time spent in the phase'),
    ('run_phase', 'energy_j'): (None, 'energy of the phase, all devices of the job'),
    ('run_phase', 'mean_power_w'): (None, "mean power over the phase's samples"),
    ('run_phase', 'samples'): (None, 'trace samples in the phase'),
    ('trace_sample', 'id'): (None, 'sample id'),
    ('trace_sample', 'run_id'): (None, 'run the sample belongs to'),
    ('trace_sample', 'phase'): (None, 'warmup | idle | train | eval | cooldown'),
    ('trace_sample', 'epoch'): (None, '1-based training epoch, NULL outside an epoch'),
    ('trace_sample', 'power_w'): (None, 'power draw of the device'),
    ('trace_sample', 'gpu_util'): (None, 'GPU utilization, percent 0-100 (simulated: the process CPU load)'),
    ('trace_sample', 'mem_util'): (None, 'GPU memory bandwidth utilization, percent 0-100'),
    ('trace_sample', 'mem_used_mb'): (None, 'GPU memory in use, MiB'),
    ('trace_sample', 'temperature_c'): (None, 'GPU temperature, degrees Celsius'),
    ('trace_sample', 'sm_clock_mhz'): (None, 'streaming multiprocessor clock'),
    ('trace_sample', 'mem_clock_mhz'): (None, 'memory clock'),
    ('trace_sample', 'power_limit_w'): (None, 'enforced power limit of the device'),
    ('trace_sample', 'cpu_util'): (None, 'host CPU utilization, percent 0-100 (all logical CPUs)'),
    ('trace_sample', 'rss_mb'): (None, 'resident memory of the training process, MiB'),
}


def upgrade() -> None:
    bind = op.get_bind()
    for statement in views.drop_views_sql():  # a database upgraded by a test build may have them
        op.execute(statement)
    for statement in views.create_views_sql(bind.dialect.name, VIEW_VERSIONS):
        op.execute(statement)
    if bind.dialect.supports_comments:
        for (table, column), (old, new) in COMMENTS.items():
            op.alter_column(table, column, comment=new, existing_comment=old)
        inspector = sa.inspect(bind)
        existing = {name: {c["name"] for c in inspector.get_columns(name)} for name in views.VIEW_NAMES}
        for statement in views.comment_views_sql(bind.dialect.name, existing):
            op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    for statement in views.drop_views_sql():
        op.execute(statement)
    if bind.dialect.supports_comments:
        for (table, column), (old, new) in COMMENTS.items():
            op.alter_column(table, column, comment=old, existing_comment=new)
