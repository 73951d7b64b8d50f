"""Launchers carry a planned campaign's trials out to workers (local, Slurm, Ray), each one file
implementing ``campaign.launchers.base.Launcher``; ``make_launcher`` picks the configured one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from campaign.launchers.local import LocalLauncher
from campaign.launchers.ray import RayLauncher
from campaign.launchers.slurm import SlurmLauncher
from db.errors import ConfigError

if TYPE_CHECKING:
    from campaign.config import CampaignConfig
    from campaign.launchers.base import Launcher
    from db.paths import CampaignPaths

__all__ = ["LAUNCHERS", "make_launcher"]

#: name (``launcher.name``) -> launcher class, constructed from (CampaignConfig, CampaignPaths)
LAUNCHERS: dict[str, Callable[[CampaignConfig, CampaignPaths], Launcher]] = {
    LocalLauncher.name: LocalLauncher,
    SlurmLauncher.name: SlurmLauncher,
    RayLauncher.name: RayLauncher,
}


def make_launcher(cfg: CampaignConfig, paths: CampaignPaths) -> Launcher:
    """The launcher ``cfg.launcher.name`` names, for the campaign at ``paths``."""
    try:
        cls = LAUNCHERS[str(cfg.launcher.name)]
    except KeyError:
        raise ConfigError(f"launcher={cfg.launcher.name} is not allowed (allowed: {', '.join(LAUNCHERS)})") from None
    return cls(cfg, paths)
