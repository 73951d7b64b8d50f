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
                   "launcher.chunk_size=2", *RAY).stdout
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
