"""Golden files for what goes to the cluster: a change to what HPC users submit shows in review.

Regenerate after an intended change with: CAMPAIGN_UPDATE_GOLDEN=1 pytest tests/campaign/test_slurm_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from campaign.config import compose, gpu_types
from campaign.launchers.base import chunk
from campaign.launchers.render import render
from db.paths import CampaignPaths

GOLDEN = Path(__file__).with_name("golden")


def _rendered() -> dict[str, dict[str, object]]:
    cfg = compose(["+sweep=cifar_cells", "launcher=slurm", "launcher.account=proj42", "launcher.qos=normal",
                   "launcher.setup=[module load cuda/12.4]"])
    return render(cfg.launcher, gpu_types(), CampaignPaths(Path("/campaigns"), "demo"), {"a100": 12, "v100": 7})


def test_slurm_submission_matches_golden_files() -> None:
    got = _rendered()
    for gpu_type, r in got.items():
        params_file = GOLDEN / f"slurm_{gpu_type}_parameters.json"
        sbatch_file = GOLDEN / f"slurm_{gpu_type}.sbatch"
        params = json.dumps(r["parameters"], indent=2, sort_keys=True) + "\n"
        if os.environ.get("CAMPAIGN_UPDATE_GOLDEN"):
            params_file.write_text(params)
            sbatch_file.write_text(str(r["sbatch"]))
        assert params == params_file.read_text()
        assert r["sbatch"] == sbatch_file.read_text()


def test_each_gpu_type_goes_to_its_own_partition_and_gres() -> None:
    got = _rendered()
    assert "#SBATCH --partition=a100" in got["a100"]["sbatch"]  # type: ignore[operator]
    assert "#SBATCH --gres=gpu:a100:1" in got["a100"]["sbatch"]  # type: ignore[operator]
    assert "#SBATCH --partition=v100" in got["v100"]["sbatch"]  # type: ignore[operator]
    assert "#SBATCH --account=proj42" in got["v100"]["sbatch"]  # type: ignore[operator]
    assert "module load cuda/12.4" in got["v100"]["sbatch"]  # type: ignore[operator]


def test_chunks_fill_the_time_limit_in_run_order() -> None:
    trials = [(f"k{i}", 1000.0) for i in range(10)]
    # 4 h limit, 10 min warm-up: 0.9 x 14400 - 600 = 12360 s -> 12 trials of 1000 s fit; all in one
    assert chunk(trials, 14400, 600) == [[k for k, _ in trials]]
    # 1 h limit: 0.9 x 3600 - 600 = 2640 s -> 2 trials per chunk
    assert chunk(trials, 3600, 600) == [[f"k{i}", f"k{i + 1}"] for i in range(0, 10, 2)]
    assert chunk(trials, 3600, 600, chunk_size=3)[-1] == ["k9"]
    # a trial longer than the limit gets a chunk of its own (the worker is requeued and goes on)
    assert chunk([("big", 1e6), ("small", 1.0)], 3600, 0) == [["big"], ["small"]]
    # never more than max_tasks tasks: spread evenly instead
    many = [(f"k{i}", 3000.0) for i in range(100)]
    assert len(chunk(many, 3600, 0, max_tasks=10)) == 10
