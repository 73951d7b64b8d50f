"""Compact traces (``db.traces``, revision 0009): chunks packed exactly, the ``trace_sample`` view
over them, reading back with numpy, deletion, and the size of a 10 Hz trace."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, func, select, text

from db import traces
from db.docs import EXAMPLES
from db.engine import make_engine
from db.query import read_only_engine, run_query
from db.read import CampaignReader
from db.records import SAMPLE_COLUMNS, RunResult
from db.schema import Run, TraceChunk
from db.store import ResultStore
from tests.db.conftest import plan_campaign, worker_result

NAME = "traces"


def bits(values: list[Any]) -> list[Any]:
    """Floats by their bits (type included); None and ints as they are."""
    return [v.hex() if isinstance(v, float) else v for v in values]


def mixed_trace(n: int, seed: int = 0) -> dict[str, list[Any]]:
    """Two devices interleaved, several phases and epochs, more than a chunk's samples per group;
    full-precision floats, whole numbers (small, large, negative), NULLs, NaN, infinities, -0.0,
    a constant column, an all-NULL column and an absent one (mem_util)."""
    rng = np.random.default_rng(seed)
    phase = [("idle", "train", "eval", "cooldown")[min(3, i * 4 // n)] for i in range(n)]
    epoch = [1 + i * 12 // n if p in ("train", "eval") else None for i, p in enumerate(phase)]
    t = np.cumsum(rng.uniform(0.09, 0.11, n))
    power = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 5, n)).tolist()
    energy = np.floor(np.cumsum(rng.uniform(0, 30, n)) * 1000) / 1000
    gpu_util: list[Any] = rng.integers(0, 101, n).astype(float).tolist()
    big: list[Any] = (rng.integers(-(2**52), 2**52, n)).astype(float).tolist()
    cpu: list[Any] = rng.uniform(0, 100, n).tolist()
    for i in range(0, n, 13):
        gpu_util[i] = None
        cpu[i + 1 if i + 1 < n else i] = math.nan
    cpu[5], cpu[6], cpu[7], big[3] = math.inf, -math.inf, -0.0, -0.0
    return {
        "device": [i % 2 for i in range(n)], "t_s": t.tolist(), "phase": phase, "epoch": epoch,
        "power_w": power, "energy_j": energy.tolist(), "gpu_util": gpu_util, "mem_used_mb": big,
        "temperature_c": [None] * n, "sm_clock_mhz": rng.choice([1380.0, 1410.0], n).tolist(),
        "mem_clock_mhz": [1215.0] * n, "power_limit_w": [300.0] * (n // 2) + [250.0] * (n - n // 2),
        "cpu_util": cpu, "rss_mb": [float(i) for i in range(n)],
    }  # fmt: skip


def expected(trace: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """What the view returns in id order: each device's samples in the given order, device after
    device; NaN as NULL, numbers of float columns as floats, absent columns NULL."""
    n = len(trace["t_s"])
    order = sorted(range(n), key=lambda i: trace["device"][i])
    out = {}
    for c in SAMPLE_COLUMNS:
        col = [trace[c][i] for i in order] if c in trace else [None] * n
        if c not in ("device", "phase", "epoch"):
            col = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in col]
        out[c] = col
    return out


def test_chunks_round_trip_exactly_through_numpy() -> None:
    trace = mixed_trace(3 * traces.CHUNK_MAX + 77)
    n = len(trace["t_s"])
    rows = traces.chunk_rows([trace.get(c) for c in SAMPLE_COLUMNS], n)
    assert all(r["n"] <= traces.CHUNK_MAX for r in rows) and sum(r["n"] for r in rows) == n
    for r in rows:  # a chunk holds one device, phase and epoch
        assert isinstance(r["device"], int) and isinstance(r["phase"], str)
    chunks = [{"id": i + 1, **r} for i, r in enumerate(rows)]
    cols = traces.chunk_columns(chunks)
    want = expected(trace)
    for c in SAMPLE_COLUMNS:
        got = traces.to_values(cols[c]) if c in traces.PACKED_COLUMNS else cols[c].tolist()
        assert bits(got) == bits(want[c]), c
    # the ids are unique and ascending in chunk order
    assert len(set(cols["id"].tolist())) == n and bool((np.diff(cols["id"]) > 0).all())


@pytest.mark.parametrize("values", [
    [1.5], [0.0, -0.0], [-0.0, -0.0], [7.0] * 10, [None, None], [math.nan, 1.0], [2.0**53, 1.0],
    [1e308, -1e308, 5e-324], [127.0, -128.0, 0.0], [40000.0, -40000.0], [2.0**40, -(2.0**40)], [math.inf, 1.0],
])  # fmt: skip
def test_a_column_packs_and_unpacks_bit_for_bit(values: list[Any]) -> None:
    a = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    packed = traces.pack_floats(a)
    back = traces.unpack_array(packed, len(a))
    assert [x.hex() for x in back] == [x.hex() for x in a]
    assert traces.trace_value(packed, len(a) - 1) == traces.unpack_values(packed, len(a))[-1]


def test_bad_values_are_refused_in_one_line() -> None:
    n = 3
    cols: dict[str, Any] = {"device": [0] * n, "t_s": [0.0, 0.1, 0.2], "phase": ["idle"] * n,
                            "power_w": [1.0, "high", 2.0]}  # fmt: skip
    with pytest.raises(ValueError, match="trace column power_w holds 'high'; it takes numbers"):
        traces.chunk_rows([cols.get(c) for c in SAMPLE_COLUMNS], n)
    cols["power_w"] = [1.0, 2.0, 3.0]
    cols["phase"] = ["idle", None, "idle"]
    with pytest.raises(ValueError, match="device and phase need a value in every sample"):
        traces.chunk_rows([cols.get(c) for c in SAMPLE_COLUMNS], n)


@pytest.fixture
def store(db_url: str) -> Any:
    s = ResultStore(make_engine(db_url))
    yield s
    s.engine.dispose()


def _ingest_mixed(store: ResultStore, smoke_cfg: Any, n: int = 9000) -> tuple[int, dict[str, list[Any]]]:
    cid, _ = plan_campaign(store, smoke_cfg, NAME)
    trial = store.claim_next(cid, "cpu", "node1-1-abc", "node1")
    assert trial is not None
    trace = mixed_trace(n)
    store.ingest(RunResult.from_json({**worker_result(trial, NAME, energy_j=5.0, power_source="nvml"),
                                      "trace": trace}))  # fmt: skip
    return trial.run_id, trace


def test_the_view_and_the_reader_return_what_was_stored(store: ResultStore, smoke_cfg: Any) -> None:
    run_id, trace = _ingest_mixed(store, smoke_cfg)
    want = expected(trace)
    names = ", ".join(SAMPLE_COLUMNS)
    with store.engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {names} FROM trace_sample WHERE run_id = :r ORDER BY id"), {"r": run_id}).all()
        one_phase = conn.execute(text("SELECT COUNT(*), MIN(epoch), MAX(epoch) FROM trace_sample "
                                      "WHERE run_id = :r AND phase = 'eval'"), {"r": run_id}).one()  # fmt: skip
    for j, c in enumerate(SAMPLE_COLUMNS):
        assert bits([r[j] for r in rows]) == bits(want[c]), c
    evals = [e for p, e in zip(trace["phase"], trace["epoch"], strict=True) if p == "eval"]
    assert tuple(one_phase) == (len(evals), min(evals), max(evals))
    # the reader unpacks with numpy: the same samples, ordered by device and time
    back = CampaignReader(store.engine).trace(run_id)
    by_time = sorted(range(len(trace["t_s"])), key=lambda i: (trace["device"][i], trace["t_s"][i]))
    for c in ("t_s", "power_w", "gpu_util", "cpu_util", "epoch", "phase"):
        got = [r[c] for r in back]
        ref = [trace[c][i] for i in by_time]
        ref = [None if isinstance(v, float) and math.isnan(v) else v for v in ref]
        assert bits(got) == bits([float(v) if isinstance(v, int) and c not in ("epoch",) else v for v in ref]), c
    util = CampaignReader(store.engine).train_utilization([run_id])[run_id]
    train = [u for u, p in zip(trace["gpu_util"], trace["phase"], strict=True) if p == "train" and u is not None]
    assert util == pytest.approx(sum(train) / len(train))


def test_a_10_hz_trace_takes_under_40_bytes_per_sample() -> None:
    from benchmarks.ingest import nvml_trace

    n = 20_000
    trace = nvml_trace(n, seed=2)
    rows = traces.chunk_rows([trace.get(c) for c in SAMPLE_COLUMNS], n)
    packed = sum(len(v) if isinstance(v, bytes) else 8 for r in rows for c, v in r.items() if c in traces.PACKED_COLUMNS)
    assert packed / n < 30  # the chunk rows' own columns and SQLite's pages add a few bytes more


def test_example_queries_answer_as_they_did_on_the_table(tmp_path: Path, smoke_cfg: Any) -> None:
    """The docs' example queries give the same rows on the view as on a table of the same samples
    (the layout before revision 0009)."""
    url = f"sqlite:///{tmp_path / 'examples.db'}"
    store = ResultStore(make_engine(url))
    cid, _ = plan_campaign(store, smoke_cfg, "smoke")
    while (t := store.claim_next(cid, "cpu", "w", "h")) is not None:
        store.ingest(RunResult.from_json(worker_result(t, "smoke", energy_j=40.0 + t.seed, power_source="nvml")))
    store.engine.dispose()

    def answers() -> list[Any]:
        engine = read_only_engine(url)
        out = [run_query(engine, url, ex.sql, {"campaign": "smoke"}).rows for ex in EXAMPLES]
        engine.dispose()
        return out

    on_view = answers()
    assert any("trace_sample" in ex.sql for ex in EXAMPLES) and all(on_view)
    con = sqlite3.connect(tmp_path / "examples.db")
    traces.register_functions(con)
    con.execute("CREATE TABLE trace_rows AS SELECT * FROM trace_sample")
    con.execute("DROP VIEW trace_sample")
    con.execute("ALTER TABLE trace_rows RENAME TO trace_sample")
    con.commit()
    con.close()
    assert answers() == on_view


def test_a_plain_sqlite3_client_needs_the_registered_function(tmp_path: Path, smoke_cfg: Any) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    store = ResultStore(make_engine(url))
    _ingest_mixed(store, smoke_cfg, n=500)
    store.engine.dispose()
    con = sqlite3.connect(tmp_path / "plain.db")
    assert con.execute("SELECT SUM(n) FROM trace_chunk").fetchone()[0] == 500
    with pytest.raises(sqlite3.OperationalError, match="no such function: trace_value"):
        con.execute("SELECT SUM(power_w) FROM trace_sample").fetchone()
    traces.register_functions(con)
    assert con.execute("SELECT COUNT(power_w) FROM trace_sample").fetchone()[0] == 500
    # a sample inserted into the view by plain SQL becomes a chunk of one, read back as given
    run_id = con.execute("SELECT MIN(run_id) FROM trace_chunk").fetchone()[0]
    con.execute("INSERT INTO trace_sample (run_id, source, device, t_s, phase, epoch, power_w, gpu_util) "
                "VALUES (?, 'manual', 3, 0.5, 'idle', NULL, 61, 7.25)", (run_id,))
    got = con.execute("SELECT device, t_s, phase, epoch, power_w, gpu_util, rss_mb FROM trace_sample "
                      "WHERE source = 'manual'").fetchall()
    assert got == [(3, 0.5, "idle", None, 61.0, 7.25, None)] and isinstance(got[0][4], float)
    con.close()


def test_deleting_runs_and_campaigns_removes_their_chunks(store: ResultStore, smoke_cfg: Any) -> None:
    run_id, _ = _ingest_mixed(store, smoke_cfg, n=3000)

    def chunks() -> int:
        with store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(TraceChunk)).scalar_one())

    assert chunks() > 0
    with store.engine.begin() as conn:  # a DELETE on the view deletes the run's chunks
        conn.execute(text("DELETE FROM trace_sample WHERE run_id = :r"), {"r": run_id})
    assert chunks() == 0
    store.ingest(RunResult.from_json({**worker_result(_claim(store), NAME, energy_j=5.0), "trace": mixed_trace(300)}))
    assert chunks() > 0
    with store.engine.begin() as conn:  # deleting a run cascades to its chunks
        conn.execute(delete(Run))
    assert chunks() == 0
    store.ingest(RunResult.from_json({**worker_result(_claim(store), NAME, energy_j=5.0), "trace": mixed_trace(300)}))
    store.delete_campaign(NAME)
    assert chunks() == 0


def _claim(store: ResultStore) -> Any:
    with store.engine.connect() as conn:
        cid = conn.execute(text("SELECT id FROM campaign WHERE name = :n"), {"n": NAME}).scalar_one()
    trial = store.claim_next(cid, "cpu", "node1-1-abc", "node1")
    assert trial is not None
    return trial
