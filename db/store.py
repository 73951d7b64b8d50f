"""The writable result store: the trial state machine (``db.trials.TrialStore``), the record of
submissions (``db.submissions.SubmissionStore``), ingestion of
run results (``db.ingest``) and the read API (``db.read.CampaignReader``) over one engine whose
schema it brings to the newest revision.

Readers that must not write open ``CampaignReader.open(url)`` instead.
"""

from __future__ import annotations

from sqlalchemy import Engine

from db.ingest import PreparedResult, ingest, prepare
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

    def prepare(self, result: RunResult | PreparedResult) -> PreparedResult:
        """The result with its trace checked and encoded for this database (``db.ingest.prepare``),
        with no database work: a worker does it once, before it stores (and perhaps retries)."""
        return prepare(result, self.engine.dialect.name)

    def ingest(self, result: RunResult | PreparedResult) -> bool:
        """Store a run's result idempotently (``db.ingest.ingest``; a raw result is prepared
        first); False when the run was already stored as done."""
        return ingest(self.engine, result)
