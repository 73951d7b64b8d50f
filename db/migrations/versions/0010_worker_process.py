"""the process that runs each attempt

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:00:00

- run.process: ``HOST/BOOT/PIDNS/PID/START`` of the worker process that claimed the attempt
  (``db.process``): a resume on the same machine sees at once that an attempt's process has
  ended (a launch killed with ``kill -9``, a worker the OOM killer took, a machine that
  restarted), where no scheduler can tell (the local launcher, a launch's own Ray cluster).
  Nullable: attempts claimed before have none, and are left to their heartbeat as before.

Everything this revision creates is frozen here.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COMMENT = ("HOST/BOOT/PIDNS/PID/START of the worker process that claimed the attempt (db.process); "
           "null before revision 0010")


def upgrade() -> None:
    op.add_column("run", sa.Column("process", sa.String(length=200), nullable=True, comment=COMMENT))


def downgrade() -> None:
    # a plain DROP COLUMN (SQLite 3.35 and later): a rebuilt run table would take the rows that
    # reference it with it
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError(f"going below revision 0010 drops a column, which needs SQLite 3.35 or later "
                           f"(this is {sqlite3.sqlite_version})")
    op.drop_column("run", "process")
