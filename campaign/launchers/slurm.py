"""Slurm through submitit: one job array per GPU type; each array task is a worker that holds one
GPU, warms it up once and runs its chunk of trials. Preemption and time limits requeue the
task (``jobs.worker.WorkerTask.checkpoint``), which continues with what is not done."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from campaign.config import ConfigError
from campaign.launchers.base import MAX_TASKS, Submitted, time_limit_min, wait_all
from jobs.worker import WorkerSpec, WorkerTask


def job_folder(launcher: dict[str, Any], root: str | Path, campaign: str) -> Path:
    """Where submitit keeps a campaign's job files and logs (``GPU_TYPE/JOB_ID`` below it):
    ``launcher.folder``, else ``ROOT/CAMPAIGN/slurm``."""
    return Path(launcher["folder"] or Path(root) / campaign / "slurm").expanduser()


def slurm_parameters(launcher: dict[str, Any], gpu: dict[str, Any], campaign: str, n_tasks: int) -> dict[str, Any]:
    """submitit ``update_parameters`` for one GPU type's array (pure; golden-tested).

    The GPU type's ``slurm`` block (partition, constraint, gres, account, qos, timeout_min)
    wins over the launcher's defaults; unset values are left out."""
    site = gpu.get("slurm") or {}
    params: dict[str, Any] = {
        "name": f"campaign-{campaign}-{gpu['name']}",
        "timeout_min": int(time_limit_min(launcher, gpu)),
        "mem_gb": float(launcher["mem_gb"]),
        "cpus_per_task": int(launcher["cpus_per_task"]),
        "slurm_array_parallelism": min(n_tasks, launcher["max_parallel"] or MAX_TASKS),
        "stderr_to_stdout": True,
    }
    optional = {
        "slurm_partition": site.get("partition"),
        "slurm_constraint": site.get("constraint"),
        "slurm_gres": site.get("gres"),
        "slurm_account": site.get("account") or launcher.get("account"),
        "slurm_qos": site.get("qos") or launcher.get("qos"),
    }
    params.update({k: v for k, v in optional.items() if v})
    if launcher.get("setup"):
        params["slurm_setup"] = list(launcher["setup"])
    return params


def preflight(gpus: dict[str, dict[str, Any]], gpu_types: list[str]) -> None:
    """Before anything is recorded: Slurm answers and every GPU type's partition exists."""
    import shutil
    import subprocess

    if not shutil.which("sbatch"):
        raise ConfigError("launcher=slurm needs Slurm's commands (sbatch, sinfo) on this machine; none found on PATH")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise ConfigError(f"Slurm does not answer (sinfo failed: {detail.strip().splitlines()[-1] if detail.strip() else exc})") from exc
    partitions = sorted({p.strip() for p in out.split()})
    for g in gpu_types:
        wanted = (gpus[g].get("slurm") or {}).get("partition")
        if wanted and wanted not in partitions:
            raise ConfigError(f"GPU type {g!r} runs in Slurm partition {wanted!r}, which this cluster lacks "
                              f"(partitions: {', '.join(partitions)}); set it in conf/gpu/{g}.yaml")


def submit(
    specs: dict[str, list[WorkerSpec]],
    launcher: dict[str, Any],
    gpus: dict[str, dict[str, Any]],
    campaign: str,
    folder: Path,
) -> Submitted:
    """Submit one array per GPU type; returns the Slurm job ids."""
    import submitit

    out = Submitted("slurm", {})
    for gpu_type, worker_specs in specs.items():
        if not worker_specs:
            continue
        executor = submitit.AutoExecutor(folder=str(folder / gpu_type / "%j"), cluster="slurm")
        executor.update_parameters(**slurm_parameters(launcher, gpus[gpu_type], campaign, len(worker_specs)))
        try:
            with executor.batch():
                jobs = [executor.submit(WorkerTask(spec)) for spec in worker_specs]
        except Exception as exc:  # sbatch refused: partition, gres, account ... (one line for the user)
            first = str(exc).strip().splitlines()
            raise ConfigError(f"Slurm refused the {gpu_type} array: {first[-1] if first else exc}") from exc
        out.jobs[gpu_type] = [j.job_id for j in jobs]
        out.handles.extend(jobs)
    return out


def wait(submitted: Submitted) -> None:
    """Block until every submitted task has ended."""
    wait_all(submitted.handles, lambda job: job.result())
