"""analysis.search on the 4-vertex space (91 cells), searched exhaustively for comparison: each
algorithm's final hypervolume within 2 % of the exhaustive front's; the tables and figures."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis.benchmark import Benchmark, generate, write
from analysis.pareto import hypervolume_2d, pareto_mask
from analysis.search import ALGORITHMS, Problem, SearchSettings, run_study, write_study
from jobs.cell import CellSpec
from tests.analysis.benchdata import space_and_runs


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Benchmark:
    cells, runs = space_and_runs("4v", n_cells=30, budgets=(4,), seeds=1, seed=2)
    table, _ = generate(cells, runs, [4], campaign="sim", members=2)
    return Benchmark.load(write(table, tmp_path_factory.mktemp("search") / "b.parquet"))


@pytest.fixture(scope="module")
def study(bench: Benchmark) -> Any:
    return run_study(bench, list(ALGORITHMS), SearchSettings(runs=2, generations=40, population=10))


def test_each_algorithm_reaches_the_exhaustive_front(bench: Benchmark, study: Any) -> None:
    p = study.problem
    f = np.column_stack([1 - bench.column("valid_accuracy", 4), bench.column("energy_wh", 4)])
    assert np.array_equal(p.f, f)
    best = hypervolume_2d(f[pareto_mask(f)], p.reference)
    assert study.exhaustive_hypervolume == pytest.approx(best)
    assert p.reference == pytest.approx(tuple(1.1 * f.max(axis=0)))
    for r in study.results:
        assert r.hypervolume >= 0.98 * best, (r.algorithm, r.run, r.hypervolume, best)
        assert r.hypervolume <= best + 1e-12
        evaluations = 1000 if r.algorithm == "random" else 400
        assert len(r.evaluated) == evaluations
    summary = study.hypervolume_summary()
    assert set(summary) == set(ALGORITHMS)


def test_runs_differ_by_seed_and_repeat_exactly(bench: Benchmark) -> None:
    s = SearchSettings(runs=1, generations=5, population=4, evaluations=20)
    a = run_study(bench, ["semoa", "random"], s).results
    b = run_study(bench, ["semoa", "random"], s).results
    c = run_study(bench, ["semoa", "random"], SearchSettings(runs=1, generations=5, population=4, evaluations=20,
                                                             seed=9)).results
    assert [r.evaluated for r in a] == [r.evaluated for r in b]
    assert [r.evaluated for r in a] != [r.evaluated for r in c]


def test_mutation_stays_in_the_benchmark(bench: Benchmark) -> None:
    p = Problem(bench, 4)
    rng = random.Random(0)
    for i in range(0, len(p), 7):
        j = p.mutate(i, rng)
        assert j != i and 0 <= j < len(p)
        m, ops = bench.cell(bench.hash_at(j))
        assert CellSpec.create(m, ops).arch_hash == bench.hash_at(j)


def test_tables_and_figures(study: Any, tmp_path: Path) -> None:
    files = {f.name for f in write_study(study, tmp_path)}
    assert {"fronts.csv", "hypervolume.csv", "attainment.csv", "knee_extrema.csv", "attainment.png",
            "radar.png"} <= files
    table2 = pd.read_csv(tmp_path / "knee_extrema.csv")
    assert list(table2["point"]) == ["r0", "rk", "r1"] * 3
    assert set(table2["algorithm"]) == set(ALGORITHMS)
    r0 = table2[table2["point"] == "r0"]
    r1 = table2[table2["point"] == "r1"]
    assert (r0["valid_accuracy_mean"].to_numpy() >= r1["valid_accuracy_mean"].to_numpy()).all()
    assert (r0["energy_kwh_mean"].to_numpy() >= r1["energy_kwh_mean"].to_numpy()).all()
    hv = pd.read_csv(tmp_path / "hypervolume.csv")
    assert len(hv) == 6 and (hv["relative"] >= 0.98).all() and "reference_energy_wh" in hv.columns
    att = pd.read_csv(tmp_path / "attainment.csv")
    ok = att.dropna()
    assert (ok["q25"] <= ok["median"]).all() and (ok["median"] <= ok["q75"]).all()
    assert (tmp_path / "attainment.png").stat().st_size > 1000
