"""The first workload: NAS-Bench-101 training (today's trials), as a thin adapter over
``jobs.cell``, ``jobs.network`` and ``jobs.train``, which it does not change.

Its trial keys are exactly those ``campaign.plan.trial_key`` gives (existing campaigns keep their
keys): sha256 over ``{"arch", "epochs", "gpu", "seed", "m"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from db.errors import ConfigError
from db.records import EpochRecord
from jobs.workloads.base import PlannedTrial, TrialContext, digest

NAME = "nasbench101"


class TrainingWorkload:
    """NAS-Bench-101 cells trained for an epoch budget (spec: ``{matrix, ops, epochs}``)."""

    name = NAME
    tables: tuple[str, ...] = ("epoch", "carbontracker_run", "carbontracker_epoch")

    def plan(self, config: Mapping[str, Any]) -> list[PlannedTrial]:
        """Architectures (pruned, deduplicated by hash, configured order) x epoch budgets."""
        from jobs.cell import CellSpec, CellSpecError, load_specs, sample_specs
        from jobs.network import NetworkConfig, count_flops, count_params

        arch = dict(config.get("architectures") or {})
        source = str(arch.get("source", "list"))
        try:
            if source == "list":
                specs = []
                for i, d in enumerate(arch.get("specs") or []):
                    if not isinstance(d, Mapping) or "matrix" not in d or "ops" not in d:
                        raise ConfigError(f"architectures.specs[{i}] must be a mapping with 'matrix' and 'ops', got {d!r}")
                    try:
                        specs.append(CellSpec.create(d["matrix"], d["ops"]))
                    except CellSpecError as exc:
                        raise ConfigError(f"architectures.specs[{i}]: {exc}") from exc
            elif source == "sample":
                specs = sample_specs(int(arch.get("n", 0)), seed=int(arch.get("seed", 0)))
            elif source == "file":
                path = Path(str(arch.get("file"))).expanduser()
                if not path.is_file():
                    raise ConfigError(f"architectures.file={str(path)!r} does not exist (a JSON or YAML list of {{matrix, ops}})")
                specs = load_specs(path)
            else:
                raise ConfigError(f"architectures.source={source!r} is not planned by this workload (list, sample, file)")
        except CellSpecError as exc:
            raise ConfigError(str(exc)) from exc
        net = NetworkConfig(**dict(config.get("network") or {}))
        out: list[PlannedTrial] = []
        seen: set[str] = set()
        for spec in specs:
            h = spec.arch_hash
            if h in seen:
                continue
            seen.add(h)
            d = spec.to_dict()
            row = {"arch_hash": h, "matrix": d["matrix"], "ops": d["ops"], "num_vertices": spec.num_vertices,
                   "num_edges": spec.num_edges}
            params, flops = count_params(spec, net), count_flops(spec, net)
            for e in config.get("epochs") or ():
                out.append(PlannedTrial(spec={"matrix": d["matrix"], "ops": d["ops"], "epochs": int(e)},
                                        identity={"arch": h, "epochs": int(e)}, label=f"{h[:8]}/{int(e)}ep",
                                        params=params, flops=flops, epochs=int(e), arch=row))
        return out

    def trial_key(self, planned: PlannedTrial, gpu_type: str, seed: int, measurement: Mapping[str, Any]) -> str:
        """``campaign.plan.trial_key`` (the same payload, the same hash)."""
        return digest({"arch": planned.identity["arch"], "epochs": planned.identity["epochs"], "gpu": gpu_type,
                       "seed": seed, "m": dict(measurement)})

    def prepare(self, ctx: TrialContext) -> Any:
        from jobs import train
        from jobs.cell import CellSpec

        s = ctx.settings
        return train.prepare_training(CellSpec.create(ctx.trial.spec["matrix"], ctx.trial.spec["ops"]), s.network,
                                      s.recipe, ctx.data, epochs=ctx.trial.epochs, seed=ctx.trial.seed,
                                      device=ctx.device)

    def execute(self, prepared: Any, ctx: TrialContext) -> Any:
        from jobs import train

        def on_step() -> None:
            if ctx.abandoned():
                raise RuntimeError("attempt abandoned: the database declared it stale or cancelled")

        return train.run_training(prepared, mark=ctx.mark, on_step=on_step)

    def figures(self, summary: Mapping[str, Any], outcome: Any, ctx: TrialContext) -> dict[str, Any]:
        """The run's training figures (``training_figures``)."""
        return training_figures(summary, outcome, int(len(ctx.data.y_train)) if ctx.data is not None else None)

    def records(self, summary: Mapping[str, Any], outcome: Any, ctx: TrialContext,
                samples: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
        """Training's own rows (epochs) travel in the run's figures; nothing else."""
        return {}


def training_figures(summary: Mapping[str, Any], outcome: Any, train_images: int | None) -> dict[str, Any]:
    """The run's training figures: energy with its method and uncertainty, above idle, per epoch."""
    run = summary["run"]
    per_epoch = summary["epoch_figures"]
    return dict(
        energy_j=run["energy_j"], energy_above_idle_j=run["energy_above_idle_j"],
        energy_uncertainty_j=run["energy_uncertainty_j"], error_basis=run["error_basis"],
        counter_energy_j=run["counter_energy_j"], integrated_energy_j=run["integrated_energy_j"],
        energy_disagreement=run["energy_disagreement"],
        duration_s=sum(e.duration_s for e in outcome.epochs),
        valid_accuracy=outcome.valid_accuracy, test_accuracy=outcome.test_accuracy,
        train_images_per_s=outcome.train_images_per_s, train_images=train_images,
        epochs=tuple(
            EpochRecord(epoch=e.epoch, duration_s=e.duration_s, energy_j=summary["epochs"].get(e.epoch, 0.0),
                        mean_power_w=(summary["epochs"].get(e.epoch, 0.0) / e.duration_s
                                      if e.duration_s > 0 else None),
                        train_loss=e.train_loss, train_accuracy=e.train_accuracy, valid_accuracy=e.valid_accuracy,
                        energy_above_idle_j=per_epoch.get(e.epoch, {}).get("energy_above_idle_j"),
                        uncertainty_j=per_epoch.get(e.epoch, {}).get("uncertainty_j"))
            for e in outcome.epochs),
    )  # fmt: skip
