"""What every launcher shares: sizing worker chunks, and the worker specs sent to them."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from jobs.worker import WorkerSpec

MAX_TASKS = 64


@dataclasses.dataclass
class Submitted:
    """What a launcher reports back: where each GPU type's workers went."""

    launcher: str
    jobs: dict[str, list[str]]  # GPU type -> job ids (Slurm ids, Ray object refs, "local")
    handles: list[Any] = dataclasses.field(default_factory=list)  # submitit Jobs / Ray refs


def wait_all(handles: Sequence[Any], get: Callable[[Any], object]) -> None:
    """Block until every submitted task has ended (``get`` waits for one). A task that failed or
    was cancelled raises in ``get``; that is not an error here: its trials stay unfinished, and
    resume picks them up."""
    for handle in handles:
        try:
            get(handle)
        except Exception:  # the database, not the task's outcome, says what is done
            continue


def trial_seconds(epochs: int, gpu: dict[str, Any], protocol: dict[str, Any]) -> float:
    """Rough wall time of one trial on a GPU type, for sizing chunks (not a measurement)."""
    return protocol["idle_s"] + protocol["cooldown_s"] + epochs * float(gpu.get("epoch_s_estimate") or 60)


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


def time_limit_min(launcher: dict[str, Any], gpu: dict[str, Any]) -> float:
    """A task's time limit in minutes: the GPU type's ``slurm.timeout_min``, else the launcher's
    (the limit Slurm is asked for, and the budget chunks are sized to)."""
    return (gpu.get("slurm") or {}).get("timeout_min") or launcher["timeout_min"]


def worker_specs(
    cfg: dict[str, Any],
    gpus: dict[str, dict[str, Any]],
    campaign: str,
    root: str,
    db_url: str,
    submit: dict[str, list[str]],
    epochs_of: dict[str, int],
    max_failures: int,
) -> dict[str, list[WorkerSpec]]:
    """One WorkerSpec per chunk, per GPU type, each with a worker id that survives requeues."""
    launcher = cfg["launcher"]
    out: dict[str, list[WorkerSpec]] = {}
    tag = uuid.uuid4().hex[:6]
    for gpu_type, keys in submit.items():
        gpu = gpus[gpu_type]
        est = [(k, trial_seconds(epochs_of[k], gpu, cfg["protocol"])) for k in keys]
        chunks = chunk(est, 60.0 * time_limit_min(launcher, gpu), cfg["protocol"]["warmup_s"], launcher["chunk_size"])
        out[gpu_type] = [
            WorkerSpec(db_url=db_url, campaign=campaign, gpu_type=gpu_type, root=root, keys=c,
                       worker_id=f"{campaign}/{gpu_type}/{tag}-{i}", max_failures=max_failures)
            for i, c in enumerate(chunks)
        ]
    return out
