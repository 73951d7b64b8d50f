"""The report on a generated campaign database: every section, the figures, parseable tables,
the refusal to pool simulated and measured power, a factor with one level."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis.report import AnalysisError, AnalysisSettings, analyze, write_report
from analysis.surrogate import load_model, random_cell, synthetic_params
from db.engine import make_engine
from db.records import RunResult
from db.store import ResultStore

SPECS: dict[str, dict[str, Any]] = {
    "v100": {"name": "v100", "tdp_w": 300, "memory_gb": 32, "cuda_cores": 5120},
    "a100": {"name": "a100", "tdp_w": 400, "memory_gb": 40, "cuda_cores": 6912},
    "cpu": {"name": "cpu", "tdp_w": 35.6, "memory_gb": 0},  # as conf/gpu/cpu.yaml: no cuda_cores
}
SPEED = {"v100": 1.0, "a100": 1.6, "cpu": 0.1}  # relative throughput
#: Quick settings: the tests check the machinery, not the surrogate's accuracy.
FAST = {"surrogate": {"epochs": 30, "learning_curve_inits": 3, "learning_curve_sizes": [0.5, 1.0],
                      "min_architectures": 8}, "trace_examples": 2}


def make_campaign(
    url: str,
    root: Path,
    name: str,
    n_archs: int,
    budgets: tuple[int, ...],
    gpus: tuple[str, ...],
    seeds: int,
    source_of: Any = lambda i: "simulated",
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> tuple[ResultStore, Any]:
    """A campaign in a real SQLite file, its runs claimed and ingested as the worker does, with
    generated numbers: power follows the GPU's TDP and the model's size, the first epoch costs
    more (warm-up), accuracy grows with the budget and the parameters."""
    rng = random.Random(seed)
    store = ResultStore(make_engine(url))
    archs: list[SimpleNamespace] = []
    seen: set[str] = set()
    while len(archs) < n_archs:
        m, ops = random_cell(rng)
        h = hashlib.md5((str(m) + ",".join(ops)).encode()).hexdigest()
        if h in seen:
            continue
        seen.add(h)
        params = synthetic_params(m, ops)
        archs.append(SimpleNamespace(arch_hash=h, matrix=m, ops=ops, num_vertices=len(ops),
                                     num_edges=sum(map(sum, m)), params=params, flops=params * 900))
    trials = [SimpleNamespace(trial_key=hashlib.md5(f"{name}{a.arch_hash}{e}{g}{s}".encode()).hexdigest(),
                              arch_hash=a.arch_hash, epochs=e, gpu_type=g, seed=s, order_index=0)
              for a in archs for e in budgets for g in gpus for s in range(seeds)]
    for i, t in enumerate(trials):
        t.order_index = i
    cid = store.create_campaign(name, "synthetic", str(root), "test", config or {}, archs, trials)
    by_hash = {a.arch_hash: a for a in archs}
    i = 0
    for gpu in gpus:
        while (claimed := store.claim_next(cid, gpu, "w1", "host")) is not None:
            a = by_hash[claimed.arch_hash]
            result = _result(name, claimed, a, SPECS[gpu], SPEED[gpu], source_of(i), rng, root)
            store.ingest(RunResult.from_json(result))
            i += 1
    return store, store.campaign(name)


def _result(campaign: str, c: Any, arch: Any, spec: dict[str, Any], speed: float, source: str,
            rng: random.Random, root: Path) -> dict[str, Any]:
    gflops = arch.flops / 1e9
    util = min(95.0, 40 + 4 * gflops)
    power = spec["tdp_w"] * (0.25 + 0.006 * util) * rng.uniform(0.97, 1.03)
    epoch_s = (2.0 + 3.0 * gflops) / speed * rng.uniform(0.98, 1.02)
    epochs: list[dict[str, Any]] = []
    trace: dict[str, list[Any]] = {k: [] for k in ("t_s", "phase", "epoch", "power_w", "device", "gpu_util")}
    t = 0.0

    def sample(phase: str, epoch: int | None, p: float, u: float, n: int, dur: float) -> None:
        nonlocal t
        for _ in range(n):
            for k, v in zip(trace, (t, phase, epoch, p * rng.uniform(0.98, 1.02), 0, u), strict=True):
                trace[k].append(v)
            t += dur / n

    sample("idle", None, 0.15 * spec["tdp_w"], 2.0, 5, 1.0)
    for e in range(1, c.epochs + 1):
        warm = 1.3 if e == 1 else 1.0  # the first epoch pays for warm-up
        d = epoch_s * warm
        epochs.append({"epoch": e, "duration_s": d, "energy_j": power * d, "mean_power_w": power,
                       "train_loss": 2.0 / e, "train_accuracy": 0.5, "valid_accuracy": 0.5})
        sample("train", e, power, util, 8, d * 0.9)
        sample("eval", e, power * 0.8, util * 0.7, 2, d * 0.1)
    duration = sum(e["duration_s"] for e in epochs)
    energy = sum(e["energy_j"] for e in epochs)
    valid = min(0.95, 0.5 + 0.08 * math.log(c.epochs + 1) + 0.02 * math.log(arch.params / 1e5 + 1)
                + rng.gauss(0, 0.01))
    now = dt.datetime.now(dt.UTC).isoformat()
    path = root / campaign / "runs" / c.trial_key / f"attempt-{c.attempt}.json"
    result = {
        "format": 1, "campaign": campaign, "trial_key": c.trial_key, "attempt": c.attempt, "status": "done",
        "error": None, "started_at": now, "ended_at": now, "host": "host", "worker_id": "w1",
        "power_source": source, "energy_method": "integrated", "dataset": "synthetic", "device": "cpu",
        "duration_s": duration, "energy_j": energy, "idle_power_w": 0.15 * spec["tdp_w"],
        "valid_accuracy": valid, "test_accuracy": valid - 0.01, "train_images": 4096,
        "train_images_per_s": 4096 / epoch_s, "epochs": epochs, "trace": trace, "result_path": str(path),
        "phases": [{"phase": "train", "duration_s": duration * 0.9, "energy_j": energy * 0.9, "samples": 8,
                    "mean_power_w": power}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return result


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultStore, Any, Path]:
    """9 architectures x budgets 1 and 8 x v100 and a100 x 2 seeds = 72 simulated runs."""
    root = tmp_path_factory.mktemp("big")
    store, info = make_campaign(f"sqlite:///{root / 'c.db'}", root, "big", 9, (1, 8), ("v100", "a100"), 2,
                                config={"meter": {"carbon_intensity_g_per_kwh": 300.0,
                                                  "carbon_intensity_source": "test grid"}})
    return store, info, root


@pytest.fixture(scope="module")
def written(big: tuple[ResultStore, Any, Path]) -> Any:
    store, info, root = big
    settings = AnalysisSettings.from_mapping({**FAST, "stable_epoch": 2, "window": 4})
    return write_report(store, info, root / "big" / "report", settings, SPECS)


def test_report_has_every_section_and_figure(written: Any) -> None:
    page = written.page.read_text()
    for heading in ("## Summary", "## Statistics", "## Energy surrogate", "## Energy estimators", "## Pareto front",
                    "## Carbon", "## Power traces", "## Runs"):
        assert heading in page
    for word in ("Kruskal", "Dunn", "Shapiro", "Levene", "Spearman", "Pearson", "Kendall", "MAE", "Pareto",
                 "hypervolume", "knee", "Green Algorithms", "ML CO2 Impact", "CO2eq", "Life cycle", "SIMULATED"[:9]):
        assert word.lower() in page.lower(), word
    names = {p.name for p in written.figures}
    assert {"energy_by_architecture.png", "energy_by_gpu_type.png", "energy_by_epoch_budget.png",
            "surrogate_scatter_v100.png", "surrogate_learning_curve_a100.png", "pareto_front.png",
            "power_trace.png", "epoch_energy.png"} <= names
    for p in written.figures:
        assert p.stat().st_size > 5000 and f"]({p.name})" in page
    html = written.html.read_text()
    assert html.count("<img ") == len(written.figures) and "<table>" in html
    assert str(written) == str(written.page)


def test_tables_parse_and_agree_with_the_database(written: Any, big: tuple[ResultStore, Any, Path]) -> None:
    store, info, _ = big
    tables = {p.stem: pd.read_csv(p) for p in written.tables}
    assert len(tables["runs"]) == len(store.runs(info.id)) == 72
    assert set(tables["runs"]["power_source"]) == {"simulated"}
    assert json.loads(tables["runs"]["matrix"][0])  # nested values as JSON text
    for name in tables:
        assert (written.folder / "tables" / f"{name}.md").read_text().startswith("|")
    tests = tables["group_tests"].set_index(["factor", "test"])
    assert tests.loc[("arch_hash", "kruskal"), "k"] == 9 and np.isfinite(tests.loc[("epochs", "kruskal"), "p_value"])
    assert set(tables["dunn"]["p_adjust"]) == {"holm"}
    est = tables["estimators"].set_index("estimator")
    assert len(est) == 6 and (est["n_runs"] > 0).all(), est  # stable window 2-5 fits the 8-epoch runs
    assert est.loc["online_epoch_energy", "rmse_kj"] < est.loc["ml_co2_impact", "rmse_kj"]
    metrics = tables["surrogate_metrics"].set_index("gpu_type")
    assert set(metrics.index) == {"a100", "v100"}
    assert metrics[["pearson", "kendall_tau", "mae_wh"]].notna().all().all()
    preds = tables["surrogate_predictions"]
    assert set(preds["epochs"]) == {4, 12, 36, 108} and np.isfinite(preds["predicted_energy_wh"]).all()
    assert {"min_error", "min_energy"} <= set(tables["pareto"]["role"])
    assert (tables["hypervolume"]["hypervolume"] > 0).all()
    assert tables["carbon"].iloc[-1]["co2eq_g"] == pytest.approx(
        tables["runs"]["energy_j"].sum() / 3.6e6 * 300.0)  # the intensity recorded with the campaign
    assert "recorded with the campaign (meter.carbon_intensity_g_per_kwh: test grid)" in written.page.read_text()
    assert len(tables["life_cycle"]) == 2


def test_surrogate_models_are_saved_and_load(written: Any) -> None:
    assert sorted(p.name for p in written.models) == ["surrogate_a100.pt", "surrogate_v100.pt"]
    model = load_model(written.models[0])
    assert model.metadata["held_out_test"] and model.metadata["power_sources"] == ["simulated"]


def test_mixed_power_sources_are_refused_unless_allowed(tmp_path: Path) -> None:
    store, info = make_campaign(f"sqlite:///{tmp_path / 'm.db'}", tmp_path, "mixed", 3, (1, 2), ("v100",), 2,
                                source_of=lambda i: "nvml" if i % 2 else "simulated")
    with pytest.raises(AnalysisError, match=r"mix simulated and measured power \(simulated: 6, nvml: 6 runs\).*allow_mixed_sources=true") as err:
        write_report(store, info, tmp_path / "r1", AnalysisSettings.from_mapping(FAST), SPECS)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r1" / "report.md").exists()
    runs = pd.DataFrame(store.runs(info.id))
    page = analyze(runs, settings={**FAST, "allow_mixed_sources": True}).markdown()
    assert "Pooled power sources" in page and "nvml: 6" in page and "simulated: 6" in page
    assert "MIXED power sources" in analyze(runs, settings={"allow_mixed_sources": True}).source_label


def test_one_gpu_type_and_few_architectures_do_not_crash(tmp_path: Path) -> None:
    """The smoke campaign's shape: one GPU type (without CUDA cores), two architectures."""
    store, info = make_campaign(f"sqlite:///{tmp_path / 's.db'}", tmp_path, "small", 2, (1, 2), ("cpu",), 2)
    files = write_report(store, info, tmp_path / "r", AnalysisSettings.from_mapping(FAST), SPECS)
    page = files.page.read_text()
    assert "not testable: one level (cpu)" in page
    metrics = pd.read_csv(files.folder / "tables" / "surrogate_metrics.csv")
    assert metrics["pearson"].isna().all() and "only 2 architecture(s)" in metrics["note"][0]
    assert "Pearson r" in page and "Kendall tau" in page and "MAE (Wh)" in page and "n/a (see note)" in page
    assert [p.name for p in files.models] == ["surrogate_cpu.pt"]  # fit on every run, to show the machinery
    assert "no cuda_cores in its conf/gpu entry, taken as 0" in page
    assert "445 g/kWh, default: world average 2024 (IEA)" in page  # nothing recorded, nothing configured
    assert len(files.figures) >= 5


def test_settings_are_checked_and_used(big: tuple[ResultStore, Any, Path]) -> None:
    with pytest.raises(AnalysisError, match=r"analysis.p_adjust='sidak' is not allowed \(allowed: holm"):
        AnalysisSettings.from_mapping({"p_adjust": "sidak"})
    with pytest.raises(AnalysisError, match="analysis.surrogate.epoch is not a known setting"):
        AnalysisSettings.from_mapping({"surrogate": {"epoch": 3}})
    with pytest.raises(AnalysisError, match="analysis.carbon.pue=0.5 must be >= 1"):
        AnalysisSettings.from_mapping({"carbon": {"pue": 0.5}})
    s = AnalysisSettings.from_mapping({"surrogate": {"split": [0.6, 0.2, 0.2]}, "stable_epoch": 10})
    assert s.surrogate.split == (0.6, 0.2, 0.2) and s.stable_epoch == 10
    store, info, _ = big
    runs = pd.DataFrame(store.runs(info.id))
    report = analyze(runs, settings={"p_adjust": "bonferroni", "factors": ["epochs"], "surrogate": {"epochs": 5}})
    assert set(report.tables["dunn"]["p_adjust"]) == {"bonferroni"}


def test_analyze_from_plain_frames_without_cells_or_specs() -> None:
    """A statistician's frames (as analysis.load gives, no matrix/ops): each section says what it lacks."""
    rng = np.random.default_rng(0)
    n = 24
    runs = pd.DataFrame({
        "run_id": range(n), "arch_hash": [f"a{i % 4}" for i in range(n)], "epochs": [4, 12] * (n // 2),
        "gpu_type": "v100", "seed": 0, "power_source": "nvml", "energy_j": rng.uniform(1e4, 2e4, n),
        "duration_s": rng.uniform(100, 200, n), "train_images": 40000, "valid_accuracy": rng.uniform(0.8, 0.9, n),
    })
    report = analyze(runs)
    assert "n/a (runs lack ['matrix', 'ops', 'params']" in report.tables["surrogate_metrics"]["note"][0]
    assert report.tables["estimators"]["note"].str.contains("no GPU specs").all()
    unknown = analyze(runs, gpu_specs={"a100": SPECS["a100"]}, settings={"factors": ["epochs"]})
    assert unknown.tables["estimators"]["note"].str.contains("no GPU spec for 'v100'").all()
    assert report.factor_text["gpu_type"] == "not testable: one level (v100)"
    assert report.factor_text["arch_hash"].startswith("Kruskal-Wallis H = ")
    assert "SIMULATED" not in report.markdown() and not report.simulated
    runs["flops"] = 1e9
    with_specs = analyze(runs, gpu_specs=SPECS, settings={"factors": ["epochs"]})
    held_out = [n for n in with_specs.notes["estimators"] if n.startswith("held-out runs")]
    assert held_out and "whole arch_hash groups on one side" in held_out[0]
    # a split_by column the runs lack (these frames have no host): the split is by run, and the
    # note says no more than that
    by_run = analyze(runs, gpu_specs=SPECS, settings={"factors": ["epochs"], "split_by": "host"})
    notes = [n for n in by_run.notes["estimators"] if n.startswith("held-out runs")]
    assert notes and "host" not in notes[0]


def test_a_campaign_without_finished_runs_is_refused(tmp_path: Path) -> None:
    store = ResultStore(make_engine(f"sqlite:///{tmp_path / 'e.db'}"))
    arch = SimpleNamespace(arch_hash="a" * 32, matrix=[[0, 1], [0, 0]], ops=["input", "output"], num_vertices=2,
                           num_edges=1, params=10, flops=100)
    trial = SimpleNamespace(trial_key="k", arch_hash=arch.arch_hash, epochs=1, gpu_type="cpu", seed=0, order_index=0)
    store.create_campaign("empty", "smoke", str(tmp_path), "test", {}, [arch], [trial])
    with pytest.raises(AnalysisError, match=r"campaign 'empty' has no finished run yet \(trials: 1 pending\)"):
        write_report(store, store.campaign("empty"), tmp_path / "r", AnalysisSettings.from_mapping(FAST), SPECS)
