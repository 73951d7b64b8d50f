"""The settings a trial is measured under, typed: the measurement protocol, the meters, the
device, and (from their own modules) the data set, the network and the training recipe.

These dataclasses are the schema of their parts of ``conf/`` (composed by Hydra in
``campaign.config``) and, read back from a campaign's recorded configuration, what a worker runs
with (``TrialSettings.from_recorded``). Each default is written here once, with its help beside
it; each check stands beside the field it checks and raises one line naming the key, the value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from db.errors import ConfigError, enum_value
from db.records import WORLD_AVERAGE_G_PER_KWH
from jobs.data import DatasetConfig
from jobs.network import NetworkConfig
from jobs.recipe import RecipeConfig


class Device(enum.StrEnum):
    """The torch device trials run on."""

    auto = "auto"  # CUDA where torch sees a GPU, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class MeterKind(enum.StrEnum):
    """Where power readings come from."""

    auto = "auto"  # NVML where a GPU is visible, else simulated (labelled so)
    nvml = "nvml"
    simulated = "simulated"


def at_least(key: str, value: float, low: float, strict: bool = False) -> None:
    """Refuse ``value`` below ``low`` (or equal to it, when ``strict``) in one line naming ``key``."""
    if value < low or (strict and value == low):
        rule = f"> {low:g}" if strict else f">= {low:g}"
        raise ConfigError(f"{key}={value} is not allowed (must be {rule})")


@dataclasses.dataclass
class ProtocolConfig:
    """The measurement protocol (conf/protocol/). The defaults are the reference study's (seed 003)
    for real GPUs; ``conf/protocol/smoke.yaml`` shortens them for trying the tool."""

    warmup_s: float = 600.0  # GPU-intensive dummy load before a worker's first trial (phase warmup)
    idle_s: float = 30.0  # idle baseline before each trial (phase idle)
    cooldown_s: float = 300.0  # pause after each trial (phase cooldown)
    heartbeat_s: float = 30.0  # how often a running trial reports it is alive (below launcher.stale_after_s)
    # When set, the cool-down ends once the GPU is back within this many degrees of its temperature
    # in the trial's idle window (at most cooldown_s; a meter without a thermometer: plain cool-down).
    cooldown_until_temp_c: float | None = None

    def __post_init__(self) -> None:
        for key in ("warmup_s", "idle_s", "cooldown_s"):
            at_least(f"protocol.{key}", getattr(self, key), 0)
        at_least("protocol.heartbeat_s", self.heartbeat_s, 0, strict=True)
        if self.cooldown_until_temp_c is not None:
            at_least("protocol.cooldown_until_temp_c", self.cooldown_until_temp_c, 0, strict=True)


@dataclasses.dataclass
class MeterConfig:
    """The meters recorded beside every trial (conf/meter/)."""

    kind: MeterKind = MeterKind.auto
    rate_hz: float = 10.0  # samples per second of the power meter (and RAPL)
    rapl: bool = True  # CPU package / DRAM energy from RAPL where /sys/class/powercap is readable
    carbontracker: bool = True  # run Carbontracker alongside each trial (offline-safe, never hangs it)
    carbon_intensity_g_per_kwh: float = WORLD_AVERAGE_G_PER_KWH  # Carbontracker's intensity (no API lookups)
    carbon_intensity_source: str = "configured: world average 2024 (IEA, as in Carbontracker 2.4)"
    # Where a device counter and sampled power both give a run's energy: the relative difference
    # above which the run is flagged "disagreement".
    max_disagreement: float = 0.05
    # The validity rule (as MLPerf's power rules): a measured window (phase) holds at least this many
    # samples at this rate or more; a window that does not is flagged "short_window:<phase>".
    min_window_samples: int = 60
    min_rate_hz: float = 1.0

    def __post_init__(self) -> None:
        self.kind = enum_value(MeterKind, "meter.kind", self.kind)
        at_least("meter.rate_hz", self.rate_hz, 0, strict=True)
        at_least("meter.carbon_intensity_g_per_kwh", self.carbon_intensity_g_per_kwh, 0)
        at_least("meter.max_disagreement", self.max_disagreement, 0, strict=True)
        at_least("meter.min_window_samples", self.min_window_samples, 2)
        at_least("meter.min_rate_hz", self.min_rate_hz, 0, strict=True)


@dataclasses.dataclass(frozen=True)
class TrialSettings:
    """What a worker measures its trials under, read from the campaign's recorded configuration."""

    device: Device
    dataset: DatasetConfig
    network: NetworkConfig
    recipe: RecipeConfig
    protocol: ProtocolConfig
    meter: MeterConfig

    @classmethod
    def from_recorded(cls, config: Mapping[str, Any]) -> TrialSettings:
        """The settings in a campaign's recorded configuration (``campaign.config_json``)."""
        parts: dict[str, Any] = {"device": enum_value(Device, "device", config.get("device", "auto"))}
        for key, schema in (("dataset", DatasetConfig), ("network", NetworkConfig), ("recipe", RecipeConfig),
                            ("protocol", ProtocolConfig), ("meter", MeterConfig)):
            known = {f.name for f in dataclasses.fields(schema)}
            try:
                parts[key] = schema(**{k: v for k, v in dict(config.get(key) or {}).items() if k in known})
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"the campaign's recorded {key} settings cannot be read: {exc}") from exc
        return cls(**parts)
