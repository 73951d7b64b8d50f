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
    extra: Any = lambda i, result: {},
) -> tuple[ResultStore, Any]:
    """A campaign in a real SQLite file, its runs claimed and ingested as the worker does, with
    generated numbers: power follows the GPU's TDP and the model's size, the first epoch costs
    more (warm-up), accuracy grows with the budget and the parameters. ``extra(i, result)``: fields
    of a newer result format to add to the i-th result."""
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
            result.update(extra(i, result))
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
    group_tests = tables["group_tests"]
    tests = group_tests[group_tests["stratum"] == "all"].set_index(["factor", "test"])  # the balanced design's pooled rows
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


def test_the_page_shows_both_totals_with_their_uncertainty(written: Any, big: tuple[ResultStore, Any, Path]) -> None:
    """Older results (no above-idle energy, no uncertainty): the energy above idle is computed from
    the run's own idle power, the uncertainty is n/a, and the page says both."""
    store, info, _ = big
    for text in (written.page.read_text(), written.html.read_text()):
        assert "above idle" in text and "uncertainty" in text and "Energy target: total energy" in text
    table = pd.read_csv(written.folder / "tables" / "energy_by_gpu_budget.csv")
    assert {"energy_total_j", "energy_above_idle_j", "uncertainty_j", "methods"} <= set(table.columns)
    assert len(table) == 4  # v100 and a100 x budgets 1 and 8
    runs = pd.DataFrame(store.runs(info.id))
    computed = runs["energy_j"] - runs["idle_power_w"] * runs["duration_s"]
    recorded = pd.to_numeric(runs.get("energy_above_idle_j", pd.Series(None, index=runs.index)), errors="coerce")
    expected = recorded.fillna(computed).sum()  # recorded where the database has it, else computed
    assert table["energy_above_idle_j"].sum() == pytest.approx(expected, rel=1e-9)
    assert table["energy_total_j"].sum() == pytest.approx(runs["energy_j"].sum())
    assert "energy_total_and_above_idle.png" in {p.name for p in written.figures}
    shown = pd.read_csv(written.folder / "tables" / "runs.csv")
    assert set(shown["energy_method"]) == {"simulated (integrated)"}  # simulated power says so in its method


def _frames(n: int = 24) -> pd.DataFrame:
    """A measured campaign's runs with the energy accounting of newer databases."""
    rng = np.random.default_rng(1)
    energy = rng.uniform(1e4, 2e4, n)
    flags = [""] * n
    flags[3], flags[7] = "short_window:idle", "disagreement,short_window:train"
    return pd.DataFrame({
        "run_id": range(n), "arch_hash": [f"a{i % 4}" for i in range(n)], "epochs": [4, 12] * (n // 2),
        "gpu_type": "v100", "seed": 0, "power_source": "nvml", "energy_j": energy,
        "duration_s": rng.uniform(100, 200, n), "train_images": 40000, "valid_accuracy": rng.uniform(0.8, 0.9, n),
        "idle_power_w": 30.0, "energy_above_idle_j": energy * rng.uniform(0.2, 0.9, n),
        "energy_uncertainty_j": energy * 0.05,
        "energy_method": ["nvml_counter" if i % 3 else "nvml_power_integration" for i in range(n)], "flags": flags,
        "energy_disagreement": [0.12 if i == 7 else 0.01 for i in range(n)],
    })


def test_flagged_runs_methods_and_uncertainty_are_named() -> None:
    runs = _frames()
    report = analyze(runs, settings={"factors": ["epochs"]})
    flagged = report.tables["flagged_runs"]
    assert list(flagged["run_id"]) == [3, 7] and list(flagged["flags"]) == ["short_window:idle",
                                                                              "disagreement,short_window:train"]
    assert len(report.runs) == len(runs)  # included, not dropped
    shares = report.tables["energy_methods"].set_index("method")
    assert shares.loc["nvml_counter", "runs"] == 16 and shares["share"].sum() == pytest.approx(1.0)
    table = report.tables["energy_by_gpu_budget"]
    assert table["uncertainty_j"].sum() == pytest.approx(runs["energy_uncertainty_j"].sum())
    assert table["energy_above_idle_j"].sum() == pytest.approx(runs["energy_above_idle_j"].sum())  # recorded wins
    page = report.markdown()
    assert "### Flagged measurements" in page and "The figures and statistics include them" in page
    assert "| 7 |" in page and "disagreement,short_window:train" in page
    assert "**Flagged measurements.** 2 run(s)" in page
    assert "Mixed energy methods" in page and "sums energies of different methods" in page
    assert "energy total (J)" in page and " ± " in page and "energy_uncertainty_j" in page


def test_energy_above_idle_becomes_the_target() -> None:
    runs = _frames()
    epochs = pd.DataFrame([{"run_id": r, "epoch": e, "duration_s": 10.0, "energy_j": 500.0}
                           for r in runs["run_id"] for e in (1, 2)])
    total = analyze(runs, epochs, settings={"factors": ["epochs"]})
    above = analyze(runs, epochs, settings={"factors": ["epochs"], "energy": "above_idle"})
    assert (total.runs["energy_j"] == runs["energy_j"]).all()
    assert (above.runs["energy_j"] == runs["energy_above_idle_j"]).all()
    assert (above.runs["energy_total_j"] == runs["energy_j"]).all()
    per_image = runs["energy_above_idle_j"] / (runs["train_images"] * runs["epochs"])
    assert np.allclose(above.runs["energy_per_image_j"], per_image)
    a = above.tables["energy_per_image"].set_index(["factor", "level"])["median_j"]
    t = total.tables["energy_per_image"].set_index(["factor", "level"])["median_j"]
    assert (a < t).all()
    assert (above.epochs["energy_j"] == 500.0 - 30.0 * 10.0).all()  # epochs: the run's idle power x duration
    assert "Energy target: energy above idle** (analysis.energy=above_idle)" in above.markdown()
    assert "## Statistics: energy above idle per training image" in above.markdown()
    # carbon follows the total whatever the target
    assert above.tables["carbon"].iloc[-1]["energy_kwh"] == pytest.approx(runs["energy_j"].sum() / 3.6e6)


def test_power_source_selects_one_kind_of_a_mixed_campaign(tmp_path: Path) -> None:
    store, info = make_campaign(f"sqlite:///{tmp_path / 'm.db'}", tmp_path, "mixed", 3, (1, 2), ("v100",), 2,
                                source_of=lambda i: "nvml" if i % 2 else "simulated")
    files = write_report(store, info, tmp_path / "r", AnalysisSettings.from_mapping(
        {**FAST, "power_source": "measured"}), SPECS)
    page = files.page.read_text()
    assert "**Power source selected: measured** (analysis.power_source=measured): 6 finished run(s) analysed, " \
           "6 left out (simulated: 6)." in page
    assert set(pd.read_csv(files.folder / "tables" / "runs.csv")["power_source"]) == {"nvml"}
    assert "Simulated power" not in page and "Pooled power sources" not in page
    runs = pd.DataFrame(store.runs(info.id))
    simulated = analyze(runs, settings={**FAST, "power_source": "simulated"})
    assert set(simulated.runs["power_source"]) == {"simulated"} and simulated.left_out == {"measured": 6}
    assert simulated.simulated and "6 left out (measured: 6)" in simulated.markdown()
    with pytest.raises(AnalysisError, match=r"analysis.power_source=measured: no finished run has measured power "
                                            r"\(simulated: 6 runs\)") as err:
        analyze(runs[runs["power_source"] == "simulated"], settings={"power_source": "measured"})
    assert "\n" not in str(err.value)
    assert "**Power source: every run** (analysis.power_source=null)" in analyze(
        runs, settings={**FAST, "allow_mixed_sources": True}).markdown()


def test_flags_methods_and_uncertainties_stored_in_the_database_reach_the_page(tmp_path: Path) -> None:
    def newer(i: int, result: dict[str, Any]) -> dict[str, Any]:
        energy = result["energy_j"]
        return {"format": 3, "energy_method": "nvml_counter", "energy_above_idle_j": energy * 0.6,
                "energy_uncertainty_j": energy * 0.05, "error_basis": "NVML +-5 %",
                "flags": ["short_window:idle", "disagreement"] if i == 1 else []}

    store, info = make_campaign(f"sqlite:///{tmp_path / 'n.db'}", tmp_path, "newer", 2, (1, 2), ("cpu",), 2,
                                source_of=lambda i: "nvml", extra=newer)
    files = write_report(store, info, tmp_path / "r", AnalysisSettings.from_mapping(FAST), SPECS)
    runs = pd.DataFrame(store.runs(info.id))
    flagged_id = int(runs.loc[runs["flags"].fillna("").str.contains("disagreement"), "run_id"].iloc[0])
    flagged = pd.read_csv(files.folder / "tables" / "flagged_runs.csv")
    assert flagged["run_id"].tolist() == [flagged_id] and flagged["flags"][0] == "short_window:idle,disagreement"
    table = pd.read_csv(files.folder / "tables" / "energy_by_gpu_budget.csv")
    assert table["uncertainty_j"].sum() == pytest.approx(runs["energy_j"].sum() * 0.05)
    assert table["energy_above_idle_j"].sum() == pytest.approx(runs["energy_j"].sum() * 0.6)
    methods = pd.read_csv(files.folder / "tables" / "energy_methods.csv")
    assert methods[["method", "runs", "share"]].values.tolist() == [["nvml_counter", 8, 1.0]]
    for page in (files.page.read_text(), files.html.read_text()):
        assert "Flagged measurements" in page and "short_window:idle,disagreement" in page
        assert "above idle" in page and "uncertainty" in page and "±" in page
