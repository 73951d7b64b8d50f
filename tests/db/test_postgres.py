"""PostgreSQL specifics: the password stays secret, sessions are read-only, comments are in the
database, and the views give the same numbers as on SQLite."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from analysis.load import load_runs
from campaign.config import compose
from db.engine import DatabaseError, make_engine
from db.query import read_only_engine, run_query
from db.schema import Base
from db.views import VIEW_TABLES
from tests.db.conftest import fill_smoke

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_smoke(pg_schema, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A smoke campaign on PostgreSQL and the same one on SQLite."""
    root = tmp_path_factory.mktemp("pg-smoke")
    cfg = compose(["+sweep=smoke", f"root={root}"])
    pg, lite = pg_schema(), f"sqlite:///{root / 'campaign.db'}"
    fill_smoke(pg, cfg)
    fill_smoke(lite, cfg)
    return pg, lite, cfg


def test_the_password_is_never_printed_or_logged(pg_smoke, cli, capsys, caplog, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pg, _, cfg = pg_smoke
    password = make_url(pg).password
    assert password
    caplog.set_level(logging.DEBUG)
    where = [f"root={tmp_path}", f"db.url='{pg}'"]
    assert cli(["-v", "export", "smoke", *where, "--format", "csv"]) == 0
    assert cli(["-v", "query", "smoke", "SELECT COUNT(*) AS runs FROM run_summary", *where]) == 0
    assert cli(["query", "smoke", "DELETE FROM run", *where]) == 2
    wrong = make_url(pg).set(password=password[::-1]).render_as_string(hide_password=False)
    assert cli(["query", "smoke", "SELECT 1", f"root={tmp_path}", f"db.url='{wrong}'"]) == 2
    closed = make_url(pg).set(port=1).render_as_string(hide_password=False)
    assert cli(["export", "smoke", f"root={tmp_path}", f"db.url='{closed}'"]) == 2
    out = capsys.readouterr()
    everything = out.out + out.err + caplog.text
    assert password not in everything and password[::-1] not in everything
    assert "***" in out.out  # the URL is shown, redacted
    errors = out.err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("campaign: error: ") for e in errors)
    assert "password authentication failed" in errors[1] and "Connection refused" in errors[2]


def test_sessions_are_read_only_whatever_the_statement(pg_smoke) -> None:  # type: ignore[no-untyped-def]
    pg, _, _ = pg_smoke
    engine = read_only_engine(pg)
    assert run_query(engine, pg, "SHOW transaction_read_only").rows == [("on",)]
    assert run_query(engine, pg, "SHOW default_transaction_read_only").rows == [("on",)]
    # undoing it inside one statement does not outlive that statement's (rolled back) transaction
    run_query(engine, pg, "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    assert run_query(engine, pg, "SHOW default_transaction_read_only").rows == [("on",)]
    assert run_query(engine, pg, "SELECT 1::text || :campaign AS x", {"campaign": "y"}).rows == [("1y",)]
    engine.dispose()
    with pytest.raises(DatabaseError, match="no SQLite|not a SQLAlchemy URL|read-only queries support"):
        read_only_engine("mysql://u:secret@h/db")


def test_column_comments_are_in_the_database(pg_smoke) -> None:  # type: ignore[no-untyped-def]
    pg, _, _ = pg_smoke
    insp = inspect(make_engine(pg))
    for table in Base.metadata.sorted_tables:
        got = {c["name"]: c.get("comment") for c in insp.get_columns(table.name)}
        assert got == {c.name: c.comment for c in table.columns}, table.name
    for name, view in VIEW_TABLES.items():
        got = {c["name"]: c.get("comment") for c in insp.get_columns(name)}
        assert set(got) == {c.name for c in view.columns} and all(got.values()), name


def test_the_views_give_the_same_numbers_on_both_backends(pg_smoke) -> None:  # type: ignore[no-untyped-def]
    pg, lite, _ = pg_smoke
    on_pg, on_lite = load_runs(pg, "smoke"), load_runs(lite, "smoke")
    for frame in ("runs", "trials", "epochs", "phases"):
        a = getattr(on_pg, frame).drop(columns=["started_at", "ended_at"], errors="ignore")
        b = getattr(on_lite, frame).drop(columns=["started_at", "ended_at"], errors="ignore")
        assert list(a.columns) == list(b.columns)
        assert len(a) == len(b) > 0
        key = [c for c in ("arch_hash", "epochs", "seed", "epoch", "phase") if c in a.columns]
        a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
        for col in a.columns:
            if a[col].dtype.kind == "f":
                assert a[col].fillna(-1).to_numpy() == pytest.approx(b[col].fillna(-1).to_numpy()), (frame, col)
            else:
                assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), (frame, col)


def test_the_example_queries_give_the_same_answers_on_both_backends(pg_smoke) -> None:  # type: ignore[no-untyped-def]
    from db.docs import EXAMPLES

    pg, lite, _ = pg_smoke
    for ex in EXAMPLES:
        answers = []
        for url in (pg, lite):
            engine = read_only_engine(url)
            answers.append(run_query(engine, url, ex.sql, {"campaign": "smoke"}))
            engine.dispose()
        on_pg, on_lite = answers
        assert on_pg.columns == on_lite.columns and len(on_pg.rows) == len(on_lite.rows) > 0, ex.title
        for a, b in zip(on_pg.rows, on_lite.rows, strict=True):
            assert [type(x) for x in a] == [type(y) for y in b], ex.title
            assert list(a) == pytest.approx(list(b)), ex.title
