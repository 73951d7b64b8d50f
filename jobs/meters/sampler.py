"""One sampling meter for every power source: the thread, the schedule, the phase marks and drain.

A meter is a ``SamplingMeter`` around a ``DeviceReader``. The reader knows its device(s): how to
open them, read them once, close them and describe them. The meter owns everything about time:

- the schedule. A tick is due at ``t0 + k / rate_hz`` (``t0``: the moment of ``start()``), for
  k = 1, 2, ... A tick that runs late does not move the ones after it, so the trace does not drift
  however long a read takes; a tick that overruns whole periods (a stalled driver call) skips the
  slots it missed rather than taking them in a burst. The thread paces itself on real time
  (``time.monotonic``); sample times are read from the meter's ``clock``, which tests replace;
- the samples: ``start()`` takes the first one, the thread one per tick; ``mark(phase, epoch)``
  closes the current phase with a sample at the boundary and (for readers whose value is not a
  difference over the interval) opens the new one with the same reading, newly tagged, so a
  phase spans exactly the time from its mark to the next; ``latest()`` is the last reading of each
  device (drained or not); ``drain()`` takes a closing
  sample and hands over (and forgets) everything since the previous drain; ``stop()`` ends the
  thread, takes a closing sample where the reader wants one and closes the reader;
- the per-sample extras: the phase tag, and, given a ``HostReader``, host CPU utilization and the
  process's RSS on every sample (``Tick.sample`` puts them there);
- read errors: a failing read never ends the thread; readers report what failed to the
  meter's ``ErrorLog`` (counted per key, the first ``max_errors_kept`` kept, the first of each
  key logged), and an unexpected exception in a whole tick is recorded as ``sampler``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypedDict, TypeVar

from jobs.meters.base import MeterError, Sample, check_phase
from jobs.meters.host import HostReader, HostReading

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """One line naming an exception: ``Type: message``."""
    return f"{type(exc).__name__}: {exc}"


@dataclasses.dataclass(frozen=True)
class ReadError:
    """A failed read (or a distrusted counter value) during sampling.

    ``field`` names what was read: for NVML ``power``, ``energy``, ``utilization``, ``memory``,
    ``temperature``, ``sm_clock``, ``mem_clock``, ``power_limit``, ``energy_reset`` (the counter
    went backwards); for RAPL ``energy``; for every meter ``host`` (the host reading) or
    ``sampler`` (an unexpected exception in a whole tick, or a thread that would not stop).
    """

    t_s: float
    device: int | None
    field: str
    error: str


class ErrorLog:
    """Read errors of one meter: counted per key, the first ``max_kept`` kept, the first of each
    key logged as a warning. The key is ``"<device>:<field>"`` (``-`` for no device) unless the
    reader names its own (RAPL counts per domain key)."""

    def __init__(self, source: str, max_kept: int = 1000) -> None:
        self.source = source
        self.max_kept = max_kept
        self._kept: list[ReadError] = []
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, device: int | None, field: str, error: str, t_s: float, key: str | None = None) -> None:
        """Count (and keep, while there is room) one failed read."""
        key = f"{'-' if device is None else device}:{field}" if key is None else key
        with self._lock:
            self._counts[key] += 1
            first = self._counts[key] == 1
            if len(self._kept) < self.max_kept:
                self._kept.append(ReadError(t_s, device, field, error))
        if first:
            log.warning(
                "%s read failed (device %s, %s): %s; sampling goes on",
                self.source, "-" if device is None else device, field, error,
            )  # fmt: skip

    def kept(self) -> list[ReadError]:
        """The first ``max_kept`` errors, oldest first."""
        with self._lock:
            return list(self._kept)

    def counts(self) -> dict[str, int]:
        """How many errors of each key."""
        with self._lock:
            return dict(self._counts)


@dataclasses.dataclass(frozen=True)
class Tick:
    """What a reader is given for one reading: the tag and host reading the samples carry, the
    meter's time (``now()``: seconds since the meter's start, on its clock; a reader of several
    devices may call it per device) and the meter's error log."""

    phase: str
    epoch: int | None
    host: HostReading | None
    now: Callable[[], float]
    errors: ErrorLog

    def sample(self, t_s: float, power_w: float, **fields: Any) -> Sample:
        """A sample of this tick: the tag, the reader's fields, and the host reading where there
        is one (it replaces a reader's own ``cpu_util``)."""
        if self.host is not None:
            fields["cpu_util"] = self.host.cpu_util_pct
            fields["rss_mb"] = self.host.rss_mb
        return Sample(t_s, self.phase, self.epoch, power_w, **fields)

    def error(
        self, device: int | None, field: str, error: str, t_s: float | None = None, key: str | None = None
    ) -> None:
        """Record a failed read (at ``t_s``, else now) in the meter's error log."""
        self.errors.record(device, field, error, self.now() if t_s is None else t_s, key)


class DeviceReader(Protocol):
    """A power source's device side: read once, describe; no threads, schedules or phases.

    ``source`` labels the meter's runs and samples. ``opens_phases``: whether ``mark`` takes a
    sample right after the closing one to open the new phase (False for a reader whose power is a
    counter difference since its previous reading: that reading would span almost no time).
    ``samples_at_stop``: whether ``stop()`` takes a closing sample.
    """

    source: str
    opens_phases: bool
    samples_at_stop: bool

    def open(self) -> None:
        """Find and open the device(s), take baselines; MeterError (one line) where unusable.
        Leaves nothing open when it raises."""
        ...

    def read_samples(self, tick: Tick) -> list[Sample]:
        """Read every device once; one sample per device that gave a power reading. Reports
        failed reads to ``tick.error`` rather than raising."""
        ...

    def close(self) -> None:
        """Release the device(s); never raises for the device's sake."""
        ...

    def hardware(self) -> dict[str, object]:
        """Identity of the measured device(s) for the hardware table."""
        ...


R = TypeVar("R", bound=DeviceReader)


class MeterOptions(TypedDict, total=False):
    """The keyword options every meter takes (``SamplingMeter``'s), for the meters' signatures."""

    host: HostReader | None
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    run_thread: bool
    max_errors_kept: int
    join_timeout_s: float


class SamplingMeter(Generic[R]):
    """A ``PowerMeter`` over any ``DeviceReader`` (see the module docstring); ``reader`` is it.

    ``clock`` gives the sample times (monotonic seconds); ``wall_clock`` the anchor.
    ``run_thread=False`` takes samples only at ``start``, ``mark``, ``drain``, ``stop`` and
    ``sample_once()``, which is how tests drive a meter deterministically.
    """

    def __init__(
        self,
        reader: R,
        rate_hz: float = 10.0,
        *,
        host: HostReader | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        run_thread: bool = True,
        max_errors_kept: int = 1000,
        join_timeout_s: float = 10.0,
    ) -> None:
        if not rate_hz > 0:
            raise MeterError(f"meter.rate_hz={rate_hz} must be > 0")
        self.reader = reader
        self.source: str = reader.source
        self.rate_hz = float(rate_hz)
        self.anchor_unix_s = 0.0
        self._host = host
        self._clock = clock
        self._wall_clock = wall_clock
        self._run_thread = run_thread
        self._join_timeout_s = join_timeout_s
        self._errors = ErrorLog(reader.source, max_errors_kept)
        self._t0 = 0.0
        self._pace_t0 = 0.0
        self._phase = "idle"
        self._epoch: int | None = None
        self._samples: list[Sample] = []
        self._latest: dict[int, Sample] = {}
        self._lock = threading.Lock()  # guards samples, phase
        self._new_sample = threading.Condition(self._lock)
        self._read_lock = threading.Lock()  # one tick at a time (thread, mark, drain, stop, tests)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the reader, anchor the time, take the first sample and start the thread.

        MeterError (one line) where the device cannot be used, or where this meter ran before.
        """
        if self._running or self._stopped:
            raise MeterError(f"this {type(self).__name__} was already started; create a new one per worker")
        self.reader.open()
        self.anchor_unix_s = self._wall_clock()
        self._t0 = self._clock()
        self._pace_t0 = self._t0 if self._clock is time.monotonic else time.monotonic()
        self._running = True
        self.sample_once()
        if self._run_thread:
            self._thread = threading.Thread(target=self._run, name=f"{self.source}-meter", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread, take a closing sample (where the reader wants one) and close the
        reader. Idempotent; never raises for the device's sake; samples stay for ``drain()``."""
        if not self._running:
            return
        self._stop_event.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self._join_timeout_s)
            if thread.is_alive():
                # A device call hung: leave the daemon thread and the device alone rather than
                # closing the device under it.
                log.error(
                    "%s sampler did not stop within %.0f s; abandoning it", self.source, self._join_timeout_s
                )
                self._errors.record(
                    None, "sampler", f"thread did not stop within {self._join_timeout_s} s", self._now()
                )
                self._running, self._stopped = False, True
                return
        if self.reader.samples_at_stop:
            self.sample_once()
        with self._read_lock:
            self._running, self._stopped = False, True
        self.reader.close()

    def mark(self, phase: str, epoch: int | None = None) -> None:
        """Tag the samples that follow with ``phase`` and ``epoch``.

        While running, a sample tagged with the old phase closes it at the boundary, and (where
        the reader ``opens_phases``) the same reading tagged with the new phase opens it, so phases
        partition the trace exactly and a phase's span is the time from its mark to the next.
        Before ``start()`` only the tag is set.
        """
        check_phase(phase)
        closing = self.sample_once() if self._running else []
        with self._lock:
            self._phase, self._epoch = str(phase), epoch
            if closing and self.reader.opens_phases:
                # The opening sample is the closing reading with the new tag: the same time and
                # counter value, so phases meet exactly at the mark (no read between them).
                self._samples.extend(dataclasses.replace(s, phase=str(phase), epoch=epoch) for s in closing)
                self._new_sample.notify_all()
        if self._running and self.reader.opens_phases and not closing:
            self.sample_once()  # the closing read gave nothing (a failed power read): read again

    def drain(self) -> list[Sample]:
        """Samples since the previous drain, oldest first (a closing sample is taken first while
        running); they are forgotten here."""
        if self._running:
            self.sample_once()
        with self._lock:
            out, self._samples = self._samples, []
        return out

    def hardware(self) -> dict[str, object]:
        """The reader's description of the measured device(s)."""
        return self.reader.hardware()

    # -- sampling ------------------------------------------------------------------------------

    def sample_once(self) -> list[Sample]:
        """Read the device(s) now and keep the samples (also returned); ``[]`` unless running.
        Used by the thread, by ``mark``/``drain``/``stop`` and by tests."""
        with self._read_lock:
            if not self._running:
                return []
            host = None
            if self._host is not None:
                try:
                    host = self._host.read()
                except Exception as exc:  # psutil trouble must not cost the device samples
                    self._errors.record(None, "host", describe(exc), self._now())
            with self._lock:
                tick = Tick(self._phase, self._epoch, host, self._now, self._errors)
            taken = self.reader.read_samples(tick)
            with self._lock:
                self._samples.extend(taken)
                self._latest.update((s.device, s) for s in taken)
                self._new_sample.notify_all()
            return taken

    def latest(self) -> list[Sample]:
        """The last sample of each device, by device (drained or not; ``[]`` before the first)."""
        with self._lock:
            return [self._latest[d] for d in sorted(self._latest)]

    def wait_for_samples(self, count: int, timeout_s: float) -> bool:
        """Block until at least ``count`` samples are waiting to be drained, or ``timeout_s``."""
        with self._new_sample:
            return self._new_sample.wait_for(lambda: len(self._samples) >= count, timeout=timeout_s)

    def _now(self) -> float:
        return self._clock() - self._t0 if self._running else 0.0

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        k = 1
        while not self._stop_event.wait(max(0.0, self._pace_t0 + k * period - time.monotonic())):
            try:
                self.sample_once()
            except Exception as exc:  # a bug in one tick must not end the trace
                self._errors.record(None, "sampler", describe(exc), self._now())
            # The next slot of the grid that is still ahead: slots missed by a slow tick are skipped.
            k = max(k + 1, math.floor((time.monotonic() - self._pace_t0) / period) + 1)

    # -- errors --------------------------------------------------------------------------------

    def read_errors(self) -> list[ReadError]:
        """The first ``max_errors_kept`` read errors (and counter resets), oldest first."""
        return self._errors.kept()

    def error_counts(self) -> dict[str, int]:
        """How many errors of each kind, keyed ``"<device>:<field>"`` (``-`` for no device) or by
        the reader's own key."""
        return self._errors.counts()


__all__ = ["DeviceReader", "ErrorLog", "MeterOptions", "ReadError", "SamplingMeter", "Tick", "describe"]
