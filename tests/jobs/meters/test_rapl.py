"""RAPL reading on a fake powercap tree (this machine has none)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs.meters.base import MeterError, PowerMeter, energy_j
from jobs.meters.fake_nvml import FakeClock
from jobs.meters.rapl import RaplMeter, RaplReader, find_rapl_domains, rapl_available

MAX_UJ = 262_143_328_850  # a typical package max_energy_range_uj


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_uj(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """Two sockets with package, core and dram zones, a psys zone and an mmio duplicate."""
    root = tmp_path / "powercap"
    zones = {
        "package-0": zone(root, "intel-rapl:0", "package-0", 1_000_000),
        "core-0": zone(root, "intel-rapl:0:0", "core", 5),
        "dram-0": zone(root, "intel-rapl:0:1", "dram", 2_000_000, max_uj=65_712_999_613),
        "package-1": zone(root, "intel-rapl:1", "package-1", MAX_UJ - 1_000_000),
        "dram-1": zone(root, "intel-rapl:1:0", "dram", 7),
        "psys": zone(root, "intel-rapl:2", "psys", 9),
        "mmio": zone(root, "intel-rapl-mmio:0", "package-0", 11),
    }
    zones["root"] = root
    return zones


def test_domains_are_packages_and_dram_only(tree: dict[str, Path]) -> None:
    domains = find_rapl_domains(tree["root"])
    assert [d.key for d in domains] == ["package-0", "package-1", "dram-0", "dram-1"]
    assert domains[2].max_energy_range_uj == 65_712_999_613 and domains[2].socket == 0
    assert rapl_available(tree["root"])
    assert not rapl_available(tree["root"] / "absent")
    assert find_rapl_domains(tree["root"] / "absent") == []


def test_reader_counts_joules_and_unwraps(tree: dict[str, Path]) -> None:
    reader = RaplReader(tree["root"])
    reader.start()
    set_uj(tree["package-0"], 1_000_000 + 2_500_000)  # +2.5 J
    set_uj(tree["package-1"], 500_000)  # wrapped: 1 J to the top, then 0.5 J
    set_uj(tree["dram-0"], 2_000_000 + 250_000)
    first = reader.read()
    assert first.errors == {}
    assert first.energy_j["package-0"] == pytest.approx(2.5)
    assert first.energy_j["package-1"] == pytest.approx(1.5)
    assert first.energy_j["dram-0"] == pytest.approx(0.25)
    assert first.energy_j["dram-1"] == 0.0
    set_uj(tree["package-1"], 1_500_000)  # no wrap: +1 J
    assert reader.read().energy_j["package-1"] == pytest.approx(2.5)


def test_unreadable_counters_refuse_to_start_with_the_fix(tree: dict[str, Path]) -> None:
    for key in ("package-0", "package-1"):
        energy = tree[key] / "energy_uj"
        energy.unlink()
        energy.mkdir()  # reading it fails like a root-only file does for a user
    assert not rapl_available(tree["root"])
    with pytest.raises(MeterError, match="root-only"):
        RaplReader(tree["root"]).start()


def test_a_counter_unreadable_mid_run_is_reported_and_skipped(tree: dict[str, Path]) -> None:
    clock = FakeClock()
    meter = RaplMeter(root=tree["root"], clock=clock, wall_clock=lambda: 1.7e9, run_thread=False)
    meter.start()
    energy = tree["dram-0"] / "energy_uj"
    energy.unlink()
    energy.mkdir()
    clock.advance(1.0)
    set_uj(tree["package-0"], 1_000_000 + 40_000_000)
    taken = meter.sample_once()
    assert [s.device for s in taken] == [0, 1, 3]  # dram-0 (device 2) skipped this tick
    assert meter.error_counts() == {"dram-0": 1}
    shutil.rmtree(energy)
    set_uj(tree["dram-0"], 2_000_000 + 6_000_000)
    clock.advance(1.0)
    taken = meter.sample_once()
    dram = [s for s in taken if s.device == 2][0]
    assert dram.energy_j == pytest.approx(6.0) and dram.power_w == pytest.approx(3.0)  # over both seconds
    meter.stop()


def test_meter_power_energy_and_phases(tree: dict[str, Path]) -> None:
    clock = FakeClock()
    meter = RaplMeter(root=tree["root"], clock=clock, run_thread=False)
    assert isinstance(meter, PowerMeter)
    start_uj = MAX_UJ - 120_000_000  # the counter wraps 2.4 s in
    set_uj(tree["package-0"], start_uj)
    meter.start()
    for step in range(10):  # 50 W for 10 s on package-0
        clock.advance(1.0)
        set_uj(tree["package-0"], (start_uj + (step + 1) * 50_000_000) % MAX_UJ)
        meter.sample_once()
        if step == 4:
            meter.mark("train", 1)
    meter.stop()
    pkg0 = [s for s in meter.drain() if s.device == 0]
    assert all(s.power_w == pytest.approx(50.0) for s in pkg0)
    assert energy_j(pkg0) == (pytest.approx(450.0), "counter")  # first sample is at t=1 s
    assert pkg0[-1].energy_j == pytest.approx(500.0)
    assert [s.phase for s in pkg0] == ["idle"] * 5 + ["train"] * 5
    assert meter.hardware()["devices"][0]["key"] == "package-0"  # type: ignore[index]


def test_hardware_numbers_the_domains_as_the_samples_do(tree: dict[str, Path]) -> None:
    """A zone left out at start (unreadable) is not among the devices: device i is the i-th
    sampled domain, so a DRAM zone never stands at a package's index."""
    energy = tree["package-1"] / "energy_uj"
    energy.unlink()
    energy.mkdir()
    clock = FakeClock()
    meter = RaplMeter(root=tree["root"], clock=clock, run_thread=False)
    with pytest.raises(MeterError, match="call start"):
        meter.hardware()
    meter.start()
    devices = meter.hardware()["devices"]
    assert [(d["index"], d["key"]) for d in devices] == [(0, "package-0"), (1, "dram-0"), (2, "dram-1")]  # type: ignore[index,union-attr]
    clock.advance(1.0)
    taken = meter.sample_once()
    assert sorted({s.device for s in taken}) == [0, 1, 2]
    meter.stop()
