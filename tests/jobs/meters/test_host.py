"""Host CPU utilization and RSS readings."""

from __future__ import annotations

import collections
import time

import pytest

from jobs.meters.host import HostReader, _busy_and_total_s

CpuTimes = collections.namedtuple(
    "CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice"
)


def test_busy_and_total_leave_guest_time_and_idle_out() -> None:
    busy, total = _busy_and_total_s(CpuTimes(10.0, 1.0, 4.0, 80.0, 5.0, 0.5, 0.5, 0.0, 3.0, 1.0))
    assert total == pytest.approx(105.0 - 4.0)  # guest time is already inside user/nice
    assert busy == pytest.approx(total - 85.0)


def burn_cpu_s(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1


def test_readings_after_work() -> None:
    reader = HostReader()
    first = reader.read()
    assert first.cpu_util_pct is None and first.process_cpu_util_pct is None  # no interval yet
    assert first.rss_mb is not None and first.rss_mb > 10.0
    burn_cpu_s(0.1)
    second = reader.read()
    assert second.cpu_util_pct is not None and 0.0 < second.cpu_util_pct <= 100.0
    assert second.process_cpu_util_pct is not None and second.process_cpu_util_pct > 0.0
    assert second.t_s > first.t_s


def test_children_can_be_included() -> None:
    alone = HostReader().read().rss_mb
    with_children = HostReader(include_children=True).read().rss_mb
    assert alone is not None and with_children is not None and with_children >= alone * 0.9
