"""The Slurm preflight asks ``sbatch --test-only`` with the resources the array will ask for."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from campaign.launchers import slurm
from db.errors import ConfigError

PARAMS = {"timeout_min": 60, "mem_gb": 16.0, "cpus_per_task": 4, "slurm_partition": "a100", "slurm_gres": "gpu:1",
          "slurm_account": None}


def test_test_only_asks_for_the_real_resources() -> None:
    args = slurm.sbatch_test_args(PARAMS)
    assert args[:2] == ["sbatch", "--test-only"]
    assert {"--mem=16384M", "--cpus-per-task=4", "--time=60", "--partition=a100", "--gres=gpu:1"} <= set(args)
    assert not any(a.startswith("--account") for a in args)


def test_a_refusal_is_one_line_naming_the_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(args: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 1, "", "sbatch: error: Memory specification can not be satisfied\n"
                                           "sbatch: error: Batch job submission failed: Requested node "
                                           "configuration is not available\n")

    monkeypatch.setattr(subprocess, "run", refuse)
    with pytest.raises(ConfigError) as refused:
        slurm.would_accept("a100", PARAMS)
    line = str(refused.value)
    assert "\n" not in line and "mem_gb=16.0" in line and "cpus_per_task=4" in line
    assert "Requested node configuration is not available" in line and "launcher.mem_gb" in line


def test_acceptance_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", lambda args, **_: subprocess.CompletedProcess(args, 0, "", "sbatch: Job 3"))
    slurm.would_accept("a100", PARAMS)
