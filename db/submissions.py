"""Every submission of worker tasks a campaign made (a launch, a resume, a worker's or the
launching process's automatic resubmission): which launcher, which GPU type, which job or array
ids, how many workers, when. Resume and status ask the scheduler about exactly these.

``seq`` numbers a GPU type's submissions 1, 2, ... per campaign; it is unique, so two processes
that both decide to resubmit after submission ``n`` race for ``n + 1`` and only one wins
(``SubmissionStore.reserve_submission``).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import (
    Connection,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from db.schema import Submission

#: who submitted: a person's command, a worker that stopped for time, the launching process (--wait)
SUBMITTERS = ("launch", "resume", "worker", "follow")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _row(r: Any) -> dict[str, Any]:
    out = dict(r._mapping)
    out["job_ids"] = json.loads(out["job_ids"] or "[]")
    out["array_sizes"] = json.loads(out["array_sizes"] or "[]")
    return out


def read_submissions(conn: Connection, campaign_id: int) -> list[dict[str, Any]]:
    """The campaign's submissions in order: gpu_type, seq, launcher, submitted_by, job_ids,
    array_sizes, workers, submitted_at."""
    q = (select(Submission.gpu_type, Submission.seq, Submission.launcher, Submission.submitted_by,
                Submission.job_ids, Submission.array_sizes, Submission.workers, Submission.submitted_at)
         .where(Submission.campaign_id == campaign_id).order_by(Submission.gpu_type, Submission.seq))
    return [_row(r) for r in conn.execute(q)]


class SubmissionStore:
    """The submission table's reads and writes, over ``self.engine`` (mixed into ResultStore)."""

    engine: Any

    def reserve_submission(self, campaign_id: int, gpu_type: str, launcher: str, submitted_by: str,
                           seq: int | None = None, max_seq: int | None = None) -> int | None:
        """Take the next submission number of the GPU type (``seq`` where given: only that one)
        before submitting; None when it is taken already (another process resubmitted first) or
        would exceed ``max_seq``. The row says 0 workers until ``fill_submission``."""
        for _ in range(20):
            with self.engine.begin() as conn:
                n = seq
                if n is None:
                    last = conn.execute(select(func.max(Submission.seq)).where(
                        Submission.campaign_id == campaign_id, Submission.gpu_type == gpu_type)).scalar()
                    n = int(last or 0) + 1
                if max_seq is not None and n > max_seq:
                    return None
                try:
                    conn.execute(insert(Submission).values(
                        campaign_id=campaign_id, gpu_type=gpu_type, seq=n, launcher=launcher,
                        submitted_by=submitted_by, job_ids="[]", array_sizes="[]", workers=0,
                        submitted_at=_now()))
                except IntegrityError:
                    if seq is not None:
                        return None
                    continue  # a concurrent submitter took that number: take the next
            return n
        return None

    def fill_submission(self, campaign_id: int, gpu_type: str, seq: int, job_ids: list[str],
                        array_sizes: list[int], workers: int) -> None:
        """What the scheduler answered for a reserved submission."""
        with self.engine.begin() as conn:
            conn.execute(update(Submission).where(Submission.campaign_id == campaign_id,
                                                  Submission.gpu_type == gpu_type, Submission.seq == seq)
                         .values(job_ids=json.dumps(list(job_ids)), array_sizes=json.dumps(list(array_sizes)),
                                 workers=int(workers), submitted_at=_now()))

    def drop_submission(self, campaign_id: int, gpu_type: str, seq: int) -> None:
        """Forget a reserved submission the scheduler refused."""
        with self.engine.begin() as conn:
            conn.execute(delete(Submission).where(Submission.campaign_id == campaign_id,
                                                  Submission.gpu_type == gpu_type, Submission.seq == seq))

    def submissions(self, campaign_id: int) -> list[dict[str, Any]]:
        """The campaign's submissions (``read_submissions``)."""
        with self.engine.connect() as conn:
            return read_submissions(conn, campaign_id)

    def delete_submissions(self, campaign_id: int) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(delete(Submission).where(Submission.campaign_id == campaign_id)).rowcount)
