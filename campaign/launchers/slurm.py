"""Slurm through submitit: per GPU type, up to ``launcher.max_workers`` pull workers, split into
job arrays that fit the cluster's MaxArraySize (``plan_arrays``) and throttled by
``launcher.max_parallel`` (``%k``). Each array task is a worker that holds one GPU, warms it up
once and claims the next pending trial of its GPU type until none is left or the next would not
end before its allocation does; the last one to stop for time resubmits what is still needed
(``SlurmWorker``), up to ``launcher.max_submissions`` submissions per GPU type. Preemption
requeues the task (``checkpoint``), which continues with what is not done."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from campaign.launchers.base import (
    Submitted,
    close_ended,
    count_active,
    gpu_of,
    signal_lead_s,
    summaries,
    time_limit_min,
    workers_needed,
)
from db.errors import ConfigError
from jobs.worker import WorkerSpec, WorkerSummary, WorkerTask

if TYPE_CHECKING:
    from campaign.config import CampaignConfig, GpuType, LauncherConfig
    from db.paths import CampaignPaths

log = logging.getLogger(__name__)

POLL_MAX_S = 15.0  # longest pause between two looks at the queue while waiting
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize, where the cluster cannot be asked


def plan_arrays(pending_per_gpu: Mapping[str, int], max_workers: int, max_array_size: int) -> dict[str, list[int]]:
    """Per GPU type, the sizes of the job arrays a launch submits (pure): ``min(max_workers,
    pending)`` worker tasks in all, in arrays of at most ``max_array_size`` tasks (an array of N
    tasks has indices 0..N-1, and Slurm's MaxArraySize bounds the largest index + 1). GPU types
    with nothing pending get no array (an empty list)."""
    if max_array_size < 1:
        raise ConfigError(f"MaxArraySize {max_array_size} is not allowed (must be >= 1)")
    out: dict[str, list[int]] = {}
    for gpu_type, pending in pending_per_gpu.items():
        left = max(0, min(int(max_workers), int(pending)))
        sizes = []
        while left > 0:
            sizes.append(min(left, max_array_size))
            left -= sizes[-1]
        out[gpu_type] = sizes
    return out


def cluster_max_array_size() -> int | None:
    """The cluster's MaxArraySize (``scontrol show config``); None where Slurm does not answer."""
    import shutil
    import subprocess

    if not shutil.which("scontrol"):
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(m.group(1)) if m else None


def max_array_size(launcher: LauncherConfig) -> int:
    """``launcher.max_array_size`` where set, else the cluster's MaxArraySize where reachable,
    else Slurm's default (1001)."""
    if launcher.max_array_size > 0:
        return int(launcher.max_array_size)
    return cluster_max_array_size() or DEFAULT_MAX_ARRAY_SIZE


def slurm_parameters(launcher: LauncherConfig, gpu: GpuType, campaign: str, n_tasks: int) -> dict[str, Any]:
    """submitit ``update_parameters`` for one GPU type's array (pure; golden-tested).

    The GPU type's ``slurm`` block (partition, constraint, gres, account, qos, timeout_min)
    wins over the launcher's defaults; unset values are left out."""
    site = gpu.slurm
    limit_min = int(time_limit_min(launcher, gpu))
    params: dict[str, Any] = {
        "name": f"campaign-{campaign}-{gpu.name}",
        "timeout_min": limit_min,
        "mem_gb": float(launcher.mem_gb),
        "cpus_per_task": int(launcher.cpus_per_task),
        # Slurm's array throttle (%k): launcher.max_parallel tasks at once; 0: all of them
        "slurm_array_parallelism": max(1, min(n_tasks, launcher.max_parallel) if launcher.max_parallel else n_tasks),
        # USR2 before the limit (submitit requeues on it: preemption); short limits get a short lead
        "slurm_signal_delay_s": signal_lead_s(limit_min),
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
    """``scancel`` the arrays (or jobs) of those ids (``ARRAY`` or ``ARRAY_TASK``) still in
    Slurm's queue; what was done, in words."""
    import shutil
    import subprocess

    ids = {j for j in job_ids if j and JOB_ID.match(j)}
    if not ids:
        return "no Slurm jobs recorded"
    if not shutil.which("scancel"):
        return f"{len(ids)} Slurm job(s) recorded but scancel is not on PATH here; cancel them where Slurm runs"
    queued = in_queue(ids)
    wanted = {j.split("_")[0] for j in ids}
    arrays = sorted(wanted if queued is None else wanted & {q.split("_")[0] for q in queued}, key=int)
    if not arrays:
        return "no Slurm job of it is queued or running"
    proc = subprocess.run(["scancel", *arrays], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"scancel {' '.join(arrays)} failed: {detail}"
    return f"Slurm job(s) {', '.join(arrays)} cancelled (scancel)"


def queue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """Slurm's state (PENDING, RUNNING, ...) of every task it still holds of the arrays or jobs
    among ``job_ids`` (``squeue -r``: one line per array task, pending ones too), keyed
    ``ARRAY_TASK`` (or ``JOB``). None when squeue does not answer."""
    import subprocess

    arrays = sorted({str(j).split("_")[0] for j in job_ids if j and JOB_ID.match(str(j))})
    if not arrays:
        return {}
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)], capture_output=True,
                              text=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return None
    if proc.returncode != 0:
        return {} if "Invalid job id" in proc.stderr else None  # every one ended long ago
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def in_queue(job_ids: Iterable[str]) -> set[str] | None:
    """The tasks of ``job_ids``' arrays (``ARRAY_TASK``) that Slurm still holds: pending, running or
    requeued (``squeue``; it answers without accounting, and a pending array cancelled as a
    whole leaves no per-task record there). None when squeue does not answer."""
    states = queue_states(job_ids)
    return None if states is None else set(states)


QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD"})


def live_workers(submissions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]] | None:
    """Per GPU type, the worker tasks of the recorded Slurm submissions that Slurm still holds:
    ``{"queued": n, "running": n}`` (GPU types with none are left out); None when squeue does not
    answer."""
    gpu_of_array = {str(j): str(s["gpu_type"]) for s in submissions if s.get("launcher") == "slurm"
                    for j in s.get("job_ids") or []}
    if not gpu_of_array:
        return {}
    states = queue_states(gpu_of_array)
    if states is None:
        return None
    out: dict[str, dict[str, int]] = {}
    for task, state in states.items():
        gpu_type = gpu_of_array.get(task.split("_")[0])
        if gpu_type is None:
            continue
        counts = out.setdefault(gpu_type, {"queued": 0, "running": 0})
        counts["queued" if state in QUEUED_STATES else "running"] += 1
    return out


def sacct_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Accounting's final state of ended jobs (``sacct``), keyed as asked; what it cannot tell
    (no accounting, not recorded yet) is left out."""
    import subprocess

    ids = sorted({j for j in job_ids if JOB_ID.match(j)})
    if not ids:
        return {}
    try:
        proc = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                              capture_output=True, text=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        job, _, state = line.partition("|")
        if job in ids and state:
            out[job] = state.split()[0]
    return out


def ended_jobs(jobs: Iterable[str]) -> dict[str, str]:
    """Of the Slurm job ids (``JOB`` or ``ARRAY_TASK``) running attempts recorded, those Slurm no
    longer holds, with accounting's state where it has one (CANCELLED, TIMEOUT, NODE_FAIL, ...).
    Nothing when squeue does not answer: then only the heartbeat can tell."""
    ids = {j for j in jobs if j and JOB_ID.match(j)}
    if not ids:
        return {}
    queued = in_queue(ids)
    if queued is None:
        return {}
    gone = ids - queued
    states = sacct_states(gone)
    return {j: states.get(j, "no longer in the queue") for j in sorted(gone)}


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


def submit_arrays(launcher: LauncherConfig, gpus: Mapping[str, GpuType], paths: CampaignPaths,
                  specs: Mapping[str, Sequence[WorkerSpec]], task: Any) -> Submitted:
    """Submit each GPU type's specs as job arrays of at most MaxArraySize tasks (one
    ``executor.batch()`` per array), each task ``task(spec)``."""
    import submitit

    out = Submitted(SlurmLauncher.name, {})
    limit = max_array_size(launcher)
    for gpu_type, worker_specs in specs.items():
        if not worker_specs:
            continue
        sizes = plan_arrays({gpu_type: len(worker_specs)}, len(worker_specs), limit)[gpu_type]
        executor = submitit.AutoExecutor(folder=str(array_folder(paths, launcher, gpu_type)), cluster="slurm")
        start = 0
        for size in sizes:
            part = worker_specs[start:start + size]
            start += size
            executor.update_parameters(**slurm_parameters(launcher, gpu_of(gpus, gpu_type), paths.name, size))
            try:
                with executor.batch():
                    jobs = [executor.submit(task(spec)) for spec in part]
            except Exception as exc:  # sbatch refused: partition, gres, account ... (one line for the user)
                first = str(exc).strip().splitlines()
                raise ConfigError(f"Slurm refused the {gpu_type} array: {first[-1] if first else exc}") from exc
            array = jobs[0].job_id.split("_")[0] if jobs else ""
            out.add(gpu_type, [j.job_id for j in jobs], jobs, [(array, len(jobs))])
    return out


def job_end_time(env: Mapping[str, str] | None = None) -> float | None:
    """When this Slurm job's allocation ends (Unix seconds): ``SLURM_JOB_END_TIME`` where Slurm
    sets it (23.02 on), else ``scontrol show job``'s EndTime; None outside a job or unanswered."""
    import datetime as dt
    import os
    import subprocess

    env = os.environ if env is None else env
    if env.get("SLURM_JOB_END_TIME", "").isdigit():
        return float(env["SLURM_JOB_END_TIME"])
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    m = re.search(r"\bEndTime=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", out)
    return dt.datetime.fromisoformat(m.group(1)).timestamp() if m else None  # Slurm prints local time


class SlurmWorker:
    """The callable each array task runs: a pull worker (``jobs.worker.WorkerTask``) that, when it
    stops for time with trials of its GPU type still pending and no queued worker left for them,
    submits the workers still needed (one of its submission's workers does: the first to take the
    next submission number), up to ``launcher.max_submissions`` submissions per GPU type. Before
    either, and when it finds nothing pending, it reopens the trials whose running attempt's Slurm
    job has ended (``reopen_ended``), so that a cancelled or lost task's trial is run again without
    a person."""

    def __init__(self, spec: WorkerSpec, launcher: LauncherConfig, paths: CampaignPaths) -> None:
        self.spec = spec
        self.launcher = launcher
        self.paths = paths

    def __call__(self) -> WorkerSummary:
        end = job_end_time()
        spec = self.spec if end is None else dataclasses.replace(self.spec, deadline=end)
        summary = WorkerTask(spec)()
        for _ in range(REOPEN_ROUNDS):  # nothing pending: trials held by dead attempts are taken up
            if summary.out_of_time or summary.budget_stopped or not reopen_ended(self.spec):
                break
            more = WorkerTask(spec)()
            summary = dataclasses.replace(more, done=summary.done + more.done, failed=summary.failed + more.failed)
        if summary.out_of_time:
            try:
                said = resubmit(self.spec, self.launcher, self.paths)
            except Exception as exc:  # the work done stays done; a person or --wait goes on from here
                said = f"resubmission failed: {exc}"
            summary.stopped_reason += f"; {said}"
            log.info("worker %s: %s", self.spec.worker_id, said)
        return summary

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmWorker(self.spec, self.launcher, self.paths))


# Times a worker that found nothing pending looks again after reopening trials whose attempt's
# Slurm job had ended (each round ends when nothing is pending again).
REOPEN_ROUNDS = 3


def reopen_ended(spec: WorkerSpec) -> int:
    """Close the campaign's running attempts whose Slurm job has ended (sacct: cancelled,
    preempted past submitit's requeues, a failed node) as stale, their trials pending again; how
    many (0 when the database or Slurm does not answer: the heartbeat finds them later)."""
    from db.engine import make_engine
    from db.store import ResultStore

    engine = make_engine(spec.db_url)
    try:
        store = ResultStore(engine)
        n = close_ended(store, store.campaign(spec.campaign).id, SlurmLauncher.name, ended_jobs)
    except Exception as exc:  # the worker's own work is done and stored
        log.warning("worker %s: could not look for attempts whose job ended: %s", spec.worker_id, exc)
        return 0
    finally:
        engine.dispose()
    if n:
        log.info("worker %s: %d attempt(s) whose Slurm job had ended reopened; claiming again", spec.worker_id, n)
    return n


def resubmit(spec: WorkerSpec, launcher: LauncherConfig, paths: CampaignPaths) -> str:
    """Submit the workers ``spec``'s GPU type still needs (pending trials not covered by queued
    workers) as submission ``spec.submission + 1``, unless another process took that number or
    it would pass ``launcher.max_submissions``; what was done, in words."""
    from campaign.config import gpu_types
    from db.engine import make_engine
    from db.store import ResultStore

    engine = make_engine(spec.db_url)
    try:
        store = ResultStore(engine)
        cid = store.campaign(spec.campaign).id
        # attempts whose task Slurm ended (a worker preempted past submitit's requeues, cancelled, a
        # failed node): their trials are pending again now, so that no person has to resume them
        reopened = close_ended(store, cid, SlurmLauncher.name, ended_jobs)
        pending = store.pending_counts(cid).get(spec.gpu_type, 0)
        if not pending:
            return "no pending trials left to resubmit"
        from db.budget import over_budget

        stopped = over_budget(engine, cid)
        if stopped is not None:
            return f"not resubmitted: {stopped}"
        live = live_workers(store.submissions(cid))
        if live is None:
            return "Slurm does not answer: not resubmitted"
        queued = {g: c["queued"] for g, c in live.items()}  # running ones are stopping, as this one
        need = workers_needed({spec.gpu_type: pending}, queued, launcher.max_workers).get(spec.gpu_type, 0)
        if not need:
            return f"{queued.get(spec.gpu_type, 0)} queued worker(s) cover the {pending} pending trial(s)"
        seq = store.reserve_submission(cid, spec.gpu_type, SlurmLauncher.name, "worker", seq=spec.submission + 1,
                                       max_seq=launcher.max_submissions)
        if seq is None:
            return (f"not resubmitted: submission {spec.submission + 1} taken by another process, or "
                    f"launcher.max_submissions={launcher.max_submissions} reached")
        specs = [dataclasses.replace(spec, worker_id=f"{spec.campaign}/{spec.gpu_type}/s{seq}-{i}", submission=seq,
                                     keys=None) for i in range(need)]
        try:
            submitted = submit_arrays(launcher, gpu_types(), paths, {spec.gpu_type: specs},
                                      lambda s: SlurmWorker(s, launcher, paths))
        except BaseException:
            store.drop_submission(cid, spec.gpu_type, seq)
            raise
        arrays = submitted.arrays.get(spec.gpu_type, [])
        store.fill_submission(cid, spec.gpu_type, seq, [a for a, _ in arrays], [n for _, n in arrays], need)
        return (f"resubmitted {need} worker(s) for {pending} pending trial(s) as Slurm job(s) "
                + ", ".join(a for a, _ in arrays)
                + (f"; {reopened} attempt(s) whose Slurm job had ended reopened" if reopened else ""))
    finally:
        engine.dispose()


class SlurmLauncher:
    name = "slurm"
    in_process = False
    must_follow = False  # the tasks run on without this process
    time_limited = True

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
        """Job arrays per GPU type, each of at most MaxArraySize tasks; the job ids are Slurm's
        (``ARRAY_TASK``)."""
        return submit_arrays(self.launcher, self.gpus, self.paths, specs,
                             lambda spec: SlurmWorker(spec, self.launcher, self.paths))

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

    def live_workers(self, submissions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]] | None:
        return live_workers(submissions)

    def ended_jobs(self, jobs: Iterable[str]) -> dict[str, str]:
        return ended_jobs(jobs)

