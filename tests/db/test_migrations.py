"""The schema is created by Alembic, and the migrations agree with the models."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import inspect

from db.engine import make_engine
from db.migrate import current_revision, head_revision, upgrade
from db.schema import Base


def test_upgrade_from_empty_creates_every_table(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(engine)  # a second upgrade is a no-op
    assert current_revision(engine) == head_revision()


def test_migrations_match_the_models(sqlite_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_cli_db_upgrade(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from campaign.cli import main

    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["db", "upgrade", f"db.url={url}"]) == 0
    assert current_revision(make_engine(url)) == head_revision()


def test_the_trace_index_migration_goes_down_and_up_again(db_url: str) -> None:
    """0004 swaps the (run_id, phase) index of trace_sample for (run_id), on both backends; from 0009
    on, trace_sample is a view over trace_series (indexed by run) and trace_point."""
    from alembic import command

    from db.migrate import alembic_config

    def indexes(table: str) -> dict[str, list[str]]:
        return {
            ix["name"]: [str(c) for c in ix["column_names"]]
            for ix in inspect(engine).get_indexes(table)
            if ix["name"] is not None
        }

    def trace_is_a_view() -> bool:
        return "trace_sample" in inspect(engine).get_view_names()

    engine = make_engine(db_url)
    upgrade(engine)
    assert trace_is_a_view() and indexes("trace_series") == {"ix_trace_series_run": ["run_id"]}
    command.downgrade(alembic_config(engine), "0008")
    assert not trace_is_a_view() and indexes("trace_sample") == {"ix_trace_run": ["run_id"]}
    command.downgrade(alembic_config(engine), "0003")
    assert current_revision(engine) == "0003"
    assert indexes("trace_sample") == {"ix_trace_run_phase": ["run_id", "phase"]}
    upgrade(engine)
    assert current_revision(engine) == head_revision() and trace_is_a_view()
    engine.dispose()


def _old_samples(n: int) -> list[dict[str, Any]]:
    """Rows of the trace_sample table as revision 0008 stored them: two runs, two devices
    interleaved, phases and epochs, full-precision floats, NULLs, a constant column."""
    rng = np.random.default_rng(3)
    rows = []
    for k in range(n):
        run = 1 + k % 2
        phase = ("idle", "train", "eval")[k * 3 // n]
        rows.append({
            "run_id": run, "source": "nvml" if run == 1 else "simulated", "device": (k // 2) % 2,
            "t_s": k * 0.1 + float(rng.random()) * 1e-3, "phase": phase,
            "epoch": 1 + k * 4 // n if phase != "idle" else None, "power_w": float(rng.normal(200, 30)),
            "energy_j": None if k % 7 == 0 else float(rng.random() * 1e5), "gpu_util": float(k % 101),
            "mem_util": None, "mem_used_mb": float(rng.random()) * 1e4, "temperature_c": 60.0 + k % 5,
            "sm_clock_mhz": 1410.0, "mem_clock_mhz": None if k == 5 else 1215.0, "power_limit_w": 400.0,
            "cpu_util": float("inf") if k == 9 else float(rng.random() * 100), "rss_mb": -0.5 * k,
        })  # fmt: skip
    return rows


def test_compact_traces_migration_keeps_every_sample_and_gives_them_back(db_url: str) -> None:
    """0009 moves the samples of the trace_sample table into series and points: the view returns
    the same rows, each value to its column's quantum (bit for bit as the quantum gives it, NULLs
    as NULLs, infinities kept); downgrading restores the table with them."""
    from alembic import command
    from sqlalchemy import insert, text

    from benchmarks.ingest import seed_campaign
    from db.migrate import alembic_config
    from db.records import SAMPLE_COLUMNS
    from db.views import TRACE_QUANTA

    engine = make_engine(db_url)
    upgrade(engine, "0008")
    with engine.begin() as conn:
        seed_campaign(conn, 2, runs=True)  # runs 1 and 2
    rows = _old_samples(3000)
    names = ("run_id", "source", *SAMPLE_COLUMNS)
    table = sa.table("trace_sample", *(sa.column(c) for c in names))
    with engine.begin() as conn:
        conn.execute(insert(table), rows)
    order = ", ".join(names)

    def read() -> dict[tuple[int, int], list[tuple[Any, ...]]]:
        with engine.connect() as conn:
            got = conn.execute(text(f"SELECT {order} FROM trace_sample ORDER BY run_id, device, t_s")).all()
        out: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
        for r in got:
            out.setdefault((r[0], r[2]), []).append(tuple(r))
        return out

    before = read()
    assert sum(map(len, before.values())) == 3000
    upgrade(engine)
    assert "trace_sample" in inspect(engine).get_view_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM trace_series")).scalar_one() < 100
    after = read()
    scale = {c: q for c, q, _ in TRACE_QUANTA}

    def quantized(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(float(np.rint(v * scale[c])) / scale[c] + 0.0 if isinstance(v, float) and math.isfinite(v) else v
                     for c, v in zip(names, row, strict=True))

    want = _bits({k: [quantized(r) for r in v] for k, v in before.items()})
    bad = [(k, i, a, b) for k in want for i, (a, b) in enumerate(zip(_bits(after)[k], want[k], strict=True)) if a != b]
    assert not bad, [(k, i, [(x, y) for x, y in zip(a, b, strict=True) if x != y]) for k, i, a, b in bad[:2]]
    command.downgrade(alembic_config(engine), "0008")
    assert _bits(read()) == _bits(after)
    engine.dispose()


def _bits(rows: dict[Any, list[tuple[Any, ...]]]) -> dict[Any, list[tuple[Any, ...]]]:
    """Floats by their hex (bit for bit, type included)."""
    return {k: [tuple(x.hex() if isinstance(x, float) else x for x in r) for r in v] for k, v in rows.items()}


def test_the_worker_process_migration_goes_down_and_up_keeping_every_run(db_url: str, smoke_cfg: Any) -> None:
    """0010 adds run.process (the claiming process's identity); going down drops the column alone:
    runs and their traces stay (a rebuilt run table would have taken them with it)."""
    from alembic import command

    from db.migrate import alembic_config
    from db.process import own
    from db.records import RunResult
    from db.store import ResultStore
    from tests.db.conftest import plan_campaign, worker_result

    engine = make_engine(db_url)
    store = ResultStore(engine)
    cid, _ = plan_campaign(store, smoke_cfg, "process")
    claimed = [store.claim_next(cid, "cpu", "w1", "node1") for _ in range(2)]
    assert None not in claimed
    store.ingest(RunResult.from_json(worker_result(claimed[0], "process", energy_j=5.0)))  # type: ignore[arg-type]

    def counts() -> tuple[int, int]:
        with engine.connect() as conn:
            return (conn.execute(sa.text("select count(*) from run")).scalar_one(),
                    conn.execute(sa.text("select count(*) from trace_sample")).scalar_one())

    def columns() -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns("run")}

    before = counts()
    assert before[0] == 2 and before[1] > 0 and "process" in columns()
    assert [a["process"] for a in store.running_attempts(cid)] == [own()]
    command.downgrade(alembic_config(engine), "0009")
    assert "process" not in columns() and counts() == before
    upgrade(engine)
    assert "process" in columns() and counts() == before
    assert [a["process"] for a in store.running_attempts(cid)] == [None]  # not known for runs claimed before
    engine.dispose()


def test_the_views_of_every_workload_go_down_and_up_again(db_url: str) -> None:
    """0011 gives run_summary and trial_summary the workload and its spec (view version 3); going
    down restores version 2."""
    from alembic import command

    from db.migrate import alembic_config

    def columns(view: str) -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns(view)}

    engine = make_engine(db_url)
    upgrade(engine)
    assert {"workload", "spec_json"} <= columns("run_summary") and {"workload", "spec_json"} <= columns("trial_summary")
    command.downgrade(alembic_config(engine), "0010")
    assert not {"workload", "spec_json"} & (columns("run_summary") | columns("trial_summary"))
    upgrade(engine)
    assert current_revision(engine) == head_revision() and "workload" in columns("trial_summary")
    engine.dispose()
