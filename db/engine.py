"""Engines and sessions. Callers create them and pass them on (no module-level state)."""

from __future__ import annotations

import functools
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from db.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from db.errors import CampaignError

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
    else (a missing campaign, a schema error, a bug) is not."""
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
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
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
