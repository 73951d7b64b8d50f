"""Every settings schema of the analysis: the ``analysis`` section of the configuration.

These dataclasses are what Hydra composes ``conf/analysis/`` against (the ``analysis`` field of the
campaign's structured config, turned into objects by ``OmegaConf.to_object``), so every default
is written here once, with its help beside it, and every field has a type OmegaConf can hold
(numbers, strings, booleans, optional ones, tuples, nested dataclasses, ``enum.StrEnum``).
Each range check stands beside its field in ``__post_init__`` and raises `AnalysisError`: one
line naming ``analysis.KEY``, the value and what is allowed.

The surrogate's recipe (`SurrogateConfig`, used by ``analysis.surrogate``), the Green Algorithms
inputs (`GreenAlgorithmsConfig`, used by ``analysis.estimators``) and Dunn's corrections
(`PAdjust`, used by ``analysis.stats``) live here too, extended by the report's own choices and
checks. Callers holding a plain mapping (a test, a recorded configuration) build the settings with
`AnalysisSettings.from_mapping`.

This module is light on purpose: the CLI composes the configuration for every command, so it
imports the standard library, ``db.errors`` and ``db.records`` only (OmegaConf inside
`AnalysisSettings.from_mapping`); the numerical libraries stay in the modules that compute.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from db.errors import ConfigError, enum_value
from db.records import WORLD_AVERAGE_G_PER_KWH

#: Smallest group a statistical test uses by default (Shapiro-Wilk's own minimum).
MIN_GROUP_SIZE = 3


class PAdjust(enum.StrEnum):
    """Dunn's p-value corrections (``analysis.stats.adjust_pvalues``); member names equal their values."""

    holm = "holm"  # step-down family-wise
    bonferroni = "bonferroni"
    fdr_bh = "fdr_bh"  # Benjamini-Hochberg false discovery rate
    none = "none"


@dataclass
class SurrogateConfig:
    """EC-NAS's recipe; every number of the surrogate (``analysis.surrogate``) lives here, written once.

    The ``analysis.surrogate`` settings (`SurrogateSettings`) extend this class, so its fields and
    defaults are also the configuration's schema: field types OmegaConf can hold, and lists (as
    OmegaConf builds them) turned into tuples here.
    """

    #: Widths of the hidden layers (GELU after each).
    hidden: tuple[int, ...] = (128, 64, 32, 32)
    learning_rate: float = 5e-3
    batch_size: int = 32
    epochs: int = 200
    #: Train / validation / test fractions (by architecture where groups are given).
    split: tuple[float, ...] = (0.7, 0.1, 0.2)
    seed: int = 0
    #: torch intra-op threads while training; None leaves torch's setting alone. One thread is
    #: fastest for this tiny MLP (thread hand-off costs more than the matmuls).
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        self.hidden = tuple(self.hidden)
        self.split = tuple(self.split)


@dataclass
class GreenAlgorithmsConfig:
    """Inputs of the Green Algorithms formula (``analysis.estimators``) other than the run's
    duration and GPU.

    Also the schema of the ``analysis.green_algorithms`` settings (`GreenAlgorithmsSettings`; not
    frozen: a composed configuration overrides fields in place).

    The defaults count only what the campaign measures, the GPU board's energy (PUE 1, no CPU
    cores, no memory); set ``pue`` (Green Algorithms' world average is 1.67), ``n_cpu_cores``,
    ``cpu_power_per_core_w`` and ``memory_gb`` to reproduce the calculator's full estimate.
    ``gpu_usage=None`` takes the run's measured mean utilization (``gpu_util_mean``, percent),
    or 1.0 where it is missing.
    """

    pue: float = 1.0
    n_cpu_cores: int = 0
    cpu_power_per_core_w: float = 12.0
    cpu_usage: float = 1.0
    n_gpus: int = 1
    gpu_usage: float | None = None
    memory_gb: float = 0.0
    psf: float = 1.0  # pragmatic scaling factor: identical runs counted


class EnergyTarget(enum.StrEnum):
    """``analysis.energy``: the energy the statistics, the estimators, the surrogate and the Pareto
    fronts compare (energy per image follows it); the carbon figures always use the total."""

    total = "total"  # everything the device drew during training and evaluation
    above_idle = "above_idle"  # energy - the trial's idle power x duration: the dynamic energy


class PowerKind(enum.StrEnum):
    """``analysis.power_source``: the one kind of power a report analyses (null: every run, refusing
    a mixture of simulated and measured power unless ``allow_mixed_sources``)."""

    measured = "measured"  # a hardware meter (db.views.MEASURED_SOURCES)
    simulated = "simulated"  # the simulated meter: no measurement of any device


class ImagesPerEpoch(enum.StrEnum):
    """``analysis.images_per_epoch``: the images an epoch counts in energy per image."""

    training = "training"  # the run's train_images: the training images seen once per epoch
    #: as processed, 003's convention: training and validation passes, each in whole batches
    #: (drop-remainder): floor(train / batch) x batch + floor(valid / batch) x batch.
    processed = "processed"


class AnalysisError(ConfigError):
    """The analysis cannot go on as configured; the one-line message says why and what to do."""


class SplitBy(enum.StrEnum):
    """Runs column whose groups the estimator comparison keeps on one side of its split."""

    arch_hash = "arch_hash"  # unseen architectures
    gpu_type = "gpu_type"  # unseen GPU types
    epochs = "epochs"  # unseen epoch budgets
    seed = "seed"
    host = "host"  # unseen machines


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    """Raise AnalysisError ``analysis.KEY=VALUE RULE`` unless ``ok``."""
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value
        raise AnalysisError(f"analysis.{key}={shown} {rule}")


def _member(kind: type[enum.StrEnum], key: str, value: Any) -> Any:
    """``value`` as a member of ``kind``; AnalysisError names the key, the value and the members."""
    return enum_value(kind, f"analysis.{key}", value, AnalysisError)


@dataclass
class SurrogateSettings(SurrogateConfig):
    """``analysis.surrogate``: EC-NAS's energy surrogate, one per GPU type. The recipe (hidden,
    learning_rate, batch_size, epochs, split, seed, num_threads) and its defaults are
    `SurrogateConfig`'s; the fields below are what the report does with it."""

    #: Fewer architectures (per GPU type): no held-out test split; the model is fit on every run
    #: to show the machinery and its metrics are reported as n/a.
    min_architectures: int = 10
    #: Initialisations per point of the learning curve.
    learning_curve_inits: int = 10
    #: Training-set sizes of the learning curve, as fractions of the training split.
    learning_curve_sizes: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
    #: Epoch budgets to predict for every architecture of the campaign.
    predict_budgets: tuple[int, ...] = (4, 12, 36, 108)
    #: Runs per GPU type the surrogate (and its learning curve) is fitted on: beyond this, a
    #: seeded sample of whole architectures holding at most this many runs (the report says so).
    #: Predictions still cover every architecture.
    max_runs: int = 300

    def __post_init__(self) -> None:
        super().__post_init__()
        self.learning_curve_sizes = tuple(self.learning_curve_sizes)
        self.predict_budgets = tuple(self.predict_budgets)
        _require(self.epochs >= 1, "surrogate.epochs", self.epochs, "must be >= 1")
        _require(self.batch_size >= 1, "surrogate.batch_size", self.batch_size, "must be >= 1")
        _require(self.learning_rate > 0, "surrogate.learning_rate", self.learning_rate, "must be > 0")
        _require(len(self.split) == 3 and all(f >= 0 for f in self.split) and math.isclose(sum(self.split), 1.0),
                 "surrogate.split", self.split, "must be three fractions summing to 1, e.g. [0.7,0.1,0.2]")
        _require(self.min_architectures >= 3, "surrogate.min_architectures", self.min_architectures, "must be >= 3")
        _require(self.learning_curve_inits >= 1, "surrogate.learning_curve_inits", self.learning_curve_inits,
                 "must be >= 1")
        _require(all(0 < f <= 1 for f in self.learning_curve_sizes), "surrogate.learning_curve_sizes",
                 self.learning_curve_sizes, "must be fractions in (0, 1]")
        _require(all(b >= 1 for b in self.predict_budgets), "surrogate.predict_budgets", self.predict_budgets,
                 "must be epoch budgets >= 1")
        _require(self.max_runs >= 20, "surrogate.max_runs", self.max_runs, "must be >= 20 runs")


@dataclass
class ParetoSettings:
    """``analysis.pareto``."""

    #: Hypervolume reference [error, energy_kwh]; None: 1.1 x each front's nadir.
    reference: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.reference is not None:
            self.reference = tuple(self.reference)
            _require(len(self.reference) == 2, "pareto.reference", self.reference, "must be [error, energy_kwh] or null")


@dataclass
class CarbonSettings:
    """``analysis.carbon``: energy to CO2eq, the carbon intensity of the electricity and the
    facility's PUE, and the life cycle of the chosen architecture."""

    #: g CO2eq per kWh; None: the intensity recorded with the campaign
    #: (meter.carbon_intensity_g_per_kwh, the one Carbontracker used), else the world average
    #: (``db.records.WORLD_AVERAGE_G_PER_KWH``, the meters' and Carbontracker's default).
    intensity_g_per_kwh: float | None = None
    #: Said on the page beside the number.
    intensity_source: str = "configured (analysis.carbon.intensity_g_per_kwh)"
    #: 1: energy at the device only; a data centre's PUE is typically 1.1-1.7.
    pue: float = 1.0
    #: Expected inferences of the chosen architecture over its life (004's e).
    inference_calls: float = 1e6
    #: Budget of the chosen architecture; None: the largest budget measured.
    life_cycle_epochs: int | None = None
    #: 004: backpropagation's share of the training total (inference per image = T (1 - share) / (E D)).
    overhead_share: float = 0.8

    def __post_init__(self) -> None:
        value = self.intensity_g_per_kwh
        _require(value is None or value >= 0, "carbon.intensity_g_per_kwh", value, "must be >= 0")
        _require(self.pue >= 1, "carbon.pue", self.pue, "must be >= 1 (facility energy / IT energy)")
        _require(self.inference_calls >= 0, "carbon.inference_calls", self.inference_calls, "must be >= 0")
        _require(0 <= self.overhead_share < 1, "carbon.overhead_share", self.overhead_share, "must be in [0, 1)")

    def intensity(self) -> float:
        """The carbon intensity in use: the configured (or recorded) one, else the world average."""
        return WORLD_AVERAGE_G_PER_KWH if self.intensity_g_per_kwh is None else float(self.intensity_g_per_kwh)


@dataclass
class GreenAlgorithmsSettings(GreenAlgorithmsConfig):
    """``analysis.green_algorithms``: the baseline's inputs (`GreenAlgorithmsConfig`, whose
    defaults count the GPU board only, as the meters do)."""

    def __post_init__(self) -> None:
        _require(self.pue >= 1, "green_algorithms.pue", self.pue, "must be >= 1")


@dataclass
class AnalysisSettings:
    """Every choice of `campaign analyze` (``analysis.*``; override any on the command line,
    e.g. ``analysis.p_adjust=bonferroni analysis.stable_epoch=10``)."""

    #: Never pool simulated with measured power unless told to.
    allow_mixed_sources: bool = False
    #: Analyse only the runs of this power kind (the others are counted and named as left out);
    #: null: every run (a mixture is refused unless allow_mixed_sources).
    power_source: PowerKind | None = None
    #: Energy the statistics, estimators, surrogate and Pareto fronts compare: total, or above idle
    #: (energy - the trial's idle power x duration). Carbon figures always use the total.
    energy: EnergyTarget = EnergyTarget.total
    #: Significance level (Shapiro-Wilk "normal", Dunn "significant").
    alpha: float = 0.05
    #: Dunn's p-value correction.
    p_adjust: PAdjust = PAdjust.holm
    #: Smallest group a test uses; smaller groups are named, not tested.
    min_group_size: int = MIN_GROUP_SIZE
    #: Runs columns drawn as box plots and tested (energy per training image).
    factors: tuple[str, ...] = ("arch_hash", "gpu_type", "epochs")
    #: Shapiro-Wilk: smallest group whose normality is assessed (smaller: "not assessable").
    normality_min_n: int = 5
    #: Bootstrap resamples of the effect-size intervals (eta squared, Cliff's delta), seeded by ``seed``.
    bootstrap: int = 1000
    #: Online estimators: the stabilizing epoch, counted as ``stable_epoch_base`` says; None
    #: detects it per run. 003's "stable after epoch 10" is stable_epoch=10 with base 0: ten
    #: unstable epochs, the window starting at the 11th epoch.
    stable_epoch: int | None = None
    #: How stable_epoch counts: 1 (default; the window starts at epoch stable_epoch, 1-based) or 0
    #: (003's convention: stable_epoch epochs are unstable, the window starts at epoch stable_epoch + 1).
    stable_epoch_base: int = 1
    #: Online estimators: stable epochs averaged (003: 5).
    window: int = 5
    #: Stable = coefficient of variation of the window's epoch energy <= this.
    cv_threshold: float = 0.02
    #: Estimator comparison: held-out share of the runs (003: 70/30).
    test_fraction: float = 0.3
    #: Estimator comparison: the run ids held out, given explicitly (every other run trains);
    #: None: the seeded split of test_fraction (003: a seeded 70/30 split).
    test_run_ids: tuple[int, ...] | None = None
    #: Offline estimators: kernel ridge is fitted on a seeded sample of at most this many training
    #: runs (exact kernel ridge costs the square of the runs in memory and their cube in time).
    offline_max_runs: int = 500
    #: Images an epoch counts in energy per image: training (the run's train_images) or processed
    #: (003: training and validation passes in whole batches, 33,952 per epoch for its 23,807
    #: training images).
    images_per_epoch: ImagesPerEpoch = ImagesPerEpoch.training
    #: images_per_epoch=processed: the batch size and validation images where the runs lack the
    #: columns batch_size / valid_images (NAS-Bench-101 on CIFAR-10: 256 and 10,000).
    batch_size: int = 256
    valid_images: int = 10_000
    #: Green Algorithms and ML CO2 Impact: take each run's recorded power limit (trace samples'
    #: power_limit_w) instead of its GPU type's TDP, and the memory its job could use (GB: the
    #: cgroup or Slurm limit its worker recorded, jobs.limits) for Green Algorithms' memory term
    #: instead of green_algorithms.memory_gb, where the run records them.
    per_run_hardware: bool = True
    #: More architectures than this: the report shows the factor tests and the top and bottom
    #: top_architectures architectures (box plot, pairs) instead of every pair and box; the full
    #: per-architecture tables are in the CSV files.
    many_architectures: int = 30
    top_architectures: int = 5
    #: Bootstrap: at most this many resampled values per interval (resamples x group values); a
    #: larger stratum gets fewer resamples (never under 200), and the table says how many.
    bootstrap_max_values: int = 5_000_000
    #: Keep each group's runs on one side of that split; None: split by run.
    split_by: SplitBy | None = SplitBy.arch_hash
    #: Seed of the estimator split.
    seed: int = 0
    #: Runs whose power trace is drawn by phase (largest budget, one per architecture).
    trace_examples: int = 2
    surrogate: SurrogateSettings = field(default_factory=SurrogateSettings)
    pareto: ParetoSettings = field(default_factory=ParetoSettings)
    carbon: CarbonSettings = field(default_factory=CarbonSettings)
    green_algorithms: GreenAlgorithmsSettings = field(default_factory=GreenAlgorithmsSettings)

    def __post_init__(self) -> None:
        self.p_adjust = _member(PAdjust, "p_adjust", self.p_adjust)
        self.energy = _member(EnergyTarget, "energy", self.energy)
        if self.power_source is not None:
            self.power_source = _member(PowerKind, "power_source", self.power_source)
        if self.split_by is not None:
            self.split_by = _member(SplitBy, "split_by", self.split_by)
        self.images_per_epoch = _member(ImagesPerEpoch, "images_per_epoch", self.images_per_epoch)
        self.factors = tuple(self.factors)
        if self.test_run_ids is not None:
            self.test_run_ids = tuple(int(r) for r in self.test_run_ids)
            _require(len(self.test_run_ids) > 0, "test_run_ids", self.test_run_ids, "must name runs or be null")
        _require(self.stable_epoch_base in (0, 1), "stable_epoch_base", self.stable_epoch_base,
                 "must be 0 (003: stable_epoch unstable epochs) or 1 (the window starts at stable_epoch)")
        _require(self.stable_epoch is None or self.stable_epoch >= self.stable_epoch_base, "stable_epoch",
                 self.stable_epoch, f"must be >= {self.stable_epoch_base} (stable_epoch_base="
                 f"{self.stable_epoch_base}) or null to detect it")
        _require(self.offline_max_runs >= 20, "offline_max_runs", self.offline_max_runs, "must be >= 20 runs")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _require(self.valid_images >= 0, "valid_images", self.valid_images, "must be >= 0")
        _require(self.many_architectures >= 2, "many_architectures", self.many_architectures, "must be >= 2")
        _require(self.top_architectures >= 1, "top_architectures", self.top_architectures, "must be >= 1")
        _require(self.bootstrap_max_values >= 10_000, "bootstrap_max_values", self.bootstrap_max_values,
                 "must be >= 10000")
        _require(0 < self.alpha < 1, "alpha", self.alpha, "must be between 0 and 1")
        _require(self.min_group_size >= 2, "min_group_size", self.min_group_size, "must be >= 2")
        _require(self.normality_min_n >= 3, "normality_min_n", self.normality_min_n, "must be >= 3")
        _require(self.bootstrap >= 100, "bootstrap", self.bootstrap, "must be >= 100 resamples")
        _require(self.window >= 2, "window", self.window, "must be >= 2 epochs")
        _require(0 < self.test_fraction < 1, "test_fraction", self.test_fraction, "must be between 0 and 1")
        _require(self.trace_examples >= 0, "trace_examples", self.trace_examples, "must be >= 0")

    def window_start(self) -> int | None:
        """The 1-based first epoch of the online estimators' stable window (None: detected per run)."""
        if self.stable_epoch is None:
            return None
        return self.stable_epoch + 1 - self.stable_epoch_base

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None) -> AnalysisSettings:
        """The settings of a plain mapping (keys as in the ``analysis`` section; missing ones take
        their defaults), through OmegaConf as the composed configuration is: an unknown key, a
        value of the wrong type or out of range raise a one-line AnalysisError naming it."""
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        given = _mapping_for(cls, values if values is not None else {}, "analysis")
        try:
            settings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), given))
        except OmegaConfBaseException as exc:
            raise AnalysisError(_one_line(exc, given)) from None
        assert isinstance(settings, cls)
        return settings


def _mapping_for(cls: type, values: Any, where: str) -> dict[str, Any]:
    """``values`` as a dict OmegaConf can merge onto ``cls``: a nested section must be a mapping
    (None takes its defaults); unknown keys are left for OmegaConf to name."""
    if not isinstance(values, Mapping):
        raise AnalysisError(f"{where} must be a mapping of settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        hint = hints.get(key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if value is None:
                continue
            value = _mapping_for(hint, value, f"{where}.{key}")
        out[key] = value
    return out


_RULES = {bool: "must be true or false", int: "must be an integer", float: "must be a number",
          str: "must be a string", tuple: "must be a list"}


def _one_line(exc: Any, given: Mapping[str, Any]) -> str:
    """OmegaConf's multi-line error as ``analysis.KEY=VALUE`` and what is allowed."""
    key = f"analysis.{exc.full_key}" if exc.full_key else "analysis"
    owner = exc.object_type
    if not (isinstance(owner, type) and dataclasses.is_dataclass(owner)) or exc.key is None:
        return f"{key}: {str(exc.msg).splitlines()[0]}"
    names = [f.name for f in dataclasses.fields(owner)]
    if exc.key not in names:
        return f"{key} is not a known setting (allowed: {', '.join(names)})"
    value: Any = given
    for part in str(exc.full_key).split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    hint = typing.get_type_hints(owner)[exc.key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args and type(None) in typing.get_args(hint) else hint
    optional = " or null" if kind is not hint else ""
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return f"{key}={value!r} is not allowed (allowed: {', '.join(m.value for m in kind)}{optional})"
    rule = _RULES.get(typing.get_origin(kind) or kind, f"has the wrong type ({str(exc.msg).splitlines()[0]})")
    return f"{key}={value!r} {rule}{optional}"


__all__ = [
    "MIN_GROUP_SIZE",
    "AnalysisError",
    "AnalysisSettings",
    "CarbonSettings",
    "EnergyTarget",
    "GreenAlgorithmsConfig",
    "GreenAlgorithmsSettings",
    "ImagesPerEpoch",
    "PAdjust",
    "ParetoSettings",
    "PowerKind",
    "SplitBy",
    "SurrogateConfig",
    "SurrogateSettings",
]
