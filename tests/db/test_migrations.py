"""The schema is created by Alembic, and the migrations agree with the models."""

from __future__ import annotations

from sqlalchemy import inspect

from db.engine import make_engine
from db.migrate import current_revision, head_revision, upgrade
from db.schema import Base


def test_upgrade_from_empty_creates_every_table(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(engine)  # a second upgrade is a no-op
    assert current_revision(engine) == head_revision()


def test_migrations_match_the_models(sqlite_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_cli_db_upgrade(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from campaign.cli import main

    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["db", "upgrade", f"db.url={url}"]) == 0
    assert current_revision(make_engine(url)) == head_revision()


def test_the_trace_index_migration_goes_down_and_up_again(db_url: str) -> None:
    """0004 swaps the (run_id, phase) index of trace_sample for (run_id), on both backends."""
    from alembic import command

    from db.migrate import alembic_config

    def trace_indexes() -> dict[str, list[str]]:
        return {
            ix["name"]: list(ix["column_names"])
            for ix in inspect(engine).get_indexes("trace_sample")
            if ix["name"] is not None
        }

    engine = make_engine(db_url)
    upgrade(engine)
    assert trace_indexes() == {"ix_trace_run": ["run_id"]}
    command.downgrade(alembic_config(engine), "0003")
    assert current_revision(engine) == "0003"
    assert trace_indexes() == {"ix_trace_run_phase": ["run_id", "phase"]}
    upgrade(engine)
    assert current_revision(engine) == head_revision() and trace_indexes() == {"ix_trace_run": ["run_id"]}
    engine.dispose()
