"""The planner: a resolved config becomes architectures and trials with stable identities.

Pure functions over plain data (no database, no torch): identities are hashes of exactly the
fields that change a measurement, and the run order is a seeded shuffle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

from campaign.config import ArchSource, CampaignConfig
from db.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ArchPlan:
    arch_hash: str
    matrix: list[list[int]]
    ops: list[str]
    num_vertices: int
    num_edges: int
    params: int
    flops: int


@dataclasses.dataclass(frozen=True)
class TrialPlan:
    trial_key: str
    arch_hash: str
    epochs: int
    gpu_type: str
    seed: int
    order_index: int


@dataclasses.dataclass(frozen=True)
class Plan:
    archs: list[ArchPlan]
    trials: list[TrialPlan]

    def counts(self) -> Counter[tuple[str, int]]:
        """Trial count per (GPU type, epoch budget)."""
        return Counter((t.gpu_type, t.epochs) for t in self.trials)


# The parts of the config that change what a trial measures. Launch settings, the database,
# the campaign name and root do not: the same trial run elsewhere is the same measurement.
MEASUREMENT_KEYS = ("recipe", "network", "dataset", "protocol", "meter")


def measurement_fields(cfg: CampaignConfig) -> dict[str, Any]:
    """The config fields that enter every trial's identity."""
    plain = cfg.to_dict()
    fields = {k: plain[k] for k in MEASUREMENT_KEYS}
    fields["dataset"] = {k: v for k, v in plain["dataset"].items() if k not in ("root", "download")}
    fields["protocol"] = {k: v for k, v in plain["protocol"].items() if k != "heartbeat_s"}
    return fields


def trial_key(arch_hash: str, epochs: int, gpu_type: str, seed: int, measurement: dict[str, Any]) -> str:
    """A trial's stable identity: sha256 over canonical JSON of the fields that change it."""
    payload = {"arch": arch_hash, "epochs": epochs, "gpu": gpu_type, "seed": seed, "m": measurement}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def resolve_architectures(cfg: CampaignConfig) -> list[ArchPlan]:
    """The campaign's cells (pruned, deduplicated by hash, in the configured order), with their
    parameter count and FLOPs under the configured network. Raises ConfigError on a bad spec."""
    from jobs.cell import CellSpec, CellSpecError, load_specs, sample_specs
    from jobs.network import count_flops, count_params

    arch = cfg.architectures
    arch.check()
    try:
        if arch.source == ArchSource.list:
            specs = []
            for i, d in enumerate(arch.specs):
                if not isinstance(d, dict) or "matrix" not in d or "ops" not in d:
                    raise ConfigError(f"architectures.specs[{i}] must be a mapping with 'matrix' and 'ops', got {d!r}")
                try:
                    specs.append(CellSpec.create(d["matrix"], d["ops"]))
                except CellSpecError as exc:
                    raise ConfigError(f"architectures.specs[{i}]: {exc}") from exc
        elif arch.source == ArchSource.sample:
            specs = sample_specs(arch.n, seed=arch.seed)
        else:
            path = Path(str(arch.file)).expanduser()
            if not path.is_file():
                raise ConfigError(f"architectures.file={str(path)!r} does not exist (a JSON or YAML list of {{matrix, ops}})")
            specs = load_specs(path)
    except CellSpecError as exc:
        raise ConfigError(str(exc)) from exc
    net = cfg.network
    seen: dict[str, ArchPlan] = {}
    for spec in specs:
        h = spec.arch_hash
        if h in seen:
            continue
        d = spec.to_dict()
        seen[h] = ArchPlan(h, d["matrix"], d["ops"], spec.num_vertices, spec.num_edges,
                           count_params(spec, net), count_flops(spec, net))
    return list(seen.values())


def make_plan(cfg: CampaignConfig, archs: list[ArchPlan]) -> Plan:
    """Expand architectures x epoch budgets x GPU types x seeds into trials in a seeded random order."""
    measurement = measurement_fields(cfg)
    combos = [
        (a.arch_hash, int(e), str(g), s)
        for a in archs
        for e in cfg.epochs
        for g in cfg.gpus
        for s in range(cfg.seeds)
    ]
    order = list(range(len(combos)))
    random.Random(cfg.order_seed).shuffle(order)
    trials = [
        TrialPlan(trial_key(h, e, g, s, measurement), h, e, g, s, order[i])
        for i, (h, e, g, s) in enumerate(combos)
    ]
    keys = {t.trial_key for t in trials}
    if len(keys) != len(trials):  # only possible with duplicated list entries
        raise ConfigError("the sweep lists the same (epochs, gpu) twice; give each epoch budget and GPU type once")
    trials.sort(key=lambda t: t.order_index)
    return Plan(archs=archs, trials=trials)
