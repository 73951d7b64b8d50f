"""Read-only access for analysis: an engine whose connections cannot write, and one query over it.

A write is refused by the connection itself, never by reading the SQL text: SQLite files are
opened with ``mode=ro`` (and ``PRAGMA query_only``), PostgreSQL sessions run with
``SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY``. One statement per call: PostgreSQL
gets the extended protocol (a prepared statement holds one command), SQLite's driver refuses
a second statement. Errors become ``DatabaseError`` with one line that never holds a password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from db.engine import DatabaseError, database_errors, is_db_error, one_line, parse_url, redact
from db.views import VIEW_NAMES

__all__ = ["QueryError", "QueryResult", "database_errors", "missing_views", "read_only_engine", "require_views",
           "run_query", "sqlite_read_only_uri"]

SQLITE_READONLY = 8  # sqlite3's result code for a write refused by a read-only connection
SQLITE_AUTH = 23  # ... and for a statement the read-only authorizer refused
PG_READ_ONLY_SQL_TRANSACTION = "25006"


class QueryError(DatabaseError):
    """The database refused a query (a write on a read-only connection, bad SQL, ...)."""


@dataclasses.dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than were fetched


def _is_read_only_refusal(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlite_errorcode", None) in (SQLITE_READONLY, SQLITE_AUTH):
        return True
    if isinstance(orig, sqlite3.Error) and "not authorized" in str(orig):  # the authorizer (some codes vary)
        return True
    return getattr(orig, "sqlstate", None) == PG_READ_ONLY_SQL_TRANSACTION


# What a read-only SQLite connection may do (sqlite3's authorizer actions): read, call functions,
# recurse, and read pragmas. Everything else is refused before it runs: writes, ATTACH and DETACH
# (which create a file even beside a read-only main database, as does VACUUM INTO through ATTACH),
# and pragmas that set something (``query_only=OFF`` among them).
_SQLITE_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_SQLITE_READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                        "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"}


def _read_only_authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in _SQLITE_ALLOWED:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg2 is None or (arg1 or "").lower() in _SQLITE_READ_PRAGMAS):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise DatabaseError(f"db.url={redact(url)} is not a SQLite file that a read-only query can open")
    return Path(database).expanduser().resolve()


def sqlite_read_only_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only: ``mode=ro``, and ``immutable=1`` where the file or its
    folder cannot be written (read-only media, a copy without write permission): SQLite then reads
    the file as it is, without the journal files it could not create there."""
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    return f"{path.as_uri()}?mode=ro" + ("" if writable else "&immutable=1")


def read_only_engine(url: str) -> Engine:
    """An engine whose every connection is read-only (SQLite ``mode=ro`` with an authorizer that
    refuses anything but reading, PostgreSQL READ ONLY). Nothing is ever created: a missing SQLite
    file is refused (DatabaseError, one line)."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path.is_dir():
            raise DatabaseError(f"db.url={redact(url)} names the folder {path}, not a SQLite file (check db.url=)")
        if not path.is_file():
            raise DatabaseError(f"no SQLite database at {path} (check root= or db.url=)")
        uri = sqlite_read_only_uri(path)

        def connect() -> sqlite3.Connection:
            con = sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)
            con.execute("PRAGMA query_only=ON")
            con.set_authorizer(_read_only_authorizer)
            return con

        return create_engine("sqlite://", creator=connect, poolclass=NullPool)
    if backend == "postgresql":
        try:
            engine = create_engine(parsed, poolclass=NullPool)
        except ModuleNotFoundError as exc:
            raise DatabaseError(f"no driver for {redact(url)}: {exc}") from exc

        @event.listens_for(engine, "connect")
        def _read_only(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cur.close()
            dbapi_conn.commit()

        return engine
    raise DatabaseError(f"read-only queries support sqlite and postgresql URLs, not {redact(url)}")


def missing_views(engine: Engine) -> list[str]:
    """The analysis views this database lacks (all of them on a schema older than 0002)."""
    present = set(inspect(engine).get_view_names())
    return [v for v in VIEW_NAMES if v not in present]


def require_views(engine: Engine, url: str) -> None:
    """Raise ``DatabaseError`` with the fix when the views are missing."""
    with database_errors(url, "reading the schema"):
        missing = missing_views(engine)
    if missing:
        raise DatabaseError(
            f"{redact(url)} has no {' or '.join(missing)} view (its schema predates them): "
            f"run `campaign db upgrade db.url=...` once"
        )


def run_query(engine: Engine, url: str, sql: str, params: Mapping[str, Any] | None = None,
              max_rows: int | None = None) -> QueryResult:
    """Run one statement on a read-only ``engine`` and return up to ``max_rows`` rows.

    Bind parameters are written ``:name`` (a literal colon as ``\\:``); each must be in
    ``params``. A write, a second statement or bad SQL raise ``QueryError`` with one line.
    """
    given = dict(params or {})
    stmt = text(sql)
    compiled = stmt.compile(dialect=engine.dialect)
    unknown = sorted(set(compiled.params) - set(given))
    if unknown:
        names = ", ".join(f":{k}" for k in given) or "none"
        raise QueryError(f"the query uses :{unknown[0]} but only these parameters are bound: {names} "
                         "(write a literal colon as \\:)")
    bound = {k: v for k, v in given.items() if k in compiled.params}
    try:
        with engine.connect() as conn:
            try:
                if engine.dialect.name == "postgresql":
                    # The raw psycopg cursor with prepare=True: a prepared statement holds exactly one
                    # command, so "COMMIT; SET ... READ WRITE; DELETE ..." cannot leave the read-only mode.
                    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                    cur.execute(str(compiled), compiled.construct_params(bound), prepare=True)
                    columns = [d.name for d in cur.description] if cur.description else []
                    rows = [] if not columns else (
                        cur.fetchmany(max_rows + 1) if max_rows is not None else cur.fetchall())
                    cur.close()
                else:
                    result = conn.execute(stmt, bound)
                    columns = list(result.keys()) if result.returns_rows else []
                    rows = ((result.fetchmany(max_rows + 1) if max_rows is not None else result.fetchall())
                            if result.returns_rows else [])
            finally:
                conn.rollback()
    except Exception as exc:
        if isinstance(exc, DatabaseError):
            raise
        if not is_db_error(exc):
            raise
        if _is_read_only_refusal(exc):
            raise QueryError(f"refused: queries run on a read-only connection, on this one database "
                             f"(no writes, ATTACH or settings) ({one_line(exc, url)})") from exc
        hint = ""
        if any(v in str(exc) for v in VIEW_NAMES):
            with contextlib.suppress(Exception):
                if missing_views(engine):
                    hint = " (this database predates the views: run `campaign db upgrade db.url=...` once)"
        raise QueryError(f"query failed: {one_line(exc, url)}{hint}") from exc
    out = [tuple(r) for r in rows]
    truncated = max_rows is not None and len(out) > max_rows
    return QueryResult(columns, out[:max_rows] if truncated else out, truncated)
