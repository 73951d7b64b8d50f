"""Configuration: Hydra composes ``conf/`` against these structured schemas; the checks here
refuse bad values with one line naming the value and what is allowed, before anything runs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONF_DIR = Path(os.environ.get("CAMPAIGN_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))
LAUNCHERS = ("local", "slurm", "ray")
DEVICES = ("auto", "cpu", "cuda")
ARCH_SOURCES = ("list", "sample", "file")


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming it and what is allowed."""


@dataclass
class LauncherConfig:
    """One schema for every launcher; each uses the fields that concern it (see conf/launcher/)."""

    name: str = "local"
    wait: bool = True  # follow the campaign with a live progress display until it is done
    chunk_size: int = 0  # trials per worker task; 0: derived from the trial count and time limit
    max_parallel: int = 0  # Slurm array parallelism / concurrent Ray tasks; 0: one per chunk (<= 64)
    timeout_min: int = 240  # Slurm time limit per worker task (a GPU type may override it)
    mem_gb: float = 16.0
    cpus_per_task: int = 4
    gpus_per_task: int = 1
    account: str | None = None
    qos: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the worker (module load ...)
    folder: str | None = None  # submitit's job folder; default ROOT/NAME/slurm
    address: str | None = None  # Ray cluster address; null: start a local Ray
    local_resources: Any = None  # custom resources of a local Ray, e.g. {gpu_a100: 2}
    local_num_cpus: int = 0  # CPUs of a local Ray; 0: Ray's default
    stale_after_s: float = 600.0  # a running attempt without heartbeat this long is stale


@dataclass
class DbConfig:
    url: str | None = None
    echo: bool = False


@dataclass
class ProtocolConfig:
    warmup_s: float = 600.0
    idle_s: float = 30.0
    cooldown_s: float = 300.0
    heartbeat_s: float = 30.0


@dataclass
class MeterConfig:
    kind: str = "auto"
    rate_hz: float = 10.0
    rapl: bool = True  # CPU package / DRAM energy from RAPL where /sys/class/powercap is readable
    carbontracker: bool = True  # run Carbontracker alongside each trial (never hangs or kills it)
    carbon_intensity_g_per_kwh: float = 445.0  # used by Carbontracker offline (no API lookups)
    carbon_intensity_source: str = "configured: world average 2024 (IEA, as in Carbontracker 2.4)"


@dataclass
class ArchitecturesConfig:
    source: str = "list"
    specs: list[Any] = field(default_factory=list)
    n: int = 0
    seed: int = 0
    file: str | None = None


@dataclass
class CampaignConfig:
    root: str = "./campaigns"
    name: str | None = None
    sweep: str = "none"
    seeds: int = 3
    epochs: list[int] = field(default_factory=lambda: [4, 12, 36, 108])
    gpus: list[str] = field(default_factory=lambda: ["cpu"])
    order_seed: int = 0
    device: str = "auto"
    max_failures: int = 3
    architectures: ArchitecturesConfig = field(default_factory=ArchitecturesConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    db: DbConfig = field(default_factory=DbConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    meter: MeterConfig = field(default_factory=MeterConfig)
    # Schemas of these three live with the code that uses them (jobs/); checked in validate().
    recipe: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)  # checked by analysis.report


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="campaign_schema", node=CampaignConfig)


def compose(overrides: list[str]) -> dict[str, Any]:
    """Compose ``conf/config.yaml`` with Hydra overrides and return the resolved config as
    plain data. Hydra's own errors (unknown key, wrong type) become one-line ConfigErrors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # Hydra raises several unrelated types; all are config errors here
        if not isinstance(exc, OmegaConfBaseException) and type(exc).__module__.split(".")[0] not in (
            "hydra",
            "omegaconf",
        ):
            raise
        raise ConfigError(_one_line(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    assert isinstance(resolved, dict)
    return resolved  # type: ignore[return-value]


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
            if head not in parts:
                parts.append(head.rstrip("."))
        seen = seen.__cause__
    return "; ".join(parts) or "invalid configuration"


def gpu_types(conf_dir: Path = CONF_DIR) -> dict[str, dict[str, Any]]:
    """Every GPU type described in ``conf/gpu/*.yaml``, by name (the files are read once per
    process: validation, preflight and dispatch of one command all ask; each gets its own copy)."""
    return copy.deepcopy(_read_gpu_types(conf_dir))


@functools.cache
def _read_gpu_types(conf_dir: Path) -> dict[str, dict[str, Any]]:
    from omegaconf import OmegaConf

    out: dict[str, dict[str, Any]] = {}
    for path in sorted((conf_dir / "gpu").glob("*.yaml")):
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        assert isinstance(data, dict)
        out[str(data.get("name", path.stem))] = data  # type: ignore[assignment]
    return out


def db_url(cfg: dict[str, Any]) -> str:
    """``db.url``, or the default SQLite file in the campaigns root."""
    url = cfg["db"].get("url")
    if url:
        return str(url)
    return f"sqlite:///{Path(cfg['root']).expanduser().resolve() / 'campaign.db'}"


def _check_fields(group: str, values: dict[str, Any], schema: type) -> None:
    allowed = {f.name for f in dataclasses.fields(schema)}
    for key in values:
        if key not in allowed:
            raise ConfigError(f"{group}.{key} is not a known setting (allowed: {', '.join(sorted(allowed))})")
    try:
        schema(**values)
    except (TypeError, ValueError) as exc:  # the schema's own range checks
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(msg if msg.startswith(group) else f"{group}: {msg}") from exc


def validate(cfg: dict[str, Any]) -> None:
    """Check the values Hydra cannot check by type; raise ConfigError on the first bad one."""
    from jobs.data import DatasetConfig
    from jobs.network import NetworkConfig
    from jobs.recipe import RecipeConfig

    known = gpu_types()
    gpus = cfg["gpus"]
    if not gpus:
        raise ConfigError(f"gpus is empty (allowed GPU types: {', '.join(known)})")
    for g in gpus:
        if g not in known:
            raise ConfigError(f"unknown GPU type {g!r} in gpus (allowed: {', '.join(known)}; add conf/gpu/{g}.yaml)")
    if not cfg["epochs"]:
        raise ConfigError("epochs is empty (give at least one epoch budget >= 1, e.g. epochs=[4,12])")
    for e in cfg["epochs"]:
        if not isinstance(e, int) or isinstance(e, bool) or e < 1:
            raise ConfigError(f"epoch budget {e!r} in epochs is not allowed (must be an integer >= 1)")
    if cfg["seeds"] < 1:
        raise ConfigError(f"seeds={cfg['seeds']} is not allowed (must be >= 1 repetition)")
    if cfg["launcher"]["name"] not in LAUNCHERS:
        raise ConfigError(f"launcher {cfg['launcher']['name']!r} is not known (allowed: {', '.join(LAUNCHERS)})")
    if cfg["device"] not in DEVICES:
        raise ConfigError(f"device={cfg['device']!r} is not allowed (allowed: {', '.join(DEVICES)})")
    if cfg["max_failures"] < 1:
        raise ConfigError(f"max_failures={cfg['max_failures']} is not allowed (must be >= 1)")
    for key in ("warmup_s", "idle_s", "cooldown_s"):
        if cfg["protocol"][key] < 0:
            raise ConfigError(f"protocol.{key}={cfg['protocol'][key]} is not allowed (must be >= 0 seconds)")
    if cfg["protocol"]["heartbeat_s"] <= 0:
        raise ConfigError(f"protocol.heartbeat_s={cfg['protocol']['heartbeat_s']} is not allowed (must be > 0)")
    if cfg["meter"]["kind"] not in ("auto", "nvml", "simulated"):
        raise ConfigError(f"meter.kind={cfg['meter']['kind']!r} is not allowed (allowed: auto, nvml, simulated)")
    if cfg["meter"]["rate_hz"] <= 0:
        raise ConfigError(f"meter.rate_hz={cfg['meter']['rate_hz']} is not allowed (must be > 0)")
    _check_fields("recipe", cfg["recipe"], RecipeConfig)
    _check_fields("network", cfg["network"], NetworkConfig)
    _check_fields("dataset", cfg["dataset"], DatasetConfig)
    arch = cfg["architectures"]
    if arch["source"] not in ARCH_SOURCES:
        raise ConfigError(f"architectures.source={arch['source']!r} is not allowed (allowed: {', '.join(ARCH_SOURCES)})")
    if arch["source"] == "sample" and arch["n"] < 1:
        raise ConfigError(f"architectures.n={arch['n']} is not allowed with source=sample (must be >= 1)")
    if arch["source"] == "list" and not arch["specs"]:
        raise ConfigError("architectures.specs is empty (list cells as {matrix: [[...]], ops: [...]} or use source=sample)")
    if arch["source"] == "file" and not arch["file"]:
        raise ConfigError("architectures.file is not set (a JSON or YAML list of {matrix, ops}) for source=file")
