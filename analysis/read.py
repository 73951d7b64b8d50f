"""Reading a campaign for analysis: the one path from the results database to DataFrames.

Everything goes through a reader of the database (``db.read.CampaignReader``: opened read-only
with ``CampaignReader.open(url)``; the writable ``db.store.ResultStore`` reads through the same
methods). `find_campaign` is the campaign lookup of the report and of ``analysis.load.load_runs``;
`read_campaign` gives what the report analyses: every run attempt with the mean device
utilisation of its training, the epochs and phases of the finished runs, the trial states and
the power traces of a few example runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from db.read import CampaignInfo, CampaignReader


def find_campaign(reader: CampaignReader, campaign: str | CampaignInfo) -> CampaignInfo:
    """The campaign called ``campaign`` (a CampaignInfo is taken as found); the reader's
    CampaignNotFound names the campaigns that exist."""
    return reader.campaign(campaign) if isinstance(campaign, str) else campaign


@dataclass(frozen=True)
class CampaignFrames:
    """One campaign as the report reads it."""

    info: CampaignInfo
    runs: pd.DataFrame  # every attempt (column status), with gpu_util_mean of its training phase
    epochs: pd.DataFrame | None  # epoch rows of the finished runs (None: no finished run)
    phases: pd.DataFrame | None  # run_phase rows of the finished runs
    traces: dict[Any, pd.DataFrame]  # run_id -> trace samples of the example runs (`example_runs`)
    trial_states: dict[str, int]  # trials by state: pending, running, done, failed, cancelled


def read_campaign(reader: CampaignReader, campaign: str | CampaignInfo, trace_examples: int = 2) -> CampaignFrames:
    """Campaign ``campaign`` through ``reader``, with the traces of ``trace_examples`` example runs."""
    info = find_campaign(reader, campaign)
    trials = reader.status_rows(info.id)
    states = {k: sum(r[k] for r in trials) for k in ("pending", "running", "done", "failed", "cancelled")}
    runs = pd.DataFrame(reader.runs(info.id, status=None))
    if runs.empty:
        return CampaignFrames(info, runs, None, None, {}, states)
    ids = [int(r) for r in runs.loc[runs["status"] == "done", "run_id"]]
    epochs = _chunked(reader.epochs, ids) if ids else None
    phases = _chunked(reader.phases, ids) if ids else None
    util: dict[int, float] = {}
    for part in _chunks(ids):
        util.update({int(k): (math.nan if v is None else float(v)) for k, v in reader.train_utilization(part).items()})
    runs["gpu_util_mean"] = runs["run_id"].map(util)
    hardware: dict[int, dict[str, Any]] = {}  # per run its job's memory limit and its GPU's power limit
    for part in _chunks(ids):
        hardware.update(reader.run_hardware(part))
    for col in ("job_memory_gb", "power_limit_w"):
        runs[col] = runs["run_id"].map({k: v.get(col) for k, v in hardware.items()}).astype("float64")
    traces = {rid: pd.DataFrame(reader.trace(int(rid))) for rid in example_runs(runs, trace_examples)}
    return CampaignFrames(info, runs, epochs, phases, traces, states)


#: Run ids per query: SQLite binds each id of an IN list as a parameter (999 in older builds).
ID_CHUNK = 900


def _chunks(ids: Sequence[int]) -> list[Sequence[int]]:
    return [ids[i:i + ID_CHUNK] for i in range(0, len(ids), ID_CHUNK)]


def _chunked(read: Callable[[Sequence[int]], list[dict[str, Any]]], ids: Sequence[int]) -> pd.DataFrame:
    """``read(ids)`` in chunks of ``ID_CHUNK`` ids, each turned into a frame at once (the plain
    rows of one chunk at a time in memory), concatenated."""
    frames = [pd.DataFrame(read(part)) for part in _chunks(ids)]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def example_runs(runs: pd.DataFrame, n: int) -> list[Any]:
    """Run ids whose traces the report draws: at the largest budget, one per architecture (the
    median-energy seed), up to ``n``."""
    df = runs[runs["status"] == "done"] if "status" in runs.columns else runs
    if df.empty or n <= 0:
        return []
    top = df[df["epochs"] == df["epochs"].max()]
    picks = []
    for _, grp in top.groupby("arch_hash", sort=True):
        grp = grp.sort_values("energy_j")
        picks.append(grp.iloc[(len(grp) - 1) // 2]["run_id"])
        if len(picks) == n:
            break
    return picks
