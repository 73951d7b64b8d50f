"""Engines and sessions. Callers create them and pass them on (no module-level state).

Every error a user's environment can cause (a server that does not answer, a refused password, a
folder that cannot be created, read-only media, a full disk, a path that is a file) becomes one
``DatabaseError`` line naming the path or URL (never its password) and what to do:
``database_errors`` around the work, ``check_database`` before anything is recorded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from db.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from db.errors import CampaignError
from db.paths import os_error_line

# The checkpointer of each SQLite file engine (weakly held: it goes with its engine).
_CHECKPOINTERS: weakref.WeakKeyDictionary[Engine, WalCheckpointer] = weakref.WeakKeyDictionary()


class DatabaseError(CampaignError, RuntimeError):
    """The database could not be reached or used; the message says what to do."""


# OperationalError covers an unreachable server and a locked SQLite file, but SQLite also reports
# schema mistakes through it: those are not outages and are never waited out.
_NOT_OUTAGES = ("no such table", "no such column", "syntax error", "has no column")


def is_connectivity_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or is briefly busy (a server down,
    a dropped connection, a locked SQLite file, an exhausted pool): worth waiting out. Anything
    else (a missing campaign, a schema error, a bug) is not. A ``DatabaseError`` is judged by the
    driver error it was raised from."""
    if isinstance(exc, DatabaseError) and exc.__cause__ is not None:
        return is_connectivity_error(exc.__cause__)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (DisconnectionError, PoolTimeout, InterfaceError)):
        return True
    return isinstance(exc, OperationalError) and not any(s in str(exc.orig).lower() for s in _NOT_OUTAGES)


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def parse_url(url: str) -> URL:
    """``url`` parsed; DatabaseError naming it where it is not a SQLAlchemy URL."""
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise DatabaseError(f"db.url={url!r} is not a SQLAlchemy URL (e.g. sqlite:///campaigns/campaign.db)") from exc


def make_engine(url: str, echo: bool = False) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys.

    The parent folder of a SQLite file is created if missing. A SQLite file's WAL is checkpointed
    by a thread after commits (``db.checkpoint``) rather than inside them; ``engine.dispose()``
    finishes the pending checkpoint and stops the thread.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        is_file = bool(parsed.database) and parsed.database != ":memory:" and not parsed.query.get("uri")
        if is_file:
            folder = Path(parsed.database).expanduser().parent  # type: ignore[arg-type]
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"db.url={redact(url)}: {os_error_line(exc, 'creating its folder')}") from None
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            if is_file:  # the checkpointer thread does it; writers only past the backstop
                cur.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            cur.close()

        if is_file:
            checkpointer = WalCheckpointer(str(Path(parsed.database).expanduser()))  # type: ignore[arg-type]
            _CHECKPOINTERS[engine] = checkpointer
            # The engine's "commit" event comes before the commit itself: it marks the pooled
            # connection, and the checkpoint is asked for when the connection is given back.
            event.listen(engine, "commit", _mark_commit)
            event.listen(engine.pool, "checkin", functools.partial(_notify_after_commit, checkpointer))
            event.listen(engine, "engine_disposed", lambda _engine: checkpointer.close())
            weakref.finalize(engine, checkpointer.close)  # an engine dropped without dispose()
        return engine
    try:
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise DatabaseError(f"no driver for {redact(url)}: {exc}") from exc


def database_identity(url: str) -> str:
    """Which database ``url`` names, as a campaign folder's marker records it: a SQLite file's
    absolute path, or the URL with the driver and password left out."""
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_file(parsed)
        return f"sqlite:///{path.resolve()}" if path is not None else redact(url)
    return parsed._replace(drivername=backend, password=None).render_as_string(hide_password=False)


def _sqlite_file(parsed: URL) -> Path | None:
    """The file a SQLite URL names (``~`` expanded); None for memory and ``file:`` URIs."""
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(database).expanduser()


# What to do about the driver's usual environment errors (matched in its message, lower case).
_DB_HINTS = (
    ("unable to open database file", "check that its folder exists and is writable, or choose another db.url="),
    ("readonly database", "the file or its folder is read-only: use a writable copy or another db.url="),
    ("read-only file system", "the file system is read-only: use a writable copy or another db.url="),
    ("database or disk is full", "the disk is full: free space or choose another db.url="),
    ("disk i/o error", "the disk failed or is full: free space or choose another db.url="),
    ("file is not a database", "db.url= names a file that is not a SQLite database: check db.url="),
    ("database is locked", "another process holds it: wait for it or retry"),
    ("password authentication failed", "check the user and password of db.url="),
    ("connection refused", "check that the server runs and db.url= names its host and port"),
    ("could not translate host name", "check the host name in db.url="),
    ("name or service not known", "check the host name in db.url="),
    ("timeout", "check that the server runs and is reachable from here"),
    ("timed out", "check that the server runs and is reachable from here"),
    ("does not exist", "check the database name in db.url= (create it first)"),
    ("permission denied", "check the database user's rights"),
)


def one_line(exc: BaseException, url: str | None = None) -> str:
    """The driver's own message (SQLAlchemy's wrapper removed), first line only, password hidden."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).strip().splitlines() if ln.strip()]
    msg = lines[0] if lines else type(orig).__name__
    secret = _password(url) if url else None
    return msg.replace(secret, "***") if secret else msg


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return None


def _hint(exc: BaseException) -> str:
    text_ = str(getattr(exc, "orig", None) or exc).lower()
    return next((f" ({hint})" for needle, hint in _DB_HINTS if needle in text_), "")


def is_db_error(exc: BaseException) -> bool:
    """An error of SQLAlchemy or of a driver (sqlite3; psycopg's own, on the raw-connection path)."""
    return isinstance(exc, (SQLAlchemyError, sqlite3.Error)) or type(exc).__module__.split(".")[0] == "psycopg"


@contextlib.contextmanager
def database_errors(url: str, doing: str) -> Iterator[None]:
    """Turn driver, SQLAlchemy and file-system errors raised inside into one-line
    ``DatabaseError``s naming the (redacted) URL or the path, and what to do."""
    try:
        yield
    except CampaignError:
        raise
    except OSError as exc:
        raise DatabaseError(os_error_line(exc, doing)) from exc
    except Exception as exc:
        if not is_db_error(exc):
            raise
        raise DatabaseError(f"{doing} failed on {redact(url)}: {one_line(exc, url)}{_hint(exc)}") from exc


def check_database(url: str, connect_timeout_s: int = 10) -> None:
    """Whether the database of ``url`` can be reached and written, without recording anything:
    a SQLite file's folder exists or can be created and takes a file (probed with a temporary file,
    removed at once), an existing file opens for writing; a server answers within
    ``connect_timeout_s`` and is not read-only. DatabaseError (one line) where not."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            _check_sqlite_file(url, path)
        return
    args = {"connect_timeout": connect_timeout_s} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(parsed, poolclass=NullPool, connect_args=args)
    except ModuleNotFoundError as exc:
        raise DatabaseError(f"no driver for {redact(url)}: {exc}") from exc
    try:
        with database_errors(url, "connecting to the database"), engine.connect() as conn:
            read_only = (conn.execute(text("SHOW transaction_read_only")).scalar()
                         if parsed.get_backend_name() == "postgresql" else "off")
    finally:
        engine.dispose()
    if read_only == "on":
        raise DatabaseError(f"{redact(url)} is read-only (a standby or a read-only user): "
                            "give db.url= a server and user that may write")


def _check_sqlite_file(url: str, path: Path) -> None:
    where = f"db.url={redact(url)}"
    if path.is_dir():
        raise DatabaseError(f"{where} names the folder {path}, not a file: give db.url= a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"{where}: {os_error_line(exc, 'creating its folder')}") from None
    try:
        if path.exists():
            with open(path, "r+b"):  # opened for writing, nothing written
                pass
    except OSError as exc:
        raise DatabaseError(f"{where}: {os_error_line(exc, 'opening the database for writing')}") from None
    try:  # SQLite writes its journal (-wal, -shm) beside the file
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        exc.filename = str(path.parent)
        raise DatabaseError(f"{where}: {os_error_line(exc, 'writing a file in its folder')}") from None


_COMMITTED = "campaign.committed"


def _mark_commit(conn: Any) -> None:
    conn.info[_COMMITTED] = True


def _notify_after_commit(checkpointer: WalCheckpointer, _dbapi_conn: Any, record: Any) -> None:
    if record is not None and record.info.pop(_COMMITTED, False):
        checkpointer.notify()


def wal_checkpointer(engine: Engine) -> WalCheckpointer | None:
    """The WAL checkpointer of a SQLite file engine made by ``make_engine``; None for others."""
    return _CHECKPOINTERS.get(engine)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (results are read after writing)."""
    return sessionmaker(engine, expire_on_commit=False)
