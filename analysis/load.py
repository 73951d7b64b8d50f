"""A campaign's results as pandas DataFrames, for analyses outside this project's report.

    from analysis.load import load_runs
    data = load_runs("sqlite:///campaigns/campaign.db", "smoke-20260101-120000")
    data.runs.groupby(["arch_hash", "gpu_type"]).energy_per_image_j.median()

The columns are those of the ``run_summary`` and ``trial_summary`` views and of the ``epoch``,
``run_phase`` and ``trace_sample`` tables, documented in ``docs/schema.md``. The database is
opened read-only (``db.read.CampaignReader.open``) and the campaign looked up as the report
does (``analysis.read.find_campaign``). Simulated power is labelled (``power_kind``); never
pool it with measured.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


@dataclasses.dataclass(frozen=True)
class CampaignData:
    """One campaign's finished runs; every frame but ``trials`` has one row per run or finer."""

    campaign: str
    runs: pd.DataFrame  # run_summary: one row per finished run
    trials: pd.DataFrame  # trial_summary: runs aggregated over seeds
    epochs: pd.DataFrame  # epoch rows of those runs, with the run's keys (run_id, arch_hash, ...)
    phases: pd.DataFrame  # run_phase rows (energy per phase), with the run's keys
    traces: pd.DataFrame | None = None  # trace samples, only when asked for (they are many)


def load_runs(url: str, campaign: str, traces: bool = False) -> CampaignData:
    """Read campaign ``campaign`` from the database at ``url`` (a SQLAlchemy URL).

    Raises ``db.read.CampaignNotFound`` (naming the campaigns that exist) or
    ``db.engine.DatabaseError`` (unreachable database, schema without the views).
    """
    import pyarrow as pa

    from analysis.read import find_campaign
    from db.export import read_tables, trace_batches, trace_schema
    from db.query import database_errors, require_views
    from db.read import CampaignReader

    reader = CampaignReader.open(url)
    try:
        with database_errors(url, f"reading campaign {campaign!r}"):
            info = find_campaign(reader, campaign)
            require_views(reader.engine, url)
            tables = read_tables(reader.engine, info.id)
            trace_frame = None
            if traces:
                batches = list(trace_batches(reader.engine, info.id))
                trace_frame = (pa.concat_tables(batches) if batches else trace_schema().empty_table()).to_pandas()
    finally:
        reader.engine.dispose()
    frames = {name: table.to_pandas() for name, table in tables.items()}
    return CampaignData(campaign=info.name, traces=trace_frame, **frames)
