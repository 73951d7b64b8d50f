"""Exactly once, enforced by the database, on SQLite and PostgreSQL: a trial has at most one done
run. An attempt declared stale while its worker lives and a newer attempt that claimed the trial
both store results (in either order, and at the same moment from two connections): one is done,
the other superseded, and run_summary has one row per trial. Also the lifecycle transitions:
cancelling running attempts, cancelling and deleting a campaign."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

import db.ingest as ingest_module
from db.engine import make_engine
from db.migrate import alembic_config, current_revision, head_revision, upgrade
from db.read import CampaignNotFound
from db.records import RunResult, RunStatus, TrialState
from db.schema import Architecture, Campaign, Epoch, Run, RunPhase, TraceSample, Trial
from db.store import ClaimedTrial, ResultStore
from tests.db.conftest import plan_campaign, worker_result
from tests.db.test_views import _load_frozen

NAME = "race"


@pytest.fixture
def store(db_url: str) -> Iterator[ResultStore]:
    s = ResultStore(make_engine(db_url))
    yield s
    s.engine.dispose()


def _done(trial: ClaimedTrial, worker: str, energy_j: float = 100.0) -> RunResult:
    data = worker_result(trial, NAME, energy_j=energy_j)
    data["worker_id"] = worker
    return RunResult.from_json(data)


def _stale_then_reclaimed(store: ResultStore, smoke_cfg: Any, trials: int = 1) -> list[tuple[ClaimedTrial, ClaimedTrial]]:
    """For each of the first ``trials`` trials: attempt 1 claimed by w1, declared stale (as a resume
    does) while w1 lives on, and attempt 2 claimed by w2."""
    cid, _ = plan_campaign(store, smoke_cfg, NAME)
    pairs = []
    for _ in range(trials):
        first = store.claim_next(cid, "cpu", "w1", "node1")
        assert first is not None
        assert store.mark_stale(first.run_id, first.trial_id, store.now() + dt.timedelta(seconds=5))
        second = store.claim_next(cid, "cpu", "w2", "node2", keys=[first.trial_key])
        assert second is not None and (second.trial_id, second.attempt) == (first.trial_id, 2)
        pairs.append((first, second))
    return pairs


def _statuses(store: ResultStore, trial_id: int) -> dict[int, str]:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(Run.attempt, Run.status).where(Run.trial_id == trial_id)).all())


def _trial(store: ResultStore, trial_id: int) -> tuple[str, str | None]:
    with store.engine.connect() as conn:
        row = conn.execute(select(Trial.state, Trial.worker_id).where(Trial.id == trial_id)).one()
    return row.state, row.worker_id


def _summary_rows(store: ResultStore) -> dict[int, int]:
    """run_summary rows per trial of the campaign."""
    with store.engine.connect() as conn:
        return dict(conn.execute(text("SELECT trial_id, COUNT(*) FROM run_summary WHERE campaign = :c "
                                      "GROUP BY trial_id"), {"c": NAME}).all())


@pytest.mark.parametrize("order", ["stale_attempt_first", "new_attempt_first"])
def test_a_late_result_of_a_stale_attempt_is_never_a_second_result(store: ResultStore, smoke_cfg: Any,
                                                                   order: str) -> None:
    ((first, second),) = _stale_then_reclaimed(store, smoke_cfg)
    late, newer = _done(first, "w1", 101.0), _done(second, "w2", 102.0)
    if order == "stale_attempt_first":
        assert store.ingest(late) is True
        # the late result is the trial's result, but the trial stays with the attempt that holds it
        assert _statuses(store, first.trial_id) == {1: "done", 2: "running"}
        assert _trial(store, first.trial_id) == (TrialState.RUNNING, "w2")
        assert store.ingest(newer) is True
        want = {1: "done", 2: "superseded"}
    else:
        assert store.ingest(newer) is True
        assert _trial(store, first.trial_id) == (TrialState.DONE, None)
        assert store.ingest(late) is True
        want = {1: "superseded", 2: "done"}
    assert _statuses(store, first.trial_id) == want
    assert _trial(store, first.trial_id) == (TrialState.DONE, None)
    assert _summary_rows(store) == {first.trial_id: 1}
    # stored again (a resume ingesting the result files): nothing changes
    assert store.ingest(late) is False and store.ingest(newer) is False
    assert _statuses(store, first.trial_id) == want
    # the superseded measurement is kept with its rows
    with store.engine.connect() as conn:
        superseded = conn.execute(select(Run.id).where(Run.trial_id == first.trial_id,
                                                       Run.status == RunStatus.SUPERSEDED)).scalar_one()
        assert conn.execute(select(func.count()).select_from(TraceSample)
                            .where(TraceSample.run_id == superseded)).scalar_one() > 0


def test_a_late_failure_of_a_stale_attempt_leaves_the_trial_to_the_new_one(store: ResultStore,
                                                                           smoke_cfg: Any) -> None:
    ((first, second),) = _stale_then_reclaimed(store, smoke_cfg)
    failed = worker_result(first, NAME, energy_j=0.0, status="failed")
    failed["worker_id"] = "w1"
    assert store.ingest(RunResult.from_json(failed)) is True
    assert _statuses(store, first.trial_id) == {1: "stale", 2: "running"}  # the label and its reason stay
    assert _trial(store, first.trial_id) == (TrialState.RUNNING, "w2")
    assert store.ingest(_done(second, "w2")) is True
    assert _statuses(store, first.trial_id) == {1: "stale", 2: "done"}
    assert _trial(store, first.trial_id) == (TrialState.DONE, None)


def test_the_database_refuses_a_second_done_run(store: ResultStore, smoke_cfg: Any) -> None:
    ((first, second),) = _stale_then_reclaimed(store, smoke_cfg)
    assert store.ingest(_done(second, "w2")) is True
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == first.run_id).values(status=RunStatus.DONE))
    assert _statuses(store, first.trial_id) == {1: "stale", 2: "done"}


def test_a_lost_race_is_stored_again_as_superseded(store: ResultStore, smoke_cfg: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The check before writing misses the other result (it was not committed yet): the unique
    index refuses the second done run, and the result is stored again, as superseded."""
    ((first, second),) = _stale_then_reclaimed(store, smoke_cfg)
    assert store.ingest(_done(second, "w2")) is True
    real = ingest_module._other_done_run
    calls: list[bool] = []

    def blind_once(conn: Any, trial_id: int, attempt: int) -> bool:
        calls.append(True)
        return False if len(calls) == 1 else real(conn, trial_id, attempt)

    monkeypatch.setattr(ingest_module, "_other_done_run", blind_once)
    assert store.ingest(_done(first, "w1")) is True
    assert len(calls) == 2
    assert _statuses(store, first.trial_id) == {1: "superseded", 2: "done"}
    assert _trial(store, first.trial_id) == (TrialState.DONE, None)
    with store.engine.connect() as conn:  # the refused transaction left nothing behind
        assert conn.execute(select(func.count()).select_from(RunPhase)
                            .where(RunPhase.run_id == first.run_id)).scalar_one() == 4


def test_two_connections_storing_the_same_trials_at_once(db_url: str, store: ResultStore, smoke_cfg: Any) -> None:
    """Both attempts of each trial stored at the same moment, from two threads with an engine each."""
    pairs = _stale_then_reclaimed(store, smoke_cfg, trials=4)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(results: list[RunResult]) -> None:
        engine = make_engine(db_url)
        try:
            own = ResultStore(engine, upgrade=False)
            for result in results:
                barrier.wait(timeout=60)
                own.ingest(result)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            engine.dispose()

    threads = [threading.Thread(target=write, args=([_done(a, "w1") for a, _ in pairs],)),
               threading.Thread(target=write, args=([_done(b, "w2") for _, b in pairs],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    for first, _ in pairs:
        assert sorted(_statuses(store, first.trial_id).values()) == ["done", "superseded"]
        assert _trial(store, first.trial_id)[0] == TrialState.DONE
    assert _summary_rows(store) == {a.trial_id: 1 for a, _ in pairs}


def test_the_migration_keeps_the_earliest_done_run_of_a_trial(db_url: str) -> None:
    """A database holding two done runs of one trial (the bug this revision fixes) upgrades: the
    earlier-ended run stays done, the other becomes superseded, and the index holds."""
    engine = make_engine(db_url)
    _load_frozen(engine)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        run = conn.execute(text("SELECT id, trial_id, ended_at FROM run WHERE status = 'done' ORDER BY id")).first()
        assert run is not None
        conn.execute(text(
            "INSERT INTO run (trial_id, attempt, status, started_at, ended_at, host, worker_id, energy_j) "
            "SELECT trial_id, 2, 'done', started_at, started_at, host, 'early', energy_j FROM run WHERE id = :id"
        ), {"id": run.id})
        conn.execute(text(
            "INSERT INTO run (trial_id, attempt, status, started_at, ended_at, host, worker_id) "
            "SELECT trial_id, 3, 'done', started_at, NULL, host, 'unended' FROM run WHERE id = :id"
        ), {"id": run.id})
        runs_before = conn.execute(text("SELECT COUNT(*) FROM run")).scalar_one()
        trials = conn.execute(text("SELECT COUNT(DISTINCT trial_id) FROM run WHERE status = 'done'")).scalar_one()
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        got: dict[int, str] = dict(conn.execute(text("SELECT attempt, status FROM run WHERE trial_id = :t"),
                                {"t": run.trial_id}).all())
        assert got == {1: "superseded", 2: "done", 3: "superseded"}  # attempt 2 ended first
        assert conn.execute(text("SELECT COUNT(*) FROM run")).scalar_one() == runs_before
        assert conn.execute(text("SELECT COUNT(*) FROM run_summary")).scalar_one() == trials
    # the same rows go down to 0004 (no index, version 1 views) and up again
    command.downgrade(alembic_config(engine), "0004")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_cancel_runs_marks_the_attempts_and_returns_their_trials(store: ResultStore, smoke_cfg: Any) -> None:
    cid, _ = plan_campaign(store, smoke_cfg, NAME)
    mine = store.claim_next(cid, "cpu", "w1", "node1")
    other = store.claim_next(cid, "cpu", "w2", "node2")
    assert mine is not None and other is not None
    assert store.cancel_runs(cid, worker_ids=["w1"], reason="interrupted by SIGINT") == [mine.trial_key]
    with store.engine.connect() as conn:
        run = conn.execute(select(Run.status, Run.error, Run.ended_at).where(Run.id == mine.run_id)).one()
    assert (run.status, run.error) == ("cancelled", "interrupted by SIGINT") and run.ended_at is not None
    assert _trial(store, mine.trial_id) == (TrialState.PENDING, None)
    assert _trial(store, other.trial_id) == (TrialState.RUNNING, "w2")
    assert store.heartbeat(mine.run_id) is False and store.heartbeat(other.run_id) is True
    # the worker abandons the attempt and stores what it has: the label stays, the trial pending
    abandoned = worker_result(mine, NAME, energy_j=0.0, status="failed")
    abandoned["worker_id"] = "w1"
    assert store.ingest(RunResult.from_json(abandoned)) is True
    assert _statuses(store, mine.trial_id) == {1: "cancelled"}
    assert _trial(store, mine.trial_id) == (TrialState.PENDING, None)
    # a resume runs it again at once
    again = store.claim_next(cid, "cpu", "w3", "node1", keys=[mine.trial_key])
    assert again is not None and again.attempt == 2
    assert store.cancel_runs(cid, worker_ids=[]) == []
    assert sorted(store.cancel_campaign(NAME)) == sorted([other.trial_key, mine.trial_key])
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Run).where(Run.status == "running")).scalar_one() == 0
        assert set(conn.execute(select(Trial.state).where(Trial.campaign_id == cid)).scalars()) == {"pending"}
    with pytest.raises(CampaignNotFound, match="nope"):
        store.cancel_campaign("nope")


def test_cancelling_a_trial_that_has_its_result_finishes_it(store: ResultStore, smoke_cfg: Any) -> None:
    ((first, second),) = _stale_then_reclaimed(store, smoke_cfg)
    assert store.ingest(_done(first, "w1")) is True  # the late result arrived; attempt 2 still runs
    assert store.cancel_runs(store.campaign(NAME).id) == [second.trial_key]
    assert _statuses(store, first.trial_id) == {1: "done", 2: "cancelled"}
    assert _trial(store, first.trial_id) == (TrialState.DONE, None)


def test_delete_campaign_removes_it_and_everything_below_it(store: ResultStore, smoke_cfg: Any) -> None:
    def fill(name: str) -> int:
        cid, _ = plan_campaign(store, smoke_cfg, name)
        for _ in range(2):
            t = store.claim_next(cid, "cpu", "w", "h")
            assert t is not None
            store.ingest(RunResult.from_json(worker_result(t, name, energy_j=50.0)))
        return cid

    def rows() -> dict[str, int]:
        with store.engine.connect() as conn:
            return {m.__tablename__: conn.execute(select(func.count()).select_from(m)).scalar_one()
                    for m in (Campaign, Trial, Run, Epoch, RunPhase, TraceSample, Architecture)}

    fill("keep")
    alone = rows()
    fill(NAME)
    deleted = store.delete_campaign(NAME)
    assert rows() == alone  # the architectures are shared: they stay
    assert deleted["campaign"] == 1 and deleted["run"] == 2 and deleted["trace_series"] > 0
    assert deleted["trace_sample"] == alone["trace_sample"]
    assert [c["name"] for c in store.list_campaigns()] == ["keep"]
    with pytest.raises(CampaignNotFound):
        store.delete_campaign(NAME)
