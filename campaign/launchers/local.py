"""The local launcher: the same worker tasks as Slurm and Ray, run here, in this process, one after
another (as submitit's debug executor does). ``submit`` only records them; ``wait`` runs them."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from campaign.launchers.base import Submitted, count_active, gpu_of
from db.errors import CampaignError, ConfigError
from jobs.settings import Device
from jobs.worker import WorkerSpec, WorkerSummary, WorkerTask

if TYPE_CHECKING:
    from campaign.config import CampaignConfig
    from db.paths import CampaignPaths

log = logging.getLogger(__name__)


class LocalLauncher:
    name = "local"
    in_process = True
    must_follow = True  # the work happens inside ``wait``
    time_limited = False

    def __init__(self, cfg: CampaignConfig, paths: CampaignPaths) -> None:
        from campaign.config import gpu_types

        self.device = cfg.device
        self.gpus = gpu_types()

    def preflight(self, gpu_types: Sequence[str]) -> None:
        """A GPU type other than ``cpu``, or ``device=cuda``, needs a GPU torch can see here."""
        for g in gpu_types:
            gpu_of(self.gpus, g)
        wants_gpu = [g for g in gpu_types if g != "cpu"]
        if not wants_gpu and self.device != Device.cuda:
            return
        import torch

        if not torch.cuda.is_available():
            what = f"GPU type {wants_gpu[0]!r}" if wants_gpu else "device=cuda"
            raise ConfigError(
                f"{what} needs a GPU but none is visible here (torch.cuda.is_available() is False); "
                "use gpus=[cpu] for a local run, or launcher=slurm / launcher=ray to run on GPU nodes"
            )

    def submit(self, specs: Mapping[str, Sequence[WorkerSpec]]) -> Submitted:
        """Record the specs; nothing runs until ``wait``."""
        out = Submitted(self.name, {})
        for gpu_type, worker_specs in specs.items():
            if worker_specs:
                out.add(gpu_type, [s.worker_id or "local" for s in worker_specs], [_Task(s) for s in worker_specs])
        return out

    def wait(self, submitted: Submitted) -> list[WorkerSummary]:
        """Run every recorded task here, one by one, unless cancelled before its turn. A
        ``CampaignError`` (a bad recorded setting, the database gone for good) is raised, with
        its one line, as the command would; any other failure is logged and the next task runs."""
        summaries = []
        for task in submitted.all_handles():
            if task.state != "queued":
                continue
            task.state = "running"
            try:
                summaries.append(WorkerTask(task.spec)())
            except CampaignError:  # the user's or the environment's: one line from the command
                raise
            except Exception:  # as a failed Slurm or Ray task: no summary, trials left for resume
                log.exception("worker %s ended without a summary", task.spec.worker_id)
            finally:
                task.state = "ended"
        return summaries

    def cancel(self, submitted: Submitted) -> None:
        """Drop the tasks not started yet, and let the running one claim no further trial (its
        key list emptied: the worker reads it before each claim). The trial it runs now goes on
        until the database says its attempt is cancelled (``ResultStore.cancel_runs``, seen at
        the next heartbeat) or this process ends."""
        for task in submitted.all_handles():
            if task.state == "queued":
                task.state = "ended"
            elif task.state == "running":
                task.spec.keys = []

    def active(self, submitted: Submitted) -> dict[str, int]:
        """Tasks not run to their end yet (queued, or running inside ``wait``)."""
        return count_active(submitted, lambda task: task.state != "ended")

    def live_workers(self, submissions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]] | None:
        """None: local tasks run inside the command that submitted them, and end with it."""
        return {}

    def ended_jobs(self, jobs: Iterable[str]) -> dict[str, str]:
        return {}


@dataclasses.dataclass
class _Task:
    """One recorded worker task: queued, running (inside ``wait``) or ended (ran or dropped)."""

    spec: WorkerSpec
    state: str = "queued"
