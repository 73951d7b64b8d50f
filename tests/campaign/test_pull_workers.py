"""Pull workers: how many a GPU type gets, when one stops for time, and the record of submissions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from campaign.launchers.base import workers_needed
from jobs.worker import fits_before, quantile, trial_estimate, worker_deadline


def test_workers_needed_counts_live_workers_and_caps_at_max_workers() -> None:
    assert workers_needed({"a100": 200_000, "v100": 3}, {}, 256) == {"a100": 256, "v100": 3}
    # queued or running workers already cover what is pending: none more
    assert workers_needed({"a100": 10}, {"a100": 10}, 256) == {}
    assert workers_needed({"a100": 10}, {"a100": 4}, 256) == {"a100": 6}
    assert workers_needed({"a100": 1000}, {"a100": 300}, 256) == {}
    assert workers_needed({"a100": 5}, {}, 256, one_each=True) == {"a100": 1}
    assert workers_needed({}, {"a100": 2}, 256) == {}


def test_the_estimate_is_a_high_quantile_of_measured_durations_else_the_configured_one() -> None:
    configured = {1: 100.0, 4: 400.0}
    # fewer than three measured runs of that budget: the configured estimate
    assert trial_estimate(1, {1: [10.0, 12.0]}, configured) == 100.0
    durations = [float(s) for s in range(10, 20)]  # 10 .. 19 s
    assert trial_estimate(1, {1: durations}, configured) == pytest.approx(quantile(durations, 0.9))
    assert 18.0 <= trial_estimate(1, {1: durations}, configured) <= 19.0  # type: ignore[operator]
    assert trial_estimate(4, {1: durations}, configured) == 400.0  # another budget has its own
    assert trial_estimate(2, {}, configured) is None


def test_a_worker_stops_when_the_next_trial_would_not_end_before_its_deadline() -> None:
    start = 1_000_000.0
    deadline = worker_deadline(600.0, start, {})
    assert deadline == start + 600.0
    # 100 s left, 10 s margin: a 80 s trial fits, a 95 s one does not
    assert fits_before(deadline, start + 500.0, 80.0, 10.0)
    assert not fits_before(deadline, start + 500.0, 95.0, 10.0)
    # the scheduler's own end time wins over start + limit
    assert worker_deadline(600.0, start, {"SLURM_JOB_END_TIME": str(int(start) + 60)}) == start + 60
    # no limit (Ray, local): never stops for time
    assert worker_deadline(None, start, {}) is None
    assert fits_before(None, start, 1e9, 10.0)
    assert fits_before(deadline, start, None, 10.0)  # nothing known: try


def test_submissions_are_numbered_per_gpu_type_and_a_taken_number_is_refused(tmp_path: Path) -> None:
    from campaign.config import compose
    from campaign.plan import make_plan, resolve_architectures
    from db.engine import make_engine
    from db.store import ResultStore
    from tests.cluster.helpers import TINY

    cfg = dataclasses.replace(compose([*TINY, f"root={tmp_path}", "gpus=[a100,v100]"]), name="subs")
    plan = make_plan(cfg, resolve_architectures(cfg))
    engine = make_engine(f"sqlite:///{tmp_path / 'subs.db'}")
    store = ResultStore(engine)
    try:
        cid = store.create_campaign("subs", "smoke", str(tmp_path), "test", cfg.to_dict(), plan.archs, plan.trials)
        assert store.pending_counts(cid) == {"a100": 2, "v100": 2}
        assert store.reserve_submission(cid, "a100", "slurm", "launch") == 1
        assert store.reserve_submission(cid, "v100", "slurm", "launch") == 1
        store.fill_submission(cid, "a100", 1, ["17", "18"], [4, 2], 6)
        # two workers of submission 1 stopping for time race for number 2: one wins
        assert store.reserve_submission(cid, "a100", "slurm", "worker", seq=2, max_seq=20) == 2
        assert store.reserve_submission(cid, "a100", "slurm", "worker", seq=2, max_seq=20) is None
        assert store.reserve_submission(cid, "a100", "slurm", "worker", seq=3, max_seq=2) is None  # the limit
        store.drop_submission(cid, "a100", 2)
        got = store.submissions(cid)
        assert [(s["gpu_type"], s["seq"], s["job_ids"], s["array_sizes"], s["workers"]) for s in got] == [
            ("a100", 1, ["17", "18"], [4, 2], 6), ("v100", 1, [], [], 0)]
        deleted = store.delete_campaign("subs")
        assert deleted["submission"] == 2 and store.submissions(cid) == []
    finally:
        engine.dispose()


def test_an_attempt_whose_job_ended_is_reopened_at_once(tmp_path: Path) -> None:
    from campaign.config import compose
    from campaign.launch import close_dead_attempts
    from campaign.plan import make_plan, resolve_architectures
    from db.engine import make_engine
    from db.store import ResultStore
    from tests.cluster.helpers import TINY

    cfg = dataclasses.replace(compose([*TINY, f"root={tmp_path}", "gpus=[a100]"]), name="dead")
    plan = make_plan(cfg, resolve_architectures(cfg))
    engine = make_engine(f"sqlite:///{tmp_path / 'dead.db'}")
    store = ResultStore(engine)

    class Scheduler:  # what squeue/sacct would say: job 41_0 was cancelled, 41_1 still runs
        name = "slurm"

        def ended_jobs(self, jobs):  # type: ignore[no-untyped-def]
            return {j: "CANCELLED" for j in jobs if j == "41_0"}

    try:
        cid = store.create_campaign("dead", "smoke", str(tmp_path), "test", cfg.to_dict(), plan.archs, plan.trials)
        killed = store.claim_next(cid, "a100", "w0", "node", scheduler_job="41_0")
        alive = store.claim_next(cid, "a100", "w1", "node", scheduler_job="41_1")
        assert killed is not None and alive is not None
        assert close_dead_attempts(store, cid, Scheduler()) == 1  # type: ignore[arg-type]
        states = {r["trial_key"]: (r["state"], r["run_status"]) for r in store.trial_states(cid)}
        assert states[killed.trial_key] == ("pending", "stale")  # fresh heartbeat, reopened anyway
        assert states[alive.trial_key] == ("running", "running")
        errors = [r["error"] for r in store.runs(cid, status=None) if r["status"] == "stale"]
        assert errors and "41_0" in errors[0] and "CANCELLED" in errors[0]
    finally:
        engine.dispose()
