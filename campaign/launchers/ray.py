"""Ray: a task per chunk, GPU types as Ray custom resources or accelerator types; the tasks run
the same worker code as Slurm tasks. Ray tasks die with their driver, so this launcher follows
the campaign until every task has ended."""

from __future__ import annotations

import logging
import os
from typing import Any

from campaign.config import ConfigError
from campaign.launchers.base import Submitted, wait_all
from jobs.worker import WorkerSpec, WorkerSummary, WorkerTask


def _run(spec: WorkerSpec) -> WorkerSummary:
    return WorkerTask(spec)()


def task_options(launcher: dict[str, Any], gpu: dict[str, Any]) -> dict[str, Any]:
    """``ray.remote(...).options(...)`` for one GPU type's workers (pure)."""
    ray_cfg = gpu.get("ray") or {}
    opts: dict[str, Any] = {
        "num_cpus": launcher["cpus_per_task"],
        "num_gpus": launcher["gpus_per_task"],
        "max_retries": 0,  # a lost worker is found stale and resumed, never retried blindly
    }
    if ray_cfg.get("resources"):
        opts["resources"] = dict(ray_cfg["resources"])
    if ray_cfg.get("accelerator_type"):
        opts["accelerator_type"] = ray_cfg["accelerator_type"]
    return opts


def connect(launcher: dict[str, Any]) -> None:
    """Join the configured cluster, or start a local one with the configured resources."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        return
    if launcher.get("address"):
        ray.init(address=launcher["address"], include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    else:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                                  "resources": dict(launcher.get("local_resources") or {})}
        if launcher.get("local_num_cpus"):
            kwargs["num_cpus"] = int(launcher["local_num_cpus"])
        ray.init(**kwargs)


def check_resources(options: dict[str, dict[str, Any]]) -> None:
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


def preflight(launcher: dict[str, Any], gpus: dict[str, dict[str, Any]], gpu_types: list[str]) -> None:
    """Before anything is recorded: the cluster answers and can schedule every GPU type."""
    connect(launcher)
    check_resources({g: task_options(launcher, gpus[g]) for g in gpu_types})


def submit(specs: dict[str, list[WorkerSpec]], launcher: dict[str, Any], gpus: dict[str, dict[str, Any]]) -> Submitted:
    import ray

    connect(launcher)
    options = {g: task_options(launcher, gpus[g]) for g in specs if specs[g]}
    check_resources(options)
    remote = ray.remote(_run)
    out = Submitted("ray", {})
    for gpu_type, worker_specs in specs.items():
        refs = [remote.options(**options[gpu_type]).remote(spec) for spec in worker_specs]
        out.jobs[gpu_type] = [r.hex()[:16] for r in refs]
        out.handles.extend(refs)
    return out


def wait(submitted: Submitted) -> None:
    """Block until every submitted task has ended."""
    import ray

    wait_all(submitted.handles, ray.get)
