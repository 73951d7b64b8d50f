"""Pull workers on a real one-node Slurm cluster whose MaxArraySize is 4, with a one-minute time
limit: arrays fit the cluster, workers stop for time and resubmit until every trial is done,
and resume asks Slurm what is queued and what is dead."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import TINY, campaign, done_once, rows, url_for, wait_until

pytestmark = pytest.mark.slurm

MAX_ARRAY_SIZE = 4
SMALL = ["launcher=slurm", "gpus=[a100]", "launcher.cpus_per_task=1", "launcher.mem_gb=1",
         f"launcher.max_array_size={MAX_ARRAY_SIZE}"]


@pytest.fixture(scope="module")
def arrays4() -> Iterator[tuple[object, bool]]:
    """A cluster of its own with MaxArraySize=4 (one a100 node), its environment set meanwhile;
    the one CAMPAIGN_TEST_SLURM_STATE names where set (launcher.max_array_size=4 stands in)."""
    from tests.services import default_state_dir, start_slurm, stop_slurm

    own = os.environ.get("CAMPAIGN_TEST_SLURM_STATE") is None  # else CI's cluster, MaxArraySize as it is
    saved_knobs = {k: os.environ.get(k) for k in ("CAMPAIGN_SLURM_MAX_ARRAY_SIZE", "CAMPAIGN_SLURM_GPU_TYPES")}
    os.environ.update(CAMPAIGN_SLURM_MAX_ARRAY_SIZE=str(MAX_ARRAY_SIZE), CAMPAIGN_SLURM_GPU_TYPES="a100")
    try:
        cluster = start_slurm(default_state_dir("slurm-arrays4"))
    finally:
        for k, v in saved_knobs.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if isinstance(cluster, str):
        pytest.skip(cluster)
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    yield cluster, own
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    stop_slurm(cluster)


def _submissions(url: str) -> list[tuple[int, str, list[str], list[int], int]]:
    got = rows(url, "select seq, submitted_by, job_ids, array_sizes, workers from submission order by seq")
    return [(int(s), str(b), json.loads(j), json.loads(a), int(w)) for s, b, j, a, w in got]


def _queue_empty(arrays: list[str]) -> bool:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                         text=True, timeout=30)
    return out.returncode != 0 or not out.stdout.strip()


def _hold_every_gpu(gpus: int) -> str:
    """Submit a job holding every a100 GPU (the campaign's workers stay queued); its job id."""
    return subprocess.run(["sbatch", "--parsable", "-p", "a100", f"--gres=gpu:{gpus}", "--mem=100M", "--time=10",
                           "--output=/dev/null", "--wrap", "sleep 600"], capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip().split(";")[0]


def test_the_cluster_max_array_size_is_read_from_scontrol(arrays4) -> None:  # type: ignore[no-untyped-def]
    from campaign.launchers.slurm import cluster_max_array_size

    _, own = arrays4
    if own:
        assert cluster_max_array_size() == MAX_ARRAY_SIZE


def test_a_campaign_needing_several_submissions_and_losing_a_task_finishes_every_trial_once_without_a_person(
        arrays4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = url_for(tmp_path)
    # 40 trials of at least 5 s each (the idle baseline), 5 workers in arrays of 4 + 1, each allowed
    # one minute: 5 workers fit at most 5 x 60 / 5 < 80 trials, and the time check (the configured
    # estimate, then measured durations, with a margin) stops each well before that, however fast
    # the machine: they stop for time and resubmit until every trial is done
    slow = [a for a in TINY if not a.startswith("protocol.idle_s=")] + ["protocol.idle_s=5"]
    out = campaign("launch", *slow, "name=pull", f"root={tmp_path}", f"db.url={url}", *SMALL, "seeds=20",
                   "launcher.timeout_min=1", "launcher.max_workers=5", "launcher.wait=false").stdout
    assert "a100: 5 worker task(s) on slurm in 2 array(s) 4 + 1" in out, out
    # one worker's task cancelled in the middle of a trial: a worker that stops for time, or finds
    # nothing pending, reopens that trial (its Slurm job ended) and it is run again, by nobody's hand
    job, trial = wait_until("a running attempt", lambda: next(iter(rows(
        url, "select r.scheduler_job, t.trial_key from run r join trial t on t.id = r.trial_id "
             "where r.status = 'running' and r.scheduler_job is not null")), None), timeout_s=300, poll_s=0.5)
    subprocess.run(["scancel", job], check=True, timeout=30)
    wait_until("every trial done", lambda: sum(done_once(url).values()) >= 40, timeout_s=1200, poll_s=2)
    subs = _submissions(url)
    arrays = [j for s in subs for j in s[2]]
    wait_until("the workers gone from the queue", lambda: _queue_empty(arrays), timeout_s=180, poll_s=1)
    counts = done_once(url)
    assert len(counts) == 40 and set(counts.values()) == {1}, counts
    assert subs[0][:2] == (1, "launch") and subs[0][3] == [4, 1]
    assert len(subs) >= 2 and {b for _, b, *_ in subs[1:]} <= {"worker", "follow"}, subs
    assert all(size <= MAX_ARRAY_SIZE for s in subs for size in s[3]), subs
    assert [s[0] for s in subs] == list(range(1, len(subs) + 1))
    assert len(subs) <= 20  # launcher.max_submissions
    killed = rows(url, "select r.status, r.error from run r join trial t on t.id = r.trial_id "
                       "where t.trial_key = :k order by r.attempt", k=trial)
    assert killed[0][0] == "stale" and job in killed[0][1] and killed[-1][0] == "done", killed


def test_resume_submits_none_while_workers_are_queued_and_only_what_is_missing_after_scancel(
        arrays4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = url_for(tmp_path)
    gpus = arrays4[0].gpus_per_type
    # every a100 GPU held by another job: the campaign's worker stays queued
    blocker = _hold_every_gpu(gpus)
    try:
        common = [f"root={tmp_path}", f"db.url={url}"]
        out = campaign("launch", *TINY, "name=queued", *common, *SMALL, "seeds=2", "protocol.idle_s=8",
                       "launcher.timeout_min=5", "launcher.max_workers=1", "launcher.wait=false").stdout
        assert "a100: 1 worker task(s) on slurm" in out, out
        status = json.loads(campaign("status", "queued", *common, "--json").stdout)
        assert status["workers"]["per_gpu"]["a100"]["queued"] == 1, status["workers"]
        again = campaign("resume", "queued", *common).stdout
        assert "1 queued and 0 running worker(s)" in again and "0 worker(s) to submit" in again, again
        assert len(_submissions(url)) == 1
    finally:
        subprocess.run(["scancel", blocker], timeout=30)
    # the worker starts; cancel it in the middle of its first trial
    job, trial = wait_until("a running attempt", lambda: next(iter(rows(
        url, "select r.scheduler_job, t.trial_key from run r join trial t on t.id = r.trial_id "
             "where r.status = 'running'")), None), timeout_s=300)
    subprocess.run(["scancel", job], check=True, timeout=30)
    array = _submissions(url)[0][2][0]
    wait_until("the cancelled worker gone", lambda: _queue_empty([array]), timeout_s=120, poll_s=0.5)
    # at once, not after launcher.stale_after_s (600 s): Slurm says the job has ended
    resumed = campaign("resume", "queued", *common, "--wait").stdout
    assert "1 ended with their job" in resumed and "0 queued and 0 running worker(s)" in resumed, resumed
    assert "1 worker(s) to submit" in resumed, resumed
    counts = done_once(url)
    assert len(counts) == 4 and set(counts.values()) == {1}, counts
    killed = rows(url, "select r.status, r.error from run r join trial t on t.id = r.trial_id "
                       "where t.trial_key = :k order by r.attempt", k=trial)
    assert killed[0][0] == "stale" and job in killed[0][1], killed
    subs = _submissions(url)
    assert [(s[0], s[1], s[4]) for s in subs] == [(1, "launch", 1), (2, "resume", 1)], subs


def test_cancel_cancels_every_recorded_submission(arrays4, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = url_for(tmp_path)
    gpus = arrays4[0].gpus_per_type
    blocker = _hold_every_gpu(gpus)
    try:
        common = [f"root={tmp_path}", f"db.url={url}"]
        # 6 workers: arrays of 4 + 2, all queued behind the blocker
        campaign("launch", *TINY, "name=stop", *common, *SMALL, "seeds=3", "launcher.max_workers=6",
                 "launcher.wait=false")
        arrays = [j for s in _submissions(url) for j in s[2]]
        assert len(arrays) == 2
        out = campaign("cancel", "stop", *common).stdout
        assert all(a in out for a in arrays), out
        wait_until("the arrays gone from the queue", lambda: _queue_empty(arrays), timeout_s=60, poll_s=0.5)
        status = json.loads(campaign("status", "stop", *common, "--json").stdout)
        assert status["workers"]["per_gpu"]["a100"]["queued"] == 0
        assert status["workers"]["per_gpu"]["a100"]["workers_submitted"] == 6
    finally:
        subprocess.run(["scancel", blocker], timeout=30)
