"""Slurm through submitit: one job array per GPU type; each array task is a worker that holds one
GPU, warms it up once and runs its chunk of trials. Preemption and time limits requeue the
task (``jobs.worker.WorkerTask.checkpoint``), which continues with what is not done."""

from __future__ import annotations

import re
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


#: submitit parameters -> sbatch options, for ``sbatch --test-only``
SBATCH_OPTIONS = {
    "timeout_min": "--time",
    "cpus_per_task": "--cpus-per-task",
    "slurm_partition": "--partition",
    "slurm_constraint": "--constraint",
    "slurm_gres": "--gres",
    "slurm_account": "--account",
    "slurm_qos": "--qos",
}


def sbatch_test_args(params: Mapping[str, Any]) -> list[str]:
    """``sbatch --test-only`` asking for one task with the resources of ``params`` (pure)."""
    args = ["sbatch", "--test-only", "--nodes=1", "--ntasks=1", "--output=/dev/null", "--wrap=true",
            f"--mem={max(1, round(float(params['mem_gb']) * 1024))}M"]
    args += [f"{opt}={params[key]}" for key, opt in SBATCH_OPTIONS.items() if params.get(key) not in (None, "")]
    return args


def would_accept(gpu_type: str, params: Mapping[str, Any]) -> None:
    """Ask Slurm (``sbatch --test-only``) whether it would accept one task of the GPU type's array
    as configured; ConfigError with Slurm's reason and the resources asked for where not."""
    import subprocess

    try:
        proc = subprocess.run(sbatch_test_args(params), capture_output=True, text=True, timeout=60)
    except (subprocess.SubprocessError, OSError) as exc:
        raise ConfigError(f"Slurm does not answer (sbatch --test-only failed: {exc})") from exc
    if proc.returncode == 0:
        return
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    asked = ", ".join(f"{k}={params[k]}" for k in ("mem_gb", "cpus_per_task", "timeout_min", "slurm_partition",
                                                   "slurm_gres") if params.get(k) not in (None, ""))
    raise ConfigError(f"Slurm would refuse GPU type {gpu_type!r}'s tasks ({asked}): "
                      f"{lines[-1] if lines else f'sbatch --test-only exit {proc.returncode}'}; "
                      f"set launcher.mem_gb=, launcher.cpus_per_task= or conf/gpu/{gpu_type}.yaml to what its nodes have")


JOB_ID = re.compile(r"^\d+(_\d+)?$")


def recorded_jobs(paths: CampaignPaths, launcher: LauncherConfig) -> set[str]:
    """The Slurm job ids submitit's job folders name (``GPU_TYPE/JOB_ID`` below the campaign's
    Slurm folder): every task this campaign's launches submitted."""
    base = paths.slurm(launcher.folder)
    return {p.name for p in base.glob("*/*") if p.is_dir() and JOB_ID.match(p.name)} if base.is_dir() else set()


def scancel(job_ids: Iterable[str]) -> str:
    """``scancel`` the arrays of those tasks still in Slurm's queue; what was done, in words."""
    import shutil
    import subprocess

    ids = {j for j in job_ids if j and JOB_ID.match(j)}
    if not ids:
        return "no Slurm jobs recorded"
    if not shutil.which("scancel"):
        return f"{len(ids)} Slurm task(s) recorded but scancel is not on PATH here; cancel them where Slurm runs"
    queued = in_queue(ids)
    live = sorted(ids if queued is None else ids & queued)
    arrays = sorted({j.split("_")[0] for j in live})
    if not arrays:
        return "no Slurm job of it is queued or running"
    proc = subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"scancel {' '.join(arrays)} failed: {detail}"
    return f"Slurm job(s) {', '.join(arrays)} cancelled (scancel)"


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
        """Slurm answers, every GPU type's partition exists, and Slurm would accept a task of each
        GPU type's array with the resources it will ask for (``sbatch --test-only``)."""
        wanted = {g: gpu_of(self.gpus, g).slurm.partition for g in gpu_types}
        have = partitions()
        for g, partition in wanted.items():
            if partition and partition not in have:
                raise ConfigError(f"GPU type {g!r} runs in Slurm partition {partition!r}, which this cluster lacks "
                                  f"(partitions: {', '.join(have)}); set it in conf/gpu/{g}.yaml")
        for g in gpu_types:
            would_accept(g, slurm_parameters(self.launcher, gpu_of(self.gpus, g), self.paths.name, 1))

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
