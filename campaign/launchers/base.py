"""The launcher port, and what every launcher shares: how many pull workers a GPU type needs, and
the worker specs sent to them.

A launcher (local, Slurm, Ray; one file each, registered in ``campaign.launchers``) is small,
like submitit's ``Executor``: ``preflight`` checks before anything is recorded, ``submit`` hands
worker specs out, ``wait`` blocks until every task has ended, ``cancel`` stops them and
``active`` counts those still queued or running; ``live_workers`` and ``ended_jobs`` ask the
scheduler about the submissions a campaign recorded (resume, status). Every task runs the same
pull worker (``jobs.worker.WorkerTask``): it claims the next pending trial of its GPU type until
none is left; the database, not a task's outcome, says what is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from db import process
from db.errors import ConfigError
from jobs.worker import WorkerSpec, WorkerSummary

if TYPE_CHECKING:
    from campaign.config import CampaignConfig, GpuType, LauncherConfig
    from db.paths import CampaignPaths
    from jobs.settings import ProtocolConfig

@dataclasses.dataclass
class Submitted:
    """What a launcher reports back: where each GPU type's workers went."""

    launcher: str
    jobs: dict[str, list[str]]  # GPU type -> job ids (Slurm ids, Ray task ids, local worker ids)
    handles: dict[str, list[Any]] = dataclasses.field(default_factory=dict)  # GPU type -> Jobs / refs / specs
    # GPU type -> (scheduler id, tasks) per array / group submitted: what the submission table records
    arrays: dict[str, list[tuple[str, int]]] = dataclasses.field(default_factory=dict)

    def add(self, gpu_type: str, ids: Sequence[str], handles: Sequence[Any],
            arrays: Sequence[tuple[str, int]] | None = None) -> None:
        self.jobs.setdefault(gpu_type, []).extend(ids)
        self.handles.setdefault(gpu_type, []).extend(handles)
        self.arrays.setdefault(gpu_type, []).extend(arrays if arrays is not None else [(str(i), 1) for i in ids])

    def all_handles(self) -> list[Any]:
        return [h for hs in self.handles.values() for h in hs]


class Launcher(Protocol):
    """Where worker tasks run. Constructed from ``(CampaignConfig, CampaignPaths)``."""

    name: str
    in_process: bool  # the workers run in this process, inside ``wait`` (no job ids worth showing)
    must_follow: bool  # the work runs (or survives) only while this process waits for it
    time_limited: bool  # its tasks have a wall-time limit (workers stop before it)

    def preflight(self, gpu_types: Sequence[str]) -> None:
        """Everything checkable before anything is recorded; ConfigError with one line."""
        ...

    def submit(self, specs: Mapping[str, Sequence[WorkerSpec]]) -> Submitted:
        """Hand out one task per spec (GPU type -> specs)."""
        ...

    def wait(self, submitted: Submitted) -> list[WorkerSummary]:
        """Block until every task has ended; the summaries of those that reported one (a failed
        or cancelled task has none: its trials stay unfinished, for resume)."""
        ...

    def cancel(self, submitted: Submitted) -> None:
        """Stop the submission's tasks (queued ones never start)."""
        ...

    def active(self, submitted: Submitted) -> dict[str, int]:
        """Tasks queued or running now, per GPU type (GPU types without any are left out)."""
        ...

    def live_workers(self, submissions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]] | None:
        """Of the recorded submissions (``db.submissions``), the worker tasks the scheduler still
        holds, per GPU type: ``{"queued": n, "running": n}``; None when it does not answer."""
        ...

    def ended_jobs(self, jobs: Iterable[str]) -> dict[str, str]:
        """Of the scheduler job ids running attempts recorded, those the scheduler says have
        ended (killed, cancelled, timed out, node failed), each with its state in words; ids it
        cannot tell about are left out."""
        ...


def close_ended(store: Any, campaign_id: int, launcher_name: str,
                ended_jobs: Callable[[Iterable[str]], Mapping[str, str]]) -> int:
    """Close as stale every running attempt of the campaign whose scheduler job ``ended_jobs``
    says has ended (with the scheduler's word), or whose worker process on this machine has
    ended (``db.process``: a launch or worker killed outright, a machine restarted; where no
    scheduler can tell), their trials back to pending. Returns how many."""
    attempts = store.running_attempts(campaign_id)
    if not attempts:
        return 0
    jobs = {str(a["scheduler_job"]) for a in attempts if a["scheduler_job"]}
    ended = ended_jobs(jobs) if jobs else {}
    n = 0
    for a in attempts:
        state = ended.get(str(a["scheduler_job"])) if a["scheduler_job"] else None
        if state is not None:
            reason = f"stale: its {launcher_name} job {a['scheduler_job']} ended ({state})"
        elif a.get("process") and process.alive(a["process"]) is False:
            reason = f"stale: its worker process ({process.describe(a['process'])}) has ended"
        else:
            continue
        n += store.close_dead(a["run_id"], a["trial_id"], reason)
    return n


def live_total(live: Mapping[str, Mapping[str, int]] | None) -> dict[str, int]:
    """Queued + running workers per GPU type."""
    return {g: int(c.get("queued", 0)) + int(c.get("running", 0)) for g, c in (live or {}).items()}


def wait_all(handles: Iterable[Any], get: Callable[[Any], object],
             collect: Callable[[Any], object] | None = None) -> None:
    """Block until every submitted task has ended (``get`` waits for one and returns its result,
    passed to ``collect``). A task that failed or was cancelled raises in ``get``; that is not an
    error here: its trials stay unfinished, and resume picks them up."""
    for handle in handles:
        try:
            result = get(handle)
        except Exception:  # the database, not the task's outcome, says what is done
            continue
        if collect is not None:
            collect(result)


def summaries(handles: Iterable[Any], get: Callable[[Any], object]) -> list[WorkerSummary]:
    """``wait_all``, keeping the worker summaries the tasks returned."""
    out: list[object] = []
    wait_all(handles, get, out.append)
    return [s for s in out if isinstance(s, WorkerSummary)]


def count_active(submitted: Submitted, is_active: Callable[[Any], bool]) -> dict[str, int]:
    """Per GPU type, how many handles ``is_active`` (GPU types with none are left out)."""
    counts = {g: sum(1 for h in hs if is_active(h)) for g, hs in submitted.handles.items()}
    return {g: n for g, n in counts.items() if n}


def gpu_of(gpus: Mapping[str, GpuType], gpu_type: str) -> GpuType:
    """The GPU type called ``gpu_type``; ConfigError naming the known ones."""
    if gpu_type not in gpus:
        raise ConfigError(f"unknown GPU type {gpu_type!r} (allowed: {', '.join(gpus)}; add conf/gpu/{gpu_type}.yaml)")
    return gpus[gpu_type]


def trial_seconds(epochs: int, gpu: GpuType, protocol: ProtocolConfig) -> float:
    """Rough wall time of one trial on a GPU type, the configured estimate a worker's
    deadline decision uses until trials of that budget are measured (not a measurement)."""
    return protocol.idle_s + protocol.cooldown_s + epochs * float(gpu.epoch_s_estimate or 60)


def time_limit_min(launcher: LauncherConfig, gpu: GpuType) -> float:
    """A task's time limit in minutes: the GPU type's ``slurm.timeout_min``, else the launcher's
    (the limit Slurm is asked for, and the deadline its workers stop before)."""
    return gpu.slurm.timeout_min or launcher.timeout_min


def signal_lead_s(limit_min: float) -> int:
    """Seconds before a task's time limit that Slurm sends USR2 (``--signal``): 90, less for
    limits under 6 minutes (15 s per minute of limit, at least 5)."""
    return int(min(90, max(5, 15 * limit_min)))


def trial_estimates(cfg: CampaignConfig, gpu: GpuType) -> dict[int, float]:
    """Configured seconds of one trial per epoch budget of the campaign (``trial_seconds``)."""
    return {int(e): trial_seconds(int(e), gpu, cfg.protocol) for e in cfg.epochs}


def workers_needed(pending: Mapping[str, int], live: Mapping[str, int], max_workers: int,
                   one_each: bool = False) -> dict[str, int]:
    """Worker tasks to submit per GPU type: enough for ``min(max_workers, pending trials)`` once
    the ``live`` ones (queued or running) are counted (``one_each``: at most one per GPU type, for
    a launcher that runs its tasks one after another). GPU types needing none are left out."""
    out = {}
    for gpu_type, n in pending.items():
        want = min(max_workers, n, 1 if one_each else n)
        extra = want - int(live.get(gpu_type, 0))
        if extra > 0:
            out[gpu_type] = extra
    return out


def worker_specs(
    cfg: CampaignConfig,
    gpus: Mapping[str, GpuType],
    paths: CampaignPaths,
    db_url: str,
    workers: Mapping[str, int],
    submissions: Mapping[str, int],
    max_failures: int,
    time_limited: bool = False,
) -> dict[str, list[WorkerSpec]]:
    """``workers[g]`` pull workers per GPU type ``g``, each claiming the next pending trial of its
    GPU type until none is left (or, ``time_limited``, until the next would not end before its
    allocation does). Worker ids name the submission (``submissions[g]``, its number per GPU
    type) and the task, and survive requeues."""
    out: dict[str, list[WorkerSpec]] = {}
    campaign = paths.name
    plain = cfg.to_dict()  # the trial settings this launch runs with, as the workers read them
    settings = {k: plain[k] for k in ("device", "dataset", "network", "recipe", "protocol", "meter")}
    for gpu_type, n in workers.items():
        gpu = gpu_of(gpus, gpu_type)
        seq = int(submissions.get(gpu_type, 0))
        limit_s = 60.0 * time_limit_min(cfg.launcher, gpu) if time_limited else None
        # kept free before the end: Slurm's USR2 comes signal_lead_s before it (submitit requeues on it)
        margin_s = signal_lead_s(limit_s / 60.0) + 5.0 if limit_s else 10.0
        out[gpu_type] = [
            WorkerSpec(db_url=db_url, campaign=campaign, gpu_type=gpu_type, root=str(paths.root),
                       worker_id=f"{campaign}/{gpu_type}/s{seq}-{i}", max_failures=max_failures, settings=settings,
                       time_limit_s=limit_s, deadline_margin_s=margin_s, estimate_s=trial_estimates(cfg, gpu),
                       submission=seq)
            for i in range(int(n))
        ]
    return out
