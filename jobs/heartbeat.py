"""A worker's sign of life, independent of training.

A ``Heartbeat`` calls ``beat()`` every ``every_s`` seconds on its own daemon thread from
``start()`` to ``stop()`` (or over a ``with`` block), so the database hears from a running
attempt during the idle baseline, the cool-down, result writing and ingestion as well as during
training steps. ``beat()`` returns False when the database says the attempt is no longer running
(declared stale, or cancelled): the heartbeat then sets ``abandoned`` and stops beating, and the
caller checks ``abandoned`` (or waits on ``abandoned_event``) to give the attempt up. An
exception from ``beat()`` (the database away for a moment) is logged as a warning and the next
beat comes on time: a database hiccup must not kill a measurement.

``check_heartbeat`` is the configuration rule that goes with it: the heartbeat must come well
inside the launcher's stale limit, or live attempts are declared stale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from db.errors import ConfigError

log = logging.getLogger(__name__)


def check_heartbeat(heartbeat_s: float, stale_after_s: float) -> None:
    """Refuse a heartbeat interval that is not shorter than the stale limit (ConfigError, one line)."""
    if heartbeat_s >= stale_after_s:
        raise ConfigError(
            f"protocol.heartbeat_s={heartbeat_s:g} is not allowed with launcher.stale_after_s={stale_after_s:g}: "
            f"the heartbeat must be shorter than the stale limit (at most half of it, e.g. "
            f"protocol.heartbeat_s={stale_after_s / 2:g}), or running attempts are declared stale"
        )


class Heartbeat:
    """Calls ``beat`` every ``every_s`` seconds on a daemon thread (see the module docstring).

    The first beat comes ``every_s`` after ``start()``. ``stop()`` wakes the thread and joins it
    (a beat in progress is waited for up to ``join_timeout_s``); it is idempotent.
    """

    def __init__(
        self,
        beat: Callable[[], bool | None],
        every_s: float,
        *,
        name: str = "heartbeat",
        join_timeout_s: float = 10.0,
    ) -> None:
        if not every_s > 0:
            raise ConfigError(f"protocol.heartbeat_s={every_s} is not allowed (must be > 0)")
        self._beat = beat
        self.every_s = float(every_s)
        self._name = name
        self._join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self.abandoned_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0  # calls of beat() that returned (whatever they returned)
        self.failures = 0  # calls of beat() that raised

    @property
    def abandoned(self) -> bool:
        """True once ``beat()`` returned False: the attempt is no longer running in the database."""
        return self.abandoned_event.is_set()

    def start(self) -> None:
        """Start beating (RuntimeError if this heartbeat was started before)."""
        if self._thread is not None or self._stop.is_set():
            raise RuntimeError("this Heartbeat was already started; create a new one per attempt")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and join the thread (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._join_timeout_s)
            if thread.is_alive():
                log.warning(
                    "heartbeat %s: a beat did not return within %.0f s; left behind",
                    self._name,
                    self._join_timeout_s,
                )

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                alive = self._beat()
            except Exception as exc:  # a database hiccup must not kill the measurement
                self.failures += 1
                log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)
                continue
            self.beats += 1
            if alive is False:
                log.warning("attempt abandoned: the database declared it stale or cancelled")
                self.abandoned_event.set()
                return


__all__ = ["Heartbeat", "check_heartbeat"]
