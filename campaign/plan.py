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
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

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
    arch_hash: str | None  # None: a trial of a workload that trains no cell
    epochs: int
    gpu_type: str
    seed: int
    order_index: int
    workload: str = "nasbench101"
    spec: dict[str, Any] | None = None  # the workload's spec, stored with the trial (other workloads)
    params: int | None = None  # other workloads: the configuration's size (a cell's comes from its ArchPlan)
    flops: int | None = None
    label: str | None = None


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


def measurement_json(measurement: dict[str, Any]) -> str:
    """The measurement fields as the canonical JSON that enters every trial key."""
    return json.dumps(measurement, sort_keys=True, separators=(",", ":"))


class TrialKeys:
    """Trial keys for one measurement, its JSON serialised once: ``keys(arch, epochs, gpu, seed)``
    equals ``trial_key(arch, epochs, gpu, seed, measurement)`` byte for byte (the payload's keys
    in sorted order are arch, epochs, gpu, m, seed, so the digest state up to the measurement is
    shared by a trial's seeds)."""

    def __init__(self, measurement: dict[str, Any]) -> None:
        self._m = (',"m":' + measurement_json(measurement) + ',"seed":').encode()

    def __call__(self, arch_hash: str, epochs: int, gpu_type: str, seed: int) -> str:
        return self.seeds(arch_hash, epochs, gpu_type, (seed,))[0]

    def seeds(self, arch_hash: str, epochs: int, gpu_type: str, seeds: Iterable[int]) -> list[str]:
        """The keys of one (architecture, epochs, GPU type) with each of ``seeds``."""
        digest = hashlib.sha256(
            ('{"arch":' + json.dumps(arch_hash) + ',"epochs":' + str(int(epochs))
             + ',"gpu":' + json.dumps(gpu_type)).encode()
        )
        digest.update(self._m)
        out = []
        for seed in seeds:
            d = digest.copy()
            d.update(b"%d}" % seed)
            out.append(d.hexdigest()[:32])
        return out


def trial_key(arch_hash: str, epochs: int, gpu_type: str, seed: int, measurement: dict[str, Any]) -> str:
    """A trial's stable identity: sha256 over canonical JSON of the fields that change it."""
    payload = {"arch": arch_hash, "epochs": epochs, "gpu": gpu_type, "seed": seed, "m": measurement}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# source=sample in NAS-Bench-101's whole space (7 vertices, 9 edges) draws up to this many cells
# with jobs.cell.sample_specs, as before (the same seed gives the same cells); more, or a smaller
# space, are drawn without replacement from the enumerated space (jobs.space), which never turns
# into a coupon collector near the whole space.
SAMPLE_DRAW_LIMIT = 20_000


def resolve_architectures(cfg: CampaignConfig) -> list[ArchPlan]:
    """The campaign's cells (pruned, deduplicated by hash, in the configured order), with their
    parameter count and FLOPs under the configured network. Raises ConfigError on a bad spec.

    ``source=all`` enumerates every cell with at most ``architectures.max_vertices`` vertices and
    ``max_edges`` edges (``jobs.space``; 423,624 for 7 and 9); ``source=sample`` draws
    ``architectures.n`` distinct cells of that space with ``architectures.seed`` (see
    :data:`SAMPLE_DRAW_LIMIT`)."""
    from jobs.cell import CellSpec, CellSpecError, load_specs, sample_specs
    from jobs.network import count_params_flops

    arch = cfg.architectures
    arch.check()
    if arch.source == ArchSource.all or (arch.source == ArchSource.sample and not _draws(cfg)):
        return _from_space(cfg)
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
        params, flops = count_params_flops(spec, net)
        seen[h] = ArchPlan(h, d["matrix"], d["ops"], spec.num_vertices, spec.num_edges, params, flops)
    return list(seen.values())


def _draws(cfg: CampaignConfig) -> bool:
    """Whether source=sample draws with jobs.cell.sample_specs (the way it always has)."""
    from jobs.cell import MAX_EDGES, MAX_VERTICES

    arch = cfg.architectures
    return (arch.max_vertices, arch.max_edges) == (MAX_VERTICES, MAX_EDGES) and arch.n <= SAMPLE_DRAW_LIMIT


def _from_space(cfg: CampaignConfig) -> list[ArchPlan]:
    """source=all: the whole enumerated space; source=sample beyond the draw limit or in a smaller
    space: n of its cells without replacement (a seeded ``random.sample`` of the enumeration)."""
    from jobs.cell import INPUT, OPS, OUTPUT
    from jobs.space import cell_space

    arch = cfg.architectures
    space = cell_space(arch.max_vertices, arch.max_edges)
    if arch.source == ArchSource.sample:
        if arch.n > len(space):
            raise ConfigError(
                f"architectures.n={arch.n} exceeds the {len(space)} distinct cells with at most "
                f"{arch.max_vertices} vertices and {arch.max_edges} edges (use source=all for all of them)")
        picked = random.Random(arch.seed).sample(range(len(space)), arch.n)
    else:
        picked = list(range(len(space)))
    params, flops = (c.tolist() for c in space.costs(cfg.network))
    # Columns as Python lists once; each graph's matrix as lists once (shared by its cells).
    graph_of, labels = space.graph_index.tolist(), space.labels.tolist()
    vertices, edges = space.num_vertices.tolist(), space.num_edges.tolist()
    matrices = [[list(row) for row in m] for m in space.graphs]
    names = list(OPS)
    out = []
    for i in picked:
        n = vertices[i]
        ops = [INPUT, *(names[x] for x in labels[i][: n - 2]), OUTPUT]
        out.append(ArchPlan(space.hashes[i], matrices[graph_of[i]], ops, n, edges[i], params[i], flops[i]))
    return out


def make_plan(cfg: CampaignConfig, archs: list[ArchPlan]) -> Plan:
    """Expand architectures x epoch budgets x GPU types x seeds into trials in a seeded random order."""
    keys = TrialKeys(measurement_fields(cfg))
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
    heads = [(a.arch_hash, int(e), str(g)) for a in archs for e in cfg.epochs for g in cfg.gpus]
    order = list(range(len(heads) * len(seeds)))
    random.Random(cfg.order_seed).shuffle(order)
    # the i-th combination (architecture, epochs, GPU type, seed) runs at place order[i]
    placed: list[TrialPlan | None] = [None] * len(order)
    places = iter(order)
    for h, e, g in heads:
        for s, key in zip(seeds, keys.seeds(h, e, g, seeds), strict=True):
            at = next(places)
            placed[at] = TrialPlan(key, h, e, g, s, at)
    trials = cast(list[TrialPlan], placed)
    if len({t.trial_key for t in trials}) != len(trials):  # only possible with duplicated list entries
        raise ConfigError("the sweep lists the same (epochs, gpu) twice; give each epoch budget and GPU type once")
    return Plan(archs=archs, trials=trials)


def plan_campaign(cfg: CampaignConfig) -> Plan:
    """The campaign's plan for its workload: NAS-Bench-101 training as ``make_plan``; any other
    workload through its port (``jobs.workloads``), keyed and ordered the same way."""
    if cfg.workload == "nasbench101":
        return make_plan(cfg, resolve_architectures(cfg))
    from jobs.workloads import workload
    from jobs.workloads.base import expand

    w = workload(cfg.workload)
    keyed = expand(w, w.plan(cfg.to_dict()), cfg.gpus, cfg.seeds, cfg.order_seed, measurement_fields(cfg),
                   first_seed=cfg.first_seed)
    return Plan(archs=[], trials=[
        TrialPlan(k.trial_key, None, 0, k.gpu_type, k.seed, k.order_index, workload=w.name,
                  spec=dict(k.planned.spec), params=k.planned.params, flops=k.planned.flops, label=k.planned.label)
        for k in keyed])
