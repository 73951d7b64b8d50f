"""Render what ``launcher=slurm`` would submit, without submitting: the submitit parameters and
the sbatch script, per GPU type, in the job folder a real submit uses. Used by the golden-file
test that shows any change to what HPC users submit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from campaign.launchers.base import gpu_of
from campaign.launchers.slurm import array_folder, slurm_parameters

if TYPE_CHECKING:
    from campaign.config import GpuType, LauncherConfig
    from db.paths import CampaignPaths


def sbatch_script(params: dict[str, Any], folder: Path) -> str:
    """The sbatch file submitit writes for these parameters (array of ``n`` tasks)."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**params)
    inner: Any = executor._executor  # submitit's SlurmExecutor: the one that renders sbatch files
    return str(inner._make_submission_file_text("python -u -m submitit.core._submit " + str(folder), "%A_%a"))


def render(launcher: LauncherConfig, gpus: Mapping[str, GpuType], paths: CampaignPaths,
           n_tasks: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """Per GPU type: the submitit parameters and the sbatch script."""
    out = {}
    for gpu_type, n in n_tasks.items():
        params = slurm_parameters(launcher, gpu_of(gpus, gpu_type), paths.name, n)
        out[gpu_type] = {"parameters": params, "sbatch": sbatch_script(params, array_folder(paths, launcher, gpu_type))}
    return out
