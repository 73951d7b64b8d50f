"""Host readings shared by the meters: CPU utilization (system and this process) and RSS.

One ``HostReader`` per meter: utilization is a rate, computed from the CPU times between two
consecutive ``read()`` calls of the same reader, so readers do not disturb each other (unlike
``psutil.cpu_percent(None)``, whose last-call state is shared by the whole process). The first
reading has no interval behind it and reports utilization as None.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

MIB = 2**20  # the meters report memory in MiB (as nvidia-smi does) under the *_mb names


@dataclasses.dataclass(frozen=True)
class HostReading:
    """One host reading.

    ``cpu_util_pct``: system-wide CPU utilization over the interval since the previous reading,
    0-100 (all logical CPUs; idle and iowait count as not busy). ``process_cpu_util_pct``: this
    process's CPU time (all threads) over the same interval, as a share of the CPUs it may run
    on, 0-100. ``rss_mb``: resident set size of the process in MiB (children excluded unless the
    reader was asked for them).
    """

    t_s: float
    cpu_util_pct: float | None
    process_cpu_util_pct: float | None
    rss_mb: float | None


def _busy_and_total_s(times: Any) -> tuple[float, float]:
    """Busy and total CPU seconds from a ``psutil.cpu_times()`` tuple.

    On Linux ``guest`` and ``guest_nice`` are already inside ``user`` and ``nice``, so they are
    left out of the total; idle and iowait are the not-busy part.
    """
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


class HostReader:
    """Reads CPU utilization and RSS for one process (default: this one) with psutil."""

    def __init__(
        self,
        pid: int | None = None,
        include_children: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(pid)
        self._include_children = include_children
        self._clock = clock
        try:
            self._cpus = max(1, len(self._process.cpu_affinity()))
        except (AttributeError, psutil.Error):
            self._cpus = max(1, os.cpu_count() or 1)
        self._last: tuple[float, float, float, float] | None = None  # t, busy, total, process cpu

    def read(self) -> HostReading:
        """Take one reading; a field that cannot be read (process gone, /proc refused) is None."""
        psutil = self._psutil
        now = self._clock()
        try:
            busy_s, total_s = _busy_and_total_s(psutil.cpu_times())
        except (psutil.Error, OSError):
            busy_s = total_s = float("nan")
        try:
            pt = self._process.cpu_times()
            proc_s = pt.user + pt.system
        except (psutil.Error, OSError):
            proc_s = float("nan")
        rss_mb = self._rss_mb()

        cpu_util = proc_util = None
        if self._last is not None:
            t0, busy0, total0, proc0 = self._last
            d_total = total_s - total0
            if d_total > 0:  # NaN compares False: unreadable stays None
                cpu_util = min(100.0, max(0.0, 100.0 * (busy_s - busy0) / d_total))
            dt = now - t0
            if dt > 0 and proc_s == proc_s and proc0 == proc0:
                proc_util = min(100.0, max(0.0, 100.0 * (proc_s - proc0) / dt / self._cpus))
        self._last = (now, busy_s, total_s, proc_s)
        return HostReading(t_s=now, cpu_util_pct=cpu_util, process_cpu_util_pct=proc_util, rss_mb=rss_mb)

    def _rss_mb(self) -> float | None:
        psutil = self._psutil
        try:
            rss = self._process.memory_info().rss
            if self._include_children:
                for child in self._process.children(recursive=True):
                    try:
                        rss += child.memory_info().rss
                    except psutil.Error:
                        continue  # a child that exits while we look is simply not counted
            return rss / MIB
        except (psutil.Error, OSError):
            return None


__all__ = ["MIB", "HostReader", "HostReading"]
