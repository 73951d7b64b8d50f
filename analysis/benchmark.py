"""A campaign's measurements as a tabular energy benchmark of a whole cell space, and its query API.

One Parquet file: one row per (GPU type, cell, epoch budget), ordered by GPU type, then cell (in
the order of the space given), then budget, with

- the cell: ``arch_hash`` (NAS-Bench-101's hash), ``num_vertices``, ``num_edges``, ``matrix_bits``
  (the pruned adjacency matrix, row-major, bit ``i * n + j``) and ``ops_code`` (interior ops, base
  3, vertex 1 least significant, digits as ``jobs.cell.OPS``); ``params`` and ``flops`` (forward
  FLOPs per image) of the campaign's network;
- energy in Wh: ``energy_wh``, ``energy_wh_std``, ``energy_n`` and ``energy_source``: the mean,
  sample standard deviation and count of the campaign's runs where the cell was measured at that
  budget (``measured``), else the energy model's prediction and its ensemble spread (``predicted``,
  ``energy_n`` 0); ``power_kind`` says what the campaign's energies are (``measured`` by a hardware
  meter, or ``simulated``: not a measurement);
- ``training_time_s`` (run wall time: training and evaluation) the same way, ``time_source``;
- ``valid_accuracy`` and ``test_accuracy``: measured means, else NAS-Bench-101's published
  means over its repeats when its file is given (`read_nasbench101`, source ``nasbench101``), else
  predicted by the accuracy model (ridge regression on the cell's features and log budget,
  clipped to [0, 1]); ``accuracy_source``.

The file's key-value metadata ``campaign.benchmark`` is a JSON block: format, campaign, code
revision, creation time, space, budgets, GPU types, units, the energy and accuracy models'
descriptions and validation metrics, the network configuration, and ``checksum``: the sha256 of
the table's Arrow IPC stream in a canonical form (`table_checksum`), which `Benchmark.load` verifies.

Queries (`Benchmark`) follow NAS-Bench-101's API: ``query(matrix, ops, epochs)``,
``query_hash(hash, epochs)``, ``is_valid(matrix, ops)``, iteration over the hashes and random
sampling. An invalid cell raises ``jobs.cell.CellSpecError`` (a ValueError), a cell or budget the
benchmark lacks `UnknownCell` (a LookupError); both one line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from analysis.carbon import J_PER_WH
from db.errors import CampaignError
from jobs.cell import INPUT, OPS, OUTPUT, CellSpec

FORMAT = "campaign.benchmark/1"
META_KEY = b"campaign.benchmark"
SOURCES = ("measured", "predicted")
UNITS = {
    "energy_wh": "Wh per training run of the budget (train + eval phases, as the campaign measured them)",
    "energy_wh_std": "Wh (sample std over runs where measured; ensemble spread where predicted)",
    "training_time_s": "s (run wall time: training and evaluation)",
    "valid_accuracy": "fraction", "test_accuracy": "fraction",
    "params": "count (trainable parameters)", "flops": "FLOP (forward, per image)", "epochs": "epochs",
}
#: Numeric columns a query returns, in this order.
NUMERIC = ("params", "flops", "num_vertices", "num_edges", "energy_wh", "energy_wh_std", "energy_n",
           "training_time_s", "valid_accuracy", "test_accuracy")
_INTS = ("params", "flops", "num_vertices", "num_edges", "energy_n")
#: Query results a Benchmark keeps for repeated queries of the same row.
KEPT_ROWS = 50_000
_TEXT = ("energy_source", "time_source", "accuracy_source", "power_kind")
# NUMERIC split by type, in the order ``Benchmark.query_hash`` reads a row's two runs.
_ROW_INTS = ("params", "flops", "num_vertices", "num_edges", "energy_n")
_ROW_FLOATS = ("energy_wh", "energy_wh_std", "training_time_s", "valid_accuracy", "test_accuracy")


class UnknownCell(CampaignError, LookupError):
    """A cell, budget or GPU type the benchmark does not hold; the message is one line."""


class BenchmarkFileError(CampaignError, ValueError):
    """A file that is not a benchmark of this format, or whose checksum does not match."""


@dataclass
class CellTable:
    """A cell space in columns, as the surrogate encodes it: ``adjacency`` (n, 7, 7) padded as
    ``analysis.surrogate.pad_cell`` does, ``codes`` (n, 7) op codes (``OP_CODES``), and the
    network's ``params`` and ``flops`` per cell."""

    hashes: list[str]
    adjacency: np.ndarray
    codes: np.ndarray
    num_vertices: np.ndarray
    num_edges: np.ndarray
    params: np.ndarray
    flops: np.ndarray
    description: str = ""

    def __len__(self) -> int:
        return len(self.hashes)


def encode_bits(adjacency: np.ndarray, codes: np.ndarray, num_vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``matrix_bits`` and ``ops_code`` of padded cells (the inverse of `decode_cell`)."""
    from analysis.surrogate import OP_CODES

    n = np.asarray(num_vertices, dtype=np.int64)
    nv = adjacency.shape[1]
    bits = np.zeros(len(n), dtype=np.int64)
    # vertex i < n - 1 of the pruned cell is padded vertex i; the output (n - 1) is padded vertex 6
    for i in range(nv):
        for j in range(i + 1, nv):
            present = adjacency[:, i, j].astype(np.int64) != 0
            if not present.any():
                continue
            jj = np.where(j == nv - 1, n - 1, j)
            bits |= np.where(present, np.left_shift(np.int64(1), i * n + jj), 0)
    digit = {OP_CODES[op]: k for k, op in enumerate(OPS)}
    ops_code = np.zeros(len(n), dtype=np.int64)
    for v in range(nv - 2, 0, -1):
        d = np.zeros(len(n), dtype=np.int64)
        for code, k in digit.items():
            d[codes[:, v] == code] = k
        ops_code = ops_code * 3 + d
    return bits, ops_code


def decode_cell(bits: int, ops_code: int, num_vertices: int) -> tuple[list[list[int]], list[str]]:
    """The pruned matrix and ops of a row (`encode_bits`)."""
    n = int(num_vertices)
    matrix = [[(int(bits) >> (i * n + j)) & 1 for j in range(n)] for i in range(n)]
    ops, code = [INPUT], int(ops_code)
    for _ in range(n - 2):
        ops.append(OPS[code % 3])
        code //= 3
    return matrix, [*ops, OUTPUT]


# --------------------------------------------------------------------------------------------
# NAS-Bench-101's published file, read without TensorFlow


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: doubles as floats, varints as ints, others as bytes."""
    import struct

    pos, end = 0, len(buf)
    value: Any
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<d", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<f", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        yield number, value


def read_nasbench101(path: str | Path) -> pd.DataFrame:
    """NAS-Bench-101's published TFRecord file (``nasbench_full.tfrecord`` or
    ``nasbench_only108.tfrecord``) as a table, without TensorFlow: one row per record (cell, budget,
    repeat) with arch_hash, epochs, params, and the final evaluation's training_time_s,
    valid_accuracy and test_accuracy, as NAS-Bench-101's ``api.py`` reads them.

    Records are ``[hash, epochs, adjacency, ops, base64 ModelMetrics]`` JSON lists in TFRecord
    framing (length, its CRC, data, its CRC; the CRCs are not checked); ModelMetrics is read by
    field number (``model_metrics.proto``: evaluation_data = 1, trainable_parameters = 2;
    EvaluationData: training_time = 2, validation_accuracy = 4, test_accuracy = 5).
    """
    import base64
    import struct

    rows: list[tuple[str, int, int, float, float, float]] = []
    with open(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise BenchmarkFileError(f"{path}: truncated TFRecord header after {len(rows)} records")
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            f.read(4)
            if len(data) < length:
                raise BenchmarkFileError(f"{path}: truncated TFRecord after {len(rows)} records")
            try:
                arch_hash, epochs, _, _, raw = json.loads(data)
                evals, params = [], 0
                for number, value in _fields(base64.b64decode(raw)):
                    if number == 1:
                        evals.append(dict(_fields(value)))
                    elif number == 2:
                        params = int(value)
            except (ValueError, TypeError, IndexError) as exc:
                raise BenchmarkFileError(f"{path}: record {len(rows)} is not a NAS-Bench-101 record ({exc})") from None
            final = evals[-1] if evals else {}
            rows.append((str(arch_hash), int(epochs), params, float(final.get(2, math.nan)),
                         float(final.get(4, math.nan)), float(final.get(5, math.nan))))
    df = pd.DataFrame(rows, columns=["arch_hash", "epochs", "params", "training_time_s", "valid_accuracy",
                                     "test_accuracy"])
    df["repeat"] = df.groupby(["arch_hash", "epochs"]).cumcount() + 1
    return df


# --------------------------------------------------------------------------------------------
# Generation


@dataclass
class _Models:
    energy: Any
    time: Any
    accuracy: dict[str, Any] = field(default_factory=dict)


def _run_means(runs: pd.DataFrame) -> pd.DataFrame:
    df = runs.assign(energy_wh=runs["energy_j"].astype("float64") / J_PER_WH)
    g = df.groupby(["arch_hash", "epochs"], sort=False)
    out = pd.DataFrame({"energy_wh": g["energy_wh"].mean(), "energy_wh_std": g["energy_wh"].std(),
                        "energy_n": g.size(), "training_time_s": g["duration_s"].mean(),
                        "valid_accuracy": g["valid_accuracy"].mean(), "test_accuracy": g["test_accuracy"].mean()})
    return out.reset_index()


def _features(adjacency: np.ndarray, codes: np.ndarray, params: np.ndarray, flops: np.ndarray) -> np.ndarray:
    from analysis.surrogate import encode_padded

    return encode_padded(adjacency, codes, params, flops, "extended")


def fit_accuracy_model(x: np.ndarray, epochs: np.ndarray, accuracy: np.ndarray, ridge: float = 1.0) -> dict[str, Any]:
    """Ridge regression of accuracy on standardized cell features and log budget (a plain, cheap
    predictor: with few measured cells it stays near their mean)."""
    z = np.column_stack([x, np.log(epochs)])
    ok = np.isfinite(accuracy)
    z, a = z[ok], accuracy[ok]
    if len(a) == 0:
        return {"kind": "none", "mean": math.nan}
    mean, std = z.mean(axis=0), z.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    zs = (z - mean) / std
    a_mean = float(a.mean())
    coef = np.linalg.solve(zs.T @ zs + ridge * len(a) * np.eye(zs.shape[1]), zs.T @ (a - a_mean))
    fitted = np.clip(a_mean + zs @ coef, 0.0, 1.0)
    return {"kind": "ridge", "mean": mean, "std": std, "coef": coef, "intercept": a_mean,
            "n": int(len(a)), "train_mae": float(np.mean(np.abs(fitted - a)))}


def predict_accuracy(model: Mapping[str, Any], x: np.ndarray, epochs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Predicted accuracy of every cell (rows of ``x``) at every budget: shape (cells, budgets)."""
    e = np.log(np.asarray(epochs, dtype=np.float64))
    if model["kind"] == "none":
        return np.full((len(x), len(e)), math.nan)
    mean, std, coef = model["mean"], model["std"], model["coef"]
    cell_part = model["intercept"] + ((x - mean[:-1]) / std[:-1]) @ coef[:-1]
    budget_part = (e - mean[-1]) / std[-1] * coef[-1]
    return np.clip(cell_part[:, None] + budget_part[None, :], 0.0, 1.0)


def _fit_models(cells: CellTable, runs: pd.DataFrame, network: Mapping[str, Any], members: int) -> tuple[_Models, dict]:
    from analysis.surrogate import EnsembleConfig, fit_energy_model

    config = EnsembleConfig(members=members)
    kw = dict(flops=runs["flops"].to_numpy(dtype=np.float64), groups=runs["arch_hash"].astype(str).to_numpy(),
              config=config, network=dict(network))
    args = (list(runs["matrix"]), list(runs["ops"]), runs["params"].to_numpy(dtype=np.float64),
            runs["epochs"].to_numpy(dtype=np.float64))
    data = {"runs": len(runs), "cells": int(runs["arch_hash"].nunique()),
            "budgets": sorted(int(b) for b in runs["epochs"].unique())}
    energy = fit_energy_model(*args, runs["energy_j"].to_numpy(dtype=np.float64) / J_PER_WH, data=data, **kw)
    duration = fit_energy_model(*args, runs["duration_s"].to_numpy(dtype=np.float64), data=data, **kw)
    from analysis.surrogate import pad_cells

    adj, codes = pad_cells(list(runs["matrix"]), list(runs["ops"]))
    x = _features(adj, codes, runs["params"].to_numpy(dtype=np.float64), runs["flops"].to_numpy(dtype=np.float64))
    ep = runs["epochs"].to_numpy(dtype=np.float64)
    acc = {k: fit_accuracy_model(x, ep, runs[k].to_numpy(dtype=np.float64)) for k in ("valid_accuracy", "test_accuracy")}
    meta = {
        "energy_model": {"kind": f"ensemble of {members} MLPs (analysis.surrogate.fit_energy_model)",
                         "validation_mae_wh": energy.val_mae_wh, "budget_model": energy.metadata["budget_model"],
                         "features": energy.metadata["feature_definition"], "fitted_on": data},
        "time_model": {"kind": "the same ensemble recipe on the runs' wall time", "validation_mae_s": duration.val_mae_wh},
        "accuracy_model": {k: {"kind": "ridge regression on the extended features and log budget, clipped to [0, 1]",
                               "n": m.get("n", 0), "train_mae": m.get("train_mae", math.nan)} for k, m in acc.items()},
    }
    return _Models(energy, duration, acc), meta


def generate(
    cells: CellTable,
    runs: pd.DataFrame,
    epochs: Sequence[int],
    *,
    campaign: str,
    revision: str = "unknown",
    network: Mapping[str, Any] | None = None,
    space: str = "",
    members: int = 4,
    published_accuracy: pd.DataFrame | None = None,
    model_dir: str | Path | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The benchmark table (a pyarrow Table with its metadata block) and the metadata as a dict.

    ``runs``: the campaign's finished runs (columns arch_hash, matrix, ops, params, flops, epochs,
    gpu_type, power_kind, energy_j, duration_s, valid_accuracy, test_accuracy); one energy, time
    and accuracy model is fitted per GPU type. Measured cells outside ``cells`` are used for the
    fits but are not rows. ``published_accuracy`` (`read_nasbench101`'s table) gives the
    accuracies of cells the campaign did not measure at a budget (mean over its repeats; source
    ``nasbench101``) instead of the accuracy model. ``model_dir``: where to save each GPU type's
    energy model (``energy_model_GPU.pt``, `analysis.surrogate.save_energy_model`).
    """
    import pyarrow as pa

    budgets = sorted({int(e) for e in epochs})
    if not budgets or budgets[0] < 1:
        raise ValueError(f"epochs must be positive integers, got {list(epochs)}")
    energy, duration = (runs[k].to_numpy(dtype=np.float64) for k in ("energy_j", "duration_s"))
    runs = runs[np.isfinite(energy) & (energy > 0) & np.isfinite(duration) & (duration > 0)]
    if runs.empty:
        raise ValueError(f"campaign {campaign!r} has no finished run with a positive energy and duration: "
                         "nothing to build a benchmark from")
    n, nb = len(cells), len(budgets)
    x = _features(cells.adjacency, cells.codes, cells.params, cells.flops)
    bits, ops_code = encode_bits(cells.adjacency, cells.codes, cells.num_vertices)
    index = pd.Index(cells.hashes)
    ep_rows = np.tile(np.asarray(budgets, dtype=np.float64), n)
    cell_rows = np.repeat(np.arange(n), nb)
    hash_array = pa.array(cells.hashes, pa.string())
    tables, gpu_meta = [], {}
    for gpu, grp in runs.groupby("gpu_type", sort=True):
        kinds = sorted(grp["power_kind"].astype(str).unique()) if "power_kind" in grp.columns else ["unknown"]
        power_kind = kinds[0] if len(kinds) == 1 else "mixed:" + "+".join(kinds)
        models, meta = _fit_models(cells, grp, network or {}, members)
        e_mean, e_std = _predict_rows(models.energy, x, budgets)
        t_mean, _ = _predict_rows(models.time, x, budgets)
        cols: dict[str, Any] = {
            "energy_wh": e_mean, "energy_wh_std": e_std, "energy_n": np.zeros(n * nb, dtype=np.int32),
            "training_time_s": t_mean,
            "valid_accuracy": predict_accuracy(models.accuracy["valid_accuracy"], x, budgets).reshape(-1),
            "test_accuracy": predict_accuracy(models.accuracy["test_accuracy"], x, budgets).reshape(-1),
        }
        measured = np.zeros(n * nb, dtype=bool)
        means = _run_means(grp)
        pos = index.get_indexer(means["arch_hash"].astype(str))
        bpos = pd.Index(budgets).get_indexer(means["epochs"].astype(int))
        keep = (pos >= 0) & (bpos >= 0)
        rows = pos[keep] * nb + bpos[keep]
        for col in ("energy_wh", "energy_wh_std", "energy_n", "training_time_s", "valid_accuracy", "test_accuracy"):
            cols[col][rows] = means[col].to_numpy()[keep]
        measured[rows] = True
        src = measured.astype(np.int8)  # codes into SOURCES order below: 0 predicted, 1 measured
        acc_src = src.copy()
        if published_accuracy is not None and len(published_accuracy):
            pub = published_accuracy.groupby(["arch_hash", "epochs"])[["valid_accuracy", "test_accuracy"]].mean()
            pub = pub.reset_index()
            ppos = index.get_indexer(pub["arch_hash"].astype(str))
            pb = pd.Index(budgets).get_indexer(pub["epochs"].astype(int))
            ok = (ppos >= 0) & (pb >= 0)
            prow = ppos[ok] * nb + pb[ok]
            fill = ~measured[prow]
            for col in ("valid_accuracy", "test_accuracy"):
                cols[col][prow[fill]] = pub[col].to_numpy()[ok][fill]
            acc_src[prow[fill]] = 2
        tables.append(pa.table({
            "gpu_type": _constant(str(gpu), n * nb),
            "arch_hash": hash_array.take(pa.array(cell_rows)),
            "epochs": pa.array(ep_rows.astype(np.int32)),
            "num_vertices": pa.array(np.asarray(cells.num_vertices, dtype=np.int8)[cell_rows]),
            "num_edges": pa.array(np.asarray(cells.num_edges, dtype=np.int8)[cell_rows]),
            "matrix_bits": pa.array(bits[cell_rows]), "ops_code": pa.array(ops_code[cell_rows].astype(np.int32)),
            "params": pa.array(np.asarray(cells.params, dtype=np.int64)[cell_rows]),
            "flops": pa.array(np.asarray(cells.flops, dtype=np.int64)[cell_rows]),
            **{k: pa.array(np.asarray(cols[k])) for k in ("energy_wh", "energy_wh_std", "energy_n", "training_time_s")},
            "energy_source": pa.DictionaryArray.from_arrays(src, ["predicted", "measured"]),
            "time_source": pa.DictionaryArray.from_arrays(src, ["predicted", "measured"]),
            "valid_accuracy": pa.array(cols["valid_accuracy"]), "test_accuracy": pa.array(cols["test_accuracy"]),
            "accuracy_source": pa.DictionaryArray.from_arrays(acc_src, ["predicted", "measured", "nasbench101"]),
            "power_kind": _constant(power_kind, n * nb),
        }))
        gpu_meta[str(gpu)] = {**meta, "power_kind": power_kind, "measured_rows": int(measured.sum()),
                              "runs": int(len(grp))}
        if model_dir is not None:
            from analysis.surrogate import save_energy_model

            name = "energy_model_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", str(gpu)) or "gpu") + ".pt"
            save_energy_model(models.energy, Path(model_dir) / name)
            gpu_meta[str(gpu)]["energy_model_file"] = name
    table = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
    metadata = {
        "format": FORMAT, "campaign": campaign, "code_revision": revision,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "space": space or cells.description,
        "cells": n, "budgets": budgets, "gpu_types": sorted(gpu_meta), "units": UNITS,
        "energy_note": ("measured rows are means of the campaign's runs; predicted rows come from the energy model "
                        "fitted on them. power_kind 'simulated' marks energies that are not measurements."),
        "models": gpu_meta, "network": dict(network or {}), "row_order": "gpu_type, cell (space order), epochs",
        "checksum": {"algorithm": "sha256 of the table's Arrow IPC stream: no metadata, dictionaries "
                     "decoded, one record batch (analysis.benchmark.table_checksum)",
                     "value": table_checksum(table)},
    }
    metadata = _plain(metadata)
    return table.replace_schema_metadata({META_KEY: json.dumps(metadata, allow_nan=False)}), metadata


def _constant(value: str, n: int) -> Any:
    """A dictionary-encoded column of ``n`` copies of one string."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int8), [value])


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars and arrays as Python values, NaN and infinities as None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _predict_rows(model: Any, x: np.ndarray, budgets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions for every cell at every budget, rows cell-major: the model's cell part once."""
    if len(x) == 0:
        return np.zeros(0), np.zeros(0)
    mean, std = model.predict_features(x, 1.0)  # f(cell) x (1 + alpha)
    scale = (np.asarray(budgets, dtype=np.float64) + model.budget_offset) / (1.0 + model.budget_offset)
    return (mean[:, None] * scale[None, :]).reshape(-1), (std[:, None] * scale[None, :]).reshape(-1)


def table_checksum(table: Any) -> str:
    """sha256 of ``table``'s Arrow IPC stream in a canonical form (no schema metadata, dictionary
    columns decoded, one record batch)."""
    import pyarrow as pa

    # canonical: dictionary columns decoded, one chunk per column (Parquet's row groups and
    # dictionaries come back chunked and ordered as the reader likes)
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    t = pa.table(cols, names=table.column_names).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as writer:
        writer.write_table(t, max_chunksize=max(t.num_rows, 1))
    return hashlib.sha256(sink.getvalue()).hexdigest()


def write(table: Any, path: str | Path) -> Path:
    """Write the table as one Parquet file (zstd), atomically."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# Queries


class Benchmark:
    """A tabular benchmark file, loaded for queries (NAS-Bench-101's API, plus energy)."""

    def __init__(self, table: Any, metadata: dict[str, Any], path: Path | None = None) -> None:
        self.metadata = metadata
        self.path = path
        self.epochs: tuple[int, ...] = tuple(int(b) for b in metadata["budgets"])
        self.gpu_types: tuple[str, ...] = tuple(metadata["gpu_types"])
        nb, ng = len(self.epochs), len(self.gpu_types)
        rows = table.num_rows
        if nb == 0 or ng == 0 or rows % (nb * ng):
            raise BenchmarkFileError(f"{path}: {rows} rows do not fill {ng} GPU type(s) x {nb} budget(s)")
        self.n_cells = rows // (nb * ng)
        col = {name: table.column(name) for name in table.column_names}
        import pyarrow as pa

        hashes = col["arch_hash"].take(pa.array(np.arange(0, self.n_cells * nb, nb))).to_pylist()
        self._hashes: list[str] = hashes
        self._index = {h: i for i, h in enumerate(hashes)}
        self._budget = {b: i for i, b in enumerate(self.epochs)}
        self._gpu = {g: i for i, g in enumerate(self.gpu_types)}
        self._num = np.column_stack([col[k].to_numpy().astype(np.float64) for k in NUMERIC])
        # one record per row; ``.item()`` turns it into a tuple of Python ints and floats in one call
        rec = np.empty(rows, dtype=[(k, np.int64 if k in _INTS else np.float64) for k in NUMERIC]
                       + [("_text", np.int64)])
        for k in NUMERIC:
            rec[k] = col[k].to_numpy()
        codes, names = [], []
        for k in _TEXT:
            c = col[k].combine_chunks() if hasattr(col[k], "combine_chunks") else col[k]
            if not hasattr(c, "dictionary"):
                c = c.dictionary_encode()
            codes.append(c.indices.to_numpy(zero_copy_only=False).astype(np.int64))
            names.append(c.dictionary.to_pylist())
        # the text columns of a row as one code into every combination of their values
        combo = np.zeros(rows, dtype=np.int64)
        for c, values in zip(codes, names, strict=True):
            combo = combo * len(values) + c
        rec["_text"] = combo
        self._texts = [dict(zip(_TEXT, values, strict=True)) for values in itertools.product(*names)]
        # A row's values as two flat runs (integers with the text code last, floats), read by a
        # query as one slice each: no numpy scalar per query, so first-time queries stay fast.
        ints = np.column_stack([rec[k] for k in _ROW_INTS] + [rec["_text"]]).astype(np.int64)
        floats = np.column_stack([rec[k] for k in _ROW_FLOATS]).astype(np.float64)
        self._ints = np.ascontiguousarray(ints).ravel().data
        self._floats = np.ascontiguousarray(floats).ravel().data
        self._kept: dict[int, dict[str, Any]] = {}
        self._bits = col["matrix_bits"].to_numpy()[: self.n_cells * nb : nb]
        self._ops = col["ops_code"].to_numpy()[: self.n_cells * nb : nb]
        self._nv = col["num_vertices"].to_numpy()[: self.n_cells * nb : nb]

    # -- loading
    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> Benchmark:
        """Read a benchmark file; ``verify`` checks its checksum. Raises `BenchmarkFileError`."""
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise BenchmarkFileError(f"benchmark file {path} does not exist")
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise BenchmarkFileError(f"{path} is not a Parquet file: {str(exc).splitlines()[0]}") from None
        raw = (table.schema.metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else {}
        if meta.get("format") != FORMAT:
            raise BenchmarkFileError(f"{path} is not a benchmark of format {FORMAT!r}")
        if verify and table_checksum(table) != meta["checksum"]["value"]:
            raise BenchmarkFileError(f"{path}: checksum mismatch, the file was changed after it was written")
        return cls(table, meta, path)

    # -- NAS-Bench-101's API
    def __len__(self) -> int:
        return self.n_cells

    def __iter__(self) -> Iterator[str]:
        """The cells' hashes, in the file's order."""
        return iter(self._hashes)

    def hash_iterator(self) -> Iterator[str]:
        return iter(self._hashes)

    def __contains__(self, arch_hash: object) -> bool:
        return arch_hash in self._index

    def is_valid(self, matrix: Any, ops: Sequence[str]) -> bool:
        """Whether the cell is a valid NAS-Bench-101 cell and in this benchmark's space."""
        try:
            return CellSpec.create(matrix, ops).arch_hash in self._index
        except ValueError:
            return False

    def query(self, matrix: Any, ops: Sequence[str], epochs: int, gpu_type: str | None = None) -> Mapping[str, Any]:
        """The metrics of a cell at a budget (see `query_hash`); an invalid cell raises CellSpecError."""
        return self.query_hash(CellSpec.create(matrix, ops).arch_hash, epochs, gpu_type)

    def query_hash(self, arch_hash: str, epochs: int, gpu_type: str | None = None) -> Mapping[str, Any]:
        """The metrics of a cell (by its NAS-Bench-101 hash) at a budget, on a GPU type (default
        the only or first one): params, flops, num_vertices, num_edges, energy_wh, energy_wh_std,
        energy_n, training_time_s, valid_accuracy, test_accuracy, the sources and power_kind.

        A read-only mapping (``dict(...)`` of it for a copy): results are kept (up to ``KEPT_ROWS``,
        then afresh) as plain dicts, and a repeated query gets a new read-only view of the kept one
        (kept views would be objects the garbage collector tracks, and its full passes over a large
        heap would slow first-time queries down to about half)."""
        cell = self._index.get(arch_hash)
        if cell is None:
            raise UnknownCell(f"cell {str(arch_hash)[:40]!r} is not in this benchmark ({self.n_cells:,} cells)")
        b = self._budget.get(epochs)
        if b is None:
            raise UnknownCell(f"epochs={epochs!r} is not a budget of this benchmark; budgets: {list(self.epochs)}")
        g = 0 if gpu_type is None else self._gpu.get(gpu_type)
        if g is None:
            raise UnknownCell(f"gpu_type={gpu_type!r} is not in this benchmark; GPU types: {list(self.gpu_types)}")
        row = (g * self.n_cells + cell) * len(self.epochs) + b
        found = self._kept.get(row)
        if found is not None:
            return MappingProxyType(found)
        i = self._ints[row * 6 : row * 6 + 6].tolist()
        f = self._floats[row * 5 : row * 5 + 5].tolist()
        out = {"params": i[0], "flops": i[1], "num_vertices": i[2], "num_edges": i[3], "energy_wh": f[0],
               "energy_wh_std": f[1], "energy_n": i[4], "training_time_s": f[2], "valid_accuracy": f[3],
               "test_accuracy": f[4], **self._texts[i[5]], "arch_hash": arch_hash, "epochs": epochs,
               "gpu_type": self.gpu_types[g]}
        if len(self._kept) >= KEPT_ROWS:
            self._kept.clear()
        self._kept[row] = out  # a dict of plain values: the garbage collector never tracks it
        return MappingProxyType(out)

    # -- cells and sampling
    def cell(self, arch_hash: str) -> tuple[list[list[int]], list[str]]:
        """The pruned matrix and ops of a cell in the benchmark."""
        i = self._index.get(arch_hash)
        if i is None:
            raise UnknownCell(f"cell {str(arch_hash)[:40]!r} is not in this benchmark")
        return decode_cell(self._bits[i], self._ops[i], self._nv[i])

    def random_hash(self, rng: random.Random | None = None) -> str:
        """A cell's hash drawn uniformly."""
        return self._hashes[(rng or random).randrange(self.n_cells)]

    def sample(self, n: int, seed: int | None = None, replace: bool = False) -> list[str]:
        """``n`` hashes drawn uniformly (without replacement unless ``replace``)."""
        rng = np.random.default_rng(seed)
        idx = rng.choice(self.n_cells, size=n, replace=replace)
        return [self._hashes[i] for i in idx]

    def column(self, key: str, epochs: int, gpu_type: str | None = None) -> np.ndarray:
        """One numeric metric of every cell at a budget, in the file's cell order (for search)."""
        if key not in NUMERIC:
            raise UnknownCell(f"{key!r} is not a metric of the benchmark; metrics: {', '.join(NUMERIC)}")
        b = self._budget.get(epochs)
        if b is None:
            raise UnknownCell(f"epochs={epochs!r} is not a budget of this benchmark; budgets: {list(self.epochs)}")
        g = 0 if gpu_type is None else self._gpu[gpu_type]
        nb = len(self.epochs)
        start = g * self.n_cells * nb + b
        return self._num[start : start + self.n_cells * nb : nb, NUMERIC.index(key)]

    def index_of(self, arch_hash: str) -> int | None:
        """The position of a cell in the file's cell order, or None."""
        return self._index.get(arch_hash)

    def hash_at(self, index: int) -> str:
        """The hash of the cell at a position of the file's cell order."""
        return self._hashes[index]

    @property
    def max_vertices(self) -> int:
        """The most vertices of a cell in the benchmark."""
        return int(self._nv.max()) if len(self._nv) else 0

    def frame(self) -> pd.DataFrame:
        """The whole table as a DataFrame (large for the whole space)."""
        import pyarrow.parquet as pq

        if self.path is None:
            raise ValueError("this benchmark was not loaded from a file")
        return pq.read_table(self.path).to_pandas()
