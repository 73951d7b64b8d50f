"""The report at scale (many architectures: top and bottom shown, full tables in CSV; subsampled
kernel ridge, said in the report; vectorised online estimators and bootstrap) and the source
study's conventions as options (images per epoch, 0-based stable epoch, explicit test runs,
per-run power limit and memory), the studies' quotes apart from the results."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.estimators import (
    GpuSpec,
    OnlineConfig,
    compare_estimators,
    detect_stable_epoch,
    online_epoch_energy_estimate_j,
    online_estimates,
    online_power_estimate_j,
)
from analysis.report import AnalysisSettings, analyze
from analysis.report.render import STUDY_QUOTES
from analysis.stats import energy_per_image_j, images_per_epoch
from analysis.strata import cliffs_delta, cliffs_delta_ci, eta_squared_ci, studentized_range_sf
from benchmarks.synthetic_campaign import campaign_name, make_database
from db.read import CampaignReader

SPECS = {"v100": GpuSpec("v100", 300, 32, 5120), "a100": GpuSpec("a100", 400, 40, 6912)}


def _runs_and_epochs(n_archs: int, budgets: tuple[int, ...] = (4, 12), seeds: int = 3,
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs whose energy per epoch grows with the architecture's index, a warm-up first epoch."""
    rng = np.random.default_rng(seed)
    runs, epochs = [], []
    rid = 0
    for a in range(n_archs):
        for b in budgets:
            for s in range(seeds):
                rid += 1
                per_epoch = 1000.0 * (1 + a / 10) * rng.uniform(0.97, 1.03)
                e = np.full(b, per_epoch) * (1 + 0.005 * rng.standard_normal(b))
                e[0] *= 1.4
                d = e / 150.0
                epochs += [{"run_id": rid, "epoch": i + 1, "duration_s": d[i], "energy_j": e[i]} for i in range(b)]
                runs.append({"run_id": rid, "arch_hash": f"arch{a:03d}", "epochs": b, "gpu_type": "v100",
                             "seed": s, "power_source": "simulated", "energy_j": float(e.sum()),
                             "duration_s": float(d.sum()), "train_images": 1000, "flops": 1e9 * (1 + a / 10),
                             "valid_accuracy": 0.5 + 0.01 * a})
    return pd.DataFrame(runs), pd.DataFrame(epochs)


# --------------------------------------------------------------------------------------------
# Many architectures


def test_many_architectures_show_top_and_bottom_and_keep_full_tables(tmp_path: Path) -> None:
    runs, epochs = _runs_and_epochs(40, budgets=(2, 3))
    report = analyze(runs, epochs, settings={"bootstrap": 200, "many_architectures": 30, "top_architectures": 3,
                                             "factors": ["arch_hash", "epochs"]})
    t = report.tables
    ranking = t["architecture_ranking"]
    assert len(ranking) == 40 and int(ranking["shown"].sum()) == 6
    shown = set(ranking.loc[ranking["shown"], "arch_hash"])
    assert shown == {"arch000", "arch001", "arch002", "arch037", "arch038", "arch039"}
    arch_pairs = t["pairwise_effects"][t["pairwise_effects"]["factor"] == "arch_hash"]
    assert len(arch_pairs) and set(arch_pairs["group_a"]) | set(arch_pairs["group_b"]) <= shown
    dunn = t["dunn"][t["dunn"]["factor"] == "arch_hash"]
    assert len(dunn) == 3 * 15 and dunn["p_adjust"].str.startswith("bonferroni over all 780 pairs").all()
    # balanced: the pooled stratum and the two budgets; the tests across architectures use every one
    kw = t["group_tests"][(t["group_tests"]["factor"] == "arch_hash") & (t["group_tests"]["test"] == "kruskal")]
    assert (kw["k"] == 40).all()
    # the budget is tested on architecture medians within strata that leave the architecture out
    budget = t["group_tests"][(t["group_tests"]["factor"] == "epochs") & (t["group_tests"]["test"] == "kruskal")]
    assert list(budget["stratum"]) == ["all (architecture medians)"] and int(budget["n"].iloc[0]) == 80
    assert "arch_hash" not in report.dunn
    fig = next(f for f in report.figures if f.name == "energy_by_architecture.png")
    assert "Only the 3 architectures of lowest and the 3 of highest" in fig.caption
    files = report.write(tmp_path / "report")
    assert len(pd.read_csv(files.folder / "tables" / "architecture_ranking.csv")) == 40
    assert len(pd.read_csv(files.folder / "tables" / "energy_per_image.csv").query("factor == 'arch_hash'")) == 40
    page = files.page.read_text()
    statistics = page.split("\n## Statistics")[1].split("\n## ")[0]
    assert "top and bottom" in statistics and "arch020" not in statistics


def test_few_architectures_keep_every_pair() -> None:
    runs, epochs = _runs_and_epochs(4)
    report = analyze(runs, epochs, settings={"bootstrap": 200, "factors": ["arch_hash", "epochs"]})
    arch = report.tables["pairwise_effects"].query("factor == 'arch_hash'")
    assert len(arch) == 6 * 3 and "architecture_ranking" not in report.tables  # 4 choose 2 pairs, 3 strata


# --------------------------------------------------------------------------------------------
# Estimators at scale


def test_offline_kernel_ridge_is_fitted_on_a_stated_subsample() -> None:
    runs, epochs = _runs_and_epochs(20, budgets=(8,), seeds=3)  # 60 runs
    comp = compare_estimators(runs, epochs, SPECS, online=OnlineConfig(stable_epoch=2, window=3),
                              test_fraction=0.3, seed=0, offline_max_runs=20)
    note = comp.table.set_index("estimator").loc["offline_power", "note"]
    assert f"seeded sample of 20 of the {len(comp.train_run_ids)} training runs" in note
    report = analyze(runs, epochs, gpu_specs=SPECS,
                     settings={"bootstrap": 200, "offline_max_runs": 20, "stable_epoch": 2, "window": 3,
                               "split_by": None})
    notes = " ".join(report.notes["estimators"])
    assert "seeded random sample of 20 of the 42 training runs (analysis.offline_max_runs)" in notes


@pytest.mark.parametrize("stable", [None, 2, 3])
def test_vectorised_online_estimates_equal_the_per_run_functions(stable: int | None) -> None:
    runs, epochs = _runs_and_epochs(3, budgets=(4, 8), seeds=2)
    config = OnlineConfig(stable_epoch=stable, window=3, cv_threshold=0.02)
    got = online_estimates(epochs, runs, config).set_index("run_id")
    for r in runs.itertuples():
        ep = epochs[epochs["run_id"] == r.run_id]
        s0 = stable if stable is not None else detect_stable_epoch(ep["energy_j"].to_numpy(), 3, 0.02)
        row = got.loc[r.run_id]
        if s0 is None or r.epochs - s0 + 1 < 3:
            assert math.isnan(row["power_j"]) and row["note"]
            continue
        assert row["stable_epoch"] == s0
        assert row["power_j"] == pytest.approx(online_power_estimate_j(ep, r.duration_s, s0, 3, r.epochs))
        assert row["epoch_energy_j"] == pytest.approx(online_epoch_energy_estimate_j(ep, r.epochs, s0, 3))


def test_fast_effect_sizes_equal_their_definitions() -> None:
    rng = np.random.default_rng(3)
    a, b = np.round(rng.normal(0, 1, 30), 1), np.round(rng.normal(0.4, 1, 25), 1)  # ties included
    assert cliffs_delta(a, b) == pytest.approx(np.sign(np.subtract.outer(a, b)).mean())
    lo, hi = cliffs_delta_ci(a, b, 300, 0)
    assert lo < cliffs_delta(a, b) < hi
    q, df = np.array([1.0, 2.5, 4.0]), np.array([3.5, 12.0, 60.0])
    for k in (2, 3, 5):
        ref = [stats.studentized_range.sf(x, k, d) for x, d in zip(q, df, strict=True)]
        assert studentized_range_sf(q, k, df) == pytest.approx(ref, abs=5e-5)
    groups = [rng.normal(i, 1, 8) for i in range(3)]
    small_lo, small_hi = eta_squared_ci(groups, 400, 1)
    assert 0 < small_lo < small_hi < 1


# --------------------------------------------------------------------------------------------
# The study's conventions


def test_the_studys_conventions_reproduce_its_per_image_energy() -> None:
    # 003's Chesslive: 23,807 training and 10,203 validation images (70/30 of 34,010), batch 32,
    # drop-remainder batching: 743 x 32 + 318 x 32 = 33,952 images processed per epoch
    run = pd.DataFrame([{"energy_j": 33_952.0 * 20 * 0.5, "train_images": 23_807, "valid_images": 10_203,
                         "batch_size": 32, "epochs": 20}])
    assert images_per_epoch(run, "processed").iloc[0] == 33_952
    assert images_per_epoch(run, "training").iloc[0] == 23_807
    assert energy_per_image_j(run, "processed").iloc[0] == pytest.approx(0.5)
    assert energy_per_image_j(run, "training").iloc[0] == pytest.approx(33_952 * 0.5 / 23_807)
    # without the columns the settings' batch size and validation images are used
    bare = run.drop(columns=["valid_images", "batch_size"])
    assert images_per_epoch(bare, "processed", 32, 10_203).iloc[0] == 33_952
    settings = AnalysisSettings.from_mapping({"images_per_epoch": "processed", "batch_size": 32,
                                              "valid_images": 10_203})
    runs = bare.assign(run_id=1, arch_hash="a", gpu_type="v100", power_source="nvml", duration_s=100.0)
    report = analyze(runs, settings=settings)
    assert report.runs["energy_per_image_j"].iloc[0] == pytest.approx(0.5)
    assert report.runs["images_per_epoch"].iloc[0] == 33_952


def test_zero_based_stable_epoch_is_the_studys_ten_unstable_epochs() -> None:
    s = AnalysisSettings.from_mapping({"stable_epoch": 10, "stable_epoch_base": 0})
    assert s.window_start() == 11  # "stable after epoch 10": epochs 1-10 unstable
    assert AnalysisSettings.from_mapping({"stable_epoch": 10}).window_start() == 10
    runs, epochs = _runs_and_epochs(2, budgets=(20,), seeds=3)
    r = runs.iloc[0]
    ep = epochs[epochs["run_id"] == r["run_id"]]
    got = online_estimates(epochs, runs.iloc[:1], OnlineConfig(stable_epoch=s.window_start(), window=5))
    assert got["epoch_energy_j"].iloc[0] == pytest.approx(online_epoch_energy_estimate_j(ep, 20, 11, 5))
    with pytest.raises(Exception, match="stable_epoch_base"):
        AnalysisSettings.from_mapping({"stable_epoch_base": 2})


def test_explicit_test_runs_and_per_run_power_limit_and_memory() -> None:
    runs, epochs = _runs_and_epochs(6, budgets=(8,), seeds=3)
    runs["power_limit_w"] = 250.0
    runs["job_memory_gb"] = np.where(runs["run_id"] % 2 == 0, 8.0, 32.0)
    held = [1, 5, 9, 13]
    comp = compare_estimators(runs, epochs, SPECS, online=OnlineConfig(stable_epoch=2, window=3),
                              test_run_ids=held, per_run_hardware=True,
                              green=AnalysisSettings.from_mapping({"green_algorithms": {"memory_gb": 16}}
                                                                  ).green_algorithms)
    assert sorted(comp.test_run_ids) == held and len(comp.train_run_ids) == len(runs) - 4
    p = comp.predictions.set_index(["estimator", "run_id"])["predicted_j"]
    test = runs.set_index("run_id").loc[held]
    assert p.loc["ml_co2_impact"].loc[held].to_numpy() == pytest.approx(250.0 * test["duration_s"].to_numpy())
    ga = p.loc["green_algorithms"].loc[held].to_numpy()
    assert ga == pytest.approx((250.0 * 1.0 + test["job_memory_gb"].to_numpy() * 0.3725) * test["duration_s"].to_numpy())
    with pytest.raises(ValueError, match="not finished runs"):
        compare_estimators(runs, epochs, SPECS, test_run_ids=[999])


# --------------------------------------------------------------------------------------------
# Quotes apart, defaults labelled


def test_study_quotes_stand_apart_and_life_cycle_defaults_are_labelled() -> None:
    runs, epochs = _runs_and_epochs(3, budgets=(8,), seeds=3)
    report = analyze(runs, epochs, gpu_specs=SPECS, settings={"bootstrap": 200, "stable_epoch": 2, "window": 3})
    page = report.markdown()
    studies = page.index("## What the source studies report")
    assert "20-30 times worse" in page[studies:] and "20-30" not in page[:studies]
    assert "not results of this campaign" in page[studies:] and len(STUDY_QUOTES) >= 3
    lc = report.tables["life_cycle"]
    assert lc["inputs"].str.contains("inference_calls=1e\\+06 \\(default\\)").all()
    assert "The shares rest on defaults" in page
    configured = analyze(runs, epochs, gpu_specs=SPECS, settings={
        "bootstrap": 200, "stable_epoch": 2, "window": 3, "carbon": {"inference_calls": 5e5, "overhead_share": 0.7}})
    assert "The shares rest on defaults" not in configured.markdown()


# --------------------------------------------------------------------------------------------
# The synthetic campaign of the benchmarks


def test_synthetic_campaign_is_schema_correct_and_labelled_simulated(tmp_path: Path) -> None:
    url = make_database(tmp_path / "s.db", 50, seed=1, archs=2)
    reader = CampaignReader.open(url)
    try:
        info = reader.campaign(campaign_name(50))
        runs = pd.DataFrame(reader.runs(info.id))
        assert len(runs) == 50 and set(runs["energy_method"]) == {"simulated"}
        assert set(runs["power_source"]) == {"simulated"} and runs["arch_hash"].nunique() == 2
        epochs = pd.DataFrame(reader.epochs(list(runs["run_id"])))
        assert len(epochs) == int(runs["epochs"].sum())
        assert {p["phase"] for p in reader.phases([int(runs["run_id"].iloc[0])])} >= {"idle", "train", "eval"}
    finally:
        reader.engine.dispose()
