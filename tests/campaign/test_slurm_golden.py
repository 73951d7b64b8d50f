"""Golden files for what goes to the cluster: a change to what HPC users submit shows in review.

Regenerate after an intended change with: CAMPAIGN_UPDATE_GOLDEN=1 pytest tests/campaign/test_slurm_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from campaign.config import compose, gpu_types
from campaign.launchers.render import render
from campaign.launchers.slurm import plan_arrays, slurm_parameters
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


def test_arrays_fit_max_array_size_and_max_workers() -> None:
    # 200,000 trials over 3 GPU types, Slurm's default MaxArraySize: max_workers tasks each, one array
    pending = {"a100": 66_667, "v100": 66_667, "rtx3060": 66_666}
    assert plan_arrays(pending, 256, 1001) == {"a100": [256], "v100": [256], "rtx3060": [256]}
    # an array of N tasks has indices 0..N-1: N <= MaxArraySize
    assert plan_arrays({"a100": 100}, 10, 4) == {"a100": [4, 4, 2]}
    assert plan_arrays({"a100": 3}, 10, 4) == {"a100": [3]}  # never more workers than pending trials
    assert plan_arrays({"a100": 0, "v100": 1}, 10, 4) == {"a100": [], "v100": [1]}
    assert plan_arrays({"a100": 5000}, 2500, 1001) == {"a100": [1001, 1001, 498]}


def test_array_throttle_is_max_parallel() -> None:
    cfg = compose(["+sweep=cifar_cells", "launcher=slurm", "launcher.max_parallel=3"])
    gpu = gpu_types()["a100"]
    assert slurm_parameters(cfg.launcher, gpu, "demo", 10)["slurm_array_parallelism"] == 3
    assert slurm_parameters(cfg.launcher, gpu, "demo", 2)["slurm_array_parallelism"] == 2
    unthrottled = compose(["+sweep=cifar_cells", "launcher=slurm", "launcher.max_parallel=0"])
    assert slurm_parameters(unthrottled.launcher, gpu, "demo", 700)["slurm_array_parallelism"] == 700
