"""The WAL checkpoint thread of SQLite file engines (``db.checkpoint``, wired in ``db.engine``).

Whether a checkpoint ran is read from the database file alone: a copy of the main file without
its ``-wal`` holds exactly what has been checkpointed into it.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from db.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from db.engine import make_engine, wal_checkpointer


def rows_in_main_file(db: Path, tmp_path: Path) -> int:
    """Rows of table ``t`` in the database file itself, its write-ahead log left out."""
    copy = tmp_path / "main-file-only.db"
    copy.unlink(missing_ok=True)
    shutil.copyfile(db, copy)
    con = sqlite3.connect(copy)
    try:
        return int(con.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        con.close()


def file_engine(db: Path) -> tuple[Engine, WalCheckpointer]:
    """A ``make_engine`` engine on the SQLite file ``db`` and its checkpointer."""
    engine = make_engine(f"sqlite:///{db}")
    checkpointer = wal_checkpointer(engine)
    assert checkpointer is not None
    return engine, checkpointer


def write_rows(engine, rows: int, start: int = 0) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, pad BLOB)"))
        conn.execute(
            text("INSERT INTO t (i, pad) VALUES (:i, zeroblob(1000))"),
            [{"i": i} for i in range(start, start + rows)],
        )


def test_commits_are_checkpointed_by_the_thread_not_by_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    engine, checkpointer = file_engine(db)
    with engine.connect() as conn:  # writers keep only the backstop of their own
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == BACKSTOP_PAGES
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    write_rows(engine, 3000)  # about 750 pages: under SQLite's default auto-checkpoint of 1000
    write_rows(engine, 3000, start=3000)  # together past it
    assert checkpointer.flush(timeout=60) is True
    assert checkpointer.checkpoints >= 1 and checkpointer.last_error is None
    assert rows_in_main_file(db, tmp_path) == 6000
    engine.dispose()


def test_a_writer_with_the_backstop_setting_leaves_the_log_to_the_thread(tmp_path: Path) -> None:
    """Without notifications nothing reaches the main file (the writer does not checkpoint at
    SQLite's default threshold); one notification folds everything in."""
    db = tmp_path / "w.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    con.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, pad BLOB)")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the empty table is in the main file
    con.execute("BEGIN")
    con.executemany("INSERT INTO t (i, pad) VALUES (?, zeroblob(1000))", ((i,) for i in range(8000)))
    con.execute("COMMIT")  # about 2000 pages
    assert rows_in_main_file(db, tmp_path) == 0
    checkpointer = WalCheckpointer(str(db))
    checkpointer.notify()
    assert checkpointer.flush(timeout=60) is True
    assert rows_in_main_file(db, tmp_path) == 8000
    checkpointer.close()
    con.close()


def test_dispose_finishes_the_checkpoint_and_the_engine_stays_usable(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    engine, checkpointer = file_engine(db)
    write_rows(engine, 500)
    engine.dispose()
    assert not any(t.name.startswith("wal-checkpoint:") and str(db) in t.name for t in threading.enumerate())
    # the last connection closed: SQLite folded the log into the file and removed it
    assert not Path(f"{db}-wal").exists()
    assert rows_in_main_file(db, tmp_path) == 500
    write_rows(engine, 500, start=500)  # a disposed engine makes new connections, and a new thread
    assert checkpointer.flush(timeout=60) is True
    assert rows_in_main_file(db, tmp_path) == 1000
    engine.dispose()


def test_many_commits_are_served_by_fewer_checkpoints(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    engine, checkpointer = file_engine(db)
    for i in range(40):
        write_rows(engine, 10, start=10 * i)
    assert checkpointer.flush(timeout=60) is True
    assert 1 <= checkpointer.checkpoints <= 40
    assert rows_in_main_file(db, tmp_path) == 400
    engine.dispose()


def test_a_checkpointer_that_cannot_open_its_file_fails_alone(tmp_path: Path) -> None:
    """The thread stops with the reason; notify() and flush() neither raise nor hang."""
    checkpointer = WalCheckpointer(str(tmp_path / "no-such-folder" / "x.db"))
    checkpointer.notify()
    assert checkpointer.flush(timeout=60) is False
    assert checkpointer.last_error is not None and "unable to open" in checkpointer.last_error
    checkpointer.close()
    checkpointer.notify()  # a new attempt after close() fails the same way, still without raising
    assert checkpointer.flush(timeout=60) is False
    checkpointer.close()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_databases_without_a_file_have_no_checkpointer(url: str) -> None:
    engine = make_engine(url)
    assert wal_checkpointer(engine) is None
    with engine.begin() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()


def test_a_forked_child_checkpoints_with_a_thread_of_its_own(tmp_path: Path) -> None:
    """The parent's thread does not exist in a child: the child starts its own."""
    import multiprocessing

    db = tmp_path / "f.db"
    engine, checkpointer = file_engine(db)
    write_rows(engine, 10)
    assert checkpointer.flush(timeout=60) is True
    assert checkpointer._alive()  # the parent's thread is running when the child is forked
    engine.pool.dispose()  # no pooled connection crosses the fork; the checkpointer object does

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_write_in_child, args=(engine, queue))
    child.start()
    flushed = queue.get(timeout=120)
    child.join(timeout=120)
    assert child.exitcode == 0 and flushed is True
    assert rows_in_main_file(db, tmp_path) == 20
    engine.dispose()


def _write_in_child(engine, queue) -> None:  # type: ignore[no-untyped-def]
    write_rows(engine, 10, start=10)
    checkpointer = wal_checkpointer(engine)
    queue.put(checkpointer is not None and checkpointer.flush(timeout=60))


def test_an_engine_dropped_without_dispose_takes_its_thread_along(tmp_path: Path) -> None:
    import gc

    db = tmp_path / "g.db"
    engine, checkpointer = file_engine(db)
    write_rows(engine, 10)
    assert checkpointer.flush(timeout=60) is True
    thread = checkpointer._thread
    assert thread is not None and thread.is_alive()
    del engine
    gc.collect()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert rows_in_main_file(db, tmp_path) == 10
