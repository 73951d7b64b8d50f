"""The running budget: what a campaign measured so far plus what its remaining trials are predicted to
cost, against hand-computed values; a campaign stopped by its budget, and a raised budget that lets
it go on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from campaign.config import compose
from db import budget
from db.budget import Limits
from db.engine import make_engine
from db.intervals import Range, prediction_interval
from db.records import RunResult
from db.store import ResultStore
from tests.db.conftest import plan_campaign, smoke_energy_j, worker_result

KWH = 3.6e6


def _store(tmp_path: Path) -> tuple[ResultStore, int]:
    cfg = compose(["+sweep=smoke", f"root={tmp_path}"])
    store = ResultStore(make_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    cid, _ = plan_campaign(store, cfg, "b")
    return store, cid


def _run(store: ResultStore, cid: int, n: int) -> list[float]:
    """Claim and store ``n`` trials; their energy_j (train + eval)."""
    out = []
    for _ in range(n):
        t = store.claim_next(cid, "cpu", "node1-1-abc", "node1")
        assert t is not None
        e = smoke_energy_j(t.arch_hash, t.epochs, t.seed)
        store.ingest(RunResult.from_json(worker_result(t, "b", energy_j=e)))
        out.append((t.epochs, e))
    return out  # type: ignore[return-value]


def test_prediction_interval_is_student_t() -> None:
    r = prediction_interval([10.0, 12.0])
    assert r.mid == 11.0
    assert r.high == pytest.approx(11.0 + 12.706 * math.sqrt(2.0) * math.sqrt(1.5))
    assert r.low == 0.0  # never below zero
    assert prediction_interval([5.0]) == Range(5.0, 5.0, 5.0)


def test_figures_from_the_estimate_then_from_measured_runs(tmp_path: Path) -> None:
    store, cid = _store(tmp_path)
    # the smoke sweep: 2 architectures x epochs [1, 2] x 2 seeds on cpu; a pre-launch estimate per budget
    budget.record_estimate(store.engine, cid, "launch", [
        dict(gpu_type="cpu", epochs=e, trials=4, source="rough bound (TDP)", energy_kwh_low=0.001 * e,
             energy_kwh_high=0.003 * e, gpu_hours_low=0.01 * e, gpu_hours_high=0.01 * e) for e in (1, 2)])
    f = budget.figures(store.engine, cid)
    assert f.measured_kwh == 0 and f.remaining == 8
    assert f.predicted_kwh.low == pytest.approx(4 * 0.001 + 4 * 0.002)
    assert f.predicted_kwh.mid == pytest.approx(4 * 0.002 + 4 * 0.004)
    assert f.predicted_kwh.high == pytest.approx(4 * 0.003 + 4 * 0.006)
    done = _run(store, cid, 5)
    f = budget.figures(store.engine, cid)
    # each run's phases: idle 10 J (1 s), train + eval = E (10 s), cool-down 5 J (1 s)
    assert f.measured_kwh == pytest.approx(sum(15.0 + e for _, e in done) / KWH)
    assert f.measured_gpu_hours == pytest.approx(5 * 12.0 / 3600)
    assert f.remaining == 3
    expected = 0.0
    for g in f.groups:
        runs = [15.0 + e for ep, e in done if ep == g.epochs]
        if len(runs) >= 2:
            assert g.kwh_per_trial.mid == pytest.approx(sum(runs) / len(runs) / KWH)
            assert g.source.startswith("measured (this campaign")
        expected += g.remaining * g.kwh_per_trial.mid
    assert f.predicted_kwh.mid == pytest.approx(expected)
    store.engine.dispose()


def test_over_budget_stops_then_a_raised_budget_goes_on(tmp_path: Path) -> None:
    store, cid = _store(tmp_path)
    assert budget.over_budget(store.engine, cid) is None  # no budget: nothing to check
    budget.record_estimate(store.engine, cid, "launch", [
        dict(gpu_type="cpu", epochs=e, trials=4, source="measured", energy_kwh_low=1e-4, energy_kwh_high=1e-4,
             gpu_hours_low=0.01, gpu_hours_high=0.01) for e in (1, 2)])
    limits = Limits(max_kwh=1e-3, carbon_intensity_g_per_kwh=400.0, pue=1.5)
    budget.set_limits(store.engine, cid, limits)
    assert budget.over_budget(store.engine, cid) is None  # 8 x 1e-4 kWh predicted < 1e-3
    budget.set_limits(store.engine, cid, Limits(max_kwh=5e-4, max_co2_kg=1.0, carbon_intensity_g_per_kwh=400.0))
    reason = budget.over_budget(store.engine, cid)
    assert reason is not None and reason.startswith("stopped by budget:")
    assert "budget.max_kwh=0.0005 kWh" in reason and "8 trial(s) left" in reason and "max_co2_kg" not in reason
    row = budget.limits_of(store.engine, cid)
    assert row is not None and row.stopped_at is not None and row.stopped_reason == reason
    assert budget.over_budget(store.engine, cid) == reason  # stays stopped, the first reason kept
    budget.set_limits(store.engine, cid, Limits(max_kwh=1.0))  # what a resume with a raised budget does
    assert budget.over_budget(store.engine, cid) is None
    row = budget.limits_of(store.engine, cid)
    assert row is not None and row.stopped_at is None and row.limits.max_kwh == 1.0
    store.engine.dispose()


def test_co2_and_gpu_hour_limits(tmp_path: Path) -> None:
    store, cid = _store(tmp_path)
    budget.record_estimate(store.engine, cid, "launch", [
        dict(gpu_type="cpu", epochs=e, trials=4, source="measured", energy_kwh_low=1.0, energy_kwh_high=1.0,
             gpu_hours_low=0.5, gpu_hours_high=0.5) for e in (1, 2)])
    budget.set_limits(store.engine, cid, Limits(max_gpu_hours=3.9))
    reason = budget.over_budget(store.engine, cid)
    assert reason is not None and "predicted 4 GPU-hours" in reason and "budget.max_gpu_hours=3.9" in reason
    budget.set_limits(store.engine, cid, Limits(max_co2_kg=3.0, carbon_intensity_g_per_kwh=250.0, pue=2.0))
    reason = budget.over_budget(store.engine, cid)  # 8 kWh x 2.0 x 250 g = 4 kg
    assert reason is not None and "= 4 kg CO2eq > budget.max_co2_kg=3 kg CO2eq" in reason
    store.engine.dispose()
