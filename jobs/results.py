"""Result files: a finished (or failed) run is written to the campaign folder atomically before
it is ingested, so a worker that cannot reach the database loses nothing. Their content is a
``db.records.RunResult`` (typed, versioned); files of every readable format version are read.

A result file is written once: an existing attempt file is never replaced (the complete file is
hard-linked into place, which fails where a file already is, so no race can replace one either).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from db.errors import CampaignError
from db.paths import CampaignPaths, write_exclusive
from db.records import ResultFormatError, RunResult

# Where a file system has no hard links, the file is created exclusively and written in place.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


class ResultExists(CampaignError):
    """An attempt's result file is already there: result files are never replaced."""


def _exists(path: Path) -> ResultExists:
    return ResultExists(f"{path} already exists: a result file is written once and never replaced "
                        "(another campaign or database wrote it: choose another root= or name=)")


def write_atomic(path: Path, result: RunResult) -> Path:
    """Write the result as JSON to a temporary file in the same folder, fsync it, then link it to
    ``path``; ResultExists (naming the file) where ``path`` already exists, which is left as it was."""
    if path.exists():
        raise _exists(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(result.to_json(), separators=(",", ":"))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            try:
                write_exclusive(path, data)
            except FileExistsError:
                raise _exists(path) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """The new directory entry on disk too (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
