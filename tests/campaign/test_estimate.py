"""The pre-launch estimate from each source against hand-computed values, and the budget: a launch
over it is refused in one line before anything is recorded; ``--dry-run`` records nothing."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from campaign.config import ConfigError, compose
from campaign.estimate import (
    MEASURED,
    NONE,
    SCALED,
    SURROGATE,
    SURROGATE_NOTE,
    TDP,
    BudgetExceeded,
    GpuSpec,
    Interval,
    MeasuredRun,
    Settings,
    campaign_estimate,
    check_budget,
    database_runs,
    estimate,
)
from campaign.launch import plan
from tests.db.conftest import fill_smoke, smoke_energy_j

KWH = 3.6e6


def test_tdp_only_hand_computed() -> None:
    """Two 2-epoch trials at 10 s/epoch on a 100 W GPU, protocol 60 s warm-up, 30 s idle, 30 s
    cool-down, idle at 10 % of TDP, low end at 30 % of TDP, PUE 1.5 at 500 g/kWh."""
    s = Settings(warmup_s=60, idle_s=30, cooldown_s=30, intensity_g_per_kwh=500, pue=1.5, tdp_low_fraction=0.3,
                 idle_fraction=0.1, workers={"g": 1})
    est = estimate([("a", 2, "g"), ("b", 2, "g")], {"g": GpuSpec(100.0, 10.0)}, [], s)
    line, warm = est.lines
    assert (line.gpu_type, line.epochs, line.trials, line.source) == ("g", 2, 2, TDP)
    # per trial: 20 s training at 30..100 W; idle + cool-down 60 s at 10 W
    assert line.gpu_hours == Interval(2 * 80 / 3600, 2 * 80 / 3600)
    assert line.energy_kwh.low == pytest.approx((2 * 600 + 2 * 600) / KWH)
    assert line.energy_kwh.high == pytest.approx((2 * 2000 + 2 * 600) / KWH)
    assert line.above_idle_kwh.low == pytest.approx(2 * 20 * 20 / KWH)
    assert line.above_idle_kwh.high == pytest.approx(2 * 90 * 20 / KWH)
    assert line.protocol_kwh.high == pytest.approx(1200 / KWH)
    assert line.co2_kg.high == pytest.approx(5200 / KWH * 1.5 * 0.5)
    assert (warm.epochs, warm.source) == (None, TDP)  # one worker's 60 s warm-up at 30..100 W
    assert warm.energy_kwh.low == pytest.approx(1800 / KWH) and warm.energy_kwh.high == pytest.approx(6000 / KWH)
    t = est.total
    assert t.energy_kwh.low == pytest.approx(4200 / KWH) and t.energy_kwh.high == pytest.approx(11200 / KWH)
    assert t.gpu_hours.high == pytest.approx(220 / 3600) and t.wall_hours.high == pytest.approx(220 / 3600)
    assert est.protocol["warm-up"][0] == pytest.approx(60 / 3600)
    assert est.protocol["idle"][1].high == pytest.approx(600 / KWH)
    assert SURROGATE_NOTE in est.notes


def test_wall_time_at_the_configured_parallelism() -> None:
    s = Settings(workers={"g": 4})
    est = estimate([("a", 1, "g")] * 8, {"g": GpuSpec(100.0, 3600.0)}, [], s)
    assert est.total.gpu_hours.high == pytest.approx(8.0) and est.total.wall_hours.high == pytest.approx(2.0)


def _run(arch: str, epochs: int, energy_j: float, duration_s: float, above_j: float) -> MeasuredRun:
    return MeasuredRun(arch, epochs, "g", energy_j, above_j, duration_s, 2.0)


def test_measured_exact_then_per_epoch_then_tdp() -> None:
    runs = [_run("a", 2, 100.0, 10.0, 60.0), _run("a", 2, 140.0, 14.0, 80.0)]
    gpus = {"g": GpuSpec(100.0, 10.0)}
    exact, scaled, tdp = (estimate([trial], gpus, runs, Settings()).total for trial in
                          (("a", 2, "g"), ("a", 4, "g"), ("b", 2, "g")))
    assert (exact.source, scaled.source, tdp.source) == (MEASURED, SCALED, TDP)
    # n = 2: the 95 % prediction interval mean +- t(1) sd sqrt(1 + 1/2), t(1) = 12.706, never below 0
    half = 12.706 * math.sqrt(1.5)
    sd = math.sqrt(800.0)  # energies 100, 140: mean 120, sample sd sqrt(800)
    assert exact.energy_kwh.low == 0.0
    assert exact.energy_kwh.high == pytest.approx((120 + half * sd) / KWH)
    assert exact.above_idle_kwh.high == pytest.approx((70 + half * math.sqrt(200.0)) / KWH)
    assert exact.gpu_hours.high == pytest.approx((12 + half * math.sqrt(8.0)) / 3600)
    # 4 epochs from the per-epoch energies 50 and 70 J: mean 60, sd sqrt(200), times 4
    assert scaled.energy_kwh.high == pytest.approx(4 * (60 + half * math.sqrt(200.0)) / KWH)
    # no run of b: TDP bound, with the GPU type's measured idle power (2 W) for above idle
    assert tdp.energy_kwh.high == pytest.approx(100 * 20 / KWH)
    assert tdp.above_idle_kwh.low == pytest.approx((30 - 2) * 20 / KWH)
    mixed = estimate([("a", 2, "g"), ("b", 2, "g")], gpus, runs, Settings()).lines
    assert [(line.trials, line.source) for line in mixed] == [(2, f"mixed: {MEASURED}, {TDP}")]


def test_measured_from_a_database(tmp_path: Path) -> None:
    """Done runs stored through the store: each trial of the smoke sweep gets its cell's mean and the
    95 % prediction interval of one more run."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cfg = compose(["+sweep=smoke", f"root={tmp_path}", f"db.url={url}"])
    fill_smoke(url, cfg)
    runs = database_runs(url)
    assert len(runs) == 8 and {r.idle_power_w for r in runs} == {10.0}
    the_plan = plan(cfg)
    est = campaign_estimate(cfg, the_plan)
    p = cfg.protocol
    half = 12.706 * math.sqrt(50.0) * math.sqrt(1.5)  # seeds 0 and 1: energies E and E + 10 (sd sqrt(50))
    for line in est.lines:
        if line.epochs is None:  # the warm-up
            continue
        assert line.source == MEASURED
        low = high = 0.0
        for a in the_plan.archs:  # one trial per seed
            mean = smoke_energy_j(a.arch_hash, line.epochs, 0) + 5.0
            low += 2 * max(0.0, mean - half)
            high += 2 * (mean + half)
        protocol = 4 * 10.0 * (p.idle_s + p.cooldown_s)
        assert line.energy_kwh.low == pytest.approx((low + protocol) / KWH)
        assert line.energy_kwh.high == pytest.approx((high + protocol) / KWH)


def test_empty_or_missing_database_gives_the_tdp_bound(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    assert database_runs(url) == []
    assert not (tmp_path / "absent.db").exists()  # never created by an estimate
    cfg = compose(["+sweep=smoke", f"root={tmp_path}", f"db.url={url}"])
    est = campaign_estimate(cfg, plan(cfg))
    assert {line.source for line in est.lines} == {TDP}


def test_budget_refuses_or_warns(tmp_path: Path) -> None:
    cfg = compose(["+sweep=smoke", f"root={tmp_path}", "budget.max_kwh=1e-7", "budget.max_gpu_hours=1000"])
    est = campaign_estimate(cfg, plan(cfg))
    with pytest.raises(BudgetExceeded) as info:
        check_budget(cfg, est)
    msg = str(info.value)
    assert "budget.max_kwh=1e-07 kWh" in msg and "max_gpu_hours" not in msg and "\n" not in msg
    warn = compose(["+sweep=smoke", f"root={tmp_path}", "budget.max_gpu_hours=1e-9", "budget.on_exceed=warn"])
    line = check_budget(warn, est)
    assert line is not None and line.startswith("warning:") and "budget.max_gpu_hours" in line
    assert check_budget(compose(["+sweep=smoke", f"root={tmp_path}", "budget.max_co2_kg=1000"]), est) is None


@pytest.mark.parametrize("override", ["budget.max_kwh=0", "budget.max_co2_kg=-1", "budget.on_exceed=stop",
                                      "estimate.pue=0.5"])
def test_bad_budget_values_are_refused(override: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose(["+sweep=smoke", override])
    assert override.split("=")[0] in str(info.value) and "\n" not in str(info.value)


def _campaign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "campaign.cli", *args], capture_output=True, text=True, timeout=300)


def _campaign_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM campaign").fetchone()[0])


def test_launch_over_budget_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    out = _campaign("launch", "+sweep=smoke", "name=over", "budget.max_kwh=0.0000001", f"root={tmp_path}",
                    f"db.url=sqlite:///{db}")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "budget.max_kwh" in last and " kWh" in last and "raise budget.max_kwh" in last
    assert _campaign_rows(db) == 0 and not (tmp_path / "over").exists()


def test_dry_run_records_nothing(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    out = _campaign("launch", "--dry-run", "+sweep=smoke", "name=dry", f"root={tmp_path}", f"db.url=sqlite:///{db}")
    assert out.returncode == 0, out.stderr
    assert "kWh" in out.stdout and "GPU-hours" in out.stdout and "nothing recorded" in out.stdout
    assert not db.exists() and not (tmp_path / "dry").exists()


def test_plan_prints_the_estimate(tmp_path: Path) -> None:
    out = _campaign("plan", "+sweep=smoke", f"root={tmp_path}", f"db.url=sqlite:///{tmp_path / 'c.db'}")
    assert out.returncode == 0, out.stderr
    for word in ("kWh", "GPU-hours", "CO2eq", "above idle", "rough bound (TDP)", SURROGATE_NOTE):
        assert word in out.stdout


def _law(params: int, flops: int, epochs: int) -> tuple[float, float, float]:
    """energy, energy above idle (J) and time (s) of a trial under a known power law."""
    return (3.0 * params ** 0.5 * flops ** 0.25 * epochs ** 0.9, 2.0 * params ** 0.5 * flops ** 0.25 * epochs ** 0.9,
            0.1 * flops ** 0.5 * epochs)


def test_the_surrogate_source_recovers_a_known_law() -> None:
    """Runs of four architectures at two budgets follow E = 3 p^0.5 f^0.25 e^0.9 exactly: a fifth
    architecture at an unmeasured budget gets that law's value (no residual, so no spread), a
    measured trial keeps its measured source, and the notes say how the sources agree."""
    archs = {"a": (1000, 5000), "b": (4000, 9000), "c": (2000, 30000), "d": (9000, 12000), "new": (3000, 20000)}
    runs = []
    for arch in "abcd":
        p, f = archs[arch]
        for epochs in (1, 4):
            e, above, t = _law(p, f, epochs)
            runs.append(MeasuredRun(arch, epochs, "g", e, above, t, 1.0, p, f))
    gpus = {"g": GpuSpec(100.0, 10.0)}
    est = estimate([("new", 12, "g"), ("a", 4, "g")], gpus, runs, Settings(), archs)
    by_epochs = {line.epochs: line for line in est.lines}
    new, measured = by_epochs[12], by_epochs[4]
    assert (new.source, measured.source) == (SURROGATE, MEASURED)
    e, above, t = _law(3000, 20000, 12)
    assert new.energy_kwh.low == pytest.approx(e / KWH, rel=1e-6)
    assert new.energy_kwh.high == pytest.approx(e / KWH, rel=1e-6)
    assert new.above_idle_kwh.high == pytest.approx(above / KWH, rel=1e-6)
    assert new.gpu_hours.high == pytest.approx(t / 3600, rel=1e-6)
    assert any(n.startswith("surrogate g: fitted on 8 runs of 4 architectures") and "0.0 %" in n for n in est.notes)
    assert any(n.startswith("TDP bound g:") for n in est.notes)


def test_the_surrogate_interval_widens_with_noise_and_needs_enough_architectures() -> None:
    import random

    rng = random.Random(1)
    archs = {f"a{i}": (rng.randint(1000, 50000), rng.randint(5000, 90000)) for i in range(12)}
    runs = []
    for arch, (p, f) in archs.items():
        for epochs in (1, 2, 4):
            e, above, t = _law(p, f, epochs)
            noise = math.exp(rng.gauss(0, 0.05))
            runs.append(MeasuredRun(arch, epochs, "g", e * noise, above * noise, t * noise, 1.0, p, f))
    features = {**archs, "new": (20000, 40000)}
    est = estimate([("new", 8, "g")] * 200, {"g": GpuSpec(None, None)}, runs, Settings(), features)
    line = est.lines[0]
    e, _, _ = _law(20000, 40000, 8)
    assert line.source == SURROGATE
    assert line.energy_kwh.low < 200 * e / KWH < line.energy_kwh.high  # the law inside the interval
    assert line.energy_kwh.high / line.energy_kwh.low < 1.5  # 5 % noise: a narrow interval
    few = [r for r in runs if r.arch_hash in ("a0", "a1")]  # two architectures: no surrogate
    assert estimate([("new", 8, "g")], {"g": GpuSpec(None, None)}, few, Settings(), features).total.source == NONE


def test_a_trial_without_epochs_counts_only_the_protocol_and_says_so() -> None:
    """The layer workload's trials (epochs 0): idle and cool-down at idle power, nothing made up."""
    from campaign.estimate import PROTOCOL_ONLY

    s = Settings(idle_s=30, cooldown_s=30, idle_fraction=0.1, workers={"g": 1})
    est = estimate([("layer", 0, "g")] * 2, {"g": GpuSpec(100.0, 10.0)}, [], s)
    line = est.lines[0]
    assert line.source == PROTOCOL_ONLY and line.above_idle_kwh.high == 0.0
    assert line.energy_kwh.low == line.energy_kwh.high == pytest.approx(2 * 60 * 10.0 / KWH)
    assert any("not estimated" in n for n in est.notes)
