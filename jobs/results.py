"""Result files: a finished (or failed) run is written to the campaign folder atomically before
it is ingested, so a worker that cannot reach the database loses nothing. Their content is a
``db.records.RunResult`` (typed, versioned); files of every readable format version are read."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from db.paths import CampaignPaths
from db.records import ResultFormatError, RunResult


def write_atomic(path: Path, result: RunResult) -> Path:
    """Write the result as JSON to a temporary file in the same folder, fsync it, then rename it
    over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(result.to_json(), fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_result(path: Path) -> RunResult:
    """One result file; ResultFormatError names the file when it is not a readable run result."""
    try:
        with open(path) as fh:
            return RunResult.from_json(json.load(fh))
    except (ValueError, ResultFormatError) as exc:  # JSONDecodeError is a ValueError
        raise ResultFormatError(f"{path}: {exc}") from exc


def iter_results(paths: CampaignPaths) -> Iterator[tuple[Path, RunResult]]:
    """Every complete result file of a campaign (temporary files are skipped)."""
    for path in paths.result_files():
        yield path, read_result(path)
