"""One owner of every path of a campaign (as Dora's ``XP`` owns an experiment's): its folder,
the result files and Carbontracker logs of its runs, the Slurm job folder, the report and the
export. Nothing else joins a campaign's paths.

A campaign's name is a safe identifier (``check_name``), so ``ROOT/NAME`` never leaves ``ROOT``.
Its folder carries a marker (``ROOT/NAME/.campaign.json``: the campaign's name and the identity
of its database, never a password), written once when the campaign first claims the folder; a
folder whose marker names another campaign or another database is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
from pathlib import Path

from db.errors import CampaignError, ConfigError

NAME_RULE = "letters, digits, '.', '-' and '_', starting with a letter, digit or '_', at most 100 characters"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
MARKER = ".campaign.json"


def check_name(name: object, key: str = "name") -> str:
    """``name`` when it is a safe campaign name; ConfigError (one line naming it) otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{key}={name!r} is not allowed: a campaign name is {NAME_RULE}")
    return name


class FolderTaken(CampaignError):
    """A campaign folder belongs to another campaign or another database (its marker says so)."""


def os_error_line(exc: OSError, doing: str) -> str:
    """One line for a file-system error: what failed, on which path, why, and what to do."""
    where = exc.filename if exc.filename is not None else "?"
    why = exc.strerror or str(exc) or type(exc).__name__
    return f"{doing} failed on {where}: {why}{_HINTS.get(exc.errno or 0, '')}"


_PERMISSIONS = " (check its permissions or choose another path)"
_HINTS = {
    errno.EACCES: _PERMISSIONS,
    errno.EPERM: _PERMISSIONS,
    errno.EROFS: " (the file system is read-only: choose a writable path)",
    errno.ENOSPC: " (the disk is full: free space or choose another path)",
    errno.EDQUOT: " (the disk quota is exhausted: free space or choose another path)",
    errno.EEXIST: " (a file is in the way: choose another path)",
    errno.ENOTDIR: " (a file stands where a folder is needed: choose another path)",
    errno.EISDIR: " (a folder stands where a file is needed: choose another path)",
    errno.ENOENT: " (a folder on the way does not exist and cannot be created there: choose another path)",
}


@dataclasses.dataclass(frozen=True)
class CampaignPaths:
    """The files of campaign ``name`` under the campaigns root ``root`` (``root/name/...``)."""

    root: Path
    name: str

    def __post_init__(self) -> None:
        check_name(self.name)

    @classmethod
    def of(cls, root: str | Path, name: str) -> CampaignPaths:
        """Paths of ``name`` under ``root`` (``~`` expanded, made absolute)."""
        return cls(Path(root).expanduser().resolve(), name)

    @property
    def folder(self) -> Path:
        """``root/name``: everything of the campaign lies below it."""
        return self.root / self.name

    @property
    def runs(self) -> Path:
        """One folder per trial key, holding its attempts' result files."""
        return self.folder / "runs"

    def result(self, trial_key: str, attempt: int) -> Path:
        """The result file of one attempt (written atomically before it is ingested)."""
        return self.runs / trial_key / f"attempt-{attempt}.json"

    def run_logs(self, trial_key: str, attempt: int) -> Path:
        """The folder of one attempt's own logs (Carbontracker's), beside its result file."""
        return self.result(trial_key, attempt).with_suffix("")

    def result_files(self) -> list[Path]:
        """Every complete result file, in path order (temporary files are skipped)."""
        return sorted(self.runs.glob("*/attempt-*.json"))

    @property
    def report(self) -> Path:
        """Where ``campaign analyze`` writes the report."""
        return self.folder / "report"

    @property
    def export(self) -> Path:
        """Where ``campaign export`` writes its files unless ``--out`` is given."""
        return self.folder / "export"

    def slurm(self, configured: str | None = None) -> Path:
        """submitit's job folder (``GPU_TYPE/JOB_ID`` below it): ``launcher.folder`` where
        configured, else ``root/name/slurm``."""
        return Path(configured).expanduser() if configured else self.folder / "slurm"

    @property
    def marker(self) -> Path:
        """``root/name/.campaign.json``: whose folder this is (campaign name, database identity)."""
        return self.folder / MARKER

    def owner(self) -> dict[str, str] | None:
        """What the folder's marker says (``campaign``, ``database``); None where there is none."""
        try:
            text = self.marker.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FolderTaken(os_error_line(exc, "reading the campaign folder's marker")) from None
        try:
            data = json.loads(text)
            return {"campaign": str(data["campaign"]), "database": str(data["database"])}
        except (ValueError, KeyError, TypeError):
            raise FolderTaken(f"{self.marker} is not a campaign marker (JSON with campaign and database): "
                              "move it away if this folder is the campaign's") from None

    def check_owner(self, database: str) -> None:
        """Refuse (FolderTaken, one line) a folder whose marker names another campaign or another
        database; a folder without a marker (or no folder) is free. Writes nothing."""
        if self.folder.exists() and not self.folder.is_dir():
            raise FolderTaken(f"{self.folder} is a file, not a campaign folder: move it away or choose another root=")
        found = self.owner()
        if found is None or found == {"campaign": self.name, "database": database}:
            return
        raise FolderTaken(
            f"{self.folder} belongs to campaign {found['campaign']!r} in {found['database']} (its {MARKER} says so), "
            f"not to {self.name!r} in {database}: choose another root= or name= "
            f"(or delete {self.marker} if you moved that database here)")

    def claim(self, database: str) -> None:
        """Make the folder this campaign's: refuse a foreign one (``check_owner``), else write the
        marker if it is missing (created exclusively: of two claims at once, one writes, the other
        reads what it wrote). OSError (permission, read-only media, a full disk) is raised as it is."""
        self.check_owner(database)
        if self.marker.exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"campaign": self.name, "database": database}, indent=2) + "\n"
        try:
            write_exclusive(self.marker, body)
        except FileExistsError:
            self.check_owner(database)


def write_exclusive(path: Path, data: str) -> None:
    """Create ``path`` with ``data``, durably, only where no file is there yet (FileExistsError
    otherwise, the file left as it was); a partly written file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
