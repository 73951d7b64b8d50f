"""NvmlMeter against the fake NVML (deterministic clock) and against the real pynvml here (no GPU)."""

from __future__ import annotations

import math
import threading
from typing import Any

import pynvml
import pytest

from jobs.meters.base import MeterError, PowerMeter, Sample, energy_j, integrate_power_j
from jobs.meters.fake_nvml import FakeClock, FakeGpu, FakeNvml, trace_curve
from jobs.meters.host import HostReader
from jobs.meters.nvml import NvmlMeter, nvml_available, visible_device_selectors

RATE_HZ = 10.0
DT_S = 1.0 / RATE_HZ


def curve_w(t: float) -> float:
    """A synthetic training-like power curve: ramp, oscillation and a step."""
    base = 80.0 + 140.0 * min(t / 5.0, 1.0)
    wobble = 40.0 * math.sin(2 * math.pi * t / 3.7)
    step = 60.0 if 20.0 <= t < 35.0 else 0.0
    return base + wobble + step


def curve_integral_j(t1: float) -> float:
    """Exact integral of ``curve_w`` from 0 to ``t1`` (t1 >= 5)."""
    ramp = 80.0 * t1 + 140.0 * (2.5 + (t1 - 5.0))
    wobble = 40.0 * 3.7 / (2 * math.pi) * (1 - math.cos(2 * math.pi * t1 / 3.7))
    step = 60.0 * max(0.0, min(t1, 35.0) - 20.0)
    return ramp + wobble + step


def gpus(n: int = 1, **kw: object) -> list[FakeGpu]:
    return [
        FakeGpu(uuid=f"GPU-{i:08x}-aaaa-4000-8000-00000000000{i}", pci_bus_id=f"00000000:0{i}:00.0", **kw)  # type: ignore[arg-type]
        for i in range(n)
    ]


def driven(
    fake_gpus: list[FakeGpu], environ: dict[str, str] | None = None, **kw: object
) -> tuple[FakeClock, FakeNvml, NvmlMeter]:
    clock = FakeClock()
    fake = FakeNvml(fake_gpus, clock=clock)
    meter = NvmlMeter(rate_hz=RATE_HZ, nvml=fake, clock=clock, run_thread=False, environ=environ or {}, **kw)  # type: ignore[arg-type]
    return clock, fake, meter


def run_for(clock: FakeClock, meter: NvmlMeter, seconds: float) -> None:
    for _ in range(round(seconds / DT_S)):
        clock.advance(DT_S)
        meter.sample_once()


# -- lifecycle ---------------------------------------------------------------------------------------


def test_start_stop_shuts_nvml_down_and_keeps_samples() -> None:
    clock, fake, meter = driven(gpus(2))
    port: PowerMeter = meter  # the meter satisfies the port statically ...
    assert isinstance(port, PowerMeter)  # ... and at run time
    meter.start()
    assert len(meter.drain()) == 0 + 2 + 2  # first sample at start, closing sample of the drain
    run_for(clock, meter, 1.0)
    meter.stop()
    meter.stop()  # idempotent
    assert fake.calls["nvmlInit"] == 1 and fake.calls["nvmlShutdown"] == 1
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()  # the fake, like NVML, refuses calls after the last shutdown
    samples = meter.drain()
    assert [s.device for s in samples] == [0, 1] * 11  # 10 ticks + the closing sample of stop()
    assert meter.drain() == []
    assert meter.sample_once() == []  # after stop nothing is read
    with pytest.raises(MeterError, match="already started"):
        meter.start()


def test_units_and_fields() -> None:
    gpu = FakeGpu(
        power_w=251.5,
        memory_used_mib=3000.0,
        gpu_util_pct=97,
        mem_util_pct=41,
        temperature_c=66,
        sm_clock_mhz=1980,
        mem_clock_mhz=2619,
        power_limit_w=700.0,
    )
    clock, _, meter = driven([gpu])
    meter.start()
    s = meter.drain()[0]
    meter.stop()
    assert (s.power_w, s.mem_used_mb, s.gpu_util, s.mem_util) == (251.5, 3000.0, 97.0, 41.0)
    assert (s.temperature_c, s.sm_clock_mhz, s.mem_clock_mhz, s.power_limit_w) == (
        66.0,
        1980.0,
        2619.0,
        700.0,
    )
    assert s.energy_j == 0.0 and s.t_s == 0.0 and s.phase == "idle" and s.epoch is None


def test_timestamps_are_monotonic_from_one_wall_clock_anchor() -> None:
    clock = FakeClock()
    fake = FakeNvml(gpus(1), clock=clock)
    meter = NvmlMeter(
        nvml=fake, clock=clock, wall_clock=lambda: 1_700_000_000.25, run_thread=False, environ={}
    )
    meter.start()
    run_for(clock, meter, 0.5)
    meter.stop()
    times = [s.t_s for s in meter.drain()]
    assert meter.anchor_unix_s == 1_700_000_000.25
    assert times[0] == 0.0 and all(b >= a for a, b in zip(times, times[1:], strict=False))
    assert times[-1] == pytest.approx(0.5)


def test_thread_samples_at_its_rate_and_stops() -> None:
    fake = FakeNvml(gpus(1))
    meter = NvmlMeter(rate_hz=50.0, nvml=fake, environ={})
    meter.start()
    try:
        assert meter.wait_for_samples(6, timeout_s=10.0), "the sampler thread produced no samples"
    finally:
        meter.stop()
    samples = meter.drain()
    assert len(samples) >= 6
    assert all(b.t_s > a.t_s for a, b in zip(samples, samples[1:], strict=False))
    assert fake.calls["nvmlShutdown"] == 1 and meter.read_errors() == []


# -- errors mid-run ------------------------------------------------------------------------------------


def test_nvml_errors_mid_run_are_recorded_and_sampling_goes_on() -> None:
    clock, fake, meter = driven(gpus(2))
    meter.start()
    fake.fail("nvmlDeviceGetPowerUsage", device=0, times=2)  # transient: two ticks without power
    fake.fail("nvmlDeviceGetTemperature", code=pynvml.NVML_ERROR_GPU_IS_LOST, device=1, times=None)
    run_for(clock, meter, 1.0)
    meter.stop()
    samples = meter.drain()
    dev0 = [s for s in samples if s.device == 0]
    dev1 = [s for s in samples if s.device == 1]
    assert len(dev0) == 12 - 2 and len(dev1) == 12  # start + 10 ticks + the closing sample of stop()
    assert all(s.temperature_c is None and s.power_w > 0 for s in dev1[1:])
    assert all(s.temperature_c is not None for s in dev0)
    assert meter.error_counts() == {"0:power": 2, "1:temperature": 11}
    first = meter.read_errors()[0]
    assert first.device == 0 and first.field == "power" and "Unknown" in first.error
    # the counter was followed through the gap: energy still matches the fake's own count
    assert dev0[-1].energy_j == pytest.approx(dev1[-1].energy_j, rel=1e-6)


def test_unexpected_exception_in_a_tick_does_not_kill_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(gpus(1))
    meter = NvmlMeter(rate_hz=100.0, nvml=fake, environ={})
    hit_twice = threading.Event()
    hits = {"n": 0}

    def broken(handle: object) -> object:
        hits["n"] += 1
        if hits["n"] >= 2:
            hit_twice.set()
        raise RuntimeError("driver binding bug")

    meter.start()
    try:
        monkeypatch.setattr(fake, "nvmlDeviceGetUtilizationRates", broken)
        assert hit_twice.wait(timeout=10.0), "the thread stopped calling after the first failure"
        monkeypatch.undo()
        meter.drain()
        assert meter.wait_for_samples(3, timeout_s=10.0), "the thread died after an unexpected exception"
    finally:
        meter.stop()
    assert "RuntimeError: driver binding bug" in meter.read_errors()[0].error
    assert meter.error_counts()["-:sampler"] >= 2


# -- phases ----------------------------------------------------------------------------------------------


def test_mark_tags_what_follows_with_boundary_samples() -> None:
    clock, _, meter = driven(gpus(1))
    meter.mark("warmup")  # before start: only sets the tag
    meter.start()
    run_for(clock, meter, 0.3)
    meter.mark("train", 1)
    run_for(clock, meter, 0.3)
    meter.mark("eval", 1)
    run_for(clock, meter, 0.2)
    meter.stop()
    tags = [(s.phase, s.epoch) for s in meter.drain()]
    assert tags == (
        [("warmup", None)] * (1 + 3 + 1)  # start, 3 ticks, closing sample at the boundary
        + [("train", 1)] * (1 + 3 + 1)
        + [("eval", 1)] * (1 + 2 + 1)  # opening sample, 2 ticks, closing sample of stop()
    )
    with pytest.raises(MeterError, match="not one of"):
        meter.mark("training")


def test_phase_boundaries_partition_the_energy() -> None:
    clock, _, meter = driven([FakeGpu(power_w=curve_w)])
    meter.start()
    run_for(clock, meter, 10.0)
    meter.mark("train", 1)
    run_for(clock, meter, 10.0)
    meter.stop()
    samples = meter.drain()
    warm = [s for s in samples if s.phase == "idle"]
    train = [s for s in samples if s.phase == "train"]
    e_warm, how = energy_j(warm)
    e_train, _ = energy_j(train)
    assert how == "counter"
    assert e_warm + e_train == pytest.approx(curve_integral_j(20.0), rel=1e-4)


# -- energy ---------------------------------------------------------------------------------------------


def test_counter_and_integration_match_the_known_integral() -> None:
    clock, _, meter = driven([FakeGpu(power_w=curve_w)])
    meter.start()
    run_for(clock, meter, 60.0)
    meter.stop()
    samples = meter.drain()
    exact = curve_integral_j(60.0)
    from_counter, how = energy_j(samples)
    integrated = integrate_power_j([s.t_s for s in samples], [s.power_w for s in samples])
    assert how == "counter"
    assert abs(from_counter - exact) / exact < 0.005
    assert abs(integrated - exact) / exact < 0.005
    assert samples[-1].energy_j == pytest.approx(exact, abs=1.0)  # the counter is whole mJ


def test_gpu_without_counter_falls_back_to_integration() -> None:
    clock, fake, meter = driven([FakeGpu(power_w=curve_w, has_energy_counter=False)])
    meter.start()
    run_for(clock, meter, 60.0)
    meter.stop()
    samples = meter.drain()
    assert all(s.energy_j is None for s in samples)
    total, how = energy_j(samples)
    assert how == "integrated"
    assert abs(total - curve_integral_j(60.0)) / curve_integral_j(60.0) < 0.005
    assert meter.hardware()["energy_method"] == "integrated"
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1  # probed once at start, never again
    assert meter.read_errors() == []  # a missing counter is a property of the GPU, not an error


def test_counter_reset_is_bridged_and_energy_never_decreases() -> None:
    clock, fake, meter = driven([FakeGpu(power_w=curve_w)])
    meter.start()
    run_for(clock, meter, 30.05)
    clock.advance(0.05)
    fake.reset_energy_counter(0)  # mid-interval, as a GPU reset would
    run_for(clock, meter, 29.9)
    meter.stop()
    samples = meter.drain()
    energies = [s.energy_j for s in samples]
    assert all(b >= a for a, b in zip(energies, energies[1:], strict=False))  # type: ignore[operator]
    exact = curve_integral_j(samples[-1].t_s)
    assert abs(energies[-1] - exact) / exact < 0.005  # type: ignore[operator]
    resets = [e for e in meter.read_errors() if e.field == "energy_reset"]
    assert len(resets) == 1 and "went back" in resets[0].error


def test_counter_unread_at_start_keeps_energy_relative_to_start() -> None:
    clock, fake, meter = driven([FakeGpu(power_w=150.0)])
    real_probe = fake.nvmlDeviceGetTotalEnergyConsumption

    calls = {"n": 0}

    def flaky(handle: Any) -> int:
        calls["n"] += 1
        if calls["n"] in (2, 3):  # the start sample and the first tick fail; the probe did not
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return real_probe(handle)

    fake.nvmlDeviceGetTotalEnergyConsumption = flaky  # type: ignore[method-assign]
    meter.start()
    run_for(clock, meter, 2.0)
    meter.stop()
    samples = meter.drain()
    assert samples[0].energy_j is None and samples[1].energy_j is None
    assert samples[-1].energy_j == pytest.approx(150.0 * 2.0, rel=1e-3)


def test_replay_of_a_recorded_trace() -> None:
    trace = trace_curve([0.0, 1.0, 2.0, 3.0], [100.0, 300.0, 300.0, 100.0])
    clock, _, meter = driven([FakeGpu(power_w=trace)])
    meter.start()
    run_for(clock, meter, 3.0)
    meter.stop()
    assert energy_j(meter.drain())[0] == pytest.approx(200.0 + 300.0 + 200.0, rel=1e-3)


# -- devices ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", []),
        ("0,2", ["0", "2"]),
        (" 1 , 0", ["1", "0"]),
        ("0,-1,2", ["0"]),
        ("GPU-abc,1", ["GPU-abc", "1"]),
        ("x", []),
    ],
)
def test_visible_device_selectors_read_like_cuda(value: str | None, expected: list[str] | None) -> None:
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert visible_device_selectors(env) == expected


def measured_devices(env: dict[str, str], n: int = 3, **kw: object) -> list[int]:
    _, _, meter = driven(gpus(n), environ=env, **kw)
    meter.start()
    meter.stop()
    return sorted({s.device for s in meter.drain()})


def test_device_selection_from_cuda_visible_devices() -> None:
    order = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert measured_devices({}) == [0, 1, 2]
    assert measured_devices({**order, "CUDA_VISIBLE_DEVICES": "2"}) == [2]
    assert measured_devices({**order, "CUDA_VISIBLE_DEVICES": "2,0"}) == [0, 2]
    assert measured_devices({"CUDA_VISIBLE_DEVICES": "GPU-00000001"}) == [1]  # a unique UUID prefix
    assert measured_devices({"CUDA_VISIBLE_DEVICES": "1"}, devices=[0]) == [0]  # explicit wins


def test_integer_entries_count_the_gpus_a_constrained_job_can_open() -> None:
    # Inside a Slurm cgroup, NVML lists every GPU but only the job's open; Slurm renumbers them.
    _, fake, meter = driven(gpus(3), environ={"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    fake.fail("nvmlDeviceGetHandleByIndex", code=pynvml.NVML_ERROR_NO_PERMISSION, device=0, times=None)
    meter.start()
    meter.stop()
    assert {s.device for s in meter.drain()} == {1}
    assert meter.hardware()["gpu_uuid"] == "GPU-00000001-aaaa-4000-8000-000000000001"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "selects no GPU"),
        ("7", "out of range"),
        ("GPU-ffff", "matches no GPU"),
        ("GPU-0000000", "matches several"),
        ("MIG-1234", "MIG instance"),
    ],
)
def test_bad_device_selection_is_a_meter_error(value: str, message: str) -> None:
    _, fake, meter = driven(gpus(3), environ={"CUDA_VISIBLE_DEVICES": value})
    with pytest.raises(MeterError, match=message):
        meter.start()
    assert fake.calls["nvmlShutdown"] == fake.calls["nvmlInit"]  # NVML is closed again


def test_hardware_identity() -> None:
    _, _, meter = driven(gpus(2), environ={"CUDA_VISIBLE_DEVICES": "1"})
    before = meter.hardware()  # works before start: NVML opened briefly
    meter.start()
    hw = meter.hardware()
    meter.stop()
    assert before == hw
    assert hw["source"] == "nvml" and hw["gpu_count"] == 1
    assert hw["gpu_name"] == "NVIDIA A100-SXM4-40GB" and hw["pci_bus_id"] == "00000000:01:00.0"
    assert hw["driver_version"] == "550.54.15" and hw["vbios_version"] == "92.00.45.00.06"
    assert hw["power_limit_w"] == 400.0 and hw["memory_total_mb"] == 40960.0
    assert hw["energy_method"] == "counter" and hw["cuda_visible_devices"] == "1"
    devices = hw["devices"]
    assert isinstance(devices, list) and [d["index"] for d in devices] == [1]


# -- no GPU --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fake", "reason"),
    [
        (FakeNvml([], library_present=False), "libnvidia-ml.so.1"),
        (FakeNvml([], driver_loaded=False), "driver is not loaded"),
        (FakeNvml([]), "found no GPU"),
    ],
)
def test_no_gpu_is_a_one_line_meter_error(fake: FakeNvml, reason: str) -> None:
    meter = NvmlMeter(nvml=fake, environ={}, run_thread=False)
    with pytest.raises(MeterError, match=reason) as info:
        meter.start()
    assert str(info.value).startswith("no NVIDIA GPU visible") and "\n" not in str(info.value)
    assert not nvml_available(fake, environ={})
    opened = fake.library_present and fake.driver_loaded
    assert fake.calls["nvmlShutdown"] == (fake.calls["nvmlInit"] if opened else 0)  # every open is closed


def test_fake_refuses_calls_before_init() -> None:
    fake = FakeNvml(gpus(1))
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlShutdown()
    assert nvml_available(fake, environ={})
    assert not nvml_available(fake, environ={"CUDA_VISIBLE_DEVICES": ""})


def test_real_pynvml_on_a_machine_without_gpu() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        pass
    else:  # pragma: no cover - only on GPU machines
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA GPU")
    assert nvml_available() is False
    meter = NvmlMeter()
    with pytest.raises(MeterError) as info:
        meter.start()
    message = str(info.value)
    assert (
        message.startswith("no NVIDIA GPU visible") and "libnvidia-ml.so.1" in message and "\n" not in message
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no pynvml type leaks out
    with pytest.raises(MeterError, match="no NVIDIA GPU visible"):
        meter.hardware()
    meter.stop()  # harmless when never started


# -- host readings ---------------------------------------------------------------------------------------


def test_host_readings_ride_along() -> None:
    clock, _, meter = driven(gpus(1), host=HostReader())
    meter.start()
    run_for(clock, meter, 0.3)
    meter.stop()
    samples: list[Sample] = meter.drain()
    assert all(s.rss_mb is not None and s.rss_mb > 1.0 for s in samples)
    assert samples[0].cpu_util is None  # no interval behind the first reading
    # /proc/stat moves in 10 ms steps: back-to-back reads may have no interval to report on
    assert all(s.cpu_util is None or 0.0 <= s.cpu_util <= 100.0 for s in samples[1:])
