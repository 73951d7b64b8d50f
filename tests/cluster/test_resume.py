"""Resume and durability against real processes: two resumes at once, and a database outage."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest

from campaign.config import compose
from campaign.plan import make_plan, resolve_architectures
from db.engine import make_engine
from db.store import ResultStore
from tests.cluster.helpers import (
    TINY,
    done_once,
    rows,
    rows_when_ready,
    start_campaign,
    url_for,
    wait_until,
)


def _record(url: str, root: Path, name: str, *overrides: str) -> int:
    """Plan and record a campaign without running anything (as a crash right after launch leaves it)."""
    cfg = dataclasses.replace(compose([*TINY, f"root={root}", *overrides]), name=name)
    plan = make_plan(cfg, resolve_architectures(cfg))
    ResultStore(make_engine(url)).create_campaign(name, "smoke", str(root), "test", cfg.to_dict(), plan.archs,
                                                  plan.trials)
    return len(plan.trials)


def test_two_resumes_at_once_run_every_trial_exactly_once(tmp_path: Path) -> None:
    url = url_for(tmp_path)
    n = _record(url, tmp_path, "twice", "seeds=3")
    procs = [start_campaign("resume", "twice", f"root={tmp_path}", f"db.url={url}") for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    counts = done_once(url)
    assert len(counts) == n and set(counts.values()) == {1}
    # no trial was claimed twice: one attempt per trial, and the work was shared or done by one
    attempts = rows(url, "select t.trial_key, count(r.id), max(r.attempt) from trial t join run r on "
                         "r.trial_id = t.id group by t.trial_key")
    assert all(c == 1 and a == 1 for _, c, a in attempts), attempts
    workers = {w for (w,) in rows(url, "select distinct worker_id from run")}
    assert 1 <= len(workers) <= 2


@pytest.mark.postgres
def test_a_database_outage_during_a_run_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.services import PG_URL_ENV, start_postgres, stop_postgres

    monkeypatch.delenv(PG_URL_ENV, raising=False)  # this test takes its own server away
    state = Path("/tmp/campaign-test-services") / f"pg-outage-{uuid.uuid4().hex[:8]}"
    server = start_postgres(state)
    if isinstance(server, str):
        pytest.skip(server)
    try:
        url = server.url
        proc = start_campaign("launch", *TINY, "name=outage", f"root={tmp_path}", f"db.url={url}", "seeds=2",
                              "protocol.idle_s=4")
        first = wait_until("a running trial", lambda: rows_when_ready(
            url, "select t.trial_key from run r join trial t on t.id = r.trial_id where r.status = 'running'"))
        stop_postgres(server, force=True)
        results = tmp_path / "outage" / "runs"
        wait_until("the trial's result file while the database is down",
                   lambda: list(results.glob(f"{first[0][0]}/attempt-1.json")), timeout_s=300)
        again = start_postgres(state)
        assert not isinstance(again, str) and again.url == url  # same port: the worker reconnects
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out
        counts = done_once(url)
        assert len(counts) == 4 and set(counts.values()) == {1}, counts
        files = list(results.glob("*/attempt-*.json"))
        assert len(files) == 4
        samples = rows(url, "select count(*) from trace_sample ts join run r on r.id = ts.run_id "
                            "join trial t on t.id = r.trial_id where t.trial_key = :k", k=first[0][0])
        assert samples[0][0] > 0  # the trace written during the outage reached the database
    finally:
        stop_postgres(server, force=True)
