"""Identity and state transitions enforced by the database, on real SQLite files."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import func, select

from campaign.plan import make_plan, resolve_architectures
from db.engine import make_engine
from db.records import RunResult
from db.schema import Epoch, Run, RunPhase, TraceSample, Trial
from db.store import CampaignExists, CampaignNotFound, ResultStore
from tests.db.conftest import plain_config


@pytest.fixture
def store(sqlite_url: str) -> ResultStore:
    return ResultStore(make_engine(sqlite_url))


@pytest.fixture
def planned(store: ResultStore, smoke_cfg):  # type: ignore[no-untyped-def]
    plan = make_plan(smoke_cfg, resolve_architectures(smoke_cfg))
    cid = store.create_campaign("c1", "smoke", "/tmp", "rev", plain_config(smoke_cfg), plan.archs, plan.trials)
    return cid, plan


def _result(trial, status: str = "done", n: int = 50) -> RunResult:  # type: ignore[no-untyped-def]
    return RunResult.from_json({
        "campaign": "c1", "trial_key": trial.trial_key, "attempt": trial.attempt, "status": status,
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:01:00+00:00",
        "host": "h", "worker_id": "w", "power_source": "simulated", "energy_j": 12.0, "duration_s": 2.0,
        "epochs": [{"epoch": 1, "duration_s": 2.0, "energy_j": 12.0, "mean_power_w": 6.0, "train_loss": 1.0,
                    "train_accuracy": 0.5, "valid_accuracy": 0.4}],
        "phases": [{"phase": "train", "duration_s": 2.0, "energy_j": 12.0, "mean_power_w": 6.0, "samples": n}],
        "trace": {"t_s": [i / 10 for i in range(n)], "phase": ["train"] * n, "epoch": [1] * n,
                  "power_w": [6.0] * n, "device": [0] * n},
        "hardware": {"host": "h", "gpu_name": "simulated"},
    })


def test_campaign_and_trials_are_recorded_before_anything_runs(store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    cid, plan = planned
    rows = store.status_rows(cid)
    assert sum(r["pending"] for r in rows) == len(plan.trials)
    info = store.campaign("c1")
    assert info.config["sweep"] == "smoke" and info.code_revision == "rev"
    with pytest.raises(CampaignExists):
        store.create_campaign("c1", "smoke", "/tmp", "rev", {}, plan.archs, plan.trials)
    with pytest.raises(CampaignNotFound, match="known: c1"):
        store.campaign("nope")


def test_claims_follow_the_run_order_and_never_repeat(store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    cid, plan = planned
    claimed = []
    while (t := store.claim_next(cid, "cpu", "w1", "h")) is not None:
        claimed.append(t.trial_key)
    assert claimed == [t.trial_key for t in plan.trials]
    assert store.claim_next(cid, "cpu", "w2", "h") is None


def test_two_stores_on_one_file_never_claim_the_same_trial(sqlite_url: str, store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    cid, plan = planned
    other = ResultStore(make_engine(sqlite_url))
    got = []
    for i in range(len(plan.trials)):
        t = (store if i % 2 else other).claim_next(cid, "cpu", f"w{i % 2}", "h")
        assert t is not None
        got.append(t.trial_key)
    assert len(set(got)) == len(plan.trials)


def test_ingest_is_idempotent_and_bulk_writes_samples(store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    cid, _ = planned
    trial = store.claim_next(cid, "cpu", "w", "h")
    assert store.ingest(_result(trial)) is True
    assert store.ingest(_result(trial)) is False  # already done: nothing rewritten
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(TraceSample)).scalar() == 50
        assert conn.execute(select(func.count()).select_from(Epoch)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(RunPhase)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(Run)).scalar() == 1
        assert conn.execute(select(Trial.state).where(Trial.trial_key == trial.trial_key)).scalar() == "done"
        assert set(conn.execute(select(TraceSample.source)).scalars()) == {"simulated"}


def test_a_failed_run_is_kept_and_the_trial_marked_failed(store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    cid, _ = planned
    trial = store.claim_next(cid, "cpu", "w", "h")
    failed = dataclasses.replace(_result(trial, "failed"), error="TrainingDiverged: loss is nan", energy_j=None)
    store.ingest(failed)
    runs = store.runs(cid, status=None)
    assert [(r["status"], r["error"]) for r in runs] == [("failed", "TrainingDiverged: loss is nan")]
    assert store.runs(cid) == []


def test_carbontracker_records_are_stored_with_the_run(store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    from db.schema import CarbontrackerEpoch, CarbontrackerRun

    cid, _ = planned
    trial = store.claim_next(cid, "cpu", "w", "h")
    record = {"status": "ok", "components": ["cpu"], "missing_components": ["gpu"], "pue": 1.58,
              "duration_s": 3.0, "intensity_g_per_kwh": 445.0, "intensity_source": "configured",
              "actual": {"energy_kwh_reported": 1.58e-3, "energy_j_raw": 3600.0, "co2eq_g": 0.7},
              "predicted": None, "messages": ["component 'gpu' requested but not present"], "log_dir": "/x",
              "epochs": [{"epoch": 1, "duration_s": 1.5, "cpu_power_w": 35.6, "cpu_energy_j": 53.4},
                         {"epoch": 2, "duration_s": 1.5, "cpu_power_w": 35.6, "cpu_energy_j": 53.4}]}
    store.ingest(dataclasses.replace(_result(trial), carbontracker=record, cpu_energy_j=10.0))
    with store.engine.connect() as conn:
        run = conn.execute(select(CarbontrackerRun.__table__)).one()
        assert (run.status, run.components, run.missing_components, run.epochs) == ("ok", "cpu", "gpu", 2)
        assert run.energy_j_raw == pytest.approx(run.energy_kwh_reported * 3.6e6 / run.pue)
        assert conn.execute(select(func.count()).select_from(CarbontrackerEpoch)).scalar() == 2
        assert conn.execute(select(Run.cpu_energy_j)).scalar() == 10.0


def test_ingest_leaves_sqlite_foreign_keys_on(tmp_path, smoke_cfg) -> None:  # type: ignore[no-untyped-def]
    """Ingest switches SQLite's per-row foreign-key lookups off for its own transaction only."""
    store = ResultStore(make_engine(f"sqlite:///{tmp_path / 'fk.db'}"))
    plan = make_plan(smoke_cfg, resolve_architectures(smoke_cfg))
    cid = store.create_campaign("c1", "smoke", "/tmp", "rev", plain_config(smoke_cfg), plan.archs, plan.trials)
    store.ingest(_result(store.claim_next(cid, "cpu", "w", "h")))
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_architectures_are_looked_up_in_chunks_and_recorded_once(store: ResultStore, smoke_cfg,  # type: ignore[no-untyped-def]
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Known hashes are asked for in chunks (a whole cell space exceeds SQLite's bound-parameter
    limit); a hash listed twice or already recorded by another campaign is stored once; every
    trial carries its architecture's parameters and FLOPs."""
    import db.trials
    from db.schema import Architecture

    monkeypatch.setattr(db.trials, "_IN_CHUNK", 1)
    plan = make_plan(smoke_cfg, resolve_architectures(smoke_cfg))
    first = plan.archs[:1]
    store.create_campaign("first", "smoke", "/tmp", "rev", {}, first,
                          [t for t in plan.trials if t.arch_hash == first[0].arch_hash])
    cid = store.create_campaign("second", "smoke", "/tmp", "rev", {}, [*plan.archs, *first], plan.trials)
    with store.engine.connect() as conn:
        hashes = conn.execute(select(Architecture.arch_hash)).scalars().all()
        sizes = {h: (p, f) for h, p, f in conn.execute(
            select(Trial.arch_hash, Trial.params, Trial.flops).where(Trial.campaign_id == cid))}
        trials = conn.execute(select(func.count()).select_from(Trial).where(Trial.campaign_id == cid)).scalar()
    assert sorted(hashes) == sorted(a.arch_hash for a in plan.archs)
    assert trials == len(plan.trials)
    assert sizes == {a.arch_hash: (a.params, a.flops) for a in plan.archs}


def test_recording_leaves_the_connections_page_cache_as_it_was(store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    if store.engine.dialect.name != "sqlite":
        pytest.skip("a SQLite setting")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -2000  # SQLite's default


def test_trial_states_give_each_trial_in_run_order_its_latest_attempt(store: ResultStore, planned) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    cid, plan = planned
    first = store.claim_next(cid, "cpu", "w1", "h")
    assert first is not None
    later = store.now() + dt.timedelta(hours=1)
    assert store.mark_stale(first.run_id, first.trial_id, later)  # back to pending, its run stale
    again = store.claim_next(cid, "cpu", "w2", "h")  # the same trial: first in run order
    assert again is not None and again.trial_id == first.trial_id and again.attempt == 2
    rows = store.trial_states(cid)
    assert [r["trial_key"] for r in rows] == [t.trial_key for t in sorted(plan.trials, key=lambda t: t.order_index)]
    by_key = {r["trial_key"]: r for r in rows}
    row = by_key[first.trial_key]
    assert (row["state"], row["run_id"], row["run_status"], row["worker_id"]) == ("running", again.run_id, "running", "w2")
    assert row["heartbeat_at"] is not None and row["heartbeat_at"].tzinfo is not None
    assert all(r["run_id"] is None and r["heartbeat_at"] is None for k, r in by_key.items() if k != first.trial_key)
    assert store.mark_stale(again.run_id, again.trial_id, later)
    row = {r["trial_key"]: r for r in store.trial_states(cid)}[first.trial_key]
    assert (row["state"], row["run_status"], row["heartbeat_at"]) == ("pending", "stale", None)
    assert first.trial_id in store.pending_ids(cid) and len(store.pending_ids(cid)) == len(plan.trials)
