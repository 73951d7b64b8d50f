"""Compact trace storage: a run's samples of one device are kept in chunks (``trace_chunk``), one
row per run of consecutive samples with the same device, phase and epoch (at most ``CHUNK_MAX``
samples), each measured column packed as one value. Exact: every value reads back as it was
stored (NaN is stored as NULL, as before; infinities are kept).

SQLite: a packed column is

- NULL where every sample's value is NULL,
- a plain REAL where every sample holds that one value (compared bit for bit),
- else a BLOB: ``HEADER`` (magic ``T``, an 8-byte digest of the payload that names it in the
  decoder's cache, the encoding, the width of a value, flags, the sample count) and a zstd
  frame (pyarrow's codec) of the NULL mask (``numpy.packbits``, when any value is NULL) followed by the values,
  byte-shuffled (all first bytes, then all second bytes, ...). The values are float64 bits
  (``RAW``), float64 bits XORed with the previous value's (``XOR``: slowly moving values such as
  time share their high bytes), or, for a column whose values are all whole numbers, integers of
  the narrowest width that holds them (``INT``) or their differences (``DELTA``); integers read
  back as floats, as the column is declared.

PostgreSQL: a packed column is a ``double precision[]`` (NULLs inside; the server compresses it),
unnested by the view.

``trace_sample`` stays a view with the columns it had as a table (``db.views.trace_sample_sql``):
on SQLite it unpacks with the function ``trace_value(packed, i)`` that ``register_functions``
adds to every connection the project opens (``db.engine``, ``db.query``). A plain ``sqlite3``
client lacks it: read traces with ``campaign export --traces``, or call
``register_functions(connection)`` first.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from db.records import SAMPLE_COLUMNS
from db.views import TRACE_CHUNK_MAX, TRACE_PACKED

# Samples per chunk at most (the view's sample index runs over 0 .. CHUNK_MAX - 1).
CHUNK_MAX = TRACE_CHUNK_MAX
# The chunk's own columns; every other sample column is packed.
KEY_COLUMNS = ("device", "phase", "epoch")
# Packed columns every sample needs (NOT NULL in the table trace_sample was).
REQUIRED_COLUMNS = ("t_s", "power_w")
PACKED_COLUMNS: tuple[str, ...] = tuple(c for c in SAMPLE_COLUMNS if c not in KEY_COLUMNS)
assert PACKED_COLUMNS == TRACE_PACKED, "db.views.TRACE_PACKED must list the packed columns in SAMPLE_COLUMNS order"
# The helper table of sample indices the SQLite view joins chunks with (0 .. CHUNK_MAX - 1).
INDEX_TABLE = "trace_index"

RAW, XOR, INT, DELTA = 0, 1, 2, 3
HAS_NULLS = 1
HEADER = struct.Struct("<c8sBBBI")
MAGIC = b"T"
# zstd through pyarrow (a dependency already): about five times zlib's speed at the same size
_ZSTD_LEVEL = 3
_INT_LIMIT = 2.0**53  # whole numbers below this are exact as float64 and as int64


@functools.cache
def _codec() -> Any:
    import pyarrow as pa

    return pa.Codec("zstd", compression_level=_ZSTD_LEVEL)


def _shuffle(a: np.ndarray) -> bytes:
    """The bytes of ``a`` byte-shuffled: all first bytes of its values, then all second bytes..."""
    return a.view(np.uint8).reshape(len(a), a.dtype.itemsize).T.tobytes()


def _unshuffle(data: bytes, n: int, dtype: Any) -> np.ndarray:
    width = np.dtype(dtype).itemsize
    return np.frombuffer(data, dtype=np.uint8, count=n * width).reshape(width, n).T.copy().view(dtype).reshape(n)


def _narrowest(lo: int, hi: int) -> Any:
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return np.int64


def _whole(values: np.ndarray) -> bool:
    """Whether every value is a whole number that int64 and float64 both hold exactly (no -0.0)."""
    return (bool(np.isfinite(values).all()) and bool((np.abs(values) < _INT_LIMIT).all())
            and bool((values == np.trunc(values)).all()) and not bool(np.signbit(values[values == 0]).any()))


def pack_floats(values: np.ndarray, whole: bool | None = None, nulls_possible: bool = True) -> bytes | float | None:
    """One chunk's column (float64, NaN = NULL) packed for SQLite: None, a constant, or a BLOB.
    ``whole``: whether the values are known to be whole numbers (None: look); ``nulls_possible``
    False where the caller knows there is no NaN."""
    n = len(values)
    any_null = False
    if nulls_possible:
        nulls = np.isnan(values)
        any_null = bool(nulls.any())
        if any_null:
            if nulls.all():
                return None
            values = np.where(nulls, 0.0, values)
    bits = values.view(np.uint64)
    if not any_null and bool((bits == bits[0]).all()):
        return float(values[0])
    if whole is None:
        whole = _whole(values)
    if whole:
        ints = values.astype(np.int64)
        diffs = np.diff(ints, prepend=np.int64(0))
        raw_t = _narrowest(int(ints.min()), int(ints.max()))
        delta_t = _narrowest(int(diffs.min()), int(diffs.max()))
        if np.dtype(delta_t).itemsize < np.dtype(raw_t).itemsize:
            enc, arr = DELTA, diffs.astype(delta_t)
        else:
            enc, arr = INT, ints.astype(raw_t)
    else:
        xored = bits ^ np.concatenate(([np.uint64(0)], bits[:-1]))
        # XOR helps where neighbours share their high bytes (time, counters): judged on the top bits
        top_raw = np.count_nonzero(bits >> np.uint64(48))
        top_xor = np.count_nonzero(xored >> np.uint64(48))
        enc, arr = (XOR, xored) if top_xor < top_raw else (RAW, bits)
    body = _shuffle(arr)
    if any_null:
        body = np.packbits(nulls).tobytes() + body
    payload = _codec().compress(body, asbytes=True)
    tag = hashlib.blake2b(payload, digest_size=8).digest()
    return HEADER.pack(MAGIC, tag, enc, arr.dtype.itemsize, HAS_NULLS if any_null else 0, n) + payload


_INT_TYPES = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def unpack_array(packed: Any, n: int) -> np.ndarray:
    """A packed column of a chunk of ``n`` samples as float64 (NaN for NULL)."""
    if packed is None:
        return np.full(n, np.nan)
    if not isinstance(packed, (bytes, bytearray, memoryview)):
        return np.full(n, float(packed))
    buf = bytes(packed)
    _magic, _tag, enc, width, flags, count = HEADER.unpack_from(buf)
    size = (count + 7) // 8 if flags & HAS_NULLS else 0
    body = _codec().decompress(buf[HEADER.size:], decompressed_size=size + count * width, asbytes=True)
    mask = None
    if flags & HAS_NULLS:
        mask = np.unpackbits(np.frombuffer(body, dtype=np.uint8, count=size), count=count).astype(bool)
        body = body[size:]
    if enc in (RAW, XOR):
        bits = _unshuffle(body, count, np.uint64)
        if enc == XOR:
            bits = np.bitwise_xor.accumulate(bits)
        out = bits.view(np.float64)
    else:
        ints = _unshuffle(body, count, _INT_TYPES[width]).astype(np.int64)
        if enc == DELTA:
            ints = np.cumsum(ints)
        out = ints.astype(np.float64)
    if mask is not None:
        out = np.where(mask, np.nan, out)
    return out


def unpack_values(packed: Any, n: int) -> list[float | None]:
    """A packed column as Python values (None for NULL), as the table returned them."""
    if packed is None:
        return [None] * n
    if not isinstance(packed, (bytes, bytearray, memoryview)):
        return [float(packed)] * n
    arr = unpack_array(packed, n)
    values: list[float | None] = arr.tolist()
    nulls = np.flatnonzero(np.isnan(arr))
    for i in nulls.tolist():
        values[i] = None
    return values


# -- chunks ----------------------------------------------------------------------------------------


def _float_column(name: str, col: Sequence[Any] | None, n: int) -> np.ndarray:
    if col is None:
        return np.full(n, np.nan)
    if isinstance(col, np.ndarray):
        return col.astype(np.float64, copy=False)
    try:
        return np.fromiter(col, dtype=np.float64, count=n)  # the fastest from a list of floats
    except (TypeError, ValueError):  # a None among them (or something that is not a number)
        pass
    try:
        return np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        bad = next((x for x in col if not isinstance(x, (int, float)) and x is not None), None)
        raise ValueError(f"trace column {name} holds {bad!r}; it takes numbers (or None)") from exc


def chunk_rows(cols: Sequence[Sequence[Any] | None], n: int, postgres: bool = False) -> list[dict[str, Any]]:
    """The chunk rows (without run and source) of a trace given as columns in ``SAMPLE_COLUMNS``
    order: the samples grouped by device (stably, so each device's samples keep their order), cut
    where the phase or the epoch changes and every ``CHUNK_MAX`` samples."""
    by = dict(zip(SAMPLE_COLUMNS, cols, strict=True))
    for key in ("device", "phase", *REQUIRED_COLUMNS):
        if by[key] is None:
            raise ValueError(f"trace column {key} is missing; every sample needs one")
    device = np.asarray(by["device"], dtype=object)
    phase = np.asarray(by["phase"], dtype=object)
    epoch = np.asarray(by["epoch"], dtype=object) if by["epoch"] is not None else np.full(n, None, dtype=object)
    if any(x is None for x in (device[0], phase[0])) or (device == None).any() or (phase == None).any():  # noqa: E711
        raise ValueError("trace columns device and phase need a value in every sample (found None)")
    floats = {c: _float_column(c, by[c], n) for c in PACKED_COLUMNS}
    for key in REQUIRED_COLUMNS:
        missing = np.flatnonzero(np.isnan(floats[key]))
        if len(missing):
            raise ValueError(f"trace column {key} has no value (None or NaN) in sample {int(missing[0])} "
                             f"({len(missing)} in all); {' and '.join(REQUIRED_COLUMNS)} need a number in every sample")
    order = None
    if n > 1 and bool((device[1:] != device[:-1]).any()):
        order = np.argsort(device.astype(np.int64), kind="stable")
        device, phase, epoch = device[order], phase[order], epoch[order]
        floats = {c: a[order] for c, a in floats.items()}
    change = np.zeros(n, dtype=bool)
    change[0] = True
    if n > 1:
        for values in (device, phase, epoch):
            change[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(change).tolist()
    bounds: list[tuple[int, int]] = []
    for a, b in zip(starts, [*starts[1:], n], strict=True):
        bounds.extend((s, min(s + CHUNK_MAX, b)) for s in range(a, b, CHUNK_MAX))
    hints = {}  # per column, computed once: (whole numbers throughout, NULLs possible)
    if not postgres:
        for c, arr in floats.items():
            nan = np.isnan(arr)
            has_null = bool(nan.any())
            hints[c] = (_whole(np.where(nan, 0.0, arr) if has_null else arr), has_null)
    rows = []
    for a, b in bounds:
        e = epoch[a]
        row: dict[str, Any] = {"device": int(device[a]), "phase": str(phase[a]),
                               "epoch": None if e is None else int(e), "n": b - a}
        for c, arr in floats.items():
            part = arr[a:b]
            row[c] = pack_postgres(part) if postgres else pack_floats(part, *hints[c])
        rows.append(row)
    return rows


def pack_postgres(values: np.ndarray) -> list[float | None]:
    """A chunk's column for PostgreSQL's ``double precision[]``: a list with None for NULL (never
    NULL itself: the view unnests the arrays together)."""
    nulls = np.isnan(values)
    out: list[float | None] = values.tolist()
    for i in np.flatnonzero(nulls).tolist():
        out[i] = None
    return out


# -- SQLite functions ------------------------------------------------------------------------------

_CACHE: dict[bytes, list[float | None]] = {}
_CACHE_MAX = 256  # unpacked columns kept (a chunk's are read together: the view scans chunk by chunk)


def trace_value(packed: Any, i: int) -> Any:
    """The ``i``-th value of a packed column (SQLite function ``trace_value``)."""
    if packed is None or not isinstance(packed, bytes):
        return packed
    key = packed[1:9]
    values = _CACHE.get(key)
    if values is None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        values = unpack_values(packed, HEADER.unpack_from(packed)[5])
        _CACHE[key] = values
    return values[i]


def register_functions(dbapi_conn: Any) -> None:
    """Add ``trace_value`` to a ``sqlite3`` connection (what the ``trace_sample`` view calls)."""
    dbapi_conn.create_function("trace_value", 2, trace_value, deterministic=True)


# -- reading ---------------------------------------------------------------------------------------

# trace_sample's columns, in the order of the view (and of the table it replaced)
SAMPLE_VIEW_COLUMNS = ("id", "run_id", "source", "device", "t_s", "phase", "epoch", *PACKED_COLUMNS[1:])


def column_array(packed: Any, n: int) -> np.ndarray:
    """A packed column of a chunk of ``n`` samples as float64 (NaN for NULL), from either backend
    (PostgreSQL gives a list, with None for NULL)."""
    if isinstance(packed, list):
        return np.array([np.nan if v is None else v for v in packed], dtype=np.float64)
    return unpack_array(packed, n)


def chunk_columns(chunks: Sequence[Any], columns: Sequence[str] = PACKED_COLUMNS) -> dict[str, np.ndarray]:
    """The samples of ``chunks`` (rows with ``id``, ``n``, the chunk's own columns and the packed
    ``columns``, as mappings or named rows), concatenated in the chunks' order: the packed columns
    as float64 arrays (NaN for NULL), ``id``/``run_id``/``device``/``source``/``phase``/``epoch``
    repeated per sample (object arrays for the last three; epoch None outside an epoch)."""
    counts = np.array([int(_get(c, "n")) for c in chunks], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    if "id" in columns or "id" in _fields(chunks):
        ids = np.array([int(_get(c, "id")) for c in chunks], dtype=np.int64)
        starts = np.repeat(ids * CHUNK_MAX, counts)
        offsets = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        out["id"] = starts + offsets
    for key in ("run_id", "device"):
        if key in _fields(chunks):
            out[key] = np.repeat(np.array([int(_get(c, key)) for c in chunks], dtype=np.int64), counts)
    for key in ("source", "phase", "epoch"):
        if key in _fields(chunks):
            out[key] = np.repeat(np.array([_get(c, key) for c in chunks], dtype=object), counts)
    for col in columns:
        if col in PACKED_COLUMNS:
            parts = [column_array(_get(c, col), int(_get(c, "n"))) for c in chunks]
            out[col] = np.concatenate(parts) if parts else np.empty(0)
    return out


def _fields(chunks: Sequence[Any]) -> tuple[str, ...]:
    if not chunks:
        return ()
    first = chunks[0]
    return tuple(first.keys()) if hasattr(first, "keys") else tuple(first._fields)


def _get(row: Any, key: str) -> Any:
    return row[key] if hasattr(row, "keys") else getattr(row, key)


def as_rows(columns: dict[str, np.ndarray], names: Sequence[str] = SAMPLE_VIEW_COLUMNS) -> list[dict[str, Any]]:
    """Columns (``chunk_columns``) as one dict per sample, with Python values as the view returns
    them: floats, ints, None for NULL."""
    lists = {k: to_values(columns[k]) for k in names}
    return [dict(zip(names, row, strict=True)) for row in zip(*(lists[k] for k in names), strict=True)]


def to_values(a: np.ndarray) -> list[Any]:
    """A column as Python values: NaN becomes None (float columns); object columns as they are."""
    values: list[Any] = a.tolist()
    if a.dtype == np.float64:
        for i in np.flatnonzero(np.isnan(a)).tolist():
            values[i] = None
    return values
