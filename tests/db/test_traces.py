"""Compact traces (``db.traces``, revision 0009): series and points, each value a residual in whole
quanta; the ``trace_sample`` view over them in plain SQL (any sqlite3 client reads it); deletion;
and the size of a 10 Hz trace."""

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
from db.schema import Run, TracePoint, TraceSeries
from db.store import ResultStore
from db.views import TRACE_QUANTA
from tests.db.conftest import plan_campaign, worker_result

NAME = "traces"
SCALE = {c: scale for c, scale, _ in TRACE_QUANTA}


def bits(values: list[Any]) -> list[Any]:
    """Floats by their bits (type included); None and ints as they are."""
    return [v.hex() if isinstance(v, float) else v for v in values]


def mixed_trace(n: int, seed: int = 0) -> dict[str, list[Any]]:
    """Two devices interleaved, several phases and epochs, more than a series' samples per group;
    full-precision floats, whole numbers (small, large, negative), NULLs, NaN, infinities, -0.0,
    a constant column, an all-NULL column and an absent one (mem_util)."""
    rng = np.random.default_rng(seed)
    phase = [("idle", "train", "eval", "cooldown")[min(3, i * 4 // n)] for i in range(n)]
    epoch = [1 + i * 12 // n if p in ("train", "eval") else None for i, p in enumerate(phase)]
    t = np.cumsum(rng.uniform(0.09, 0.11, n))
    power = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 5, n)).tolist()
    energy = np.floor(np.cumsum(rng.uniform(0, 30, n)) * 1000) / 1000
    gpu_util: list[Any] = rng.integers(0, 101, n).astype(float).tolist()
    big: list[Any] = (rng.integers(-(2**42), 2**42, n)).astype(float).tolist()
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


def quantum(column: str, v: Any) -> Any:
    """What a stored value reads back as: rounded to its column's quantum (NaN as NULL, -0.0 as 0.0)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if math.isinf(v):
        return float(v)
    scale = SCALE[column]
    return float(np.rint(v * scale)) / scale + 0.0


def expected(trace: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """What the view returns in id order: each device's samples in the given order, device after
    device; each value to its quantum, absent columns NULL."""
    n = len(trace["t_s"])
    order = sorted(range(n), key=lambda i: trace["device"][i])
    out = {}
    for c in SAMPLE_COLUMNS:
        col = [trace[c][i] for i in order] if c in trace else [None] * n
        if c not in ("device", "phase", "epoch"):
            col = [quantum(c, v) for v in col]
        out[c] = col
    return out


def test_encoding_round_trips_to_the_quantum() -> None:
    trace = mixed_trace(3 * traces.SERIES_MAX + 77)
    n = len(trace["t_s"])
    enc = traces.encode([trace.get(c) for c in SAMPLE_COLUMNS], n)
    assert all(s["n"] <= traces.SERIES_MAX for s in enc.series) and sum(s["n"] for s in enc.series) == n
    assert all(s["first"] % traces.SLOTS == 0 for s in enc.series)  # a series starts a row
    for s in enc.series:  # a series holds one device, phase and epoch
        assert isinstance(s["device"], int) and isinstance(s["phase"], str)
    back = traces.decode(enc)
    want = expected(trace)
    for c in traces.MEASURED_COLUMNS:
        got = [None if math.isnan(v) else v + 0.0 for v in back[c].tolist()]
        assert bits(got) == bits(want[c]), c


def test_nvml_readings_read_back_bit_for_bit() -> None:
    """Readings in NVML's own units (mW, mJ, whole percent, MHz, MiB) are whole numbers of quanta."""
    from benchmarks.ingest import nvml_trace

    trace = nvml_trace(9000, seed=3)
    enc = traces.encode([trace.get(c) for c in SAMPLE_COLUMNS], 9000)
    back = traces.decode(enc)
    for c in traces.MEASURED_COLUMNS:
        if c != "t_s":
            assert bits(back[c].tolist()) == bits([float(v) for v in trace[c]]), c
    assert np.abs(back["t_s"] - np.array(trace["t_s"])).max() <= 0.5e-4  # half a quantum
    # residuals are small numbers (the bytes SQLite needs): time is the sampler's jitter around the
    # series' step (up to 4 ms here, in 0.1 ms), a constant column is 0 throughout
    for k in range(traces.SLOTS):
        assert np.nanmax(np.abs(enc.points[f"t_s_q{k}"])) <= 40
        assert np.nanmax(np.abs(enc.points[f"power_limit_w_q{k}"])) == 0


@pytest.mark.parametrize("values", [
    [1.5], [0.0, -0.0], [7.0] * 10, [None, None], [math.nan, 1.0], [2.0**40, 1.0],
    [127.0, -128.0, 0.0], [40000.0, -40000.0], [2.0**40, -(2.0**40)], [math.inf, 1.0], [-math.inf], [0.1234567],
])  # fmt: skip
def test_a_column_round_trips(values: list[Any]) -> None:
    n = len(values)
    cols: dict[str, Any] = {"device": [0] * n, "t_s": [0.1 * i for i in range(n)], "phase": ["idle"] * n,
                            "power_w": [1.0] * n, "cpu_util": values}  # fmt: skip
    back = traces.decode(traces.encode([cols.get(c) for c in SAMPLE_COLUMNS], n))["cpu_util"]
    want = [quantum("cpu_util", v) for v in values]
    assert bits([None if math.isnan(v) else v + 0.0 for v in back.tolist()]) == bits(want)


def test_bad_values_are_refused_in_one_line() -> None:
    n = 3
    cols: dict[str, Any] = {"device": [0] * n, "t_s": [0.0, 0.1, 0.2], "phase": ["idle"] * n,
                            "power_w": [1.0, "high", 2.0]}  # fmt: skip
    with pytest.raises(ValueError, match="trace column power_w holds 'high'; it takes numbers"):
        traces.encode([cols.get(c) for c in SAMPLE_COLUMNS], n)
    cols["power_w"] = [1.0, None, 3.0]
    with pytest.raises(ValueError, match=r"trace column power_w has no value \(None or NaN\) in sample 1"):
        traces.encode([cols.get(c) for c in SAMPLE_COLUMNS], n)
    cols["power_w"] = [1.0, 2.0, 9.1e12]
    with pytest.raises(ValueError, match=r"trace column power_w holds 9.1e\+12 in sample 2; it stores values within"):
        traces.encode([cols.get(c) for c in SAMPLE_COLUMNS], n)
    cols["power_w"] = [1.0, 2.0, 3.0]
    cols["phase"] = ["idle", None, "idle"]
    with pytest.raises(ValueError, match="device and phase need a value in every sample"):
        traces.encode([cols.get(c) for c in SAMPLE_COLUMNS], n)


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
        got = [r[j] + 0.0 if isinstance(r[j], float) else r[j] for r in rows]
        assert bits(got) == bits(want[c]), c
    evals = [e for p, e in zip(trace["phase"], trace["epoch"], strict=True) if p == "eval"]
    assert tuple(one_phase) == (len(evals), min(evals), max(evals))
    # the reader: the same samples, ordered by device and time
    back = CampaignReader(store.engine).trace(run_id)
    by_time = sorted(range(len(trace["t_s"])), key=lambda i: (trace["device"][i], trace["t_s"][i]))
    for c in ("t_s", "power_w", "gpu_util", "cpu_util"):
        got = [None if r[c] is None else r[c] + 0.0 for r in back]
        assert bits(got) == bits([quantum(c, trace[c][i]) for i in by_time]), c
    assert [r["epoch"] for r in back] == [trace["epoch"][i] for i in by_time]
    util = CampaignReader(store.engine).train_utilization([run_id])[run_id]
    train = [u for u, p in zip(trace["gpu_util"], trace["phase"], strict=True) if p == "train" and u is not None]
    assert util == pytest.approx(sum(train) / len(train))


def test_a_10_hz_trace_takes_under_40_bytes_per_sample(tmp_path: Path, smoke_cfg: Any) -> None:
    """The SQLite file grows by under 40 bytes a sample (the same run stored with and without its trace)."""
    from benchmarks.ingest import nvml_trace

    n = 40_000
    sizes = {}
    for keep in (True, False):
        path = tmp_path / f"size-{keep}.db"
        store = ResultStore(make_engine(f"sqlite:///{path}"))
        cid, _ = plan_campaign(store, smoke_cfg, NAME)
        trial = store.claim_next(cid, "cpu", "w", "h")
        assert trial is not None
        trace = nvml_trace(n, seed=2) if keep else {}
        store.ingest(RunResult.from_json({**worker_result(trial, NAME, energy_j=5.0, power_source="nvml"),
                                          "trace": trace}))  # fmt: skip
        with store.engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        store.engine.dispose()
        sizes[keep] = path.stat().st_size
    assert (sizes[True] - sizes[False]) / n < 40


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
    con.execute("CREATE TABLE trace_rows AS SELECT * FROM trace_sample")
    con.execute("DROP VIEW trace_sample")
    con.execute("ALTER TABLE trace_rows RENAME TO trace_sample")
    con.commit()
    con.close()
    assert answers() == on_view


def test_a_plain_sqlite3_client_reads_and_writes_the_view(tmp_path: Path, smoke_cfg: Any) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    store = ResultStore(make_engine(url))
    run_id, trace = _ingest_mixed(store, smoke_cfg, n=501)
    store.engine.dispose()
    con = sqlite3.connect(tmp_path / "plain.db")  # no function of the project registered
    assert con.execute("SELECT SUM(n) FROM trace_series").fetchone()[0] == 501
    assert con.execute("SELECT COUNT(*), COUNT(power_w), COUNT(temperature_c) FROM trace_sample").fetchone() == (501, 501, 0)
    total = con.execute("SELECT SUM(power_w) FROM trace_sample").fetchone()[0]
    assert total == pytest.approx(sum(quantum("power_w", v) for v in trace["power_w"]))
    # a sample inserted into the view by plain SQL becomes a series of one, read back as given
    con.execute("INSERT INTO trace_sample (run_id, source, device, t_s, phase, epoch, power_w, gpu_util) "
                "VALUES (?, 'manual', 3, 0.5, 'idle', NULL, 61, 7.25)", (run_id,))
    got = con.execute("SELECT device, t_s, phase, epoch, power_w, gpu_util, rss_mb FROM trace_sample "
                      "WHERE source = 'manual'").fetchall()
    assert got == [(3, 0.5, "idle", None, 61.0, 7.3, None)] and isinstance(got[0][4], float)
    # a DELETE on the view removes exactly the samples it names
    ids = [i for (i,) in con.execute("SELECT id FROM trace_sample WHERE run_id = ? AND source = 'nvml' "
                                     "ORDER BY id LIMIT 3", (run_id,))]  # fmt: skip
    con.execute("DELETE FROM trace_sample WHERE id IN (?, ?)", ids[:2])
    left = [i for (i,) in con.execute("SELECT id FROM trace_sample WHERE source = 'nvml' ORDER BY id LIMIT 1")]
    assert left == [ids[2]] and con.execute("SELECT COUNT(*) FROM trace_sample").fetchone()[0] == 500
    con.commit()
    con.close()


def test_deleting_runs_and_campaigns_removes_their_series_and_points(store: ResultStore, smoke_cfg: Any) -> None:
    run_id, _ = _ingest_mixed(store, smoke_cfg, n=3000)

    def rows() -> tuple[int, int]:
        with store.engine.connect() as conn:
            return (int(conn.execute(select(func.count()).select_from(TraceSeries)).scalar_one()),
                    int(conn.execute(select(func.count()).select_from(TracePoint)).scalar_one()))

    assert rows()[0] > 0 and rows()[1] >= 1500
    with store.engine.begin() as conn:  # a DELETE on the view empties the samples; the rows stay, empty
        conn.execute(text("DELETE FROM trace_sample WHERE run_id = :r"), {"r": run_id})
        assert conn.execute(text("SELECT COUNT(*) FROM trace_sample")).scalar_one() == 0
    with store.engine.begin() as conn:  # deleting a series deletes its points
        conn.execute(delete(TraceSeries))
    assert rows() == (0, 0)
    store.ingest(RunResult.from_json({**worker_result(_claim(store), NAME, energy_j=5.0), "trace": mixed_trace(300)}))
    assert rows()[1] > 0
    with store.engine.begin() as conn:  # deleting a run cascades to its series and their points
        conn.execute(delete(Run))
    assert rows() == (0, 0)
    store.ingest(RunResult.from_json({**worker_result(_claim(store), NAME, energy_j=5.0), "trace": mixed_trace(300)}))
    store.delete_campaign(NAME)
    assert rows() == (0, 0)


def test_ids_stay_in_write_order_across_runs(store: ResultStore, smoke_cfg: Any) -> None:
    """Each run's samples take the next block of ids: a later run's samples come after."""
    run_a, _ = _ingest_mixed(store, smoke_cfg, n=101)
    store.ingest(RunResult.from_json({**worker_result(_claim(store), NAME, energy_j=5.0), "trace": mixed_trace(55)}))
    with store.engine.connect() as conn:
        spans = conn.execute(text("SELECT run_id, MIN(id), MAX(id), COUNT(*) FROM trace_sample GROUP BY run_id "
                                  "ORDER BY MIN(id)")).all()  # fmt: skip
    assert [s[3] for s in spans] == [101, 55] and spans[0][0] == run_a and spans[0][2] < spans[1][1]


def _claim(store: ResultStore) -> Any:
    with store.engine.connect() as conn:
        cid = conn.execute(text("SELECT id FROM campaign WHERE name = :n"), {"n": NAME}).scalar_one()
    trial = store.claim_next(cid, "cpu", "node1-1-abc", "node1")
    assert trial is not None
    return trial
