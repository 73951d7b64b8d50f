"""Ray: a bounded pool of pull workers per GPU type (``launcher.max_workers``), GPU types as Ray
custom resources or accelerator types; the tasks run the same worker code as Slurm tasks. Ray
tasks die with their driver, so this launcher follows the campaign until every task has ended
(and the launch replaces a killed one: ``ended_jobs``)."""

from __future__ import annotations

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
    ray.init(**kwargs)


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
        """None of an earlier launch's tasks: Ray tasks end with the driver that submitted them
        (this launcher follows its campaign to the end)."""
        return {}

    def ended_jobs(self, jobs: Iterable[str]) -> dict[str, str]:
        """Of the ``ray:TASK_ID`` ids, the tasks this process submitted that have ended (a killed
        worker, a lost node); a task of another driver is left to its heartbeat."""
        import ray

        mine = {j: self.tasks[j[4:]] for j in jobs if j.startswith("ray:") and j[4:] in self.tasks}
        if not mine:
            return {}
        ready, _ = ray.wait(list(mine.values()), num_returns=len(mine), timeout=0)
        ended = {r.task_id().hex() for r in ready}
        return {j: "Ray task ended" for j, r in mine.items() if j[4:] in ended}
