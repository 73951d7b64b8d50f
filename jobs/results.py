"""Result files: a finished (or failed) run is written to the campaign folder atomically before
it is ingested, so a worker that cannot reach the database loses nothing."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def campaign_dir(root: str | Path, campaign: str) -> Path:
    """``root/campaign``: runs' files, logs and the report."""
    return Path(root).expanduser().resolve() / campaign


def result_path(root: str | Path, campaign: str, trial_key: str, attempt: int) -> Path:
    return campaign_dir(root, campaign) / "runs" / trial_key / f"attempt-{attempt}.json"


def write_atomic(path: Path, payload: dict[str, Any]) -> Path:
    """Write JSON to a temporary file in the same folder, fsync it, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def iter_results(root: str | Path, campaign: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every complete result file of a campaign (temporary files are skipped)."""
    base = campaign_dir(root, campaign) / "runs"
    for path in sorted(base.glob("*/attempt-*.json")):
        with open(path) as fh:
            yield path, json.load(fh)
