"""One typed configuration end to end: Hydra composes ``conf/`` against these dataclasses and
``compose`` returns them as objects (``OmegaConf.to_object``). Each default is written once (in
the schema below, or in the schema of the part that uses it: ``jobs.settings``, ``jobs.recipe``,
``jobs.network``, ``jobs.data``, ``analysis.settings``); each check stands beside the
field it checks, so a bad value is refused at composition with one line naming it and what is
allowed, before anything runs or is recorded.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.settings import AnalysisSettings
from db.errors import ConfigError, enum_value
from db.paths import check_name
from jobs.data import DatasetConfig
from jobs.heartbeat import check_heartbeat
from jobs.network import NetworkConfig
from jobs.recipe import RecipeConfig
from jobs.settings import Device, MeterConfig, ProtocolConfig, at_least
from jobs.workloads import WORKLOAD_NAMES
from jobs.workloads.layer_spec import LayersConfig

__all__ = ["BudgetConfig", "CampaignConfig", "ConfigError", "EstimateConfig", "GpuType", "LauncherConfig", "OnExceed",
           "compose", "db_url", "gpu_types"]


def _conf_dir() -> Path:
    """``conf/``: ``CAMPAIGN_CONF_DIR`` if set; else the checkout's ``conf/`` beside the packages;
    else the copy an installed wheel carries inside the ``campaign`` package."""
    if os.environ.get("CAMPAIGN_CONF_DIR"):
        return Path(os.environ["CAMPAIGN_CONF_DIR"])
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"no configuration folder found (looked for conf/config.yaml in {here.parent} and {here}); "
                      "set CAMPAIGN_CONF_DIR to the folder holding config.yaml")


CONF_DIR = _conf_dir()


class LauncherName(enum.StrEnum):
    """Where workers run (one file each in campaign/launchers/)."""

    local = "local"
    slurm = "slurm"
    ray = "ray"


class ArchSource(enum.StrEnum):
    """Where a campaign's cells come from."""

    list = "list"  # architectures.specs
    sample = "sample"  # architectures.n cells drawn uniformly (architectures.seed)
    file = "file"  # architectures.file: a JSON or YAML list of {matrix, ops}
    all = "all"  # every cell of the space within architectures.max_vertices and max_edges, enumerated


@dataclass
class LauncherConfig:
    """One schema for every launcher; each uses the fields that concern it (see conf/launcher/)."""

    name: LauncherName = LauncherName.local
    wait: bool = True  # follow the campaign with a live progress display until it is done
    chunk_size: int = 0  # ignored: workers pull trials (kept so that configurations recorded before load)
    max_parallel: int = 0  # Slurm array throttle (%k) / concurrent Ray tasks; 0: no throttle
    timeout_min: int = 240  # Slurm time limit per worker task (a GPU type may override it)
    mem_gb: float = 16.0
    cpus_per_task: int = 4
    gpus_per_task: int = 1
    account: str | None = None
    qos: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the worker (module load ...)
    folder: str | None = None  # submitit's job folder; default ROOT/NAME/slurm
    address: str | None = None  # Ray cluster address; null: start a local Ray
    local_resources: dict[str, float] = field(default_factory=dict)  # custom resources of a local Ray, e.g. {gpu_a100: 2}
    local_num_cpus: int = 0  # CPUs of a local Ray; 0: Ray's default
    stale_after_s: float = 600.0  # a running attempt without heartbeat this long is stale
    max_workers: int = 256  # worker tasks per GPU type at most (each pulls trials until none is left)
    max_array_size: int = 0  # tasks per Slurm array at most; 0: the cluster's MaxArraySize (scontrol), else 1001
    max_submissions: int = 20  # submissions per GPU type in all, automatic resubmissions included

    def __post_init__(self) -> None:
        self.name = enum_value(LauncherName, "launcher.name", self.name)
        for key in ("chunk_size", "max_parallel", "local_num_cpus", "gpus_per_task", "max_array_size"):
            at_least(f"launcher.{key}", getattr(self, key), 0)
        for key in ("timeout_min", "mem_gb", "cpus_per_task", "stale_after_s", "max_workers", "max_submissions"):
            at_least(f"launcher.{key}", getattr(self, key), 0, strict=True)


@dataclass
class DbConfig:
    url: str | None = None  # any SQLAlchemy URL; null: sqlite:///<root>/campaign.db
    echo: bool = False  # log every SQL statement


@dataclass
class ArchitecturesConfig:
    source: ArchSource = ArchSource.list
    specs: list[Any] = field(default_factory=list)  # source=list: [{matrix: [[...]], ops: [...]}, ...]
    n: int = 0  # source=sample: how many distinct cells to draw
    seed: int = 0  # source=sample
    file: str | None = None  # source=file: a JSON or YAML list of {matrix, ops}
    max_vertices: int = 7  # source=all|sample: cells with at most this many vertices (EC-NAS's 4V/5V/7V spaces)
    max_edges: int = 9  # source=all|sample: cells with at most this many edges

    def __post_init__(self) -> None:
        self.source = enum_value(ArchSource, "architectures.source", self.source)
        if not 2 <= self.max_vertices <= 7:
            raise ConfigError(f"architectures.max_vertices={self.max_vertices} is not allowed (2 to 7)")
        if not 1 <= self.max_edges <= 9:
            raise ConfigError(f"architectures.max_edges={self.max_edges} is not allowed (1 to 9)")

    def check(self) -> None:
        """What the chosen source needs, checked when a plan is made (the schema's own default, an
        empty list, is what every command but plan and launch runs with: they need no cells)."""
        if self.source == ArchSource.sample and self.n < 1:
            raise ConfigError(f"architectures.n={self.n} is not allowed with source=sample (must be >= 1)")
        if self.source == ArchSource.list and not self.specs:
            raise ConfigError("architectures.specs is empty (list cells as {matrix: [[...]], ops: [...]} "
                              "or use source=sample)")
        if self.source == ArchSource.file and not self.file:
            raise ConfigError("architectures.file is not set (a JSON or YAML list of {matrix, ops}) for source=file")


class OnExceed(enum.StrEnum):
    """What a launch does when its estimate's upper end exceeds a budget limit."""

    refuse = "refuse"  # refuse the launch in one line, before anything is recorded
    warn = "warn"  # print the warning and launch


@dataclass
class BudgetConfig:
    """Limits a launch's pre-launch estimate (its upper end) is checked against; null: no limit."""

    max_kwh: float | None = None  # energy, total (training, eval, warm-up, idle, cool-down), kWh
    max_gpu_hours: float | None = None
    max_co2_kg: float | None = None  # CO2eq at meter.carbon_intensity_g_per_kwh and estimate.pue
    on_exceed: OnExceed = OnExceed.refuse

    def __post_init__(self) -> None:
        self.on_exceed = enum_value(OnExceed, "budget.on_exceed", self.on_exceed)
        for key in ("max_kwh", "max_gpu_hours", "max_co2_kg"):
            if getattr(self, key) is not None:
                at_least(f"budget.{key}", getattr(self, key), 0, strict=True)


@dataclass
class EstimateConfig:
    """How the pre-launch estimate bounds trials no measured run describes (the GPU type's TDP)."""

    pue: float = 1.0  # power usage effectiveness of the data centre, multiplies the energy for CO2eq
    tdp_low_fraction: float = 0.3  # the low end of a trial's power, as a fraction of the TDP
    idle_fraction: float = 0.1  # idle power as a fraction of the TDP, where no run measured it

    def __post_init__(self) -> None:
        at_least("estimate.pue", self.pue, 1)
        for key in ("tdp_low_fraction", "idle_fraction"):
            at_least(f"estimate.{key}", getattr(self, key), 0)
            if getattr(self, key) > 1:
                raise ConfigError(f"estimate.{key}={getattr(self, key)} is not allowed (must be <= 1)")


@dataclass
class CampaignConfig:
    """The whole configuration of a campaign (conf/config.yaml and its groups)."""

    root: str = "./campaigns"  # one folder per campaign: ROOT/NAME/{runs,slurm,report,export}
    name: str | None = None  # campaign name (letters, digits, .-_, no leading dot); default: <sweep>-<UTC timestamp>
    sweep: str = "none"  # set by the sweep config
    workload: str = "nasbench101"  # what a trial runs: nasbench101 (training cells) | layers (docs/layers.md)
    seeds: int = 3  # repetitions per (architecture, epochs, GPU type): seeds first_seed..first_seed+seeds-1
    first_seed: int = 0  # the first training seed (another campaign of the same cells with new seeds)
    epochs: list[int] = field(default_factory=lambda: [4, 12, 36, 108])  # epoch budgets
    gpus: list[str] = field(default_factory=lambda: ["cpu"])  # GPU types, each a file in conf/gpu/
    order_seed: int = 0  # seed of the randomized run order
    device: Device = Device.auto  # torch device: auto (cuda if visible), cpu, cuda
    max_failures: int = 3  # a worker stops after this many failed trials in a row
    architectures: ArchitecturesConfig = field(default_factory=ArchitecturesConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    db: DbConfig = field(default_factory=DbConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    meter: MeterConfig = field(default_factory=MeterConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    layers: LayersConfig = field(default_factory=LayersConfig)  # the layer workload's configurations

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name)  # ROOT/NAME must stay below ROOT
        self.device = enum_value(Device, "device", self.device)
        if self.workload not in WORKLOAD_NAMES:
            raise ConfigError(f"workload={self.workload!r} is not allowed (allowed: {', '.join(WORKLOAD_NAMES)})")
        known = gpu_types()
        if not self.gpus:
            raise ConfigError(f"gpus is empty (allowed GPU types: {', '.join(known)})")
        for g in self.gpus:
            if g not in known:
                raise ConfigError(f"unknown GPU type {g!r} in gpus (allowed: {', '.join(known)}; add conf/gpu/{g}.yaml)")
        if not self.epochs:
            raise ConfigError("epochs is empty (give at least one epoch budget >= 1, e.g. epochs=[4,12])")
        for e in self.epochs:
            if not isinstance(e, int) or isinstance(e, bool) or e < 1:
                raise ConfigError(f"epoch budget {e!r} in epochs is not allowed (must be an integer >= 1)")
        if self.seeds < 1:
            raise ConfigError(f"seeds={self.seeds} is not allowed (must be >= 1 repetition)")
        at_least("first_seed", self.first_seed, 0)
        at_least("max_failures", self.max_failures, 1)
        check_heartbeat(self.protocol.heartbeat_s, self.launcher.stale_after_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (enums as their values): what a campaign records as its configuration."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CampaignConfig:
        """A configuration from plain data (a recorded one), checked as at composition."""
        from omegaconf import OmegaConf

        launcher = values.get("launcher")
        if isinstance(launcher, dict) and "local_resources" in launcher and launcher["local_resources"] is None:
            # recorded before it became a mapping that may be empty (a null could not be set from the command line)
            values = {**values, "launcher": {**launcher, "local_resources": {}}}
        return _objects(lambda: OmegaConf.merge(OmegaConf.structured(cls), values))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class GpuSlurm:
    """Where a GPU type runs on Slurm (any key may be null)."""

    partition: str | None = None
    constraint: str | None = None
    gres: str | None = None
    account: str | None = None
    qos: str | None = None
    timeout_min: int | None = None  # null: launcher.timeout_min


@dataclass
class GpuRay:
    """How Ray finds a node with this GPU type."""

    resources: dict[str, float] | None = None
    accelerator_type: str | None = None


@dataclass
class GpuType:
    """One file of conf/gpu/: a GPU type's specifications and where it runs."""

    name: str
    description: str = ""
    tdp_w: float | None = None
    memory_gb: float | None = None
    fp32_tflops: float | None = None
    cuda_cores: int | None = None
    boost_clock_mhz: float | None = None
    epoch_s_estimate: float | None = None  # rough seconds per NAS-Bench-101 epoch, only to size worker chunks
    slurm: GpuSlurm = field(default_factory=GpuSlurm)
    ray: GpuRay = field(default_factory=GpuRay)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="campaign_schema", node=CampaignConfig)


def _objects(build: Any) -> Any:
    """``OmegaConf.to_object`` of what ``build()`` composes; Hydra's and OmegaConf's errors become
    one-line ConfigErrors (the schema's own checks raise ConfigError themselves)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_object(build())
    except Exception as exc:  # Hydra raises several unrelated types; all are config errors here
        if not isinstance(exc, OmegaConfBaseException) and not _raised_by_hydra(exc):
            raise
        raise ConfigError(_one_line(exc)) from exc


def _raised_by_hydra(exc: BaseException) -> bool:
    """Whether Hydra or OmegaConf raised ``exc`` (their own types, or a built-in one such as an
    AttributeError from inside them, which they re-raise with the key it concerns)."""
    if type(exc).__module__.split(".")[0] in ("hydra", "omegaconf"):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").split(".")[0] in ("hydra", "omegaconf"):
            return True
        tb = tb.tb_next
    return False


# Settings whose keys are the user's own (a mapping, not fields of the schema): ``KEY={...}`` is
# given to Hydra as ``++KEY={...}``, which may add keys (a plain override may only set known ones).
FREE_MAPPINGS = ("launcher.local_resources",)


def _free_mapping(override: str) -> str:
    key, eq, _ = override.partition("=")
    return f"++{override}" if eq and key in FREE_MAPPINGS else override


def compose(overrides: list[str]) -> CampaignConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides into a checked CampaignConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    _register()

    def build() -> Any:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                return hydra_compose(config_name="config", overrides=[_free_mapping(o) for o in overrides])
        finally:
            GlobalHydra.instance().clear()

    cfg = _objects(build)
    assert isinstance(cfg, CampaignConfig)
    return cfg


def _one_line(exc: BaseException) -> str:
    """Hydra's multi-line messages (and their causes) as one line a user can act on."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).strip()
        if text and text != "None":
            head, _, rest = text.partition("\n")
            options = re.findall(r"^\t(\S+)$", rest.split("Config search path")[0], flags=re.M)
            if options:
                head += f" (available: {', '.join(options)})"
            key = re.search(r"^\s*full_key: (\S+)$", rest, flags=re.M)
            if key and key.group(1) not in head:
                head = f"{key.group(1)}: {head}"
            if head not in parts:
                parts.append(head.rstrip("."))
        seen = seen.__cause__
    return "; ".join(parts) or "invalid configuration"


def gpu_types(conf_dir: Path | None = None) -> dict[str, GpuType]:
    """Every GPU type described in ``conf/gpu/*.yaml``, by name (the files are read once per
    process: validation, preflight and dispatch of one command all ask; each gets its own copy)."""
    return copy.deepcopy(_read_gpu_types(conf_dir or CONF_DIR))


@functools.cache
def _read_gpu_types(conf_dir: Path) -> dict[str, GpuType]:
    from omegaconf import OmegaConf

    out: dict[str, GpuType] = {}
    for path in sorted((conf_dir / "gpu").glob("*.yaml")):
        try:
            gpu = _objects(lambda p=path: OmegaConf.merge(OmegaConf.structured(GpuType(name=p.stem)),
                                                          OmegaConf.load(p)))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        out[gpu.name] = gpu
    return out


def db_url(cfg: CampaignConfig) -> str:
    """``db.url``, or the default SQLite file in the campaigns root."""
    if cfg.db.url:
        return str(cfg.db.url)
    return f"sqlite:///{Path(cfg.root).expanduser().resolve() / 'campaign.db'}"
