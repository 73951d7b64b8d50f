"""The writable result store: the trial state machine (``db.trials.TrialStore``), the record of
submissions (``db.submissions.SubmissionStore``), ingestion of
run results (``db.ingest``) and the read API (``db.read.CampaignReader``) over one engine whose
schema it brings to the newest revision.

Readers that must not write open ``CampaignReader.open(url)`` instead.
"""

from __future__ import annotations

from sqlalchemy import Engine

from db.ingest import ingest
from db.migrate import ensure_schema
from db.read import CampaignInfo, CampaignNotFound, CampaignReader
from db.records import RunResult
from db.submissions import SubmissionStore
from db.trials import CampaignExists, ClaimedTrial, TrialStore

__all__ = ["CampaignExists", "CampaignInfo", "CampaignNotFound", "ClaimedTrial", "ResultStore"]


class ResultStore(TrialStore, SubmissionStore, CampaignReader):
    """Everything the CLI and workers do with the database, over one engine."""

    def __init__(self, engine: Engine, upgrade: bool = True) -> None:
        super().__init__(engine)
        if upgrade:
            ensure_schema(engine)

    def ingest(self, result: RunResult) -> bool:
        """Store a run's result idempotently (``db.ingest.ingest``); False when the run was
        already stored as done."""
        return ingest(self.engine, result)
