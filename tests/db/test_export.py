"""Export to Parquet and CSV, and ``analysis.load_runs``, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from analysis.load import load_runs
from db.engine import make_engine
from db.export import arrow_schema, export_campaign, open_campaign, runs_query, trace_schema
from db.store import CampaignNotFound, ResultStore
from tests.db.conftest import plan_campaign


def _scalar(url: str, sql: str) -> int:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(sql)).scalar_one()
    engine.dispose()
    return int(n)


def test_load_runs_returns_typed_frames(smoke_db) -> None:  # type: ignore[no-untyped-def]
    url, cfg = smoke_db
    data = load_runs(url, "smoke")
    assert data.campaign == "smoke" and data.traces is None
    assert len(data.runs) == _scalar(url, "SELECT COUNT(*) FROM run_summary") == 2 * len(cfg["epochs"]) * cfg["seeds"]
    assert len(data.trials) == 2 * len(cfg["epochs"])
    assert len(data.epochs) == sum(data.runs.epochs)  # one row per epoch of every finished run
    assert set(data.phases.phase) == {"warmup", "idle", "train", "eval", "cooldown"}
    assert str(data.runs.started_at.dtype).startswith("datetime64") and data.runs.started_at.dt.tz is not None
    assert data.runs.epochs.dtype == "int64" and data.runs.energy_j.dtype == "float64"
    assert (data.runs.power_kind == "simulated").all()
    medians = data.runs.groupby(["arch_hash", "gpu_type"]).energy_per_image_j.median()
    assert len(medians) == 2 and (medians > 0).all()
    with_traces = load_runs(url, "smoke", traces=True)
    assert with_traces.traces is not None
    assert len(with_traces.traces) == _scalar(url, "SELECT COUNT(*) FROM trace_sample t JOIN run r ON r.id = t.run_id "
                                                   "WHERE r.status = 'done'")
    assert set(with_traces.traces.run_id) == set(data.runs.run_id)
    with pytest.raises(CampaignNotFound, match="known: smoke"):
        load_runs(url, "nope")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_writes_every_table(smoke_db, tmp_path: Path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    engine, info = open_campaign(url, "smoke")
    files = export_campaign(engine, info, tmp_path, fmt, traces=True)
    engine.dispose()
    names = sorted(f.path.name for f in files)
    assert names == sorted([f"{n}.{fmt}" for n in ("runs", "trials", "epochs", "phases", "traces")] + ["campaign.json"])
    rows = {f.path.stem: f.rows for f in files}
    read = (lambda p: pq.read_table(p).to_pandas()) if fmt == "parquet" else pd.read_csv
    for stem in ("runs", "trials", "epochs", "phases", "traces"):
        assert len(read(tmp_path / f"{stem}.{fmt}")) == rows[stem] > 0
    assert rows["runs"] == _scalar(url, "SELECT COUNT(*) FROM run_summary")
    assert rows["traces"] == _scalar(url, "SELECT COUNT(*) FROM trace_sample t JOIN run r ON r.id = t.run_id "
                                          "WHERE r.status = 'done'")
    meta = json.loads((tmp_path / "campaign.json").read_text())
    assert meta["name"] == "smoke" and meta["config"]["sweep"] == "smoke"
    assert not list(tmp_path.glob(".*partial"))
    if fmt == "parquet":
        assert pq.read_schema(tmp_path / "runs.parquet").field("started_at").type == pa.timestamp("us", tz="UTC")
        assert pq.read_schema(tmp_path / "traces.parquet") == trace_schema()


def test_an_empty_campaign_exports_typed_empty_tables(db_url: str, smoke_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = ResultStore(make_engine(db_url))
    plan_campaign(store, smoke_cfg, "nothing-ran")
    engine, info = open_campaign(db_url, "nothing-ran")
    files = export_campaign(engine, info, tmp_path, "parquet", traces=True)
    assert all(f.rows == 0 for f in files if f.rows is not None)
    schema = pq.read_schema(tmp_path / "runs.parquet")
    assert schema == arrow_schema(runs_query(info.id))  # all-NULL columns keep their types
    engine.dispose()
    store.engine.dispose()


def test_cli_export_defaults_to_the_campaign_folder(smoke_db, cli, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, cfg = smoke_db
    root = tmp_path / "root"
    # options and overrides in either order, as a user types them
    assert cli(["export", "smoke", "--format", "csv", f"root={root}", f"db.url='{url}'"]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in (root / "smoke" / "export").iterdir()) == sorted(
        ["campaign.json", "epochs.csv", "phases.csv", "runs.csv", "trials.csv"])
    assert "runs.csv" in out
    assert cli(["export", "smoke", f"root={root}", f"db.url='{url}'", "--out", str(tmp_path / "x"), "--traces"]) == 0
    assert (tmp_path / "x" / "traces.parquet").is_file() and (tmp_path / "x" / "runs.parquet").is_file()
    assert cli(["export", "nope", f"root={root}", f"db.url='{url}'"]) == 2
    assert capsys.readouterr().err.startswith("campaign: error: no campaign 'nope'")


def test_cli_export_upgrades_an_older_schema(tmp_path: Path, smoke_cfg, cli) -> None:  # type: ignore[no-untyped-def]
    from db.migrate import current_revision, head_revision, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    upgrade(engine, "0007")  # today's planner writes 0007's columns; then back to the first schema
    plan_campaign(ResultStore(engine, upgrade=False), smoke_cfg, "old")
    from alembic import command

    from db.migrate import alembic_config

    command.downgrade(alembic_config(engine), "0001")
    assert current_revision(engine) == "0001"
    assert cli(["export", "old", f"root={tmp_path}", f"db.url={url}"]) == 0
    assert current_revision(engine) == head_revision() and (tmp_path / "old" / "export" / "runs.parquet").is_file()
    engine.dispose()


def test_the_cli_offers_the_formats_export_writes_without_importing_sqlalchemy() -> None:
    import subprocess
    import sys

    from campaign import cli_db
    from db.export import FORMATS

    assert cli_db.FORMATS == FORMATS
    code = ("import argparse, sys; from campaign.cli_db import register; "
            "register(argparse.ArgumentParser().add_subparsers()); print('sqlalchemy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # `campaign --help` stays fast


def test_trace_batches_hold_each_runs_samples_with_its_keys(smoke_db) -> None:  # type: ignore[no-untyped-def]
    """The exported trace rows are exactly the per-run join of trace_sample with run_summary's keys,
    run by run and in (device, t_s) order."""
    from db.export import _trace_query, trace_batches

    url, _ = smoke_db
    engine, info = open_campaign(url, "smoke")
    got = [row for batch in trace_batches(engine, info.id, batch_rows=7) for row in batch.to_pylist()]
    schema = trace_schema()
    want: list[dict[str, object]] = []
    with engine.connect() as conn:
        run_ids = conn.execute(text("SELECT run_id FROM run_summary WHERE campaign_id = :c ORDER BY run_id"),
                               {"c": info.id}).scalars().all()
        assert run_ids
        for run_id in run_ids:
            rows = conn.execute(_trace_query(info.id, run_id)).all()
            want.extend(pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows],
                                             schema=schema).to_pylist())
    engine.dispose()
    assert got == want and len(got) > 0
