"""One owner of every path of a campaign (as Dora's ``XP`` owns an experiment's): its folder,
the result files and Carbontracker logs of its runs, the Slurm job folder, the report and the
export. Nothing else joins a campaign's paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class CampaignPaths:
    """The files of campaign ``name`` under the campaigns root ``root`` (``root/name/...``)."""

    root: Path
    name: str

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
