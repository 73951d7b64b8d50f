"""Carbontracker adapter: parsing its logs, and real runs on this machine (no GPU, RAPL, internet)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.meters.base import MeterError
from jobs.meters.carbon import CarbonTrackerRun, parse_output_log, parse_std_log
from jobs.meters.fake_nvml import FakeGpu, FakeNvml

STD_LOG = """\
2026-11-25 00:32:25 - carbontracker version 2.4.7
2026-11-25 00:32:25 - Only predicted and actual consumptions are multiplied by a PUE coefficient of 1.58 (Daniel Bizo, 2023, Uptime Institute Global Data Center Survey).
2026-11-25 00:32:26 - The following components were found: GPU with device(s) NVIDIA A100-SXM4-40GB, NVIDIA A100-SXM4-40GB. CPU with device(s) cpu:0, dram:0.
2026-11-25 00:32:26 - Monitoring thread started.
2026-11-25 00:32:26 - Epoch 1:
2026-11-25 00:32:26 - Duration: 0:01:02.50
2026-11-25 00:32:26 - Average power usage (W) for gpu: [250.5 249.5]
2026-11-25 00:32:26 - Average power usage (W) for cpu: [80.  12.]
2026-11-25 00:33:27 - Epoch 2:
2026-11-25 00:33:27 - Duration: 0:01:00.00
2026-11-25 00:33:27 - Average power usage (W) for gpu: None
2026-11-25 00:33:27 - Average power usage (W) for cpu: [nan nan]
2026-11-25 00:33:27 - Carbon intensities (gCO2eq/kWh) fetched every 900 s at detected location: x: [120.0]
2026-11-25 00:33:27 - Average carbon intensity during training was 120.00 gCO2eq/kWh.\x20
2026-11-25 00:33:27 - Monitoring thread ended.
"""

OUTPUT_LOG = """\
2026-11-25 00:32:26 - CarbonTracker: The following components were found: GPU with device(s) A, B.
2026-11-25 00:32:26 - CarbonTracker:\x20
Predicted consumption for 4 epoch(s):
\tTime:\t0:04:05
\tEnergy:\t0.158000000000 kWh
\tCO2eq:\t18.960000000000 g
2026-11-25 00:33:27 - CarbonTracker: Average carbon intensity during training was 120.00 gCO2eq/kWh.\x20
2026-11-25 00:33:27 - CarbonTracker:\x20
Actual consumption for 2 epoch(s):
\tTime:\t0:02:03
\tEnergy:\t0.079000000000 kWh
\tCO2eq:\t9.480000000000 g
2026-11-25 00:33:27 - CarbonTracker: Finished monitoring.
"""


def test_parse_logs_with_several_gpus_dram_and_missing_power() -> None:
    std = parse_std_log(STD_LOG)
    assert std["pue"] == 1.58 and std["intensity"] == 120.0 and not std["interrupted"]
    assert std["devices"] == {
        "gpu": ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"],
        "cpu": ["cpu:0", "dram:0"],
    }
    first, second = std["epochs"]
    assert (first.epoch, first.duration_s) == (1, 62.5)
    assert first.gpu_power_w == 500.0 and first.cpu_power_w == 80.0 and first.dram_power_w == 12.0
    assert first.gpu_energy_j == 500.0 * 62.5 and first.dram_energy_j == 12.0 * 62.5
    assert first.energy_j == (500.0 + 80.0 + 12.0) * 62.5
    assert second.duration_s == 60.0 and second.energy_j is None  # "None" and "nan" mean unmeasured

    actual, predicted = parse_output_log(OUTPUT_LOG, pue=1.58)
    assert actual is not None and predicted is not None
    assert (actual.epochs, actual.duration_s, actual.energy_kwh_reported, actual.co2eq_g) == (
        2,
        123.0,
        0.079,
        9.48,
    )
    assert actual.energy_j_raw == pytest.approx(0.079 * 3.6e6 / 1.58)
    assert (predicted.epochs, predicted.duration_s) == (4, 245.0)
    assert parse_output_log("", pue=1.58) == (None, None)


def epochs(run: CarbonTrackerRun, n: int, seconds: float) -> None:
    for _ in range(n):
        run.epoch_start()
        time.sleep(seconds)  # a stand-in for training (not synchronisation): Carbontracker times epochs
        run.epoch_end()


def test_real_carbontracker_two_short_epochs_on_this_machine(tmp_path: Path) -> None:
    began = time.monotonic()
    run = CarbonTrackerRun(
        epochs=2,
        log_dir=tmp_path / "ct",
        update_interval_s=0.1,
        intensity_g_per_kwh=300.0,
        intensity_source="configured: test grid",
    )
    run.start()
    epochs(run, 2, 0.3)
    record = run.stop()
    elapsed = time.monotonic() - began
    assert elapsed < 20.0, f"Carbontracker took {elapsed:.1f} s"
    assert record.status == "ok" and not record.interrupted
    assert record.missing_components == ["gpu"] and record.components == ["cpu"]  # no GPU here
    assert [e.epoch for e in record.epochs] == [1, 2]
    for e in record.epochs:
        assert e.duration_s is not None and e.duration_s == pytest.approx(0.3, abs=0.05)
        assert e.cpu_power_w is not None and e.cpu_power_w > 0
        assert e.cpu_energy_j == pytest.approx(e.cpu_power_w * e.duration_s)
        assert e.gpu_energy_j is None and e.dram_energy_j is None  # no RAPL here
    assert record.pue == 1.58
    assert record.intensity_g_per_kwh == 300.0 and record.intensity_source == "configured: test grid"
    actual, predicted = record.actual, record.predicted
    assert actual is not None and predicted is not None
    raw = record.total_j("cpu")
    assert raw is not None and actual.energy_j_raw == pytest.approx(raw, rel=0.1)
    assert actual.energy_kwh_reported == pytest.approx(actual.energy_j_raw * 1.58 / 3.6e6)
    assert actual.co2eq_g == pytest.approx(actual.energy_kwh_reported * 300.0, rel=1e-6)
    assert predicted.epochs == 2
    assert record.duration_s == pytest.approx(0.6, abs=0.1)
    assert len(record.log_files) == 3 and all(Path(f).parent == tmp_path / "ct" for f in record.log_files)
    saved = json.loads((tmp_path / "ct" / f"{run.log_prefix}_record.json").read_text())
    assert saved["status"] == "ok" and saved["total_energy_j"]["cpu"] == pytest.approx(raw)
    assert run.stop() is record


def test_components_absent_are_recorded_and_the_trial_goes_on(tmp_path: Path) -> None:
    run = CarbonTrackerRun(epochs=3, log_dir=tmp_path / "ct", components=("gpu",))
    run.start()  # asking Carbontracker for "gpu" here would os._exit(70) the whole process
    epochs(run, 2, 0.0)
    record = run.stop()
    assert record.status == "no_components"
    assert record.missing_components == ["gpu"] and record.components == [] and record.epochs == []
    assert "not present" in record.messages[0]
    assert record.log_files == []


def test_gpu_measured_through_a_fake_nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from carbontracker.components.gpu import nvidia

    fake = FakeNvml([FakeGpu(power_w=200.0)])
    monkeypatch.setattr(nvidia, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run = CarbonTrackerRun(epochs=1, log_dir=tmp_path, components=("gpu",), update_interval_s=0.05, nvml=fake)
    run.start()
    epochs(run, 1, 0.3)
    record = run.stop()
    assert record.status == "ok" and record.devices == {"gpu": ["NVIDIA A100-SXM4-40GB"]}
    (epoch,) = record.epochs
    assert epoch.gpu_power_w == pytest.approx(200.0)
    assert epoch.gpu_energy_j == pytest.approx(200.0 * epoch.duration_s)  # type: ignore[operator]
    assert record.actual is not None and record.actual.energy_j_raw == pytest.approx(
        epoch.gpu_energy_j, rel=0.05
    )


class StubTracker:
    """Stands in for carbontracker's CarbonTracker: records its arguments, misbehaves on cue."""

    made: list[dict[str, Any]] = []
    release = threading.Event()

    def __init__(self, **kwargs: Any) -> None:
        StubTracker.made.append(kwargs)
        self.deleted = False
        self.logger = None

    def epoch_start(self) -> None:
        raise SystemExit(70)  # what its error handler does without ignore_errors

    def epoch_end(self) -> None:
        StubTracker.release.wait(timeout=30.0)  # hangs like a fetch without timeout

    def stop(self) -> None:
        StubTracker.release.wait(timeout=30.0)


def test_tracker_errors_and_hangs_cost_the_trial_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import carbontracker.tracker

    monkeypatch.setattr(carbontracker.tracker, "CarbonTracker", StubTracker)
    StubTracker.made.clear()
    try:
        run = CarbonTrackerRun(epochs=2, log_dir=tmp_path, components=("cpu",), call_timeout_s=0.2)
        run.start()
        run.epoch_start()  # SystemExit inside: recorded, not raised
        record = run.stop()
        assert record.status == "failed" and "SystemExit" in record.messages[-1]

        hung = CarbonTrackerRun(epochs=2, log_dir=tmp_path, components=("cpu",), call_timeout_s=0.2)
        hung.start()
        began = time.monotonic()
        hung.epoch_end()
        hung.epoch_end()  # abandoned after the first timeout: returns at once
        assert time.monotonic() - began < 2.0
        record = hung.stop()
        assert record.status == "failed" and "no answer within 0.2 s" in record.messages[-1]
    finally:
        StubTracker.release.set()
    kwargs = StubTracker.made[0]
    assert kwargs["ignore_errors"] is True and kwargs["api_keys"] is None and kwargs["components"] == "cpu"
    assert kwargs["epochs"] == 2 and kwargs["stop_and_confirm"] is False


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(MeterError, match="invalid"):
        CarbonTrackerRun(epochs=1, log_dir="x", components=("tpu",))
    with pytest.raises(MeterError, match="epoch budget"):
        CarbonTrackerRun(epochs=0, log_dir="x")
