"""The worker's heartbeat: its own thread, abandonment, resilience to a failing database, the config rule."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from db.errors import CampaignError, ConfigError
from jobs.heartbeat import Heartbeat, check_heartbeat

EVERY_S = 0.01
WAIT_S = 10.0  # generous: only a broken heartbeat ever waits this long


class Beats:
    """A fake ``beat``: counts its calls, answers from a script (then ``default``), and sets
    ``reached`` at the ``until``-th call."""

    def __init__(self, until: int, script: tuple[object, ...] = (), default: bool | None = True) -> None:
        self.calls = 0
        self.until = until
        self.script = list(script)
        self.default = default
        self.reached = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> bool | None:
        with self._lock:
            self.calls += 1
            if self.calls >= self.until:
                self.reached.set()
            answer = self.script.pop(0) if self.script else self.default
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def test_beats_continue_while_the_caller_blocks() -> None:
    beats = Beats(until=5)
    with Heartbeat(beats, every_s=EVERY_S) as hb:
        assert beats.reached.wait(WAIT_S), "the heartbeat did not beat while its caller was blocked"
    assert beats.calls >= 5 and hb.beats >= 5
    assert not hb.abandoned


def test_abandoned_when_the_database_says_the_attempt_is_no_longer_running() -> None:
    beats = Beats(until=3, script=(None, True, False))
    hb = Heartbeat(beats, every_s=EVERY_S)
    hb.start()
    try:
        assert hb.abandoned_event.wait(WAIT_S), "a beat that returned False did not abandon the attempt"
    finally:
        hb.stop()
    assert hb.abandoned
    assert beats.calls == 3  # no beats after the database gave the attempt up


def test_exceptions_from_beat_are_logged_and_do_not_stop_it(caplog: pytest.LogCaptureFixture) -> None:
    beats = Beats(until=6, script=(ConnectionError("database away"),) * 3)
    with caplog.at_level(logging.WARNING, logger="jobs.heartbeat"), Heartbeat(beats, every_s=EVERY_S) as hb:
        assert beats.reached.wait(WAIT_S), "the heartbeat died after a failing beat"
    assert hb.failures == 3 and hb.beats >= 3 and not hb.abandoned
    assert any("database away" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_stop_joins_promptly() -> None:
    hb = Heartbeat(lambda: True, every_s=3600.0, name="heartbeat-under-test")
    hb.start()
    began = time.monotonic()
    hb.stop()
    assert time.monotonic() - began < 2.0  # woken from its wait, not after the hour
    assert not [t for t in threading.enumerate() if t.name == "heartbeat-under-test"]
    hb.stop()  # idempotent
    with pytest.raises(RuntimeError, match="already started"):
        hb.start()


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="heartbeat_s"):
        Heartbeat(lambda: True, every_s=0)


@pytest.mark.parametrize(("heartbeat_s", "stale_after_s"), [(600.0, 600.0), (900.0, 600.0), (30, 30)])
def test_check_heartbeat_refuses_a_beat_not_shorter_than_the_stale_limit(
    heartbeat_s: float, stale_after_s: float
) -> None:
    with pytest.raises(ConfigError) as info:
        check_heartbeat(heartbeat_s, stale_after_s)
    message = str(info.value)
    assert "\n" not in message
    assert f"protocol.heartbeat_s={heartbeat_s:g}" in message
    assert f"launcher.stale_after_s={stale_after_s:g}" in message
    assert "shorter than" in message and "half" in message
    assert isinstance(info.value, CampaignError)


@pytest.mark.parametrize(("heartbeat_s", "stale_after_s"), [(30.0, 600.0), (300.0, 600.0), (599.9, 600.0)])
def test_check_heartbeat_accepts_a_beat_below_the_stale_limit(
    heartbeat_s: float, stale_after_s: float
) -> None:
    check_heartbeat(heartbeat_s, stale_after_s)
