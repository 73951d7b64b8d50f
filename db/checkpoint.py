"""WAL checkpoints of a SQLite database file, run by a thread of their own instead of by writers.

In WAL mode every committed page is written twice: into the write-ahead log at commit, and into
the database file by a checkpoint. By default SQLite runs that checkpoint inside the commit that
takes the log past 1000 pages, so a writer that commits a large trace waits for the copy and its
fsyncs (on this machine about a quarter of the time it takes to ingest a trace). Here the writer's
connections only notify a :class:`WalCheckpointer` after each commit; its thread runs a
``PASSIVE`` checkpoint (never waits for readers or writers, never blocks them) on its own
connection while the writer goes on, on another core.

Durability is SQLite's own: a commit is in the log before the checkpoint copies it, and a
checkpoint interrupted at any point (a crash, the process exiting) is redone from the log by the
next one. If the thread falls behind or fails, the writers' own automatic checkpoint is still set,
at ``backstop_pages``, so the log stays bounded either way.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import weakref

log = logging.getLogger(__name__)

# The writers' automatic checkpoint is kept as a backstop at this many pages (256 MiB at the
# default 4 KiB page): far above what the thread leaves behind, so that writers never run it while
# the thread keeps up.
BACKSTOP_PAGES = 65536


_OPEN: weakref.WeakSet[WalCheckpointer] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, finish pending checkpoints and close the threads' connections, so that the last
    connection to close can fold the log into the file and remove it, as SQLite does by itself."""
    for checkpointer in list(_OPEN):
        checkpointer.close()


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads (and perhaps a lock its parent held): its
    checkpointers start afresh, a new thread on the next ``notify()``."""
    for checkpointer in list(_OPEN):
        checkpointer._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite database at ``path`` after commits, from a daemon thread.

    ``notify()`` (cheap, from any thread) asks for a checkpoint; requests that arrive while one
    runs are served by one more. The thread starts on the first request and ends with
    ``close()``. ``flush()`` waits until every commit notified so far has been checkpointed."""

    def __init__(self, path: str, busy_timeout_ms: int = 60_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.checkpoints = 0  # checkpoints run by the thread
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._requested = 0  # notify() calls so far
        self._served = 0  # requests covered by a finished checkpoint
        self._closing = False
        self._thread: threading.Thread | None = None
        _OPEN.add(self)

    def notify(self) -> None:
        """Ask for a checkpoint of everything committed so far (does not wait)."""
        with self._cond:
            if self._closing:
                return
            self._requested += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint:{self.path}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until a checkpoint that began after the latest ``notify()`` has finished; True if
        it did, False on timeout or if the thread is not running (then nothing is waited for)."""
        with self._cond:
            target = self._requested
            return self._cond.wait_for(
                lambda: self._served >= target or not self._alive(), timeout=timeout
            ) and self._served >= target

    def close(self) -> None:
        """Serve any pending request, then stop the thread and close its connection. A later
        ``notify()`` starts a new thread (an engine stays usable after ``dispose()``)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._cond:
            self._forget_thread()

    def _reset(self) -> None:
        """After fork: a new lock (the parent's may have been held), no thread."""
        self._cond = threading.Condition()
        self._forget_thread()

    def _forget_thread(self) -> None:
        self._thread = None
        self._closing = False
        self._served = self._requested

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        con: sqlite3.Connection | None = None
        try:
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._requested > self._served or self._closing)
                    target = self._requested
                    if target == self._served:  # closing, nothing pending
                        return
                self._checkpoint(con)
                with self._cond:
                    self._served = target
                    self._cond.notify_all()
        except sqlite3.Error as exc:  # cannot open the file: the writers' backstop checkpoints
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("WAL checkpoint thread for %s stopped: %s", self.path, self.last_error)
        finally:
            if con is not None:
                con.close()
            with self._cond:
                self._cond.notify_all()  # flush() must not wait for a thread that is gone

    def _checkpoint(self, con: sqlite3.Connection) -> None:
        try:
            busy, _log_frames, _done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # e.g. another process checkpoints, a lock: the next one goes on
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.debug("WAL checkpoint of %s failed: %s", self.path, self.last_error)
            return
        self.checkpoints += 1
        if busy:
            log.debug("WAL checkpoint of %s was partial (another checkpoint ran)", self.path)
