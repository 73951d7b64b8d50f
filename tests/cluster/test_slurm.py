"""Launching onto a real one-node Slurm cluster through submitit, and surviving its failures."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cluster.helpers import TINY, campaign, done_once, rows, url_for, wait_until

pytestmark = pytest.mark.slurm


def test_every_trial_lands_in_its_partition(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.services import wait_for_jobs

    url = url_for(tmp_path)
    out = campaign("launch", *TINY, "name=parts", f"root={tmp_path}", f"db.url={url}", "launcher=slurm",
                   "gpus=[a100,v100]", "launcher.cpus_per_task=1", "launcher.mem_gb=1", "--wait").stdout
    assert "a100: 2 worker task(s) on slurm" in out and "v100: 2 worker task(s) on slurm" in out
    got = rows(url, "select t.gpu_type, r.scheduler_partition, r.scheduler_job, r.status from run r "
                    "join trial t on t.id = r.trial_id")
    assert len(got) == 4
    assert all(gpu == partition and status == "done" for gpu, partition, _, status in got), got
    # accounting agrees: each run's Slurm task ran in its GPU type's partition, on that GPU type
    jobs = wait_for_jobs(slurm_cluster, {job.split("_")[0] for *_, job, _ in got}, expected=4)
    for gpu, _, job, _ in got:
        assert jobs[job].partition == gpu and jobs[job].state == "COMPLETED"
        assert f"gpu:{gpu}" in jobs[job].alloc_tres
    assert set(done_once(url).values()) == {1}


def _running_job(url: str) -> tuple[str, str] | None:
    got = rows(url, "select r.scheduler_job, t.trial_key from run r join trial t on t.id = r.trial_id "
                    "where r.status = 'running' and r.scheduler_job is not null")
    return got[0] if got else None


def _worker_pid(url: str, job: str) -> int | None:
    got = rows(url, "select pid from run where status = 'running' and scheduler_job = :j", j=job)
    return got[0][0] if got else None


def test_scancel_and_kill_then_resume_runs_every_trial_exactly_once(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.services import wait_for_jobs

    url = url_for(tmp_path)
    # 2 architectures x 2 GPU types, two pull workers per GPU type; the idle window makes each
    # trial last long enough to be caught in the middle.
    out = campaign("launch", *TINY, "name=chaos", f"root={tmp_path}", f"db.url={url}", "launcher=slurm",
                   "gpus=[a100,v100]", "launcher.cpus_per_task=1", "launcher.mem_gb=1", "protocol.idle_s=8",
                   "launcher.wait=false").stdout
    array_ids = [line.split(": ")[-1].split(", ")[0] for line in out.splitlines() if "worker task" in line]
    victim_job, victim_trial = wait_until("a running trial", lambda: _running_job(url))
    subprocess.run(["scancel", victim_job], check=True, timeout=30)
    # a second victim: kill -9 the worker process itself
    second = wait_until("another running trial", lambda: next(
        ((j, k) for j, k in rows(url, "select r.scheduler_job, t.trial_key from run r join trial t on "
                                      "t.id = r.trial_id where r.status = 'running' and r.scheduler_job != :v",
                                 v=victim_job)), None))
    os.kill(_worker_pid(url, second[0]), signal.SIGKILL)  # type: ignore[arg-type]
    wait_for_jobs(slurm_cluster, array_ids, expected=4, timeout_s=300)
    counts = done_once(url)
    # a worker that ran out of pending trials asked Slurm (sacct) about the running attempts and
    # reopened those whose job had ended: a live worker of the victim's GPU type ran it; where none
    # was left, the trial waits (pending, or still 'running' if no worker looked) and the resume
    # reopens what is still open at once (not after launcher.stale_after_s) and runs the rest
    victims = (victim_trial, second[1])
    assert all(counts[k] <= 1 for k in victims), counts
    left = sum(counts[k] == 0 for k in victims)
    resumed = campaign("resume", "chaos", f"root={tmp_path}", f"db.url={url}", "--wait",
                       "launcher.cpus_per_task=1", "launcher.mem_gb=1").stdout
    assert f"{left} trial(s) to run" in resumed, resumed
    closed_here = int(re.search(r"(\d+) ended with their job", resumed).group(1))  # type: ignore[union-attr]
    assert closed_here <= left, resumed
    assert set(done_once(url).values()) == {1}
    interrupted = rows(url, "select t.trial_key, r.status, r.error from run r join trial t on t.id = r.trial_id "
                            "where r.attempt = 1 and t.trial_key in (:a, :b)", a=victim_trial, b=second[1])
    assert sorted(s for _, s, _ in interrupted) == ["stale", "stale"]
    assert all("ended" in (e or "") for _, _, e in interrupted), interrupted
    # a second resume finds nothing to do and never runs a finished trial again
    again = campaign("resume", "chaos", f"root={tmp_path}", f"db.url={url}", "--stale-after", "0").stdout
    assert "0 trial(s) to run" in again and "0 worker(s) to submit" in again
    assert set(done_once(url).values()) == {1}


def test_preemption_requeues_and_reruns_the_interrupted_trial(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.services import wait_for_jobs

    url = url_for(tmp_path)
    out = campaign("launch", *TINY, "name=preempt", f"root={tmp_path}", f"db.url={url}", "launcher=slurm",
                   "gpus=[a100]", "launcher.max_workers=1", "launcher.cpus_per_task=1", "launcher.mem_gb=1",
                   "protocol.idle_s=6", "launcher.wait=false").stdout
    job = wait_until("the running worker", lambda: _running_job(url))[0]
    trial = _running_job(url)[1]  # type: ignore[index]
    # what Slurm sends before preemption or the time limit: submitit checkpoints and requeues
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    array = re.search(r"worker task\(s\) on slurm.*?: (\d+)", out).group(1)  # type: ignore[union-attr]
    wait_until("both trials done", lambda: sum(done_once(url).values()) == 2, timeout_s=300, poll_s=0.5)
    wait_for_jobs(slurm_cluster, [array], expected=1, timeout_s=120)
    attempts = rows(url, "select r.attempt, r.status, r.error from run r join trial t on t.id = r.trial_id "
                         "where t.trial_key = :k order by r.attempt", k=trial)
    assert [a[:2] for a in attempts] == [(1, "failed"), (2, "done")]
    assert "interrupted" in attempts[0][2]
    assert set(done_once(url).values()) == {1}


def test_resources_the_node_lacks_are_refused_before_anything_is_recorded(slurm_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = url_for(tmp_path)
    proc = campaign("launch", *TINY, "name=big", f"root={tmp_path}", f"db.url={url}", "launcher=slurm",
                    "gpus=[a100]", "launcher.cpus_per_task=1", "launcher.mem_gb=100000", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Slurm would refuse" in line and "mem_gb=100000" in line, line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "cluster.db").exists() or not rows(url, "select id from campaign")
