"""The same campaign through a real local Ray cluster (launcher=ray)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cluster.helpers import TINY, campaign, done_once, rows, url_for

pytestmark = pytest.mark.ray

# The cluster tests/run.sh started (ray start --head), else a local one started by the launch.
ADDRESS = os.environ.get("CAMPAIGN_TEST_RAY_ADDRESS")
RAY = ["launcher=ray", "launcher.gpus_per_task=0"] + (
    [f"launcher.address={ADDRESS}"] if ADDRESS
    else ["launcher.local_num_cpus=2", "launcher.local_resources={gpu_a100: 1, gpu_v100: 1}"]
)


def test_campaign_through_ray(tmp_path: Path) -> None:
    url = url_for(tmp_path)
    out = campaign("launch", *TINY, "name=ray", f"root={tmp_path}", f"db.url={url}", "gpus=[a100,v100]",
                   "launcher.max_workers=1", *RAY).stdout
    assert "a100: 1 worker task(s) on ray" in out and "v100: 1 worker task(s) on ray" in out
    got = rows(url, "select t.gpu_type, r.status, r.scheduler_job from run r join trial t on t.id = r.trial_id")
    assert len(got) == 4 and all(status == "done" and job.startswith("ray:") for _, status, job in got), got
    assert set(done_once(url).values()) == {1}


def test_a_gpu_type_the_cluster_lacks_is_refused_before_submission(tmp_path: Path) -> None:
    url = url_for(tmp_path)
    proc = campaign("launch", *TINY, "name=ray2", f"root={tmp_path}", f"db.url={url}", "gpus=[rtx3060]",
                    *RAY, check=False)
    assert proc.returncode == 2
    assert "gpu_rtx3060" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_killed_worker_task_is_replaced_and_its_trial_reopened_at_once(tmp_path: Path) -> None:
    import json
    import signal

    from tests.cluster.helpers import rows_when_ready, start_campaign, wait_until

    url = url_for(tmp_path)
    proc = start_campaign("launch", *TINY, "name=raykill", f"root={tmp_path}", f"db.url={url}", "gpus=[a100]",
                          "launcher.max_workers=1", "protocol.idle_s=6", *RAY)
    try:
        pid, trial = wait_until("a running attempt", lambda: next(iter(rows_when_ready(
            url, "select r.pid, t.trial_key from run r join trial t on t.id = r.trial_id "
                 "where r.status = 'running'")), None), timeout_s=300)
        os.kill(int(pid), signal.SIGKILL)  # the Ray worker process running the task
        out = proc.communicate(timeout=600)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert set(done_once(url).values()) == {1} and len(done_once(url)) == 2
    killed = rows(url, "select r.status, r.error from run r join trial t on t.id = r.trial_id "
                       "where t.trial_key = :k order by r.attempt", k=trial)
    assert killed[0][0] == "stale" and "Ray task ended" in killed[0][1], killed
    subs = [(s, b, json.loads(j)) for s, b, j in rows(url, "select seq, submitted_by, job_ids from submission "
                                                         "order by seq")]
    assert [(s, b) for s, b, _ in subs] == [(1, "launch"), (2, "follow")], subs


def _driver_dead(job: str) -> bool:
    """Whether the cluster's job table says Ray job ``job`` (a driver) has ended (asked from a
    process of its own, so that this one never becomes a driver)."""
    import subprocess
    import sys

    code = ("import os, ray; os.environ.setdefault('RAY_AUTH_MODE', 'disabled'); "
            f"ray.init(address={ADDRESS!r}, include_dashboard=False, log_to_driver=False, logging_level=40); "
            "from ray._private import state; "
            f"print(any(j['JobID'] == {job!r} and j['IsDead'] for j in state.state.job_table()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return out.stdout.strip().endswith("True")


@pytest.mark.skipif(not ADDRESS, reason="needs a shared Ray cluster (CAMPAIGN_TEST_RAY_ADDRESS, which tests/run.sh "
                                        "starts): a launch's own local cluster ends with it")
def test_a_killed_launch_is_seen_by_resume_at_once(tmp_path: Path) -> None:
    """The launching process (the tasks' Ray driver) is killed: its tasks die with it. A resume
    from a new process asks the cluster's job table, reopens the dead attempt at once (not after
    the stale limit), counts no live worker and finishes every trial exactly once."""
    from tests.cluster.helpers import rows_when_ready, start_campaign, wait_until

    url = url_for(tmp_path)
    name = ["name=raydriver", f"root={tmp_path}", f"db.url={url}", "gpus=[a100]"]
    proc = start_campaign("launch", *TINY, *name, "launcher.max_workers=1", "protocol.idle_s=6", *RAY)
    try:
        job, trial = wait_until("a running attempt", lambda: next(iter(rows_when_ready(
            url, "select r.scheduler_job, t.trial_key from run r join trial t on t.id = r.trial_id "
                 "where r.status = 'running'")), None), timeout_s=300)
    finally:
        proc.kill()  # SIGKILL: the driver goes without a word
        proc.communicate(timeout=60)
    import ray

    driver = ray.TaskID.from_hex(job[4:]).job_id().hex()
    wait_until("the cluster to see its driver gone", lambda: _driver_dead(driver), timeout_s=120, poll_s=1.0)
    out = campaign("resume", "raydriver", f"root={tmp_path}", f"db.url={url}", *RAY, timeout=900).stdout
    assert "1 ended with their job" in out and "0 queued and 0 running worker(s)" in out, out
    assert set(done_once(url).values()) == {1} and len(done_once(url)) == 2
    dead = rows(url, "select r.status, r.error from run r join trial t on t.id = r.trial_id "
                     "where t.trial_key = :k order by r.attempt", k=trial)
    assert dead[0][0] == "stale" and f"its Ray driver (job {driver}) ended" in dead[0][1], dead


# A launch's own local cluster (no launcher.address), beside any cluster running on this machine.
LOCAL = ["launcher=ray", "launcher.gpus_per_task=0", "launcher.local_num_cpus=2",
         "launcher.local_resources={gpu_a100: 1, gpu_v100: 1}"]


def _ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_killed_launch_with_its_own_cluster_is_seen_by_resume_at_once(tmp_path: Path) -> None:
    """A launch that started its own Ray cluster is killed outright: its cluster, and the worker
    process running a trial, end with it, and no scheduler is left to ask. A resume (with its own
    new cluster) sees on this machine that the attempt's worker process has ended, reopens the
    trial at once (not after the 600 s stale limit) and finishes every trial exactly once."""
    from tests.cluster.helpers import rows_when_ready, start_campaign, wait_until

    url = url_for(tmp_path)
    name = ["name=rayown", f"root={tmp_path}", f"db.url={url}", "gpus=[a100]"]
    proc = start_campaign("launch", *TINY, *name, "launcher.max_workers=1", "protocol.idle_s=6", *LOCAL)
    try:
        pid, trial = wait_until("a running attempt", lambda: next(iter(rows_when_ready(
            url, "select r.pid, t.trial_key from run r join trial t on t.id = r.trial_id "
                 "where r.status = 'running'")), None), timeout_s=300)
    finally:
        proc.kill()  # SIGKILL: the driver, and with it its cluster, goes without a word
        proc.communicate(timeout=60)
    assert int(pid) != proc.pid  # the trial ran in a Ray worker process
    wait_until("the worker process to end with its cluster", lambda: _ended(int(pid)), timeout_s=120, poll_s=0.5)
    out = campaign("resume", "rayown", f"root={tmp_path}", f"db.url={url}", "launcher.stale_after_s=600", *LOCAL,
                   timeout=900).stdout
    assert "1 ended with their job or process" in out, out
    assert set(done_once(url).values()) == {1} and len(done_once(url)) == 2
    dead = rows(url, "select r.status, r.error from run r join trial t on t.id = r.trial_id "
                     "where t.trial_key = :k order by r.attempt", k=trial)
    assert dead[0][0] == "stale" and f"its worker process (pid {pid} on " in dead[0][1], dead
