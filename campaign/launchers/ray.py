"""Ray: a bounded pool of pull workers per GPU type (``launcher.max_workers``), GPU types as Ray
custom resources or accelerator types; the tasks run the same worker code as Slurm tasks. Ray
tasks die with their driver, so this launcher follows the campaign until every task has ended
(and the launch replaces a killed one: ``ended_jobs``). On a shared cluster (``launcher.address``)
a resume asks the cluster's job table which earlier drivers have ended: their tasks died with them,
so their trials are reopened at once and their workers are not counted as live."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from campaign.launchers.base import Submitted, count_active, gpu_of, summaries
from db.errors import ConfigError
from jobs.worker import WorkerSpec, WorkerSummary, WorkerTask

if TYPE_CHECKING:
    from campaign.config import CampaignConfig, GpuType, LauncherConfig
    from db.paths import CampaignPaths

log = logging.getLogger(__name__)


def _run(spec: WorkerSpec) -> WorkerSummary:
    return WorkerTask(spec)()


def task_options(launcher: LauncherConfig, gpu: GpuType) -> dict[str, Any]:
    """``ray.remote(...).options(...)`` for one GPU type's workers (pure)."""
    opts: dict[str, Any] = {
        "num_cpus": launcher.cpus_per_task,
        "num_gpus": launcher.gpus_per_task,
        "max_retries": 0,  # a lost worker is found stale and resumed, never retried blindly
    }
    if gpu.ray.resources:
        opts["resources"] = dict(gpu.ray.resources)
    if gpu.ray.accelerator_type:
        opts["accelerator_type"] = gpu.ray.accelerator_type
    return opts


def connect(launcher: LauncherConfig) -> None:
    """Join the configured cluster, or start a local one with the configured resources."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if launcher.address:
        ray.init(address=launcher.address, **kwargs)
        return
    kwargs["resources"] = dict(launcher.local_resources or {})
    if launcher.local_num_cpus:
        kwargs["num_cpus"] = int(launcher.local_num_cpus)
    # "local": a cluster of this launch's own, even where another runs on this machine (ray start),
    # which a plain init would join (and refuse the CPUs and resources given for the local one)
    ray.init(address="local", **kwargs)


def check_resources(options: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse what the cluster cannot schedule: a task asking for an undeclared resource would
    stay pending forever."""
    import ray

    have = ray.cluster_resources()
    for gpu_type, opts in options.items():
        wanted = dict(opts.get("resources") or {})
        if opts.get("num_gpus"):
            wanted["GPU"] = opts["num_gpus"]
        for name, amount in wanted.items():
            if have.get(name, 0) < amount:
                known = ", ".join(sorted(k for k in have if not k.startswith("node:")))
                raise ConfigError(
                    f"GPU type {gpu_type!r} needs Ray resource {name}={amount} but the cluster has "
                    f"{have.get(name, 0)} (cluster resources: {known}); declare it on the nodes "
                    f"(ray start --resources) or set launcher.gpus_per_task=0 on CPU-only clusters"
                )


class RayLauncher:
    name = "ray"
    in_process = False
    must_follow = True  # Ray tasks die with their driver
    time_limited = False

    def __init__(self, cfg: CampaignConfig, paths: CampaignPaths) -> None:
        from campaign.config import gpu_types

        self.launcher = cfg.launcher
        self.gpus = gpu_types()
        self.tasks: dict[str, Any] = {}  # Ray task id (hex) -> ref, of the tasks this process submitted

    def _options(self, gpu_types: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {g: task_options(self.launcher, gpu_of(self.gpus, g)) for g in gpu_types}

    def preflight(self, gpu_types: Sequence[str]) -> None:
        """The cluster answers and can schedule every GPU type."""
        options = self._options(gpu_types)
        connect(self.launcher)
        check_resources(options)

    def submit(self, specs: Mapping[str, Sequence[WorkerSpec]]) -> Submitted:
        import ray

        options = self._options([g for g in specs if specs[g]])
        connect(self.launcher)
        check_resources(options)
        remote = ray.remote(_run)
        out = Submitted(self.name, {})
        for gpu_type, opts in options.items():
            refs = [remote.options(**opts).remote(spec) for spec in specs[gpu_type]]
            self.tasks.update({r.task_id().hex(): r for r in refs})
            out.add(gpu_type, [f"ray:{r.task_id().hex()}" for r in refs], refs)
        return out

    def wait(self, submitted: Submitted) -> list[WorkerSummary]:
        import ray

        return summaries(submitted.all_handles(), ray.get)

    def cancel(self, submitted: Submitted) -> None:
        """``ray.cancel`` every task: a queued one never starts, a running one's worker process is
        killed (as scancel kills a Slurm task; resume finds its attempt stale). Without ``force``
        Ray only interrupts Python between bytecodes, and a worker pausing or in a native call
        would run on for minutes."""
        import ray

        for ref in submitted.all_handles():
            ray.cancel(ref, force=True)

    def active(self, submitted: Submitted) -> dict[str, int]:
        """Tasks whose result is not ready (``ray.wait`` with timeout 0)."""
        import ray

        refs = submitted.all_handles()
        if not refs:
            return {}
        _, not_ready = ray.wait(refs, num_returns=len(refs), timeout=0)
        pending = {r.hex() for r in not_ready}
        return count_active(submitted, lambda ref: ref.hex() in pending)

    def live_workers(self, submissions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]] | None:
        """Of the recorded submissions, the tasks whose driver (the process that submitted them and
        follows them) still lives, per GPU type, counted as running: Ray tasks end with their
        driver, and a live driver replaces and resubmits its own. On a cluster of its own (no
        ``launcher.address``) an earlier launch's tasks ran on a cluster this process cannot see:
        none are counted."""
        if not self.launcher.address:
            return {}
        import ray

        connect(self.launcher)
        drivers = driver_states()
        if drivers is None:
            return None
        own = str(ray.get_runtime_context().get_job_id())
        mine_pending: set[str] = set()
        if self.tasks:  # this driver's tasks are live until done
            _, not_ready = ray.wait(list(self.tasks.values()), num_returns=len(self.tasks), timeout=0)
            mine_pending = {r.task_id().hex() for r in not_ready}
        live: dict[str, dict[str, int]] = {}
        for sub in submissions:
            jobs = sub["job_ids"]
            tasks = [str(j) for j in (json.loads(jobs) if isinstance(jobs, str) else jobs or []) if str(j).startswith("ray:")]
            alive = 0
            for j in tasks:
                job = job_of(j)
                alive += (j[4:] in mine_pending) if job == own else (job is not None and drivers.get(job) is False)
            if alive:
                live.setdefault(str(sub["gpu_type"]), {"queued": 0, "running": 0})["running"] += alive
        return live

    def ended_jobs(self, jobs: Iterable[str]) -> dict[str, str]:
        """Of the ``ray:TASK_ID`` ids, the tasks that have ended: this process's that are done (a
        killed worker, a lost node), and on a shared cluster (``launcher.address``) every task of
        a driver the cluster says has ended (a launch killed or crashed: its tasks died with it).
        Tasks of another live driver, or of a cluster this process cannot see, are left to their
        heartbeat."""
        import ray

        ray_jobs = [j for j in jobs if j.startswith("ray:")]
        mine = {j: self.tasks[j[4:]] for j in ray_jobs if j[4:] in self.tasks}
        out: dict[str, str] = {}
        if mine:
            ready, _ = ray.wait(list(mine.values()), num_returns=len(mine), timeout=0)
            ended = {r.task_id().hex() for r in ready}
            out.update({j: "Ray task ended" for j, r in mine.items() if j[4:] in ended})
        others = [j for j in ray_jobs if j not in mine]
        if others and self.launcher.address:
            connect(self.launcher)
            drivers = driver_states() or {}
            for j in others:
                job = job_of(j)
                if job is not None and drivers.get(job) is True:
                    out[j] = f"its Ray driver (job {job}) ended, and the task with it"
        return out


def job_of(task: str) -> str | None:
    """The Ray job (driver) id of a ``ray:TASK_ID`` (a task id holds its job's), None if unreadable."""
    import ray

    try:
        return str(ray.TaskID.from_hex(task[4:]).job_id().hex())
    except Exception:  # not a task id this Ray can read
        return None


def driver_states() -> dict[str, bool] | None:
    """Every job (driver) the connected cluster knows: its id -> whether it has ended (the GCS's
    job table); None when the cluster does not say."""
    try:
        from ray._private import state

        return {str(j["JobID"]): bool(j.get("IsDead")) for j in state.state.job_table()}
    except Exception as exc:  # an API this Ray version lacks, a cluster that does not answer
        log.warning("the Ray cluster did not list its jobs (%s): ended drivers are found by heartbeat", exc)
        return None
