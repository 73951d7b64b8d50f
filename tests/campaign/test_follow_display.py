"""The follow display: without a terminal one plain line per progress record (phase change,
finished trial) and per change of the finished count, flushed as it happens; records from the
workers in this process reach it through the ``campaign.progress`` logger and nowhere else."""

from __future__ import annotations

import io
import logging
import re
import threading
from typing import Any

import pytest
from rich.console import Console

from campaign.launchers.follow import PROGRESS_LOGGER, Display, Tally, eta_text, follow

TIME = re.compile(r"^\d\d:\d\d:\d\d ")


class _Stream(io.StringIO):
    """Captures lines; ``seen(text)`` is an event set once a written line contains ``text``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[str, threading.Event] = {}
        self.flushes = 0

    def seen(self, text: str) -> threading.Event:
        return self.events.setdefault(text, threading.Event())

    def write(self, s: str) -> int:
        n = super().write(s)
        for text, event in list(self.events.items()):
            if text in s:
                event.set()
        return n

    def flush(self) -> None:
        self.flushes += 1

    def isatty(self) -> bool:
        return False


class _Reader:
    def __init__(self) -> None:
        self.done = 0

    def status_rows(self, campaign_id: int) -> list[dict[str, Any]]:
        return [{"running": 1 if self.done < 2 else 0, "done": self.done, "failed": 0}]


def test_lines_without_a_terminal_one_per_record_and_per_finished_trial() -> None:
    stream, reader = _Stream(), _Reader()
    progress = logging.getLogger(PROGRESS_LOGGER)

    def work() -> str:
        progress.info("trial aaaa1111: idle")
        progress.info("trial aaaa1111: train epoch 1/2")
        progress.info("trial aaaa1111: train epoch 2/2")
        progress.info("trial aaaa1111: done in 3 s, 10.0 J")
        reader.done = 1
        assert stream.seen("progress: 1/2").wait(10)
        progress.info("trial bbbb2222: cooldown")
        progress.debug("not shown: below INFO")
        reader.done = 2
        return "summaries"

    rows, result = follow(reader, 1, 2, work, Console(file=stream), poll_s=0.01, display=Display.lines)
    assert result == "summaries" and rows[0]["done"] == 2
    lines = stream.getvalue().splitlines()
    assert all(TIME.match(line) for line in lines), lines
    got = [TIME.sub("", line) for line in lines]
    assert got[:4] == ["trial aaaa1111: idle", "trial aaaa1111: train epoch 1/2", "trial aaaa1111: train epoch 2/2",
                       "trial aaaa1111: done in 3 s, 10.0 J"]
    assert re.fullmatch(r"progress: 1/2 trials, ETA \d+ s", got[4]), got
    assert got[5:] == ["trial bbbb2222: cooldown", "progress: 2/2 trials, ETA 0 s"]
    assert stream.flushes >= len(lines)  # each line flushed as it is written
    # outside following, the records go nowhere near this display again
    assert not progress.handlers and progress.propagate


def test_quiet_shows_nothing() -> None:
    stream, reader = _Stream(), _Reader()

    def work() -> None:
        logging.getLogger(PROGRESS_LOGGER).info("trial aaaa1111: idle")
        reader.done = 2

    follow(reader, 1, 2, work, Console(file=stream), poll_s=0.01, display=Display.quiet)
    assert stream.getvalue() == ""


def test_live_display_shows_the_current_trial_phase_and_epoch() -> None:
    stream, reader = _Stream(), _Reader()

    def work() -> None:
        logging.getLogger(PROGRESS_LOGGER).info("trial aaaa1111: train epoch 2/4")
        reader.done = 2

    console = Console(file=stream, force_terminal=True, width=120)
    follow(reader, 1, 2, work, console, poll_s=0.01, display=Display.live)
    assert "2/2" in stream.getvalue() and "ETA" in stream.getvalue()


def test_display_is_chosen_from_the_terminal_and_quiet() -> None:
    tty = _Stream()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    assert Display.choose(False, tty) == Display.live
    assert Display.choose(False, _Stream()) == Display.lines
    assert Display.choose(True, tty) == Display.quiet


def test_eta_from_the_pace_of_this_launch() -> None:
    now = [100.0]
    tally = Tally(10, clock=lambda: now[0])
    tally.update(4)  # a resume: 4 were done before
    assert tally.eta_s() is None and tally.text() == "4/10 trials, ETA -"
    now[0] = 160.0
    assert tally.update(6)
    assert tally.eta_s() == pytest.approx(120.0)  # 2 trials in 60 s, 4 left
    assert eta_text(120.0) == "ETA 2 min" and eta_text(7200) == "ETA 2.0 h"


def test_batch_progress_reaches_the_bar_and_never_the_plain_lines() -> None:
    from campaign.launchers.follow import progress_records

    seen: list[tuple[int, int]] = []
    messages: list[str] = []
    logger = logging.getLogger(PROGRESS_LOGGER)
    with progress_records(messages.append, lambda i, n: seen.append((i, n))):
        logger.info("trial aaaa1111: train epoch 1/2")
        logger.debug("trial aaaa1111: batch", extra={"batch": (3, 32)})
    assert messages == ["trial aaaa1111: train epoch 1/2"] and seen == [(3, 32)]

    stream, reader = _Stream(), _Reader()

    def work() -> None:
        logger.info("trial aaaa1111: train epoch 1/2")
        logger.debug("trial aaaa1111: batch", extra={"batch": (7, 32)})
        reader.done = 2

    follow(reader, 1, 2, work, Console(file=stream), poll_s=0.01, display=Display.lines)
    assert "batch" not in stream.getvalue() and "train epoch 1/2" in stream.getvalue()
    from rich.progress import Progress

    from campaign.launchers.follow import _Live

    bar = _Live(Progress(console=Console(file=_Stream())), 2)
    bar.message("trial aaaa1111: train epoch 1/2")
    bar.batch(7, 32)
    assert bar.progress.tasks[0].description == "trial aaaa1111: train epoch 1/2, batch 7/32"
