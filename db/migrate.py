"""Schema versioning with Alembic: upgrade a database to the head revision."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine | None) -> Config:
    """An Alembic Config bound to ``engine`` (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (creates every table on an empty database)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The database's Alembic revision, or None for an unversioned database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest revision in ``db/migrations``."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(None)).get_current_head()
    assert head is not None
    return head


def ensure_schema(engine: Engine) -> None:
    """Upgrade to head unless the database is already there (cheap check first)."""
    if "alembic_version" in inspect(engine).get_table_names() and current_revision(engine) == head_revision():
        return
    upgrade(engine)


UPGRADE_HINT = "run `campaign db upgrade db.url=...` once (reading a database never changes it)"


def schema_problem(engine: Engine) -> str | None:
    """Why this code cannot read the database's schema as it stands, as one clause that ends with
    the fix; None when it is at this code's head revision. Only reads (a read-only engine will do)."""
    tables = set(inspect(engine).get_table_names())
    if "campaign" not in tables:
        return f"holds no campaign schema (no tables yet): {UPGRADE_HINT}"
    revision = current_revision(engine) if "alembic_version" in tables else None
    head = head_revision()
    if revision != head:
        from alembic.script import ScriptDirectory

        known = {s.revision for s in ScriptDirectory.from_config(alembic_config(None)).walk_revisions()}
        if revision is not None and revision not in known:
            return (f"has schema revision {revision}, which this version of campaign does not know (its newest "
                    f"is {head}): read it with the version of campaign that wrote it, or a newer one")
        return f"has schema revision {revision or 'none'}, older than this version reads ({head}): {UPGRADE_HINT}"
    return None
