"""The workload port: what a trial of a measurement campaign runs.

A workload says what a trial's spec is (a plain, JSON-ready dict stored with the trial), how its
identity is formed (the fields that enter the trial key), how it is planned from the configuration
(a sweep expanded into planned trials), how it runs under the meters (a setup part, then the
measured phases, tagged through ``TrialContext.mark``) and what it records (the run's figures, and
rows for its own tables). Everything around that (the claim, the idle baseline, the cool-down, the
summary of the trace, the result file, ingestion, resume) is the workload-agnostic frame
(``jobs.workloads.runner``, and the worker).

Implementations: ``training.TrainingWorkload`` (NAS-Bench-101 training, today's trials) and
``layers.LayerWorkload`` (forward passes of single layers and whole models).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from db.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class PlannedTrial:
    """One configuration of a sweep, before it is crossed with GPU types and seeds.

    ``spec``: what the worker needs to run it (stored with the trial as JSON); ``identity``: the
    fields of it that change the measurement (they enter the trial key); ``label``: a short name
    for displays; ``params`` and ``flops``: the trial table's size columns (forward FLOPs per
    input item); ``arch``: an architecture row where the trial trains a NAS-Bench-101 cell."""

    spec: Mapping[str, Any]
    identity: Mapping[str, Any]
    label: str
    params: int = 0
    flops: int = 0
    epochs: int = 0
    arch: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class KeyedTrial:
    """A planned trial crossed with a GPU type and a seed, with its key and its place in the order."""

    trial_key: str
    planned: PlannedTrial
    gpu_type: str
    seed: int
    order_index: int


@dataclasses.dataclass(frozen=True)
class WorkloadTrial:
    """What the frame hands a workload about the claimed trial (a ``db.store.ClaimedTrial`` gives it)."""

    trial_key: str
    attempt: int
    seed: int
    spec: Mapping[str, Any]
    epochs: int = 0


@dataclasses.dataclass
class TrialContext:
    """The running trial as a workload sees it: the trial, the measurement settings
    (``jobs.settings.TrialSettings``), the torch device, ``mark(phase, index)`` (tags every
    meter's samples; the index is the trace's ``epoch`` column) and ``abandoned()`` (the database
    no longer lists the attempt as running: stop at the next step)."""

    trial: WorkloadTrial
    settings: Any
    device: str
    mark: Callable[[str, int | None], None]
    abandoned: Callable[[], bool] = lambda: False
    data: Any = None


class Workload(Protocol):
    """One kind of trial. ``name`` is stored with each trial (``trial.workload``); ``tables``
    names the tables its ``records`` fill (besides run, run_phase and trace_sample)."""

    name: str
    tables: tuple[str, ...]

    def plan(self, config: Mapping[str, Any]) -> list[PlannedTrial]:
        """The campaign's configurations from its plain configuration (``CampaignConfig.to_dict()``);
        ConfigError (one line) on a bad spec, before anything is recorded."""
        ...

    def trial_key(self, planned: PlannedTrial, gpu_type: str, seed: int, measurement: Mapping[str, Any]) -> str:
        """The trial's stable identity (sha256 over canonical JSON of exactly what changes it)."""
        ...

    def prepare(self, ctx: TrialContext) -> Any:
        """The trial's one-off work, in the setup phase (build, move to the device, allocate)."""
        ...

    def execute(self, prepared: Any, ctx: TrialContext) -> Any:
        """The measured part: marks its phases (train / eval, with an index) and returns its outcome."""
        ...

    def figures(self, summary: Mapping[str, Any], outcome: Any, ctx: TrialContext) -> dict[str, Any]:
        """``db.records.RunResult`` fields of a finished trial from the trace summary
        (``jobs.protocol.summarise``) and the outcome."""
        ...

    def records(self, summary: Mapping[str, Any], outcome: Any, ctx: TrialContext,
                samples: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
        """Rows for the workload's own tables, by table name (plain values, JSON-ready)."""
        ...


def digest(payload: Mapping[str, Any]) -> str:
    """sha256 over canonical JSON, 32 hex digits: the form of every trial key."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def expand(workload: Workload, planned: Sequence[PlannedTrial], gpus: Sequence[str], seeds: int,
           order_seed: int, measurement: Mapping[str, Any], first_seed: int = 0) -> list[KeyedTrial]:
    """Planned trials x GPU types x seeds (``first_seed`` .. ``first_seed + seeds - 1``), keyed, in a
    seeded random order (sorted by it)."""
    combos = [(p, str(g), s) for p in planned for g in gpus for s in range(first_seed, first_seed + seeds)]
    order = list(range(len(combos)))
    random.Random(order_seed).shuffle(order)
    trials = [KeyedTrial(workload.trial_key(p, g, s, measurement), p, g, s, order[i])
              for i, (p, g, s) in enumerate(combos)]
    if len({t.trial_key for t in trials}) != len(trials):
        raise ConfigError("the sweep lists the same configuration twice; give each one once")
    return sorted(trials, key=lambda t: t.order_index)
