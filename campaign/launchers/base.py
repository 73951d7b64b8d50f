"""The launcher port, and what every launcher shares: sizing worker chunks, and the worker specs
sent to them.

A launcher (local, Slurm, Ray; one file each, registered in ``campaign.launchers``) is small,
like submitit's ``Executor``: ``preflight`` checks before anything is recorded, ``submit`` hands
worker specs out, ``wait`` blocks until every task has ended, ``cancel`` stops them and
``active`` counts those still queued or running. Every task runs the same worker
(``jobs.worker.WorkerTask``); the database, not a task's outcome, says what is done.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from db.errors import ConfigError
from jobs.worker import WorkerSpec, WorkerSummary

if TYPE_CHECKING:
    from campaign.config import CampaignConfig, GpuType, LauncherConfig
    from db.paths import CampaignPaths
    from jobs.settings import ProtocolConfig

MAX_TASKS = 64


@dataclasses.dataclass
class Submitted:
    """What a launcher reports back: where each GPU type's workers went."""

    launcher: str
    jobs: dict[str, list[str]]  # GPU type -> job ids (Slurm ids, Ray task ids, local worker ids)
    handles: dict[str, list[Any]] = dataclasses.field(default_factory=dict)  # GPU type -> Jobs / refs / specs

    def add(self, gpu_type: str, ids: Sequence[str], handles: Sequence[Any]) -> None:
        self.jobs[gpu_type] = list(ids)
        self.handles[gpu_type] = list(handles)

    def all_handles(self) -> list[Any]:
        return [h for hs in self.handles.values() for h in hs]


class Launcher(Protocol):
    """Where worker tasks run. Constructed from ``(CampaignConfig, CampaignPaths)``."""

    name: str
    in_process: bool  # the workers run in this process, inside ``wait`` (no job ids worth showing)
    must_follow: bool  # the work runs (or survives) only while this process waits for it

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
    """Rough wall time of one trial on a GPU type, for sizing chunks (not a measurement)."""
    return protocol.idle_s + protocol.cooldown_s + epochs * float(gpu.epoch_s_estimate or 60)


def chunk(
    trials: Sequence[tuple[str, float]],
    time_limit_s: float,
    warmup_s: float,
    chunk_size: int = 0,
    max_tasks: int = MAX_TASKS,
) -> list[list[str]]:
    """Split (trial key, estimated seconds) in run order into worker chunks.

    With ``chunk_size`` > 0, chunks of that many trials. Otherwise each chunk is filled up to
    90 % of the time limit (after the warm-up), and when that would need more than
    ``max_tasks`` tasks the trials are spread evenly over ``max_tasks`` instead (a worker that
    runs past its limit is requeued and continues). Order within a chunk is run order."""
    keys = [k for k, _ in trials]
    if not keys:
        return []
    if chunk_size > 0:
        return [keys[i : i + chunk_size] for i in range(0, len(keys), chunk_size)]
    budget = max(1.0, 0.9 * time_limit_s - warmup_s)
    chunks: list[list[str]] = [[]]
    used = 0.0
    for key, seconds in trials:
        if chunks[-1] and used + seconds > budget:
            chunks.append([])
            used = 0.0
        chunks[-1].append(key)
        used += seconds
    if len(chunks) > max_tasks:
        size = math.ceil(len(keys) / max_tasks)
        chunks = [keys[i : i + size] for i in range(0, len(keys), size)]
    return chunks


def time_limit_min(launcher: LauncherConfig, gpu: GpuType) -> float:
    """A task's time limit in minutes: the GPU type's ``slurm.timeout_min``, else the launcher's
    (the limit Slurm is asked for, and the budget chunks are sized to)."""
    return gpu.slurm.timeout_min or launcher.timeout_min


def worker_specs(
    cfg: CampaignConfig,
    gpus: Mapping[str, GpuType],
    paths: CampaignPaths,
    db_url: str,
    submit: Mapping[str, Sequence[str]],
    epochs_of: Mapping[str, int],
    max_failures: int,
) -> dict[str, list[WorkerSpec]]:
    """One WorkerSpec per chunk, per GPU type, each with a worker id that survives requeues."""
    out: dict[str, list[WorkerSpec]] = {}
    tag = uuid.uuid4().hex[:6]
    campaign = paths.name
    plain = cfg.to_dict()  # the trial settings this launch runs with, as the workers read them
    settings = {k: plain[k] for k in ("device", "dataset", "network", "recipe", "protocol", "meter")}
    for gpu_type, keys in submit.items():
        gpu = gpu_of(gpus, gpu_type)
        est = [(k, trial_seconds(epochs_of[k], gpu, cfg.protocol)) for k in keys]
        chunks = chunk(est, 60.0 * time_limit_min(cfg.launcher, gpu), cfg.protocol.warmup_s, cfg.launcher.chunk_size)
        out[gpu_type] = [
            WorkerSpec(db_url=db_url, campaign=campaign, gpu_type=gpu_type, root=str(paths.root), keys=c,
                       worker_id=f"{campaign}/{gpu_type}/{tag}-{i}", max_failures=max_failures, settings=settings)
            for i, c in enumerate(chunks)
        ]
    return out
