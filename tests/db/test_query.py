"""Read-only queries: the connection refuses writes on both backends; the CLI prints one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from db.engine import DatabaseError, make_engine
from db.migrate import upgrade
from db.query import QueryError, read_only_engine, run_query, sqlite_read_only_uri

WRITES = (
    "DELETE FROM run",
    "UPDATE trial SET state = 'pending'",
    "INSERT INTO campaign (name, sweep, created_at, root, code_revision, config_json) "
    "VALUES ('x', 's', '2026-01-01', '/', 'r', '{}')",
    "CREATE TABLE scratch (a integer)",
    "DROP VIEW run_summary",
    # a lower-case or commented write is the same write: nothing here reads the text
    "/* harmless? */ delete from trace_sample",
)
# Tricks that would leave a read-only transaction if several statements were allowed
SMUGGLED = (
    "SELECT 1; DELETE FROM run",
    "COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; DELETE FROM run",
)


def _counts(url: str, tables: tuple[str, ...] = ("run", "trial", "campaign", "trace_sample", "run_summary")) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = {t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()) for t in tables}
    engine.dispose()
    return n


def test_reads_bind_campaign_and_cap_rows(smoke_db) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    engine = read_only_engine(url)
    res = run_query(engine, url, "SELECT run_id, energy_j FROM run_summary WHERE campaign = :campaign ORDER BY run_id",
                    {"campaign": "smoke"}, max_rows=3)
    assert res.columns == ["run_id", "energy_j"] and len(res.rows) == 3 and res.truncated
    res = run_query(engine, url, "SELECT COUNT(*) AS n FROM run_summary WHERE campaign = :campaign", {"campaign": "x"})
    assert res.rows == [(0,)] and not res.truncated
    # literal percent signs and colons are not parameters
    res = run_query(engine, url, "SELECT 'a%b' AS p, '12:30' AS t, name FROM campaign WHERE name LIKE 'sm%'",
                    {"campaign": "smoke"})
    assert res.rows == [("a%b", "12:30", "smoke")]
    with pytest.raises(QueryError, match=r":other but only these parameters are bound: :campaign"):
        run_query(engine, url, "SELECT :other", {"campaign": "smoke"})
    engine.dispose()


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_by_the_connection(smoke_db, sql: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    before = _counts(url)
    assert before["run_summary"] > 0
    engine = read_only_engine(url)
    with pytest.raises(QueryError, match="read-only") as err:
        run_query(engine, url, sql)
    assert "\n" not in str(err.value)
    engine.dispose()
    assert _counts(url) == before


@pytest.mark.parametrize("sql", SMUGGLED)
def test_a_second_statement_is_refused(smoke_db, sql: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    before = _counts(url)
    engine = read_only_engine(url)
    with pytest.raises(QueryError):
        run_query(engine, url, sql)
    engine.dispose()
    assert _counts(url) == before


def test_a_database_without_the_views_says_how_to_get_them(db_url: str) -> None:
    upgrade(make_engine(db_url), "0001")
    engine = read_only_engine(db_url)
    with pytest.raises(QueryError, match="campaign db upgrade"):
        run_query(engine, db_url, "SELECT * FROM run_summary")
    engine.dispose()


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    with pytest.raises(DatabaseError, match="no SQLite database at"):
        read_only_engine(url)
    assert not (tmp_path / "nothing.db").exists()


def test_cli_query_prints_a_table_and_refuses_writes_in_one_line(smoke_db, cli, capsys) -> None:  # type: ignore[no-untyped-def]
    url, cfg = smoke_db
    where = [f"root={cfg['root']}", f"db.url='{url}'"]  # quoted: a PostgreSQL URL may hold '='
    assert cli(["query", "smoke", "SELECT arch_hash, epochs, power_kind FROM run_summary "
                "WHERE campaign = :campaign ORDER BY run_id", *where, "--max-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "arch_hash" in out and "simulated" in out and "2 rows; more exist" in out
    before = _counts(url)
    assert cli(["query", "smoke", "DELETE FROM run", *where]) == 2
    err = capsys.readouterr().err
    assert err.startswith("campaign: error: refused: queries run on a read-only connection") and err.count("\n") == 1
    assert _counts(url) == before
    assert cli(["query", "nope", "SELECT 1", *where]) == 2
    err = capsys.readouterr().err
    assert "no campaign 'nope'" in err and "known: smoke" in err


# Statements that would create a file beside a read-only database, or switch its protection off.
ESCAPES = (
    "ATTACH '{new}' AS y",
    "VACUUM INTO '{new}'",
    "PRAGMA query_only=OFF",
    "DETACH main",
)


@pytest.mark.parametrize("sql", ESCAPES)
def test_attach_vacuum_into_and_settings_are_refused_and_create_nothing(smoke_db, tmp_path: Path, sql: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    if not url.startswith("sqlite"):
        pytest.skip("SQLite statements")
    new = tmp_path / "created.db"
    engine = read_only_engine(url)
    with pytest.raises(QueryError, match="read-only") as err:
        run_query(engine, url, sql.format(new=new))
    assert "\n" not in str(err.value) and not new.exists()
    # the connection is still read-only: a write after the refused setting is refused too
    with pytest.raises(QueryError, match="read-only"):
        run_query(engine, url, "DELETE FROM run")
    engine.dispose()


def test_a_database_on_read_only_media_is_read_immutable(smoke_db, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    if not url.startswith("sqlite"):
        pytest.skip("SQLite files")
    path = Path(url.removeprefix("sqlite:///"))
    assert sqlite_read_only_uri(path) == f"{path.as_uri()}?mode=ro"
    monkeypatch.setattr("db.query.os.access", lambda p, mode: False)  # as a read-only mount answers
    assert sqlite_read_only_uri(path) == f"{path.as_uri()}?mode=ro&immutable=1"
    engine = read_only_engine(url)
    res = run_query(engine, url, "SELECT COUNT(*) FROM campaign WHERE name = :campaign", {"campaign": "smoke"})
    assert res.rows == [(1,)]
    engine.dispose()


def test_a_sqlite_url_naming_a_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="names the folder") as err:
        read_only_engine(f"sqlite:///{tmp_path}")
    assert "\n" not in str(err.value)
