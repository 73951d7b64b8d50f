"""What every command shares once its configuration is composed: the database it opens (writable
and migrated for the commands that write, read-only and never migrated for those that read), the
campaign root it works in, and the keys its command line set."""

from __future__ import annotations

import os
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
    """The writable store (the schema created or migrated first): for commands that record. An
    unreachable or unwritable database is one DatabaseError line naming it and what to do."""
    from db.engine import database_errors, make_engine
    from db.store import ResultStore

    url = db_url(cfg)
    engine = make_engine(url, echo=cfg.db.echo)
    try:
        with database_errors(url, "opening the database"):
            return ResultStore(engine)
    except BaseException:
        engine.dispose()
        raise


def open_reader(cfg: CampaignConfig) -> CampaignReader:
    """A read-only view of the database, never migrated: for commands that only read."""
    from db.read import CampaignReader

    return CampaignReader.open(db_url(cfg))


def redacted_url(cfg: CampaignConfig) -> str:
    """The database URL without its password, for messages."""
    from db.engine import redact

    return redact(db_url(cfg))


def check_export_folder(out: Path) -> None:
    """Refuse, before anything is read or written, an export folder that is an existing file (or
    lies below one) or cannot be created: ConfigError, one line naming the path."""
    from db.errors import ConfigError

    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is an existing file, not a folder: give a folder (created if missing); "
                          "the file is left as it is")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"--out {path} cannot be created: {existing} is a file")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {path} cannot be written: {existing} is not writable (choose another --out)")


def campaign_paths(overrides: Sequence[str], cfg: CampaignConfig, info: CampaignInfo) -> CampaignPaths:
    """The campaign's paths: under ``root=`` where the command line gives one, else under the root
    recorded (resolved) at launch, whatever folder the command runs from."""
    root = Path(cfg.root) if "root" in override_keys(overrides) else Path(info.root)
    return CampaignPaths.of(root, info.name)
