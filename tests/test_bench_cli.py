"""``campaign benchmark`` and ``campaign search`` end to end on a small campaign in a real SQLite
file (4-vertex cells with their real hashes, simulated runs ingested as the worker stores them),
through the real command line; their one-line errors."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.benchmark import Benchmark
from analysis.carbon import J_PER_WH
from analysis.surrogate import load_energy_model
from db.engine import make_engine
from db.records import RunResult
from db.store import ResultStore
from jobs.network import NetworkConfig, count_flops, count_params
from jobs.space import cell_space
from tests.analysis.test_report import SPECS, SPEED, _result

CLI = [sys.executable, "-m", "campaign.cli"]


def _campaign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """8 cells of the 4-vertex space x budgets 1 and 2 x 2 seeds on the cpu, simulated."""
    root = tmp_path_factory.mktemp("bench_cli")
    url = f"sqlite:///{root / 'c.db'}"
    store = ResultStore(make_engine(url))
    cfg = NetworkConfig()
    space = cell_space(4, 9)
    archs = []
    for i in range(0, 88, 11):
        s = space.spec(i)
        archs.append(SimpleNamespace(arch_hash=s.arch_hash, matrix=[list(r) for r in s.matrix], ops=list(s.ops),
                                     num_vertices=len(s.ops), num_edges=sum(map(sum, s.matrix)),
                                     params=count_params(s, cfg), flops=count_flops(s, cfg) // 1000))
    trials = [SimpleNamespace(trial_key=hashlib.md5(f"{a.arch_hash}{e}{k}".encode()).hexdigest(), arch_hash=a.arch_hash,
                              epochs=e, gpu_type="cpu", seed=k, order_index=0)
              for a in archs for e in (1, 2) for k in range(2)]
    for i, t in enumerate(trials):
        t.order_index = i
    cid = store.create_campaign("tiny", "synthetic", str(root), "test", {}, archs, trials)
    by_hash = {a.arch_hash: a for a in archs}
    rng = random.Random(0)
    while (claimed := store.claim_next(cid, "cpu", "w1", "host")) is not None:
        store.ingest(RunResult.from_json(_result("tiny", claimed, by_hash[claimed.arch_hash], SPECS["cpu"],
                                                 SPEED["cpu"], "simulated", rng, root)))
    return root, url


def test_benchmark_then_search(small: tuple[Path, str]) -> None:
    root, url = small
    ov = [f"root={root}", f"db.url={url}"]
    proc = _campaign("benchmark", "tiny", "space=4v", "epochs=[1,2,4]", "members=2", *ov)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    path = root / "tiny" / "benchmark" / "tiny-4v.parquet"
    assert path.is_file() and "16 measured" in proc.stdout.replace("\n", " ")
    b = Benchmark.load(path)
    assert len(b) == 91 and b.epochs == (1, 2, 4) and b.gpu_types == ("cpu",)
    model = load_energy_model(root / "tiny" / "benchmark" / "energy_model_cpu.pt")
    assert model.metadata["network"]["stem_channels"] == 128 and model.metadata["budgets_fitted"] == [1.0, 2.0]
    assert model.metadata["data"]["cells"] == 8 and "GFLOPs" in model.metadata["feature_definition"]
    runs = pd.read_sql("select t.arch_hash, t.epochs, r.energy_j, r.valid_accuracy from run r join trial t "
                       "on t.id = r.trial_id", make_engine(url))
    for (h, e), grp in runs.groupby(["arch_hash", "epochs"]):
        q = b.query_hash(h, int(e))
        assert q["energy_source"] == "measured" and q["energy_n"] == 2
        assert q["energy_wh"] == pytest.approx(grp["energy_j"].mean() / J_PER_WH)
        assert q["valid_accuracy"] == pytest.approx(grp["valid_accuracy"].mean())
        assert q["power_kind"] == "simulated"
    q = b.query([[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
                ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"], 4)
    assert q["arch_hash"] == "66ea4e36f994d4bf11102cbef10a3cb1" and q["energy_wh"] > 0
    assert np.isfinite(q["valid_accuracy"])

    proc = _campaign("search", "tiny", "algo=all", "runs=2", "generations=10", "evaluations=100", "epochs=4", *ov)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = root / "tiny" / "search"
    assert {"knee_extrema.csv", "attainment.png", "radar.png", "fronts.csv", "hypervolume.csv"} <= {
        f.name for f in out.iterdir()}
    assert set(pd.read_csv(out / "hypervolume.csv")["algorithm"]) == {"random", "semoa", "nsga2"}


@pytest.mark.parametrize(("args", "words"), [
    (("benchmark", "tiny", "space=9v"), "space='9v' is not one of all, 4v, 5v, 7v"),
    (("benchmark", "tiny", "epochs=[4,x]"), "epochs='x' must be an integer"),
    (("benchmark", "nope", "space=4v"), "nope"),
    (("search", "tiny", "algo=grid"), "algo='grid' is not one of random, semoa, nsga2, all"),
    (("search", "tiny", "runs=0"), "runs='0' must be an integer >= 1"),
    (("search", "tiny", "objectives=energy_wh"), "objectives='energy_wh' must name two metrics"),
    (("benchmark", "tiny", "nasbench=/nonexistent.tfrecord"), "nasbench='/nonexistent.tfrecord' is not a file"),
])
def test_bad_input_gives_one_line(small: tuple[Path, str], args: tuple[str, ...], words: str) -> None:
    root, url = small
    proc = _campaign(*args, f"root={root}", f"db.url={url}")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr
