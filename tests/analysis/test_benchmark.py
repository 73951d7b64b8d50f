"""analysis.benchmark: the table from a simulated campaign on the 4-vertex space, the file round
trip, the queries (measured cells give the measured means), the errors; the space's parameters,
FLOPs and encoding against jobs.network and jobs.cell."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.benchmark import Benchmark, BenchmarkFileError, UnknownCell, generate, write
from analysis.carbon import J_PER_WH
from campaign.cli_bench import cell_table
from jobs.cell import CellSpec, CellSpecError
from jobs.network import NetworkConfig, count_flops, count_params
from jobs.space import cell_space
from tests.analysis.benchdata import space_and_runs

BUDGETS = [4, 12, 36]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, pd.DataFrame]:
    cells, runs = space_and_runs("4v", n_cells=40)
    table, meta = generate(cells, runs, BUDGETS, campaign="sim", revision="abc", network={"stem_channels": 128},
                           space="4v", members=2)
    path = write(table, tmp_path_factory.mktemp("bench") / "b.parquet")
    return path, cells, runs


def test_cell_table_matches_jobs_network_and_decodes_to_the_same_hash() -> None:
    cfg = NetworkConfig(stem_channels=16)
    for space, limits in (("4v", (4, 9)), ("5v", (5, 9))):
        cells = cell_table(space, cfg)
        sp = cell_space(*limits)
        assert len(cells) == len(sp) == {"4v": 91, "5v": 2532}[space]
        for i in range(0, len(sp), 1 if space == "4v" else 37):
            spec = sp.spec(i)
            assert cells.params[i] == count_params(spec, cfg) and cells.flops[i] == count_flops(spec, cfg)


def test_round_trip_metadata_and_checksum(built: tuple[Path, Any, pd.DataFrame], tmp_path: Path) -> None:
    path, cells, _ = built
    b = Benchmark.load(path)
    assert len(b) == 91 and b.epochs == tuple(BUDGETS) and b.gpu_types == ("sim",)
    meta = json.loads(pq.read_schema(path).metadata[b"campaign.benchmark"])
    assert meta["campaign"] == "sim" and meta["code_revision"] == "abc" and meta["checksum"]["value"]
    assert "Wh" in meta["units"]["energy_wh"] and meta["models"]["sim"]["power_kind"] == "simulated"
    assert meta["models"]["sim"]["energy_model"]["budget_model"]["alpha"] == pytest.approx(0.5, abs=0.2)
    assert sorted(b) == sorted(cells.hashes)
    for h in b:  # every stored cell decodes to itself
        assert CellSpec.create(*b.cell(h)).arch_hash == h
    table = pq.read_table(path)
    assert table.num_rows == 91 * 3
    # Parquet row groups come back as chunks: the checksum does not depend on them
    pq.write_table(table, tmp_path / "chunked.parquet", row_group_size=50)
    assert pq.read_table(tmp_path / "chunked.parquet").column("energy_wh").num_chunks > 1
    assert len(Benchmark.load(tmp_path / "chunked.parquet")) == 91
    # a changed value is caught by the checksum
    df = table.to_pandas()
    df.loc[5, "energy_wh"] += 1.0
    import pyarrow as pa

    bad = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(table.schema.metadata)
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(BenchmarkFileError, match="checksum"):
        Benchmark.load(tmp_path / "bad.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(BenchmarkFileError, match="not a Parquet file"):
        Benchmark.load(tmp_path / "junk.parquet")


def test_measured_cells_return_their_measured_means(built: tuple[Path, Any, pd.DataFrame]) -> None:
    path, _, runs = built
    b = Benchmark.load(path)
    means = runs.groupby(["arch_hash", "epochs"]).agg(
        e=("energy_j", "mean"), s=("energy_j", "std"), n=("energy_j", "size"), t=("duration_s", "mean"),
        v=("valid_accuracy", "mean"), te=("test_accuracy", "mean"), matrix=("matrix", "first"), ops=("ops", "first"))
    for (h, epochs), row in means.iterrows():
        q = b.query(row["matrix"], row["ops"], epochs)
        assert q == b.query_hash(h, epochs)
        assert q["energy_source"] == q["accuracy_source"] == "measured" and q["energy_n"] == row["n"]
        assert q["energy_wh"] == pytest.approx(row["e"] / J_PER_WH)
        assert q["energy_wh_std"] == pytest.approx(row["s"] / J_PER_WH)
        assert q["training_time_s"] == pytest.approx(row["t"])
        assert q["valid_accuracy"] == pytest.approx(row["v"]) and q["test_accuracy"] == pytest.approx(row["te"])
        assert q["power_kind"] == "simulated"
    # budget 36 was never measured: predicted, with a spread, larger than at 12 epochs
    h = means.index[0][0]
    q36, q12 = b.query_hash(h, 36), b.query_hash(h, 12)
    assert q36["energy_source"] == "predicted" and q36["energy_n"] == 0 and q36["energy_wh_std"] > 0
    assert q36["energy_wh"] > 2 * q12["energy_wh"] and 0 <= q36["valid_accuracy"] <= 1


def test_predicted_energy_is_close_to_the_truth(built: tuple[Path, Any, pd.DataFrame]) -> None:
    from analysis.surrogate import synthetic_energy_wh_per_epoch

    path, cells, runs = built
    b = Benchmark.load(path)
    errors = []
    for i, h in enumerate(cells.hashes):
        if h in set(runs["arch_hash"]):
            continue
        m, ops = b.cell(h)
        truth = (12 + 0.5) * synthetic_energy_wh_per_epoch(m, ops, float(cells.params[i]))
        errors.append(abs(b.query_hash(h, 12)["energy_wh"] / truth - 1))
    assert np.median(errors) < 0.15


def test_api_errors_are_one_line_and_sampling_works(built: tuple[Path, Any, pd.DataFrame]) -> None:
    b = Benchmark.load(built[0])
    with pytest.raises(CellSpecError) as bad:
        b.query([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv9x9-bn-relu", "output"], 4)
    assert isinstance(bad.value, ValueError) and "\n" not in str(bad.value) and "conv9x9" in str(bad.value)
    for call, words in ((lambda: b.query_hash("0" * 32, 4), "not in this benchmark"),
                        (lambda: b.query_hash(b.hash_at(0), 5), "not a budget"),
                        (lambda: b.query_hash(b.hash_at(0), 4, "h100"), "not in this benchmark")):
        with pytest.raises(UnknownCell, match=words) as err:
            call()
        assert isinstance(err.value, LookupError) and "\n" not in str(err.value)
    q = b.query_hash(b.hash_at(3), 4)
    with pytest.raises(TypeError):
        q["energy_wh"] = 0.0  # type: ignore[index]
    again = b.query_hash(b.hash_at(3), 4)
    assert dict(q) == q == again and again is not q
    with pytest.raises(TypeError):
        again["energy_wh"] = 0.0  # type: ignore[index]
    m, ops = b.cell(b.hash_at(3))
    assert b.is_valid(m, ops) and not b.is_valid([[0, 1], [0, 0]], ["input", "bad"])
    five = [[0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]
    assert not b.is_valid(five, ["input", "conv3x3-bn-relu", "conv3x3-bn-relu", "conv3x3-bn-relu", "output"])
    s = b.sample(10, seed=1)
    assert len(set(s)) == 10 and s == b.sample(10, seed=1) and all(h in b for h in s)
    assert b.random_hash(random.Random(0)) in b
    energy = b.column("energy_wh", 4)
    assert len(energy) == 91 and energy[7] == b.query_hash(b.hash_at(7), 4)["energy_wh"]
    assert all(math.isfinite(v) for v in energy)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _message(fields: list[tuple[int, Any]]) -> bytes:
    import struct

    out = b""
    for number, value in fields:
        if isinstance(value, float):
            out += _varint(number << 3 | 1) + struct.pack("<d", value)
        elif isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return out


def _tfrecord(records: list[list[Any]]) -> bytes:
    import struct

    out = b""
    for rec in records:
        data = json.dumps(rec).encode()
        out += struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4
    return out


def test_nasbench101_file_is_read_without_tensorflow_and_fills_unmeasured_cells(
        built: tuple[Path, Any, pd.DataFrame], tmp_path: Path) -> None:
    import base64

    from analysis.benchmark import read_nasbench101

    _, cells, runs = built
    measured = set(runs["arch_hash"])
    picked = [cells.hashes[0], cells.hashes[1], *(h for h in cells.hashes if h not in measured)][:6]
    records = []
    for k, h in enumerate(picked):
        for r in range(3):
            evals = [_message([(1, float(e)), (2, 10.0 * e), (3, 0.5), (4, 0.80 + 0.01 * k + 0.001 * r),
                               (5, 0.79 + 0.01 * k), (6, b"ckpt")]) for e in (0.0, 6.0, 12.0)]
            metrics = _message([(1, ev) for ev in evals] + [(2, 1000 + k), (3, 99.0)])
            records.append([h, 12, "0110", "input,output", base64.b64encode(metrics).decode()])
    path = tmp_path / "nasbench_mini.tfrecord"
    path.write_bytes(_tfrecord(records))
    pub = read_nasbench101(path)
    assert len(pub) == 3 * len(picked) and list(pub["repeat"][:3]) == [1, 2, 3]
    first = pub.iloc[1]
    assert first["epochs"] == 12 and first["training_time_s"] == 120.0 and first["params"] == 1000
    assert first["valid_accuracy"] == pytest.approx(0.801) and first["test_accuracy"] == pytest.approx(0.79)
    table, _ = generate(cells, runs, BUDGETS, campaign="sim", members=2, published_accuracy=pub)
    b = Benchmark.load(write(table, tmp_path / "b.parquet"))
    for k, h in enumerate(picked):
        q = b.query_hash(h, 12)
        if h in measured and q["energy_source"] == "measured":
            assert q["accuracy_source"] == "measured"
        else:
            assert q["accuracy_source"] == "nasbench101"
            assert q["valid_accuracy"] == pytest.approx(0.801 + 0.01 * k)
        assert b.query_hash(h, 36)["accuracy_source"] == "predicted"
    (tmp_path / "bad.tfrecord").write_bytes(b"\x05\0\0\0\0\0\0\0\0\0\0\0notjs\0\0\0\0")
    from analysis.benchmark import BenchmarkFileError

    with pytest.raises(BenchmarkFileError, match="record 0 is not a NAS-Bench-101 record"):
        read_nasbench101(tmp_path / "bad.tfrecord")


def test_runs_without_energy_or_budgets_are_refused(built: tuple[Path, Any, pd.DataFrame]) -> None:
    _, cells, runs = built
    with pytest.raises(ValueError, match="no finished run with a positive energy"):
        generate(cells, runs.assign(energy_j=np.nan), BUDGETS, campaign="sim")
    with pytest.raises(ValueError, match="epochs must be positive"):
        generate(cells, runs, [], campaign="sim")


def test_every_query_reads_its_own_row(built: tuple[Path, Any, pd.DataFrame]) -> None:
    """query_hash's values are those of the file's row, with their types (integers as int)."""
    b = Benchmark.load(built[0])
    table = pq.read_table(built[0]).to_pandas()
    for budget in BUDGETS:
        for cell in (0, 1, len(b) // 2, len(b) - 1):
            h = b.hash_at(cell)
            q = b.query_hash(h, budget)
            [row] = table[(table["arch_hash"] == h) & (table["epochs"] == budget)].to_dict("records")
            for key in ("params", "flops", "num_vertices", "num_edges", "energy_n"):
                assert type(q[key]) is int and q[key] == row[key]
            for key in ("energy_wh", "energy_wh_std", "training_time_s", "valid_accuracy", "test_accuracy"):
                assert type(q[key]) is float
                assert q[key] == row[key] or (math.isnan(q[key]) and math.isnan(row[key]))
            for key in ("energy_source", "time_source", "accuracy_source", "power_kind"):
                assert q[key] == row[key]
            assert (q["arch_hash"], q["epochs"]) == (h, budget)
