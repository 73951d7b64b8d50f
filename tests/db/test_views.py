"""The analysis views on both backends: contents, labels, aggregates, and the migration that adds them."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import MetaData, Table, create_engine, func, inspect, select, text

from campaign.config import compose
from db.engine import make_engine
from db.migrate import alembic_config, current_revision, head_revision, upgrade
from db.records import RunResult
from db.schema import Base
from db.store import ResultStore
from db.views import VIEW_NAMES, VIEW_TABLES, view_metadata
from tests.db.conftest import plan_campaign, smoke_energy_j, worker_result


def _rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_view_columns_are_the_declared_ones(smoke_db) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    engine = make_engine(url)
    with engine.connect() as conn:
        for name, table in VIEW_TABLES.items():
            got = list(conn.execute(text(f"SELECT * FROM {name} WHERE 1 = 0")).keys())
            assert got == [c.name for c in table.columns], name
    assert set(VIEW_NAMES) <= set(inspect(engine).get_view_names())
    engine.dispose()


def test_run_summary_has_one_row_per_finished_run(smoke_db) -> None:  # type: ignore[no-untyped-def]
    url, cfg = smoke_db
    runs = _rows(url, "SELECT * FROM run_summary WHERE campaign = :c ORDER BY run_id", c="smoke")
    n_trials = 2 * len(cfg["epochs"]) * cfg["seeds"]
    assert len(runs) == n_trials  # the failed first attempt is not a result
    done = _rows(url, "SELECT COUNT(*) AS n FROM run WHERE status = 'done'")[0]["n"]
    assert done == n_trials and _rows(url, "SELECT COUNT(*) AS n FROM run")[0]["n"] == n_trials + 1
    for r in runs:
        assert r["power_source"] == "simulated" and r["power_kind"] == "simulated"
        assert r["energy_j"] == pytest.approx(smoke_energy_j(r["arch_hash"], r["epochs"], r["seed"]))
        assert r["energy_kwh"] == pytest.approx(r["energy_j"] / 3.6e6)
        assert r["train_images"] == 2048
        assert r["energy_per_image_j"] == pytest.approx(r["energy_j"] / (r["epochs"] * 2048))
        assert r["train_energy_j"] == pytest.approx(0.8 * r["energy_j"])
        assert r["train_energy_per_image_j"] == pytest.approx(0.8 * r["energy_j"] / (r["epochs"] * 2048))
        assert r["eval_energy_j"] == pytest.approx(0.2 * r["energy_j"])
        assert r["idle_energy_j"] == pytest.approx(10.0) and r["cooldown_energy_j"] == pytest.approx(5.0)
        assert r["mean_power_w"] == pytest.approx(r["energy_j"] / 10.0)
        assert r["params"] > 0 and r["flops"] > 0 and r["gpu_type"] == "cpu"
        assert r["gpu_name"] == "simulated (no GPU)" and r["test_accuracy"] == pytest.approx(0.1 * r["epochs"])
    warm = [r for r in runs if r["warmup_energy_j"] is not None]
    assert len(warm) == 1 and warm[0]["warmup_energy_j"] == pytest.approx(100.0)  # only the first trial warms up
    assert {r["attempt"] for r in runs} == {1, 2}


def test_trial_summary_aggregates_over_seeds(smoke_db) -> None:  # type: ignore[no-untyped-def]
    url, cfg = smoke_db
    runs = _rows(url, "SELECT * FROM run_summary WHERE campaign = :c", c="smoke")
    trials = _rows(url, "SELECT * FROM trial_summary WHERE campaign = :c", c="smoke")
    assert len(trials) == 2 * len(cfg["epochs"])
    for t in trials:
        group = [r for r in runs if (r["arch_hash"], r["epochs"]) == (t["arch_hash"], t["epochs"])]
        energies = [r["energy_j"] for r in group]
        assert t["runs"] == t["seeds"] == cfg["seeds"] == len(group)
        assert t["mean_energy_j"] == pytest.approx(statistics.mean(energies))
        assert t["median_energy_j"] == pytest.approx(statistics.median(energies))
        assert t["sd_energy_j"] == pytest.approx(statistics.stdev(energies))
        assert (t["min_energy_j"], t["max_energy_j"]) == (pytest.approx(min(energies)), pytest.approx(max(energies)))
        assert t["median_energy_per_image_j"] == pytest.approx(statistics.median(r["energy_per_image_j"] for r in group))
        assert t["mean_test_accuracy"] == pytest.approx(0.1 * t["epochs"])
        assert t["sd_test_accuracy"] == pytest.approx(0.0, abs=1e-9)
        assert t["power_kind"] == "simulated"


def test_power_source_is_labelled_and_never_pooled(db_url: str) -> None:
    cfg = compose(["+sweep=smoke", "root=/tmp/unused", "seeds=3", "epochs=[1]"])
    store = ResultStore(make_engine(db_url))
    cid, _ = plan_campaign(store, cfg, "labels")
    sources = {0: "nvml", 1: "simulated", 2: None}  # by seed
    while (t := store.claim_next(cid, "cpu", "w", "h")) is not None:
        store.ingest(RunResult.from_json(worker_result(t, "labels", energy_j=100.0, power_source=sources[t.seed])))
    runs = _rows(db_url, "SELECT seed, power_source, power_kind FROM run_summary")
    assert {(r["seed"], r["power_source"], r["power_kind"]) for r in runs} == {
        (0, "nvml", "measured"), (1, "simulated", "simulated"), (2, "unknown", "unknown")}
    trials = _rows(db_url, "SELECT arch_hash, power_kind, runs FROM trial_summary")
    assert len(trials) == 2 * 3 and all(t["runs"] == 1 for t in trials)  # one row per source, per cell
    store.engine.dispose()


def test_odd_group_median_and_single_run_sd(db_url: str) -> None:
    cfg = compose(["+sweep=smoke", "root=/tmp/unused", "seeds=3", "epochs=[2]"])
    store = ResultStore(make_engine(db_url))
    cid, archs = plan_campaign(store, cfg, "odd")
    energies = {0: 300.0, 1: 100.0, 2: 1000.0}
    while (t := store.claim_next(cid, "cpu", "w", "h")) is not None:
        # seed 2 of one cell measured: its row has one run, so no standard deviation
        source = "nvml" if t.seed == 2 and t.arch_hash == archs[0] else "simulated"
        store.ingest(RunResult.from_json(worker_result(t, "odd", energy_j=energies[t.seed], power_source=source)))
    rows = {(r["arch_hash"] == archs[0], r["power_kind"]): r for r in _rows(db_url, "SELECT * FROM trial_summary")}
    pooled = rows[(False, "simulated")]
    assert pooled["runs"] == 3 and pooled["median_energy_j"] == pytest.approx(300.0)
    assert pooled["sd_energy_j"] == pytest.approx(statistics.stdev([300.0, 100.0, 1000.0]))
    alone = rows[(True, "measured")]
    assert alone["runs"] == 1 and alone["median_energy_j"] == pytest.approx(1000.0) and alone["sd_energy_j"] is None
    assert rows[(True, "simulated")]["median_energy_j"] == pytest.approx(200.0)  # even count: mean of the middle two
    store.engine.dispose()


def test_train_images_fall_back_to_the_campaign_config(db_url: str) -> None:
    cfg = compose(["+sweep=smoke", "root=/tmp/unused", "seeds=1", "epochs=[2]", "dataset.n_train=1000"])
    store = ResultStore(make_engine(db_url))
    cid, _ = plan_campaign(store, cfg, "old")
    while (t := store.claim_next(cid, "cpu", "w", "h")) is not None:
        # a result from before the column
        store.ingest(RunResult.from_json(worker_result(t, "old", energy_j=500.0, train_images=None)))
    runs = _rows(db_url, "SELECT train_images, energy_per_image_j FROM run_summary")
    assert runs and all(r["train_images"] == 1000 for r in runs)
    assert all(r["energy_per_image_j"] == pytest.approx(500.0 / (2 * 1000)) for r in runs)
    store.engine.dispose()


def _format3(t: Any, name: str, energy_j: float) -> RunResult:
    """A worker's result with everything the energy-above-idle version records (format 3)."""
    data = worker_result(t, name, energy_j=energy_j)
    data.update(format=3, energy_method="nvml_counter", energy_above_idle_j=energy_j - 70.0,
                energy_uncertainty_j=0.05 * energy_j, error_basis="nvml power accuracy +-5 %",
                counter_energy_j=energy_j, integrated_energy_j=1.2 * energy_j, energy_disagreement=0.2,
                flags=["short_window:idle", "disagreement"], start_temperature_c=41.5)
    for p in data["phases"]:
        p.update(energy_above_idle_j=p["energy_j"] - 10.0 * p["duration_s"], uncertainty_j=1.5,
                 method="nvml_counter", valid=p["phase"] != "idle")
    for e in data["epochs"]:
        e.update(energy_above_idle_j=e["energy_j"] - 1.0, uncertainty_j=0.5)
    return RunResult.from_json(data)


def test_energy_above_idle_is_stored_or_computed_from_the_idle_power(db_url: str) -> None:
    """A result with its own energy above idle keeps it (and its method, uncertainty, flags, per
    phase and per epoch); one stored before it was recorded gets energy_j - idle_power_w x duration_s
    in the view (idle 10 W, training 10 s here)."""
    cfg = compose(["+sweep=smoke", "root=/tmp/unused", "seeds=2", "epochs=[1]"])
    store = ResultStore(make_engine(db_url))
    cid, _ = plan_campaign(store, cfg, "above")
    while (t := store.claim_next(cid, "cpu", "w", "h")) is not None:
        if t.seed == 0:
            store.ingest(RunResult.from_json(worker_result(t, "above", energy_j=500.0)))  # format 1
        else:
            store.ingest(_format3(t, "above", energy_j=300.0))
    runs = {r["seed"]: r for r in _rows(db_url, "SELECT * FROM run_summary WHERE campaign = 'above'")}
    old, new = runs[0], runs[1]
    assert old["energy_above_idle_j"] == pytest.approx(500.0 - 10.0 * 10.0)
    assert old["train_energy_above_idle_j"] == pytest.approx(0.8 * 500.0 - 10.0 * 8.0)
    assert old["idle_energy_above_idle_j"] == pytest.approx(0.0) and old["setup_energy_j"] is None
    assert old["energy_uncertainty_j"] is None and old["flags"] is None and old["energy_method"] == "integrated"
    assert old["energy_above_idle_kwh"] == pytest.approx(400.0 / 3.6e6)
    assert old["energy_above_idle_per_image_j"] == pytest.approx(400.0 / 2048)
    assert new["energy_above_idle_j"] == pytest.approx(230.0) and new["energy_method"] == "nvml_counter"
    assert (new["energy_uncertainty_j"], new["error_basis"]) == (pytest.approx(15.0), "nvml power accuracy +-5 %")
    assert (new["counter_energy_j"], new["integrated_energy_j"], new["energy_disagreement"]) == (
        pytest.approx(300.0), pytest.approx(360.0), pytest.approx(0.2))
    assert new["flags"] == "short_window:idle,disagreement" and new["start_temperature_c"] == pytest.approx(41.5)
    assert new["train_energy_above_idle_j"] == pytest.approx(0.8 * 300.0 - 80.0)
    phases = {r["phase"]: r for r in _rows(db_url, "SELECT * FROM run_phase WHERE run_id = :r", r=new["run_id"])}
    assert phases["idle"]["valid"] in (False, 0) and phases["train"]["valid"] in (True, 1)
    assert phases["train"]["method"] == "nvml_counter" and phases["train"]["uncertainty_j"] == pytest.approx(1.5)
    epochs = _rows(db_url, "SELECT energy_j, energy_above_idle_j, uncertainty_j FROM epoch WHERE run_id = :r",
                   r=new["run_id"])
    assert [(e["energy_above_idle_j"], e["uncertainty_j"]) for e in epochs] == [(e["energy_j"] - 1.0, 0.5) for e in epochs]
    trials = _rows(db_url, "SELECT * FROM trial_summary WHERE campaign = 'above'")
    assert all(r["runs"] == 2 for r in trials)
    assert all(r["mean_energy_above_idle_j"] == pytest.approx((400.0 + 230.0) / 2) for r in trials)
    assert all(r["sd_energy_above_idle_j"] == pytest.approx(statistics.stdev([400.0, 230.0])) for r in trials)
    assert all(r["mean_energy_uncertainty_j"] == pytest.approx(15.0) for r in trials)  # AVG skips the NULL
    store.engine.dispose()


def _counts(engine, names: set[str] | None = None) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Rows per table of the models that exist in the database (or only ``names``); trace_sample
    counted as a table (before revision 0009) or as the view over the chunks (from 0009 on)."""
    inspector = inspect(engine)
    present = set(inspector.get_table_names()) | set(inspector.get_view_names()) if names is None else names
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in [*Base.metadata.sorted_tables, view_metadata.tables["trace_sample"]] if t.name in present}


FROZEN = Path(__file__).with_name("fixtures") / "campaign_at_0001.db"


def _load_frozen(engine) -> None:  # type: ignore[no-untyped-def]
    """Bring the database to revision 0001 holding the rows of the frozen 0001 database
    (a smoke campaign written by the 0001 code path): a copy of the file on SQLite, the same
    rows table by table on PostgreSQL."""
    upgrade(engine, "0001")
    source = create_engine(f"sqlite:///{FROZEN}")
    meta = MetaData()
    meta.reflect(source)
    with source.connect() as src, engine.begin() as dst:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            rows = [dict(r._mapping) for r in src.execute(select(table))]
            if rows:
                dst.execute(Table(table.name, MetaData(), autoload_with=dst).insert(), rows)
        if dst.dialect.name == "postgresql":  # ids were given explicitly: move the sequences on
            for table in meta.sorted_tables:
                if "id" in table.c:
                    dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                     f"(SELECT COALESCE(MAX(id), 1) FROM {table.name}))"))
    source.dispose()


def test_upgrade_from_0001_with_rows_keeps_every_row_and_adds_the_views(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    _load_frozen(engine)
    assert current_revision(engine) == "0001" and not set(VIEW_NAMES) & set(inspect(engine).get_view_names())
    before = _counts(engine)
    assert before["run"] == before["trial"] > 0 and before["trace_sample"] > 0 and before["epoch"] > 0
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert _counts(engine, set(before)) == before  # tables added by later revisions start empty
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM run_summary")).scalar_one() == before["run"]
        assert conn.execute(text("SELECT SUM(runs) FROM trial_summary")).scalar_one() == before["run"]
    # the upgraded database takes new results through today's write path
    store = ResultStore(engine)
    cfg = compose(["+sweep=smoke", f"root={tmp_path}"])
    cid, _ = plan_campaign(store, cfg, name="after-upgrade")
    t = store.claim_next(cid, "cpu", "w", "h")
    store.ingest(RunResult.from_json(worker_result(t, "after-upgrade", energy_j=1.0)))
    command.downgrade(alembic_config(engine), "0001")  # and back: the views go, the rows stay
    assert not set(VIEW_NAMES) & set(inspect(engine).get_view_names())
    after = _counts(engine, set(before))
    assert after["run"] == before["run"] + 1 and after["trace_sample"] > before["trace_sample"]
    engine.dispose()


def test_the_views_know_the_phases_the_meters_tag() -> None:
    from db.views import PHASES
    from jobs.meters.base import PHASES as METER_PHASES

    assert tuple(PHASES) == tuple(METER_PHASES)


def test_the_frozen_phases_of_the_current_run_summary_are_the_recorded_phases() -> None:
    """Each version of run_summary keeps its own copy of the phases (a migration creates it): a
    phase added to db.records.Phase needs a new version of the view, not an edit of an old one.
    Version 1 had five phases; version 2 (migration 0005) added setup; version 3 (migration 0011)
    keeps version 2's phases."""
    from db.records import PHASES, Phase
    from db.views import (
        CURRENT,
        PHASES_V1,
        PHASES_V2,
        run_summary,
        run_summary_v1,
        run_summary_v2,
        run_summary_v3,
    )

    assert CURRENT["run_summary"] is run_summary_v3
    assert PHASES_V2 == PHASES == tuple(p.value for p in Phase)
    assert tuple(p for p in PHASES if p != Phase.SETUP) == PHASES_V1
    for version, phases in ((run_summary_v1, PHASES_V1), (run_summary_v2, PHASES_V2), (run_summary_v3, PHASES_V2)):
        sql = version("sqlite")
        assert all(f"AS {p}_energy_j" in sql and f"AS {p}_duration_s" in sql for p in phases)
    assert "setup_energy_j" not in run_summary_v1("sqlite")
    assert {f"{p}_energy_j" for p in PHASES} <= set(run_summary.columns.keys())
