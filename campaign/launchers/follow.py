"""Following a campaign while its workers run (here or elsewhere): a live progress bar over the
database's status rows, until the launcher's ``wait`` returns."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

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

COLUMNS = (
    TextColumn("[bold]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("trials"),
    TimeElapsedColumn(),
    TextColumn("ETA"),
    TimeRemainingColumn(),
)


class StatusReader(Protocol):
    def status_rows(self, campaign_id: int) -> list[dict[str, Any]]: ...


def follow(reader: StatusReader, campaign_id: int, total: int, wait: Callable[[], T], console: Console,
           poll_s: float = 2.0) -> tuple[list[dict[str, Any]], T]:
    """Show progress until ``wait`` (run on a thread) returns; then the status rows
    (``ResultStore.status_rows``) read after it did (the last ones read, when the database did
    not answer then), and what ``wait`` returned. An exception ``wait`` raised is raised here;
    one from reading the status (a database outage) is not: the workers wait for the database
    to come back, and so does the display."""
    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def waiter() -> None:
        try:
            outcome["result"] = wait()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=waiter, name="campaign-follow", daemon=True).start()
    rows: list[dict[str, Any]] = []
    with Progress(*COLUMNS, console=console) as progress:
        task = progress.add_task("following", total=total)
        while True:
            ended = finished.is_set()  # before the read: the last read comes after the end
            try:
                rows = reader.status_rows(campaign_id)
            except Exception as exc:  # the database away for a while: the workers wait for it, so do we
                log.debug("status rows unreadable: %s", exc)
                progress.update(task, description="database unreachable")
            else:
                running = sum(r["running"] for r in rows)
                done = sum(r["done"] + r["failed"] for r in rows)
                progress.update(task, completed=min(done, total),
                                description="ended" if ended else f"{running} running")
            if ended:
                break
            finished.wait(poll_s)  # a UI refresh interval, not synchronisation
    if "error" in outcome:
        raise outcome["error"]
    return rows, outcome["result"]
