"""Following a campaign while its workers run (here or elsewhere), until the launcher's ``wait``
returns: the database's status rows say how many trials are done, and the workers' progress
records (logger ``campaign.progress``: ``trial 1a2b3c4d: train epoch 2/4``, ``trial 1a2b3c4d:
done in 12 s, 345.6 J``), where the workers run in this process, say what the current trial is
doing.

Three displays (``Display``): ``live`` on a terminal (the current trial, its phase and epoch, a
bar of done/total, elapsed time and ETA), ``lines`` without one (Slurm logs, nohup, tee: one
plain line per phase change and per finished trial, flushed as it happens) and ``quiet`` (none).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

PROGRESS_LOGGER = "campaign.progress"  # the workers' phase changes and finished trials, at INFO

COLUMNS = (
    TextColumn("[bold]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("trials"),
    TimeElapsedColumn(),
    TextColumn("ETA"),
    TimeRemainingColumn(),
)


class Display(enum.StrEnum):
    live = "live"
    lines = "lines"
    quiet = "quiet"

    @staticmethod
    def choose(quiet: bool, stream: IO[str] | None = None) -> Display:
        """``quiet`` when asked, ``live`` where ``stream`` (stdout) is a terminal, else ``lines``."""
        if quiet:
            return Display.quiet
        stream = sys.stdout if stream is None else stream
        return Display.live if stream.isatty() else Display.lines


class StatusReader(Protocol):
    def status_rows(self, campaign_id: int) -> list[dict[str, Any]]: ...


def finished_count(rows: list[dict[str, Any]]) -> int:
    """Trials that have ended (done or failed) in status rows."""
    return sum(r["done"] + r["failed"] for r in rows)


def eta_text(seconds: float | None) -> str:
    """``ETA 3 min`` style text; ``ETA -`` while unknown."""
    if seconds is None:
        return "ETA -"
    if seconds < 90:
        return f"ETA {seconds:.0f} s"
    if seconds < 5400:
        return f"ETA {seconds / 60:.0f} min"
    return f"ETA {seconds / 3600:.1f} h"


class Tally:
    """Done/total and the ETA from the pace of the trials finished since following began."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.clock = clock
        self.started = clock()
        self.first: int | None = None  # finished when following began (a resume starts part-way)
        self.finished = 0

    def update(self, finished: int) -> bool:
        """Record the finished count; True when it changed."""
        if self.first is None:
            self.first = finished
        changed = finished != self.finished
        self.finished = finished
        return changed

    def eta_s(self) -> float | None:
        here = self.finished - (self.first or 0)
        if here <= 0:
            return None
        left = max(self.total - self.finished, 0)
        return (self.clock() - self.started) / here * left

    def text(self) -> str:
        return f"{min(self.finished, self.total)}/{self.total} trials, {eta_text(self.eta_s())}"


class _Records(logging.Handler):
    def __init__(self, on_message: Callable[[str], None], on_batch: Callable[[int, int], None] | None) -> None:
        super().__init__(logging.DEBUG)
        self.on_message = on_message
        self.on_batch = on_batch

    def emit(self, record: logging.LogRecord) -> None:
        try:
            batch = getattr(record, "batch", None)
            if batch is None:
                if record.levelno >= logging.INFO:
                    self.on_message(record.getMessage())
            elif self.on_batch is not None:
                self.on_batch(*batch)
        except Exception:  # a display must never break the work
            self.handleError(record)


@contextlib.contextmanager
def progress_records(on_message: Callable[[str], None],
                     on_batch: Callable[[int, int], None] | None = None) -> Iterator[None]:
    """While inside, every INFO record of ``campaign.progress`` (from workers in this process)
    goes to ``on_message`` and nowhere else; its DEBUG batch records (``extra={"batch": (i, n)}``,
    the batch of the epoch running) go to ``on_batch``."""
    logger = logging.getLogger(PROGRESS_LOGGER)
    handler = _Records(on_message, on_batch)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG if on_batch is not None else logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _View(Protocol):
    def message(self, text: str) -> None: ...

    def batch(self, i: int, n: int) -> None: ...

    def rows(self, tally: Tally, rows: list[dict[str, Any]], ended: bool) -> None: ...

    def unreachable(self) -> None: ...


class _Lines:
    """One plain line per progress record and per change of the finished count, flushed."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.said_unreachable = False

    def _say(self, text: str) -> None:
        with self.lock:
            self.out.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            self.out.flush()

    def message(self, text: str) -> None:
        self._say(text)

    def batch(self, i: int, n: int) -> None:
        """Plain lines carry phases and trials only (a line per batch would bury them)."""

    def rows(self, tally: Tally, rows: list[dict[str, Any]], ended: bool) -> None:
        self.said_unreachable = False
        if tally.update(finished_count(rows)):
            self._say(f"progress: {tally.text()}")

    def unreachable(self) -> None:
        if not self.said_unreachable:
            self._say("database unreachable; waiting for it (so do the workers)")
            self.said_unreachable = True


class _Live:
    """A rich progress bar; its description is the current trial's latest progress record."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=total)
        self.current = ""
        self.running = 0

    def message(self, text: str) -> None:
        self.current = text
        self.progress.update(self.task, description=text)

    def batch(self, i: int, n: int) -> None:
        self.progress.update(self.task, description=f"{self.current}, batch {i}/{n}")

    def rows(self, tally: Tally, rows: list[dict[str, Any]], ended: bool) -> None:
        tally.update(finished_count(rows))
        self.running = sum(r["running"] for r in rows)
        described = "ended" if ended else (self.current or f"{self.running} running")
        self.progress.update(self.task, completed=min(tally.finished, tally.total), description=described)

    def unreachable(self) -> None:
        self.progress.update(self.task, description="database unreachable")


class _Quiet:
    def message(self, text: str) -> None:
        pass

    def batch(self, i: int, n: int) -> None:
        pass

    def rows(self, tally: Tally, rows: list[dict[str, Any]], ended: bool) -> None:
        tally.update(finished_count(rows))

    def unreachable(self) -> None:
        pass


@contextlib.contextmanager
def _view(display: Display, console: Console, total: int) -> Iterator[_View]:
    if display == Display.live:
        with Progress(*COLUMNS, console=console) as progress:
            yield _Live(progress, total)
    elif display == Display.lines:
        yield _Lines(console.file)
    else:
        yield _Quiet()


def follow(reader: StatusReader, campaign_id: int, total: int, wait: Callable[[], T], console: Console,
           poll_s: float = 2.0, display: Display = Display.live) -> tuple[list[dict[str, Any]], T]:
    """Show progress until ``wait`` (run on a thread) returns; then the status rows
    (``ResultStore.status_rows``) read after it did (the last ones read, when the database did
    not answer then), and what ``wait`` returned. An exception ``wait`` raised is raised here;
    one from reading the status (a database outage) is not: the workers wait for the database
    to come back, and so does the display. An interrupt (KeyboardInterrupt) in this thread is
    raised at once; the caller cancels the work."""
    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def waiter() -> None:
        try:
            outcome["result"] = wait()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            finished.set()

    rows: list[dict[str, Any]] = []
    tally = Tally(total)
    with contextlib.suppress(Exception):  # what was finished before this launch: the ETA's baseline
        tally.update(finished_count(reader.status_rows(campaign_id)))
    with _view(display, console, total) as view, progress_records(view.message, view.batch):
        threading.Thread(target=waiter, name="campaign-follow", daemon=True).start()
        while True:
            ended = finished.is_set()  # before the read: the last read comes after the end
            try:
                rows = reader.status_rows(campaign_id)
            except Exception as exc:  # the database away for a while: the workers wait for it, so do we
                log.debug("status rows unreadable: %s", exc)
                view.unreachable()
            else:
                view.rows(tally, rows, ended)
            if ended:
                break
            finished.wait(poll_s)  # a display refresh interval, not synchronisation
    if "error" in outcome:
        raise outcome["error"]
    return rows, outcome["result"]
