"""Which database errors a worker waits out (an outage) and which fail at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from db.engine import is_connectivity_error, make_engine
from db.read import CampaignNotFound


def _error(url: str, sql: str) -> SQLAlchemyError:
    with pytest.raises(SQLAlchemyError) as info, make_engine(url).connect() as conn:
        conn.execute(text(sql))
    return info.value


def test_an_unreachable_database_is_an_outage() -> None:
    # nothing listens on port 1: the server is down
    assert is_connectivity_error(_error("postgresql+psycopg://u:p@127.0.0.1:1/db?connect_timeout=5", "SELECT 1"))


def test_schema_mistakes_and_user_errors_are_not(tmp_path: Path) -> None:
    assert not is_connectivity_error(_error(f"sqlite:///{tmp_path / 'x.db'}", "SELECT * FROM no_such_table"))
    assert not is_connectivity_error(CampaignNotFound("no campaign 'x'"))
    assert not is_connectivity_error(ValueError("bug"))
