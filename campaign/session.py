"""What every command shares once its configuration is composed: the database it opens (writable
and migrated for the commands that write, read-only and never migrated for those that read), the
campaign root it works in, and the keys its command line set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from campaign.config import CampaignConfig, db_url
from db.paths import CampaignPaths

if TYPE_CHECKING:
    from db.read import CampaignInfo, CampaignReader
    from db.store import ResultStore


def override_keys(overrides: Sequence[str]) -> set[str]:
    """The keys the command line's Hydra overrides set (``+``, ``++`` and ``~`` prefixes off)."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def open_store(cfg: CampaignConfig) -> ResultStore:
    """The writable store (the schema created or migrated first): for commands that record."""
    from db.engine import make_engine
    from db.store import ResultStore

    return ResultStore(make_engine(db_url(cfg), echo=cfg.db.echo))


def open_reader(cfg: CampaignConfig) -> CampaignReader:
    """A read-only view of the database, never migrated: for commands that only read."""
    from db.read import CampaignReader

    return CampaignReader.open(db_url(cfg))


def redacted_url(cfg: CampaignConfig) -> str:
    """The database URL without its password, for messages."""
    from db.engine import redact

    return redact(db_url(cfg))


def campaign_paths(overrides: Sequence[str], cfg: CampaignConfig, info: CampaignInfo) -> CampaignPaths:
    """The campaign's paths: under ``root=`` where the command line gives one, else under the root
    recorded (resolved) at launch, whatever folder the command runs from."""
    root = Path(cfg.root) if "root" in override_keys(overrides) else Path(info.root)
    return CampaignPaths.of(root, info.name)
