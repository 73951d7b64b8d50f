"""Compact trace storage in plain SQL: a run's samples as series (``trace_series``) and points
(``trace_point``), read through the ``trace_sample`` view (``db.views.trace_sample_sql``).

A series is a run of consecutive samples of one run and device with one phase and epoch (at most
``SERIES_MAX``); it holds those keys once. Each measured column is stored in whole quanta of its
unit (``QUANTA``: 0.1 ms, 1 mW, 1 mJ, 0.1 %, 1 KiB, 0.1 degree C, 1 MHz) as

    value x scale = base + step x position + residual

with ``base`` (and ``step``, for time and the energy counter, which grow steadily) in the series
row and the ``residual`` in the point row. The base is the middle of the series' range and the
step its mean increment, so residuals are small whole numbers: SQLite stores a whole-valued REAL
in a REAL column as an integer of one to six bytes, and a residual of 0 in no byte at all; a
sample costs about 35 bytes where a row of doubles cost about 100. A point has no key to its
series: the series' points are the ids ``first_id .. first_id + n - 1``, given in one block by the
writer (it holds the database's write lock; PostgreSQL: an advisory lock), which also keeps them
in write order on disk.

Exactness: a reading that is a whole number of quanta (NVML's milliwatts, millijoules, percent,
MHz; psutil's 0.1 % CPU load) reads back bit for bit; any other is rounded to its nearest quantum
(at most half a quantum off: 0.05 ms, 0.5 mW, ...; -0.0 reads back as 0.0). NaN is stored as
NULL; infinities are kept. A value beyond 2^53 quanta (9e12 W, 9e9 J, 28,000 years) is refused:
only a meter fault reads that.
"""

from __future__ import annotations

import functools
import itertools
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from db.records import SAMPLE_COLUMNS
from db.views import TRACE_QUANTA, TRACE_SERIES_MAX, TRACE_SLOTS, trace_point_column, trace_point_columns

SERIES_MAX = TRACE_SERIES_MAX
KEY_COLUMNS = ("device", "phase", "epoch")  # the series' own columns
REQUIRED_COLUMNS = ("t_s", "power_w")  # every sample needs a number in these
QUANTA = TRACE_QUANTA
MEASURED_COLUMNS: tuple[str, ...] = tuple(c for c, _, _ in QUANTA)
assert set(MEASURED_COLUMNS) | set(KEY_COLUMNS) == set(SAMPLE_COLUMNS), "every sample column is a key or measured"
SLOTS = TRACE_SLOTS  # samples per trace_point row
POINT_COLUMNS: tuple[str, ...] = trace_point_columns()

# Rows per SQLite INSERT statement at most (within the build's limit of bound parameters: 999
# before SQLite 3.32, 32766 since): with two samples a row, 32 to 48 rows a statement were fastest
# here (16: 0.42 M, 32: 0.44-0.46 M, 64: 0.33-0.35 M samples per CPU second).
_SQLITE_ROWS = 32
_SQLITE_MAX_PARAMS = 999
# Page cache the SQLite connection may use while it writes a trace (KiB; given back afterwards),
# so that fewer pages are spilled to the WAL mid-transaction and written again.
_SQLITE_CACHE_KIB = 256 * 1024
# Quanta beyond this are not whole numbers a double holds exactly: such a value is refused.
_EXACT = 2.0**53
_SCALES = np.array([[scale] for _, scale, _ in QUANTA], dtype=np.float64)  # a column vector
# A series row's columns besides run_id, source and first_id, as encode gives them.
SERIES_COLUMNS: tuple[str, ...] = ("device", "phase", "epoch", "n", *(
    c for name, _, stepped in QUANTA for c in (f"{name}_base", *([f"{name}_step"] if stepped else []))))
_SERIES_INSERT = (f"INSERT INTO trace_series (run_id, source, first_id, {', '.join(SERIES_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * (len(SERIES_COLUMNS) + 3))})")
_MAX_ROW = "SELECT COALESCE(MAX(id), 0) FROM trace_point"
# PostgreSQL: one advisory lock serialises the writers' id blocks (held to the end of the transaction).
_PG_LOCK_KEY = 0x7472616365  # "trace"


def _float_column(name: str, col: Sequence[Any] | None, n: int) -> np.ndarray:
    if col is None:
        return np.full(n, np.nan)
    if isinstance(col, np.ndarray):
        return col.astype(np.float64, copy=False)
    first = col[0] if n else None
    if (isinstance(first, (int, float)) and first == col[-1] and first == col[n // 2]
            and isinstance(col, list) and col.count(first) == n):  # a constant column (a power limit, a clock)
        return np.full(n, float(first))
    try:
        return np.fromiter(col, dtype=np.float64, count=n)  # the fastest from a list of floats
    except (TypeError, ValueError):  # a None among them (or something that is not a number)
        pass
    try:
        return np.array([np.nan if x is None else x for x in col], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        bad = next((x for x in col if not isinstance(x, (int, float)) and x is not None), None)
        raise ValueError(f"trace column {name} holds {bad!r}; it takes numbers (or None)") from exc


class Encoded:
    """A trace cut into series and encoded: ``n`` samples in ``rows`` point rows; ``series`` (one
    dict per series: its keys, ``n``, the bases and steps, and ``first``: its first sample's
    index among the batch's slots, even) and ``points`` (per ``trace_point`` column, a float64
    array of one value per row, NaN for NULL; an unused slot has a NULL time)."""

    __slots__ = ("n", "points", "rows", "series", "sqlite")

    def __init__(self, n: int, rows: int, series: list[dict[str, Any]], points: dict[str, np.ndarray]) -> None:
        self.n, self.rows, self.series, self.points = n, rows, series, points
        self.sqlite: SqliteBatches | None = None  # its SQLite INSERTs, once built (``sqlite_batches``)


def encode(cols: Sequence[Sequence[Any] | None], n: int) -> Encoded:
    """A trace given as columns in ``SAMPLE_COLUMNS`` order (None: the trace lacks the column),
    cut into series (the samples grouped by device, stably, then cut where the phase or the epoch
    changes and every ``SERIES_MAX`` samples) and encoded. ValueError (one line) for a missing
    device, phase, time or power, or a column that holds something other than numbers."""
    by = dict(zip(SAMPLE_COLUMNS, cols, strict=True))
    for key in ("device", "phase", *REQUIRED_COLUMNS):
        if by[key] is None:
            raise ValueError(f"trace column {key} is missing; every sample needs one")
    device_col, phase_col, epoch_col = by["device"], by["phase"], by["epoch"]
    assert device_col is not None and phase_col is not None  # checked above
    device, phase = list(device_col), list(phase_col)
    epoch = list(epoch_col) if epoch_col is not None else [None] * n
    # the measured columns as one matrix (a row per column): every step below is one numpy call
    values = np.empty((len(QUANTA), n))
    for j, (name, _, _) in enumerate(QUANTA):
        values[j] = _float_column(name, by[name], n)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(values * _SCALES)
        exact = np.abs(q) < _EXACT  # a whole number of quanta a double holds (NaN and infinities not)
    if not exact.all():
        huge = np.argwhere(~exact & np.isfinite(values))
        if len(huge):
            j, i = (int(x) for x in huge[0])
            name, scale, _ = QUANTA[j]
            raise ValueError(f"trace column {name} holds {values[j, i]:.2g} in sample {i}; it stores values "
                             f"within +-{_EXACT / scale:.2g} (2^53 quanta of 1/{scale}), a reading beyond is a meter fault")
    for key in REQUIRED_COLUMNS:
        missing = np.flatnonzero(np.isnan(values[MEASURED_COLUMNS.index(key)]))
        if len(missing):
            raise ValueError(f"trace column {key} has no value (None or NaN) in sample {int(missing[0])} "
                             f"({len(missing)} in all); {' and '.join(REQUIRED_COLUMNS)} need a number in every sample")
    device_runs, phase_runs = _runs(device), _runs(phase)
    if any(device[i] is None for i in device_runs) or any(phase[i] is None for i in phase_runs):
        raise ValueError("trace columns device and phase need a value in every sample (found None)")
    if any(device[a] > device[b] for a, b in itertools.pairwise(device_runs)):  # devices interleaved: group them
        order = np.argsort(np.asarray(device, dtype=np.int64), kind="stable")
        device, phase, epoch = ([col[i] for i in order.tolist()] for col in (device, phase, epoch))
        q, exact = q[:, order], exact[:, order]
        device_runs, phase_runs = _runs(device), _runs(phase)
    # a series starts where the device, the phase or the epoch changes (runs found by C loops over
    # the lists: their values come in long runs)
    changes = sorted({*device_runs, *phase_runs, *_runs(epoch)})
    starts_list: list[int] = []
    for a, b in itertools.pairwise([*changes, n]):
        starts_list.extend(range(a, b, SERIES_MAX))
    starts = np.array(starts_list, dtype=np.int64)
    counts = np.diff(np.append(starts, n))
    position = np.arange(n, dtype=np.int64) - np.repeat(starts, counts)
    # every series starts a row: its samples' slots follow from there (the last row of a series of
    # odd length keeps its second slot empty)
    row_counts = -(-counts // SLOTS)
    first = SLOTS * (np.cumsum(row_counts) - row_counts)
    slot_of = np.repeat(first, counts) + position
    rows = int(row_counts.sum())
    base, steps, residual = _encode(q, exact, starts, counts, position)
    series: list[dict[str, Any]] = []
    for k, (a, m, f) in enumerate(zip(starts.tolist(), counts.tolist(), first.tolist(), strict=True)):
        row = {"device": int(device[a]), "phase": str(phase[a]), "epoch": None if epoch[a] is None else int(epoch[a]),
               "n": int(m), "first": int(f)}
        for name, b in zip(MEASURED_COLUMNS, base[:, k].tolist(), strict=True):
            row[f"{name}_base"] = None if math.isnan(b) else b
        for j, st in steps.items():
            row[f"{MEASURED_COLUMNS[j]}_step"] = float(st[k])
        series.append(row)
    slots = np.full((len(QUANTA), rows * SLOTS), np.nan)
    slots[:, slot_of] = residual
    points = {trace_point_column(name, k): slots[j, k::SLOTS]
              for j, name in enumerate(MEASURED_COLUMNS) for k in range(SLOTS)}
    return Encoded(n, rows, series, points)


def _runs(col: list[Any]) -> list[int]:
    """The index of each run of equal values in ``col`` (0 first)."""
    out, i = [], 0
    for _, group in itertools.groupby(col):
        out.append(i)
        i += len(list(group))
    return out


def _encode(q: np.ndarray, exact: np.ndarray, starts: np.ndarray, counts: np.ndarray,
            position: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]:
    """Of the quanta ``q`` (a row per measured column, NaN: NULL; ``exact``: whole numbers a double
    holds), per column and series the base (NaN where the series has no value), for the stepped
    columns the step per sample (by row), and per sample the residual."""
    steps: dict[int, np.ndarray] = {}
    firsts: dict[int, np.ndarray] = {}
    q = q.copy()
    for j, (_, _, stepped) in enumerate(QUANTA):
        if not stepped:
            continue
        # the mean increment between the series' first and last values
        first = np.zeros(len(starts))
        step = np.zeros(len(starts))
        for k, (a, m) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
            if exact[j, a] and exact[j, a + m - 1]:  # the usual case: no look for the ends
                idx0, idx1 = 0, m - 1
            else:
                idx = np.flatnonzero(exact[j, a:a + m])
                if not len(idx):
                    continue
                idx0, idx1 = int(idx[0]), int(idx[-1])
            first[k] = q[j, a + idx0]
            if idx1 > idx0:
                step[k] = np.rint((q[j, a + idx1] - first[k]) / (idx1 - idx0))
            first[k] -= step[k] * idx0
        q[j] -= np.repeat(first, counts) + np.repeat(step, counts) * position
        steps[j], firsts[j] = step, first
    qf = np.where(exact, q, np.nan)
    with np.errstate(invalid="ignore"):  # an all-NULL series: NaN bounds
        lo = np.fmin.reduceat(qf, starts, axis=1)
        hi = np.fmax.reduceat(qf, starts, axis=1)
    # the middle of the range (residuals in -128 .. 127 take one byte), except that a range that
    # fits -5 .. 256 starts at -5: Python's cached small ints make binding the values cheaper (a
    # few take two bytes instead of one); a constant series keeps residual 0, stored in no byte
    base = np.where(hi == lo, lo, np.where(hi - lo <= 261, lo + 5, np.floor((lo + hi) / 2)))
    if not exact.all():  # a series of infinities only: base 0, so inf + base = inf
        has_inf = np.add.reduceat((~exact & ~np.isnan(q)).astype(np.int64), starts, axis=1) > 0
        base = np.where(np.isnan(base) & has_inf, 0.0, base)
    residual = q - np.repeat(np.nan_to_num(base, nan=0.0), counts, axis=1)
    for j, first in firsts.items():
        base[j] += first
    return base, steps, residual


def _constant(a: np.ndarray) -> tuple[bool, float | None]:
    """Whether every value of a column is the same (all NULL counts), and that value."""
    nan = np.isnan(a)
    if nan.all():
        return True, None
    if not nan.any() and bool((a == a[0]).all()):
        return True, float(a[0])
    return False, None


def write(conn: Any, run_id: int, source: str, trace: Encoded | Sequence[Sequence[Any] | None], n: int) -> int:
    """Write a trace of a run as series and points, inside the caller's transaction (a SQLAlchemy
    ``Connection``; on SQLite the transaction has written already, so it holds the write lock):
    ``trace`` encoded already (``encode``; its batches built by ``sqlite_batches`` where the
    database is SQLite), or its columns in ``SAMPLE_COLUMNS`` order, encoded here. Returns the
    number of samples written."""
    from sqlalchemy import insert, text

    from db.schema import TraceSeries

    enc = trace if isinstance(trace, Encoded) else encode(trace, n)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    dbapi = conn.connection.dbapi_connection
    if dialect == "sqlite":  # the DB-API directly: a run's statements cost more in SQLAlchemy than its series
        batches = sqlite_batches(enc, _variable_limit(dbapi))
        cur = dbapi.cursor()
        try:
            first = int(cur.execute(_MAX_ROW).fetchone()[0]) + 1
            cur.executemany(_SERIES_INSERT, ((run_id, source, SLOTS * first + s["first"],
                                              *(s[c] for c in SERIES_COLUMNS)) for s in enc.series))
        finally:
            cur.close()
        batches.write(dbapi, first)
        return enc.n
    first = int(conn.execute(text(_MAX_ROW)).scalar_one()) + 1
    conn.execute(insert(TraceSeries), [
        {"run_id": run_id, "source": source, "first_id": SLOTS * first + s["first"], **{c: s[c] for c in SERIES_COLUMNS}}
        for s in enc.series
    ])
    if dialect == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_postgresql(dbapi, first, enc)
    else:
        _insert_executemany(conn, first, enc)
    return enc.n


def _variable_limit(dbapi: Any = None) -> int:
    """The most parameters a statement may bind on this SQLite connection (or, without one, on a
    new connection of the library this process links)."""
    if dbapi is None:
        return _library_variable_limit()
    try:
        return int(dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    except AttributeError:  # Python before 3.11
        return _SQLITE_MAX_PARAMS


@functools.cache
def _library_variable_limit() -> int:
    con = sqlite3.connect(":memory:")
    try:
        return _variable_limit(con)
    finally:
        con.close()


class SqliteBatches:
    """A trace's points as SQLite ``executemany`` calls, built before the write (the writer's lock
    is held only to run them): per call the multi-row INSERT and its parameter lists, each list's
    first parameter the id of the statement's first row, set by ``write`` once the trace's first
    id is known (the lists are reused by a second write: every id is set again).

    A column that holds one value throughout is bound once per statement (?2 .. ?k; a NULL one is
    left out: NULL is its default); the first id too (?1: the rows' ids are ?1 + r). Each
    statement's other parameters are one row of an integer matrix that numpy fills (the varying
    columns' values column by column) and turns into Python ints at once (small ones are Python's
    cached objects); the few NULLs (NaN) and infinities are set into those lists afterwards."""

    __slots__ = ("calls", "limit")

    def __init__(self, enc: Encoded, limit: int) -> None:
        const_names: list[str] = []
        const_values: list[Any] = []
        var_names: list[str] = []
        var_cols: list[np.ndarray] = []
        for name in POINT_COLUMNS:
            a = enc.points[name]
            same, value = _constant(a)
            if same:
                if value is not None:
                    const_names.append(name)
                    const_values.append(_whole_or_float(value))
            else:
                var_names.append(name)
                var_cols.append(a)
        k, v, n = len(const_values) + 1, len(var_names), enc.rows
        per_statement = max(1, min(_SQLITE_ROWS, (limit - k) // max(v, 1)))
        whole = n // per_statement * per_statement

        def parameters(start: int, statements: int, rows: int) -> tuple[list[int], list[list[Any]]]:
            m = np.empty((statements, v * rows))
            for j, col in enumerate(var_cols):
                m[:, j * rows:(j + 1) * rows] = col[start:start + statements * rows].reshape(statements, rows)
            exact = np.isfinite(m)
            whole_numbers = bool(exact.all())
            params: list[list[Any]] = (m if whole_numbers else np.where(exact, m, 0.0)).astype(np.int64).tolist()
            if not whole_numbers:
                for r, c in np.argwhere(~exact).tolist():
                    x = float(m[r, c])
                    params[r][c] = None if math.isnan(x) else x
            head = [0, *const_values]
            for row in params:
                row[:0] = head
            return list(range(start, start + statements * rows, rows)), params

        names = (tuple(const_names), tuple(var_names))
        self.limit = limit
        self.calls: list[tuple[str, list[int], list[list[Any]]]] = []
        if whole:
            self.calls.append((_point_insert(*names, per_statement), *parameters(0, whole // per_statement, per_statement)))
        if whole < n:  # the rest one row a statement: a statement of its own size would be compiled anew
            self.calls.append((_point_insert(*names, 1), *parameters(whole, n - whole, 1)))

    def write(self, dbapi: Any, first: int) -> None:
        """Run the INSERTs on a DB-API connection inside its transaction, the points' ids from ``first``."""
        cur = dbapi.cursor()
        cache_size = int(cur.execute("PRAGMA cache_size").fetchone()[0])  # < 0: KiB, > 0: pages
        grow = -cache_size < _SQLITE_CACHE_KIB
        try:
            if grow:
                cur.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
            for sql, offsets, params in self.calls:
                for row, offset in zip(params, offsets, strict=True):
                    row[0] = first + offset
                cur.executemany(sql, params)
        finally:
            if grow:  # the setting is the connection's: the pool gets the connection back as it was
                cur.execute(f"PRAGMA cache_size = {cache_size}")
            cur.close()


def sqlite_batches(enc: Encoded, limit: int | None = None) -> SqliteBatches:
    """The trace's SQLite INSERTs (``SqliteBatches``) for statements of at most ``limit`` parameters
    (default: the SQLite library's); built once per trace and kept with it."""
    limit = _variable_limit() if limit is None else limit
    if enc.sqlite is None or enc.sqlite.limit > limit:
        enc.sqlite = SqliteBatches(enc, limit)
    return enc.sqlite


@functools.lru_cache(maxsize=64)
def _point_insert(const_names: tuple[str, ...], var_names: tuple[str, ...], rows: int) -> str:
    """The multi-row INSERT of ``rows`` points: ``?1`` the first id, ``?2 ..`` the constants, then
    the varying columns' values column by column."""
    k, v = len(const_names) + 1, len(var_names)
    consts = [f"?{i}" for i in range(2, k + 1)]
    values = ("(" + ", ".join([f"?1 + {r}", *consts, *(f"?{k + j * rows + r + 1}" for j in range(v))]) + ")"
              for r in range(rows))
    columns = ", ".join(["id", *const_names, *var_names])
    return f"INSERT INTO trace_point ({columns}) VALUES {', '.join(values)}"


def _whole_or_float(x: float) -> int | float:
    return int(x) if math.isfinite(x) and abs(x) < _EXACT else x


def _null_lists(enc: Encoded) -> list[list[Any]]:
    """The point columns as lists with None for NULL (PostgreSQL would store NaN as NaN)."""
    out = []
    for name in POINT_COLUMNS:
        a = enc.points[name]
        values: list[Any] = a.tolist()
        for i in np.flatnonzero(np.isnan(a)).tolist():
            values[i] = None
        out.append(values)
    return out


def _copy_postgresql(dbapi: Any, first: int, enc: Encoded) -> None:
    ids = range(first, first + enc.rows)
    with dbapi.cursor() as cur, cur.copy(f"COPY trace_point (id, {', '.join(POINT_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", *["float8"] * len(POINT_COLUMNS)])
        for row in zip(ids, *_null_lists(enc), strict=True):
            copy.write_row(row)


def _insert_executemany(conn: Any, first: int, enc: Encoded) -> None:
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    names = ("id", *POINT_COLUMNS)
    sql = f"INSERT INTO trace_point ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})"
    conn.exec_driver_sql(sql, list(zip(range(first, first + enc.rows), *_null_lists(enc), strict=True)))


def decode(enc: Encoded) -> dict[str, np.ndarray]:
    """The measured columns back from ``encode``'s series and points (float64, NaN for NULL, the
    samples in series order), computed as the ``trace_sample`` view computes them."""
    counts = np.array([s["n"] for s in enc.series], dtype=np.int64)
    position = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    slot_of = np.repeat(np.array([s["first"] for s in enc.series], dtype=np.int64), counts) + position
    out = {}
    for name, scale, stepped in QUANTA:
        slots = np.empty(enc.rows * SLOTS)
        for k in range(SLOTS):
            slots[k::SLOTS] = enc.points[trace_point_column(name, k)]
        base = np.repeat(np.array([np.nan if s[f"{name}_base"] is None else s[f"{name}_base"] for s in enc.series],
                                  dtype=np.float64), counts)
        value = base + slots[slot_of]
        if stepped:
            value = value + np.repeat(np.array([s[f"{name}_step"] for s in enc.series], dtype=np.float64), counts) * position
        out[name] = value / scale
    return out
