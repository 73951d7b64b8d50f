"""The local launcher: one worker per GPU type, in this process, with a live progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from db.store import ClaimedTrial, ResultStore
from jobs.worker import WorkerSpec, WorkerSummary, run_worker

_COLUMNS = (
    TextColumn("[bold]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TextColumn("trials"),
    TimeElapsedColumn(),
    TextColumn("ETA"),
    TimeRemainingColumn(),
)


class _ProgressEvents:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress = progress
        self.task = task
        self.failed = 0

    def trial_started(self, trial: ClaimedTrial) -> None:
        self.progress.update(
            self.task,
            description=f"{trial.gpu_type} e={trial.epochs} seed={trial.seed} arch={trial.arch_hash[:8]}",
        )

    def trial_finished(self, trial: ClaimedTrial, status: str, energy_j: float | None) -> None:
        if status != "done":
            self.failed += 1
        self.progress.advance(self.task)


def run_local(
    store: ResultStore,
    db_url: str,
    campaign: str,
    root: str,
    gpu_types: Sequence[str],
    total: int,
    max_failures: int,
    console: Console,
) -> list[WorkerSummary]:
    """Run every pending trial of the campaign here, GPU type by GPU type."""
    summaries = []
    start = time.monotonic()
    with Progress(*_COLUMNS, console=console, transient=False) as progress:
        task = progress.add_task("warming up", total=total)
        events = _ProgressEvents(progress, task)
        for gpu in gpu_types:
            spec = WorkerSpec(db_url=db_url, campaign=campaign, gpu_type=gpu, root=root, max_failures=max_failures)
            summaries.append(run_worker(spec, events=events, store=store))
        progress.update(task, description="finished")
    console.print(f"ran {sum(s.done for s in summaries)} trials ({sum(s.failed for s in summaries)} failed) "
                  f"in {time.monotonic() - start:.0f} s")
    return summaries


def follow(store: ResultStore, campaign_id: int, total: int, wait_all: Callable[[], object], console: Console,
           poll_s: float = 2.0) -> list[dict[str, Any]]:
    """Show progress of workers running elsewhere (Slurm, Ray) until ``wait_all`` returns; the
    status rows (``ResultStore.status_rows``) read after it did."""
    import threading

    finished = threading.Event()

    def waiter() -> None:
        try:
            wait_all()
        finally:
            finished.set()

    threading.Thread(target=waiter, name="campaign-follow", daemon=True).start()
    with Progress(*_COLUMNS, console=console) as progress:
        task = progress.add_task("following", total=total)
        while True:
            ended = finished.is_set()  # before the read: the last read comes after the end
            rows = store.status_rows(campaign_id)
            running = sum(r["running"] for r in rows)
            done = sum(r["done"] + r["failed"] for r in rows)
            progress.update(task, completed=min(done, total), description="ended" if ended else f"{running} running")
            if ended:
                return rows
            finished.wait(poll_s)  # a UI refresh interval, not synchronisation
