"""The one sampling meter: its fixed schedule, and the mark/drain/stop semantics every reader shares."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import db.records
from db.errors import CampaignError
from db.records import Phase
from jobs.meters.base import PHASES, SAMPLE_FIELDS, MeterError, PowerMeter, Sample, check_fields
from jobs.meters.fake_nvml import FakeClock, FakeGpu, FakeNvml
from jobs.meters.nvml import NvmlMeter, NvmlReader
from jobs.meters.rapl import RaplMeter, RaplReader
from jobs.meters.sampler import DeviceReader, SamplingMeter, Tick
from jobs.meters.simulated import SimulatedMeter, SimulatedReader

RATE_HZ = 20.0
PERIOD_S = 1.0 / RATE_HZ
LATE_OK = 0.3  # a thread sample may come this fraction of a period after its slot (wake-up latency)


def powercap(tmp_path: Path) -> Path:
    """A RAPL tree of one package zone (one device, like the other readers here)."""
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("1000\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return zone.parent


READERS: dict[str, Callable[[Path], DeviceReader]] = {
    "simulated": lambda _: SimulatedReader(),
    "nvml": lambda _: NvmlReader(nvml=FakeNvml([FakeGpu()]), environ={}),
    "rapl": lambda tmp: RaplReader(powercap(tmp)),
}


class SlowReader:
    """A reader whose every reading takes ``delay_s`` after the device was read (a slow driver)."""

    def __init__(self, inner: DeviceReader, delay_s: float, stall_at: int | None = None) -> None:
        self.inner = inner
        self.source = inner.source
        self.opens_phases = inner.opens_phases
        self.samples_at_stop = inner.samples_at_stop
        self.delay_s = delay_s
        self.stall_at = stall_at  # the reading (1-based) that takes 3.5 periods instead
        self.readings = 0

    def open(self) -> None:
        self.inner.open()

    def read_samples(self, tick: Tick) -> list[Sample]:
        taken = self.inner.read_samples(tick)
        self.readings += 1
        time.sleep(3.5 * PERIOD_S if self.readings == self.stall_at else self.delay_s)  # the read's own cost
        return taken

    def close(self) -> None:
        self.inner.close()

    def hardware(self) -> dict[str, object]:
        return self.inner.hardware()


def thread_slots(reader: DeviceReader, count: int) -> tuple[list[int], list[float]]:
    """Run a meter on ``reader`` (one device) until ``count`` samples are waiting; the slot k of
    each sample taken by start() and the thread, and its offset from t0 + k / rate in periods."""
    meter = SamplingMeter(reader, rate_hz=RATE_HZ)
    meter.start()
    try:
        assert meter.wait_for_samples(count + 1, timeout_s=30.0), "too few samples from the thread"
    finally:
        meter.stop()
    samples = meter.drain()[:count]  # the closing sample of stop() is off the grid
    slots = [round(s.t_s * RATE_HZ) for s in samples]
    offsets = [s.t_s * RATE_HZ - k for s, k in zip(samples, slots, strict=True)]
    return slots, offsets


@pytest.mark.parametrize("delay", [0.0, 0.5], ids=["fast-read", "read-takes-half-a-period"])
@pytest.mark.parametrize("kind", sorted(READERS))
def test_the_schedule_does_not_drift_for_any_reader(kind: str, delay: float, tmp_path: Path) -> None:
    """Sample k is taken at t0 + k / rate however long a reading takes: a meter that waited a
    period after each reading would be half a period later at every tick."""
    slots, offsets = thread_slots(SlowReader(READERS[kind](tmp_path), delay * PERIOD_S), 16)
    assert all(b > a for a, b in zip(slots, slots[1:], strict=False)), slots  # one sample per slot
    assert all(-0.05 <= o <= LATE_OK for o in offsets), offsets
    # no slots lost either (a loaded machine may lose one or two)
    assert slots[-1] - slots[0] <= len(slots) + 3


def test_missed_slots_are_skipped_not_taken_in_a_burst(tmp_path: Path) -> None:
    """A reading that stalls for 3.5 periods costs the slots it overran; the next sample comes
    at the next slot of the same grid, and none are made up for."""
    slots, offsets = thread_slots(SlowReader(SimulatedReader(), 0.0, stall_at=3), 10)
    assert all(-0.05 <= o <= LATE_OK for o in offsets), offsets
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= 1  # never two samples in one slot: no burst after the stall
    assert max(gaps) >= 4  # the stalled reading (slot 2) is followed by slot 6 at the earliest


# -- the semantics every reader shares --------------------------------------------------------------------


def driven(kind: str, tmp_path: Path) -> tuple[FakeClock, SamplingMeter[Any]]:
    clock = FakeClock()
    meters: dict[str, Callable[[], SamplingMeter[Any]]] = {
        "simulated": lambda: SimulatedMeter(clock=clock, run_thread=False),
        "nvml": lambda: NvmlMeter(
            nvml=FakeNvml([FakeGpu()], clock=clock), clock=clock, environ={}, run_thread=False
        ),
        "rapl": lambda: RaplMeter(root=powercap(tmp_path), clock=clock, run_thread=False),
    }
    return clock, meters[kind]()


@pytest.mark.parametrize("kind", sorted(READERS))
def test_mark_and_drain_mean_the_same_for_every_reader(kind: str, tmp_path: Path) -> None:
    clock, meter = driven(kind, tmp_path)
    assert isinstance(meter, PowerMeter)
    meter.mark(Phase.WARMUP)  # before start: only the tag
    assert meter.drain() == [] and meter.sample_once() == []
    meter.start()
    started = meter.drain()  # start's first sample (none for RAPL: power needs an interval) + drain's
    assert all(s.phase == "warmup" and s.t_s == 0.0 for s in started)
    clock.advance(0.5)
    meter.mark(Phase.TRAIN, 1)
    clock.advance(0.5)
    meter.sample_once()
    clock.advance(0.5)
    drained = meter.drain()
    tags = [(s.phase, s.epoch, s.t_s) for s in drained]
    closing = [("warmup", None, 0.5)]  # the boundary sample that closes the old phase
    opening = [("train", 1, 0.5)] if meter.reader.opens_phases else []
    ticked = [("train", 1, 1.0), ("train", 1, 1.5)]  # a tick, and the drain's closing sample
    assert tags == closing + opening + ticked
    assert all(type(s.phase) is str for s in drained)  # the tag is stored as the plain value
    again = meter.drain()  # drained samples are forgotten: only a new closing sample, if any
    assert [s.t_s for s in again] == ([1.5] if meter.reader.opens_phases else [])
    with pytest.raises(MeterError, match="'training' is not one of warmup, setup, idle, train, eval, cooldown"):
        meter.mark("training")
    clock.advance(0.5)
    meter.stop()
    meter.stop()  # idempotent
    after = meter.drain()
    assert [s.t_s for s in after] == ([2.0] if meter.reader.samples_at_stop else [])
    assert meter.sample_once() == [] and meter.drain() == []
    with pytest.raises(MeterError, match="already started"):
        meter.start()


def test_a_failing_host_reading_costs_no_device_sample() -> None:
    class BrokenHost:
        def read(self) -> Any:
            raise OSError("/proc refused")

    clock = FakeClock()
    meter = SimulatedMeter(clock=clock, host=BrokenHost(), run_thread=False)  # type: ignore[arg-type]
    meter.start()
    clock.advance(1.0)
    assert len(meter.sample_once()) == 1
    meter.stop()
    assert meter.error_counts() == {"-:host": 2}
    assert meter.read_errors()[0].field == "host" and "refused" in meter.read_errors()[0].error


def test_stop_returns_promptly_with_a_slow_rate() -> None:
    meter = SimulatedMeter(rate_hz=0.01)  # the next tick is 100 s away
    meter.start()
    began = time.monotonic()
    meter.stop()
    assert time.monotonic() - began < 2.0
    assert not [t for t in threading.enumerate() if t.name == "simulated-meter"]


# -- one definition of phases and sample columns ------------------------------------------------------------


def test_phases_and_sample_columns_are_the_ground_floors() -> None:
    assert PHASES is db.records.PHASES
    assert SAMPLE_FIELDS == db.records.SAMPLE_COLUMNS
    assert {f for f in Sample.__dataclass_fields__} == set(db.records.SAMPLE_COLUMNS)
    check_fields(list(Sample.__dataclass_fields__))  # in step: no error
    with pytest.raises(TypeError, match="out of step"):
        check_fields([*Sample.__dataclass_fields__, "gpu_fan_pct"])
    reordered = list(Sample.__dataclass_fields__)
    reordered[-1], reordered[-2] = reordered[-2], reordered[-1]
    with pytest.raises(TypeError, match="out of step"):
        check_fields(reordered)


def test_meter_error_is_a_campaign_error_and_a_runtime_error() -> None:
    err = MeterError("no NVIDIA GPU visible")
    assert isinstance(err, CampaignError) and isinstance(err, RuntimeError)


def test_rate_must_be_positive_for_every_meter(tmp_path: Path) -> None:
    for make in (
        lambda: SimulatedMeter(rate_hz=0),
        lambda: NvmlMeter(rate_hz=-1.0, nvml=FakeNvml([])),
        lambda: RaplMeter(rate_hz=math.nan, root=tmp_path),
    ):
        with pytest.raises(MeterError, match="rate_hz"):
            make()


def test_a_mark_opens_the_new_phase_with_the_closing_reading_and_latest_keeps_the_last() -> None:
    """Phases meet exactly at the mark: the opening sample is the closing reading, retagged (same
    time, power and counter), so a phase spans the time from its mark to the next."""
    clock = FakeClock()
    meter = NvmlMeter(nvml=FakeNvml([FakeGpu(power_w=lambda t: 100.0 + t)], clock=clock), clock=clock,
                      environ={}, run_thread=False)
    assert meter.latest() == []
    meter.start()
    clock.advance(0.25)
    meter.mark(Phase.TRAIN, 1)
    first, closing, opening, _ = meter.drain()
    assert (first.phase, closing.phase, opening.phase, opening.epoch) == ("idle", "idle", "train", 1)
    assert (opening.t_s, opening.power_w, opening.energy_j) == (closing.t_s, closing.power_w, closing.energy_j)
    clock.advance(0.1)
    meter.sample_once()
    [last] = meter.latest()  # one device: its last reading, drained or not
    assert last.t_s == pytest.approx(0.35) and last.phase == "train"
    meter.stop()
