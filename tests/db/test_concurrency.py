"""Many processes claiming and ingesting at once lose nothing and duplicate nothing.

Real processes (forked, each with its own engine; the parent holds no connection when it forks) run the worker's database path,
``ResultStore.claim_next`` then ``ResultStore.ingest``, released together by a barrier; then
every row is counted. PostgreSQL gets more writers than SQLite (one writer at a time in WAL).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any

from sqlalchemy import func, select

from campaign.config import compose
from db.engine import make_engine
from db.records import RunResult
from db.schema import Epoch, Hardware, Run, RunPhase, TraceSample, Trial
from db.store import ResultStore
from tests.db.conftest import plan_campaign, worker_result

SAMPLES_PER_PHASE = 20
PHASES_PER_RUN = 4  # idle, train, eval, cooldown (no warm-up here)


def _work(url: str, campaign_id: int, worker: str, host: str, barrier: Any, results: Any) -> None:
    """One worker process: claim and ingest until nothing is pending; report the keys it ran."""
    try:
        store = ResultStore(make_engine(url), upgrade=False)
        barrier.wait(timeout=120)
        ran = []
        while (t := store.claim_next(campaign_id, "cpu", worker, host)) is not None:
            result = worker_result(t, "many", energy_j=100.0 + t.seed, samples_per_phase=SAMPLES_PER_PHASE)
            result["worker_id"] = worker
            result["host"] = result["hardware"]["host"] = host
            assert store.ingest(RunResult.from_json(result)) is True
            ran.append(t.trial_key)
        store.engine.dispose()
        results.put((worker, ran, None))
    except BaseException:
        results.put((worker, [], traceback.format_exc()))


def _run_workers(db_url: str, tmp_path: Any, writers: int, hosts: list[str],
                 seeds: int = 20) -> tuple[ResultStore, set[str]]:
    """Plan 2 cells x 2 budgets x ``seeds`` trials, run ``writers`` worker processes on them at
    once, and check that each trial was run by exactly one of them."""
    cfg = compose(["+sweep=smoke", f"root={tmp_path}", f"seeds={seeds}", "epochs=[1,3]"])
    store = ResultStore(make_engine(db_url))  # the schema exists before the workers start
    cid, _ = plan_campaign(store, cfg, "many")
    with store.engine.connect() as conn:
        keys = set(conn.execute(select(Trial.trial_key).where(Trial.campaign_id == cid)).scalars())
    store.engine.dispose()  # no connection crosses the fork
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_work, args=(db_url, cid, f"w{i}", hosts[i % len(hosts)], barrier, results))
             for i in range(writers)]
    for p in procs:
        p.start()
    reports = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [err for _, _, err in reports if err]
    assert not errors, errors[0]
    ran = [k for _, got, _ in reports for k in got]
    assert len(ran) == len(set(ran)) == len(keys) and set(ran) == keys  # every trial once, by one worker
    return store, keys


def test_parallel_workers_lose_and_duplicate_nothing(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    writers = 8 if db_url.startswith("postgresql") else 4
    store, keys = _run_workers(db_url, tmp_path, writers, hosts=[f"node{i}" for i in range(writers)])
    with store.engine.connect() as conn:
        def count(model: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(model)).scalar_one())

        assert count(Run) == len(keys)
        assert conn.execute(select(Run.status, Run.attempt).distinct()).all() == [("done", 1)]
        assert conn.execute(select(Trial.state).distinct()).all() == [("done",)]
        assert count(TraceSample) == len(keys) * PHASES_PER_RUN * SAMPLES_PER_PHASE
        assert count(RunPhase) == len(keys) * PHASES_PER_RUN
        assert count(Epoch) == sum(conn.execute(select(Trial.epochs)).scalars())
        busy = conn.execute(select(Run.worker_id, func.count()).group_by(Run.worker_id)).all()
        assert count(Hardware) == len(busy)  # one row per node that ran something (a node per worker here)
    assert len(busy) >= 2  # the workers really overlapped
    store.engine.dispose()


def test_workers_on_one_node_share_one_hardware_row(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store, _ = _run_workers(db_url, tmp_path, 3, hosts=["node1"], seeds=2)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Hardware)).scalar_one() == 1
    store.engine.dispose()
