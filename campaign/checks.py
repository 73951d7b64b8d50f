"""Check, then record: what a launch (or a resume) can find out before it records anything, each
refused in one line naming the path, URL or value and what to do.

``check_before_record`` runs right before the campaign is recorded (and before a resume stores
result files): the campaigns root, the meter on this node (local launcher), the database, and the
campaign folder's marker, which it writes last (the only file it leaves, inside ``ROOT/NAME/``).
``check_resume_overrides`` keeps a resume from changing what its recorded trials measure.
"""

from __future__ import annotations

import json
import os
from typing import Any

from campaign.config import CampaignConfig, LauncherName, db_url
from db.errors import CampaignError, ConfigError
from db.paths import CampaignPaths, os_error_line
from jobs.settings import MeterConfig, MeterKind

# Plan settings that decide which trials exist and what they are: a resume runs the recorded trials,
# so changing one of these would be ignored or would mix measurements.
PLAN_KEYS = ("sweep", "seeds", "first_seed", "epochs", "gpus", "architectures", "device", "workload", "layers")
# Measurement settings a resume may change: every run records its power source and meter settings.
RESUMABLE_MEASUREMENT = ("meter",)


def check_before_record(cfg: CampaignConfig, paths: CampaignPaths) -> None:
    """Everything a launch can check before it records: ``root`` is (or can become) a writable
    folder, the meter works on this node (local launcher), the database is reachable and writable,
    and the campaign folder is free or already this campaign's (its marker is written then).
    ConfigError, DatabaseError or FolderTaken (one line each) where not; nothing is recorded, and
    nothing is written outside ``ROOT/NAME/`` but the database's own folder where it is missing."""
    from db.engine import check_database

    check_root(cfg.root, paths)
    if cfg.launcher.name == LauncherName.local:
        check_meter(cfg.meter)
    url = db_url(cfg)
    check_database(url)
    claim_folder(paths, url)


def check_root(given: str, paths: CampaignPaths) -> None:
    """``root`` (as given: ``given``) is a folder, or can be created as one, that this user may
    write, and ``ROOT/NAME`` is not a file. Creates nothing."""
    root = paths.root
    if root.exists() and not root.is_dir():
        raise ConfigError(f"root={given} is a file ({root}), not a folder: give root= a folder (created if missing)")
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"root={given} cannot be created: {existing} is a file (give root= a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"root={given} is not writable: this user may not write in {existing} "
                          "(choose another root= or fix its permissions)")
    if paths.folder.exists() and not paths.folder.is_dir():
        raise ConfigError(f"{paths.folder} is a file, not a campaign folder: move it away or choose another name=")


def check_meter(meter: MeterConfig) -> None:
    """``meter.kind=nvml`` needs a GPU NVML can see on this node: open NVML and close it again
    (``auto`` falls back to the simulated meter by itself; ``simulated`` needs nothing)."""
    if meter.kind != MeterKind.nvml:
        return
    from jobs.meters import MeterError
    from jobs.meters.nvml import NvmlReader

    reader = NvmlReader()
    try:
        reader.open()
    except MeterError as exc:
        raise ConfigError(f"meter.kind=nvml cannot measure on this node: {exc}") from None
    reader.close()


def check_folder(paths: CampaignPaths, url: str) -> None:
    """Refuse a campaign folder whose marker names another campaign or database (writes nothing:
    for ``ingest``, which only reads the folder)."""
    from db.engine import database_identity

    paths.check_owner(database_identity(url))


def claim_folder(paths: CampaignPaths, url: str) -> None:
    """Make ``ROOT/NAME`` this campaign's (``CampaignPaths.claim``): refuse a foreign folder, write
    the marker where there is none; a folder that cannot be written is one ConfigError line."""
    from db.engine import database_identity

    try:
        paths.claim(database_identity(url))
    except CampaignError:
        raise
    except OSError as exc:
        raise ConfigError(os_error_line(exc, f"writing the campaign folder of {paths.name!r}")) from None


def _identity(cfg: CampaignConfig) -> dict[str, Any]:
    """The settings a recorded trial's identity and plan rest on (``campaign.plan.measurement_fields``
    without the meter, and the plan's own keys)."""
    from campaign.plan import measurement_fields

    plain = cfg.to_dict()
    fields = {k: v for k, v in measurement_fields(cfg).items() if k not in RESUMABLE_MEASUREMENT}
    return {**fields, **{k: plain[k] for k in PLAN_KEYS}}


_ABSENT = object()


def _at(values: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(values, dict) and part in values:
            values = values[part]
        elif isinstance(values, list) and part.isdigit() and int(part) < len(values):
            values = values[int(part)]
        else:
            return _ABSENT
    return values


def _short(value: Any, limit: int = 80) -> str:
    text = "(unset)" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_resume_overrides(recorded: CampaignConfig, composed: CampaignConfig, keys: set[str]) -> None:
    """Refuse (ConfigError, one line) an override of a resume (``keys``: what its command line set)
    that changes what the recorded trials are or measure: the recipe, network, data set (but its
    ``root`` and ``download``), protocol (but ``heartbeat_s``), epochs, GPU types, seeds,
    architectures, device, or a sweep that changes any of them. The meter, launcher, ``root``,
    database and everything else that leaves a trial the same measurement are accepted."""
    old, new = _identity(recorded), _identity(composed)
    for key in sorted(keys):
        parts = key.split("@")[0].split(".")
        if parts[0] == "sweep":
            changed = [k for k in old if old[k] != new[k]]
            if changed:
                raise ConfigError(f"resume cannot take {key}={composed.sweep}: it changes {', '.join(changed)} of the "
                                  "recorded trials (launch a new campaign for another sweep)")
            continue
        if parts[0] not in old:
            continue
        before, after = _at(old, parts), _at(new, parts)
        if before != after:
            raise ConfigError(
                f"resume cannot change {key} (recorded {_short(before)}, given {_short(after)}): it is part of what "
                "each recorded trial measures; launch a new campaign for it (a resume accepts meter, launcher, "
                "root, db and other settings that leave a trial the same)")
