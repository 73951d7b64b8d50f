"""Slurm through submitit: one job array per GPU type; each array task is a worker that holds one
GPU, warms it up once and runs its chunk of trials. Preemption and time limits requeue the
task (``jobs.worker.WorkerTask.checkpoint``), which continues with what is not done."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from campaign.launchers.base import MAX_TASKS, Submitted, count_active, gpu_of, summaries, time_limit_min
from db.errors import ConfigError
from jobs.worker import WorkerSpec, WorkerSummary, WorkerTask

if TYPE_CHECKING:
    from campaign.config import CampaignConfig, GpuType, LauncherConfig
    from db.paths import CampaignPaths

POLL_MAX_S = 15.0  # longest pause between two looks at the queue while waiting


def slurm_parameters(launcher: LauncherConfig, gpu: GpuType, campaign: str, n_tasks: int) -> dict[str, Any]:
    """submitit ``update_parameters`` for one GPU type's array (pure; golden-tested).

    The GPU type's ``slurm`` block (partition, constraint, gres, account, qos, timeout_min)
    wins over the launcher's defaults; unset values are left out."""
    site = gpu.slurm
    params: dict[str, Any] = {
        "name": f"campaign-{campaign}-{gpu.name}",
        "timeout_min": int(time_limit_min(launcher, gpu)),
        "mem_gb": float(launcher.mem_gb),
        "cpus_per_task": int(launcher.cpus_per_task),
        "slurm_array_parallelism": min(n_tasks, launcher.max_parallel or MAX_TASKS),
        "stderr_to_stdout": True,
    }
    optional = {
        "slurm_partition": site.partition,
        "slurm_constraint": site.constraint,
        "slurm_gres": site.gres,
        "slurm_account": site.account or launcher.account,
        "slurm_qos": site.qos or launcher.qos,
    }
    params.update({k: v for k, v in optional.items() if v})
    if launcher.setup:
        params["slurm_setup"] = list(launcher.setup)
    return params


def array_folder(paths: CampaignPaths, launcher: LauncherConfig, gpu_type: str) -> Path:
    """submitit's folder of one GPU type's array (``%j``: one folder per job)."""
    return paths.slurm(launcher.folder) / gpu_type / "%j"


def partitions() -> list[str]:
    """The cluster's partitions (``sinfo``); ConfigError when Slurm is absent or does not answer."""
    import shutil
    import subprocess

    if not shutil.which("sbatch"):
        raise ConfigError("launcher=slurm needs Slurm's commands (sbatch, sinfo) on this machine; none found on PATH")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        detail = (getattr(exc, "stderr", "") or str(exc)).strip()
        raise ConfigError(f"Slurm does not answer (sinfo failed: {detail.splitlines()[-1] if detail else exc})") from exc
    return sorted({p.strip() for p in out.split()})


def in_queue(job_ids: Iterable[str]) -> set[str] | None:
    """The tasks among ``job_ids`` (``ARRAY_TASK``) that Slurm still holds: pending, running or
    requeued (``squeue``; it answers without accounting, and a pending array cancelled as a
    whole leaves no per-task record there). None when squeue does not answer."""
    import subprocess

    arrays = sorted({j.split("_")[0] for j in job_ids})
    if not arrays:
        return set()
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                              text=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    if proc.returncode != 0:
        return set() if "Invalid job id" in proc.stderr else None  # every one ended long ago
    return set(proc.stdout.split())


def until_ended(jobs: Sequence[Any]) -> None:
    """Block until every task has left Slurm's queue: looked at (squeue) at growing intervals up
    to ``POLL_MAX_S``, and every second once every task has written its result (it is exiting)."""
    delay, next_look = 1.0, 0.0
    while True:
        if time.monotonic() >= next_look or all(j.paths.result_pickle.exists() for j in jobs):
            queued = in_queue(j.job_id for j in jobs)
            if queued is not None and not any(j.job_id in queued for j in jobs):
                return
            delay = min(2 * delay, POLL_MAX_S)
            next_look = time.monotonic() + delay
        time.sleep(1.0)  # polling the scheduler and the job folder, not synchronisation


def _result(job: Any) -> object:
    """An ended task's result: its summary, or None for a task Slurm ended otherwise (cancelled,
    failed, timed out without requeue), without waiting for a result file that never comes."""
    if job.paths.result_pickle.exists() or job.watcher.get_state(job.job_id, mode="force").upper() == "COMPLETED":
        return job.result()  # a COMPLETED task's file may still be on its way (shared file systems)
    return None


class SlurmLauncher:
    name = "slurm"
    in_process = False
    must_follow = False  # the tasks run on without this process

    def __init__(self, cfg: CampaignConfig, paths: CampaignPaths) -> None:
        from campaign.config import gpu_types

        self.launcher = cfg.launcher
        self.paths = paths
        self.gpus = gpu_types()

    def preflight(self, gpu_types: Sequence[str]) -> None:
        """Slurm answers and every GPU type's partition exists."""
        wanted = {g: gpu_of(self.gpus, g).slurm.partition for g in gpu_types}
        have = partitions()
        for g, partition in wanted.items():
            if partition and partition not in have:
                raise ConfigError(f"GPU type {g!r} runs in Slurm partition {partition!r}, which this cluster lacks "
                                  f"(partitions: {', '.join(have)}); set it in conf/gpu/{g}.yaml")

    def submit(self, specs: Mapping[str, Sequence[WorkerSpec]]) -> Submitted:
        """One array per GPU type; the job ids are Slurm's (``ARRAY_TASK``)."""
        import submitit

        out = Submitted(self.name, {})
        for gpu_type, worker_specs in specs.items():
            if not worker_specs:
                continue
            executor = submitit.AutoExecutor(folder=str(array_folder(self.paths, self.launcher, gpu_type)),
                                             cluster="slurm")
            executor.update_parameters(**slurm_parameters(self.launcher, gpu_of(self.gpus, gpu_type),
                                                          self.paths.name, len(worker_specs)))
            try:
                with executor.batch():
                    jobs = [executor.submit(WorkerTask(spec)) for spec in worker_specs]
            except Exception as exc:  # sbatch refused: partition, gres, account ... (one line for the user)
                first = str(exc).strip().splitlines()
                raise ConfigError(f"Slurm refused the {gpu_type} array: {first[-1] if first else exc}") from exc
            out.add(gpu_type, [j.job_id for j in jobs], jobs)
        return out

    def wait(self, submitted: Submitted) -> list[WorkerSummary]:
        jobs = submitted.all_handles()
        until_ended(jobs)
        return summaries(jobs, _result)

    def cancel(self, submitted: Submitted) -> None:
        """``scancel`` every task of the submission (ended ones are left alone by Slurm)."""
        for job in submitted.all_handles():
            job.cancel(check=False)

    def active(self, submitted: Submitted) -> dict[str, int]:
        """Tasks Slurm still holds (pending, running, requeued); submitit's job states where
        squeue does not answer."""
        queued = in_queue(j.job_id for j in submitted.all_handles())
        if queued is None:
            return count_active(submitted, lambda job: not job.done())
        return count_active(submitted, lambda job: job.job_id in queued)
