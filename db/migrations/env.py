"""Alembic environment: runs migrations on the engine handed over by ``db.migrate``."""

from __future__ import annotations

from alembic import context

from db.schema import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # the alembic command line: take the URL from -x url=... or the ini file
    from db.engine import make_engine

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: give the database as -x url=URL (or sqlalchemy.url in the ini file)")
    engine = make_engine(url)

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch migrations rebuild tables; with foreign keys on, dropping the old table would
        # cascade-delete every child row. Must be set outside a transaction (pysqlite starts none
        # for a PRAGMA).
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
