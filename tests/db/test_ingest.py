"""The bulk write path for trace samples (``db.ingest`` through ``db.traces``: series and points),
on SQLite and on PostgreSQL (COPY), read back through the ``trace_sample`` view: each value to its
column's quantum (``db.views.TRACE_QUANTA``), NaN as NULL, infinities kept.

Every test runs on both backends through ``db_url``; the PostgreSQL cases check that the COPY
path is the one that ran.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text

import db.traces as traces
from db.engine import make_engine
from db.ingest import SAMPLE_COLUMNS, insert_samples, prepare
from db.records import RunResult
from db.schema import Epoch, Run, RunPhase, TraceSample, Trial
from db.store import ClaimedTrial, ResultStore
from db.views import TRACE_QUANTA
from jobs.meters.base import SAMPLE_FIELDS
from tests.db.conftest import plan_campaign, worker_result

NAME = "ingest"
N_LARGE = 200_003  # not a multiple of the rows per statement: the last statement is shorter
# Awkward doubles: each must come back as its quantum gives it (tiny ones as 0.0).
EDGE_FLOATS = [5e-324, 2.2250738585072014e-308, 0.1 + 0.2, 1 / 3, -2.5e-300, 123456789.12345679, 2.0**40 + 0.5,
               -(2.0**40)]  # fmt: skip
SCALE = {c: scale for c, scale, _ in TRACE_QUANTA}


def quantum(column: str, v: Any) -> Any:
    """What the view returns for a value given: rounded to the column's quantum, as a float (NaN as
    NULL, -0.0 as 0.0, infinities kept)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if column not in SCALE:
        return v
    if math.isinf(v):
        return float(v)
    return float(np.rint(v * SCALE[column])) / SCALE[column] + 0.0


@pytest.fixture
def store(db_url: str) -> Iterator[ResultStore]:
    s = ResultStore(make_engine(db_url))
    yield s
    s.engine.dispose()


@pytest.fixture
def trials(store: ResultStore, smoke_cfg: Any) -> list[ClaimedTrial]:
    """The first two trials of a planned smoke campaign, claimed (so each has a running run)."""
    cid, _ = plan_campaign(store, smoke_cfg, NAME)
    out = [store.claim_next(cid, "cpu", "node1-1-abc", "node1") for _ in range(2)]
    assert None not in out
    return out  # type: ignore[return-value]


@pytest.fixture
def copy_calls(db_url: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Samples written through PostgreSQL's COPY path, a count per write (stays empty on SQLite)."""
    calls: list[int] = []
    original = traces._copy_postgresql

    def spy(dbapi: Any, first: int, enc: Any) -> None:
        calls.append(enc.n)
        original(dbapi, first, enc)

    monkeypatch.setattr(traces, "_copy_postgresql", spy)
    return calls


@functools.cache
def large_trace(n: int, seed: int = 0) -> dict[str, list[Any]]:
    """A two-GPU trace with every kind of value: full-precision floats over many magnitudes,
    NULLs scattered in every nullable column, columns constant over the run (the power limit)
    and a column that is absent (mem_util), phases in order and epochs None outside training.
    Cached: callers must not modify it."""
    rng = np.random.default_rng(seed)

    def floats(scale: float) -> list[float]:
        return (rng.standard_normal(n) * scale * 10.0 ** rng.uniform(-6, 6, n)).tolist()

    def with_nulls(values: list[Any], frac: float = 0.05) -> list[Any]:
        for i in np.flatnonzero(rng.random(n) < frac).tolist():
            values[i] = None
        return values

    cut = [0, n // 20, n * 17 // 20, n * 19 // 20, n - n // 40, n]
    phase = [
        p
        for i, p in enumerate(("warmup", "idle", "train", "eval", "cooldown"))
        for _ in range(cut[i + 1] - cut[i])
    ]
    epoch = [1 + 10 * i // n if p in ("train", "eval") else None for i, p in enumerate(phase)]
    trace: dict[str, list[Any]] = {
        "device": [i % 2 for i in range(n)],
        "t_s": np.cumsum(rng.uniform(0.0, 0.2, n)).tolist(),
        "phase": phase,
        "epoch": epoch,
        "power_w": floats(100.0),
        "energy_j": with_nulls(floats(1e4), 0.5),
        "gpu_util": with_nulls(rng.integers(0, 101, n).astype(float).tolist()),
        "mem_used_mb": with_nulls(floats(1e3)),
        "temperature_c": with_nulls(floats(50.0)),
        "sm_clock_mhz": with_nulls(rng.choice([1380.0, 1410.0], n).tolist()),
        "mem_clock_mhz": with_nulls([1215.0] * n, 0.001),
        "power_limit_w": [400.0] * n,
        "cpu_util": with_nulls(floats(10.0)),
        "rss_mb": with_nulls(floats(1e3)),
    }
    for j, x in enumerate(EDGE_FLOATS):
        for col in ("power_w", "energy_j", "cpu_util", "rss_mb"):
            trace[col][7 * j + 3] = x
    return trace


def stored(store: ResultStore, run_id: int) -> dict[str, list[Any]]:
    """A run's samples, columnar, in id order (each device's samples in the order they were given,
    device after device)."""
    cols = [getattr(TraceSample, c) for c in SAMPLE_COLUMNS]
    with store.engine.connect() as conn:
        rows = conn.execute(select(*cols).where(TraceSample.run_id == run_id).order_by(TraceSample.id)).all()
    return {c: [r[i] for r in rows] for i, c in enumerate(SAMPLE_COLUMNS)}


def same(a: Any, b: Any) -> bool:
    """Equal, and for floats bit for bit (0.0 and -0.0 differ; NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    return type(a) is type(b) and a == b


def count(store: ResultStore, table: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_large_trace_round_trips_to_the_quantum(
    store: ResultStore, trials: list[ClaimedTrial], copy_calls: list[int]
) -> None:
    trial = trials[0]
    trace = large_trace(N_LARGE)
    result = RunResult.from_json({**worker_result(trial, NAME, energy_j=1234.5, power_source="nvml"), "trace": trace})
    assert store.ingest(result) is True
    back = stored(store, trial.run_id)
    by_device = sorted(range(N_LARGE), key=lambda i: trace["device"][i])  # stable: each device in order
    for col in SAMPLE_COLUMNS:
        want = [quantum(col, trace[col][i]) for i in by_device] if col in trace else [None] * N_LARGE
        assert len(back[col]) == N_LARGE, col
        back[col] = [x + 0.0 if isinstance(x, float) else x for x in back[col]]
        # == on floats is exact (no NaN here; -0.0 is made 0.0 on both sides); the types must match too
        if back[col] == want and set(map(type, back[col])) == set(map(type, want)):
            continue
        bad = [i for i, (a, b) in enumerate(zip(back[col], want, strict=True)) if not same(a, b)]
        assert not bad, (
            f"{col}: sample {bad[0]} stored {back[col][bad[0]]!r}, given {want[bad[0]]!r} ({len(bad)} differ)"
        )
    assert copy_calls == ([N_LARGE] if store.engine.dialect.name == "postgresql" else [])


def test_ingesting_the_same_result_twice_writes_nothing_twice(
    store: ResultStore, trials: list[ClaimedTrial]
) -> None:
    done, failed = trials[0], trials[1]
    results = [RunResult.from_json(worker_result(done, NAME, energy_j=100.0, samples_per_phase=500)),
               RunResult.from_json(worker_result(failed, NAME, energy_j=0.0, status="failed", samples_per_phase=300))]  # fmt: skip
    tables = (Run, Epoch, RunPhase, TraceSample)
    assert [store.ingest(r) for r in results] == [True, True]
    counts = {t: count(store, t) for t in tables}
    assert counts[TraceSample] == 4 * 500 + 4 * 300
    # a done run is left alone; a failed one is rewritten in place, never added a second time
    assert [store.ingest(r) for r in results] == [False, True]
    assert {t: count(store, t) for t in tables} == counts
    with store.engine.connect() as conn:
        states = dict(
            conn.execute(
                select(Trial.trial_key, Trial.state).where(Trial.id.in_([done.trial_id, failed.trial_id]))
            ).all()
        )
    assert states == {done.trial_key: "done", failed.trial_key: "failed"}


def test_nulls_and_special_floats_are_stored_alike_on_every_backend(
    store: ResultStore, trials: list[ClaimedTrial], copy_calls: list[int]
) -> None:
    inf, nan = math.inf, math.nan
    trace = {
        "device": [0, 0, 0, 0, 0, 0],
        "t_s": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
        "phase": ["idle", "idle", "train", "train", "eval", "cooldown"],
        "epoch": [None, None, 1, 1, 1, None],
        "power_w": [inf, -inf, 0.0, 1e12, 5e-324, 42.0],
        "energy_j": [None, nan, inf, -inf, 0.5, None],
        "gpu_util": [95, 0, 100, None, 50, 3],  # ints, as a meter might give them
        "mem_util": [nan] * 6,  # one NaN object throughout: a constant column
        "temperature_c": [None] * 6,
        "cpu_util": [nan, 1.0, nan, 2.0, None, -inf],
    }
    result = {**worker_result(trials[0], NAME, energy_j=1.0, power_source="nvml"), "trace": trace}
    store.ingest(RunResult.from_json(result))
    back = stored(store, trials[0].run_id)
    # NaN is NULL on every backend (SQLite cannot store it); infinities and NULLs are kept
    assert back["power_w"] == [inf, -inf, 0.0, 1e12, 0.0, 42.0]
    assert back["energy_j"] == [None, None, inf, -inf, 0.5, None]
    assert back["gpu_util"] == [95.0, 0.0, 100.0, None, 50.0, 3.0]
    assert all(type(x) is float for x in back["gpu_util"] if x is not None)
    assert back["mem_util"] == [None] * 6
    assert back["temperature_c"] == [None] * 6
    assert back["cpu_util"] == [None, 1.0, None, 2.0, None, -inf]
    assert back["epoch"] == [None, None, 1, 1, 1, None]
    assert back["rss_mb"] == [None] * 6  # absent from the trace
    assert copy_calls == ([6] if store.engine.dialect.name == "postgresql" else [])


def test_a_value_beyond_what_its_column_stores_is_refused_in_one_line(
    store: ResultStore, trials: list[ClaimedTrial]
) -> None:
    """2^53 quanta (9e12 W, 9e9 J, 28,000 years of t_s) and more: only a meter fault reads that."""
    result = worker_result(trials[0], NAME, energy_j=10.0, samples_per_phase=10)
    result["trace"]["energy_j"] = [1.0] * len(result["trace"]["t_s"])
    result["trace"]["energy_j"][7] = 1.7976931348623157e308
    with pytest.raises(ValueError, match=r"trace column energy_j holds 1.8e\+308 in sample 7; it stores"):
        store.ingest(RunResult.from_json(result))
    assert count(store, TraceSample) == 0 and count(store, RunPhase) == 0


@pytest.mark.parametrize("power_source", ["nvml", "simulated", None])
def test_every_sample_carries_its_runs_power_source(
    store: ResultStore, trials: list[ClaimedTrial], power_source: str | None
) -> None:
    for i, trial in enumerate(trials[:2]):
        source = power_source if i == 0 else "rapl"
        result = worker_result(trial, NAME, energy_j=10.0, power_source=source, samples_per_phase=20)
        store.ingest(RunResult.from_json(result))
    with store.engine.connect() as conn:
        pairs = set(conn.execute(
            select(TraceSample.run_id, TraceSample.source, Run.power_source).join(Run, Run.id == TraceSample.run_id)
        ).all())  # fmt: skip
    # a run without a known source is 'unknown', as the run_summary view calls it
    assert pairs == {
        (trials[0].run_id, power_source or "unknown", power_source),
        (trials[1].run_id, "rapl", "rapl"),
    }


def test_a_malformed_trace_is_refused_and_nothing_of_the_run_is_written(
    store: ResultStore, trials: list[ClaimedTrial]
) -> None:
    good = worker_result(trials[0], NAME, energy_j=10.0)
    extra = {**good, "trace": {**good["trace"], "fan_speed_pct": [50.0] * len(good["trace"]["t_s"])}}
    with pytest.raises(ValueError, match=r"\['fan_speed_pct'\] have no column in trace_sample"):
        store.ingest(RunResult.from_json(extra))
    short = {**good, "trace": {**good["trace"], "power_w": good["trace"]["power_w"][:-1]}}
    with pytest.raises(ValueError, match="differ in length"):
        store.ingest(RunResult.from_json(short))
    assert count(store, TraceSample) == 0 and count(store, RunPhase) == 0
    with store.engine.connect() as conn:
        assert conn.execute(select(Run.status).where(Run.id == trials[0].run_id)).scalar_one() == "running"


def test_a_sample_the_database_refuses_fails_the_whole_result(
    store: ResultStore, trials: list[ClaimedTrial], copy_calls: list[int]
) -> None:
    result = worker_result(trials[0], NAME, energy_j=10.0, samples_per_phase=100)
    result["trace"]["power_w"][150] = None  # every sample needs a power
    with pytest.raises(ValueError, match=r"trace column power_w has no value \(None or NaN\) in sample 150"):
        store.ingest(RunResult.from_json(result))
    assert count(store, TraceSample) == 0 and count(store, RunPhase) == 0 and count(store, Epoch) == 0
    with store.engine.connect() as conn:
        assert conn.execute(select(Run.status).where(Run.id == trials[0].run_id)).scalar_one() == "running"
    again = RunResult.from_json(worker_result(trials[0], NAME, energy_j=10.0))
    assert store.ingest(again) is True  # the connection is usable
    assert copy_calls == ([20] if store.engine.dialect.name == "postgresql" else [])


def test_small_and_constant_traces(store: ResultStore, trials: list[ClaimedTrial]) -> None:
    """One sample (every column constant), a trace of identical samples, and an empty trace."""
    run_id = trials[0].run_id
    one: dict[str, list[Any]] = {
        "device": [0],
        "t_s": [0.25],
        "phase": ["idle"],
        "epoch": [None],
        "power_w": [61.5],
    }
    same_row: dict[str, list[Any]] = {
        "device": [1] * 130,
        "t_s": [2.0] * 130,
        "phase": ["train"] * 130,
        "epoch": [3] * 130,
        "power_w": [7.0] * 130,
    }
    with store.engine.begin() as conn:
        assert insert_samples(conn, run_id, "nvml", one) == 1
        assert insert_samples(conn, run_id, "nvml", same_row) == 130
        assert insert_samples(conn, run_id, "nvml", {}) == 0
        assert insert_samples(conn, run_id, "nvml", {"t_s": []}) == 0
    back = stored(store, run_id)
    assert back["t_s"] == [0.25] + [2.0] * 130
    assert back["epoch"] == [None] + [3] * 130
    assert back["device"] == [0] + [1] * 130


def test_numpy_columns_are_stored_as_plain_numbers(store: ResultStore, trials: list[ClaimedTrial]) -> None:
    run_id = trials[0].run_id
    trace = {"device": np.zeros(100, dtype=np.int64), "t_s": np.arange(100) / 10, "phase": ["train"] * 100,
             "epoch": np.ones(100, dtype=np.int32), "power_w": np.linspace(50.0, 250.0, 100)}  # fmt: skip
    with store.engine.begin() as conn:
        insert_samples(conn, run_id, "nvml", trace)  # type: ignore[arg-type]
    back = stored(store, run_id)
    assert back["power_w"] == [quantum("power_w", v) for v in np.linspace(50.0, 250.0, 100).tolist()]
    assert back["device"] == [0] * 100 and back["epoch"] == [1] * 100


def test_sqlite_connection_settings_are_given_back(tmp_path: Path, smoke_cfg: Any) -> None:
    store = ResultStore(make_engine(f"sqlite:///{tmp_path / 'settings.db'}"))
    cid, _ = plan_campaign(store, smoke_cfg, NAME)
    trial = store.claim_next(cid, "cpu", "node1-1-abc", "node1")
    assert trial is not None
    with store.engine.begin() as conn:
        before = conn.execute(text("PRAGMA cache_size")).scalar()
        insert_samples(conn, trial.run_id, "nvml", large_trace(1000))
        assert conn.execute(text("PRAGMA cache_size")).scalar() == before
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    store.engine.dispose()


def test_sample_columns_are_the_meters_fields_and_the_views_columns() -> None:
    view = {c.name for c in TraceSample.__table__.columns} - {"id", "run_id", "source"}
    assert set(SAMPLE_COLUMNS) == set(SAMPLE_FIELDS) == view
    # every measured column has a quantum and a residual column in each slot of trace_point
    assert set(SCALE) == set(SAMPLE_COLUMNS) - {"device", "phase", "epoch"}
    assert len(traces.POINT_COLUMNS) == traces.SLOTS * len(SCALE)


def test_a_prepared_result_is_encoded_once_and_stored_wherever_its_ids_fall(
    store: ResultStore, trials: list[ClaimedTrial], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker prepares its result once (``ResultStore.prepare``: no database work) and may store
    it more than once (a failed run is rewritten, a retry after an outage): each store writes the
    same samples under the ids the database gives it then, and nothing is encoded again."""
    encoded: list[int] = []
    original = traces.encode

    def spy(cols: Any, n: int) -> Any:
        encoded.append(n)
        return original(cols, n)

    monkeypatch.setattr(traces, "encode", spy)
    trace = large_trace(1001)
    failed = RunResult.from_json({**worker_result(trials[0], NAME, energy_j=0.0, status="failed"), "trace": trace})
    prepared = store.prepare(failed)
    assert encoded == [1001] and store.prepare(prepared) is prepared
    other = RunResult.from_json(worker_result(trials[1], NAME, energy_j=5.0, samples_per_phase=33))
    assert store.ingest(other) is True  # its points come first: the prepared trace's ids start later
    first_write = None
    for _ in range(2):  # a failed run is rewritten in place by a second store: its points get new ids
        assert store.ingest(prepared) is True
        back = stored(store, trials[0].run_id)
        # device 0's samples first (the even ones), each to its quantum
        assert len(back["t_s"]) == 1001
        assert back["power_w"][:5] == [quantum("power_w", trace["power_w"][i]) for i in (0, 2, 4, 6, 8)]
        first_write = first_write or back
        assert back == first_write
    assert encoded == [1001, 4 * 33]  # the prepared trace once; the other result as it was stored
    assert len(stored(store, trials[1].run_id)["t_s"]) == 4 * 33
    # prepared for another database: encoded again, for that one
    elsewhere = "postgresql" if store.engine.dialect.name == "sqlite" else "sqlite"
    assert prepare(prepared, elsewhere) is not prepared and encoded[-1] == 1001
