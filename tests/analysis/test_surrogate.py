"""analysis.surrogate: encoding, the hand-written training step, the synthetic benchmark fit."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from analysis import surrogate as S
from analysis.surrogate import (
    N_FEATURES,
    OP_CODES,
    SurrogateConfig,
    encode_architecture,
    evaluate,
    fit_surrogate,
    fit_surrogate_from_runs,
    learning_curve,
    load_model,
    pad_cell,
    plot_learning_curve,
    plot_predicted_vs_measured,
    predict,
    prune_cell,
    save_model,
    split_indices,
    synthetic_dataset,
)

C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"


def _fit_args(d: pd.DataFrame) -> tuple[list[Any], list[Any], np.ndarray, np.ndarray, np.ndarray]:
    return list(d.matrix), list(d.ops), d.params.to_numpy(), d.epochs.to_numpy(), d.energy_wh.to_numpy()


# --------------------------------------------------------------------------------------------
# Encoding


def test_padding_puts_output_last_and_pads_ops_with_code_0() -> None:
    # 5 vertices: in -> 1 -> 2 -> out, in -> 3 -> out
    m = [
        [0, 1, 0, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
    ]
    ops = ["input", C3, C1, MP, "output"]
    padded, padded_ops = pad_cell(m, ops)
    assert padded_ops == ["input", C3, C1, MP, "none", "none", "output"]
    assert padded[0, 1] == padded[1, 2] == padded[0, 3] == 1
    assert padded[2, 6] == padded[3, 6] == 1  # edges into the output moved to vertex 6
    assert padded[:, 4].sum() == padded[:, 5].sum() == padded[4].sum() == padded[5].sum() == 0
    assert padded.sum() == 5


def test_encoding_is_28_adjacency_7_ops_1_params() -> None:
    m = np.triu(np.ones((7, 7), dtype=int), k=1)
    m[0, 6] = 0
    ops = ["input", C3, C1, MP, C3, C1, "output"]
    x = encode_architecture(m, ops, 8_500_000)
    assert x.shape == (N_FEATURES,) == (36,)
    rows, cols = np.triu_indices(7)  # row-major upper triangle, diagonal included
    assert x[:28].tolist() == m[rows, cols].tolist()
    assert x[[0, 7, 13, 18, 22, 25, 27]].tolist() == [0] * 7  # the diagonal
    assert x[28:35].tolist() == [1, 3, 2, 4, 3, 2, 5]
    assert OP_CODES == {"none": 0, "input": 1, C1: 2, C3: 3, MP: 4, "output": 5}
    assert x[35] == pytest.approx(8.5)


@pytest.mark.parametrize(
    ("matrix", "ops", "match"),
    [
        ([[0, 1], [1, 0]], ["input", "output"], "upper-triangular"),
        ([[0, 1], [0, 0]], ["input", "conv5x5", "output"], "ops for a 2x2"),
        ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv5x5", "output"], "unknown op"),
        ([[0, 1], [0, 0]], [C3, "output"], "must start with"),
        (np.zeros((8, 8), dtype=int), ["input"] + [C3] * 6 + ["output"], "2 to 7 vertices"),
    ],
)
def test_encoding_rejects_bad_cells(matrix: Any, ops: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_architecture(matrix, ops, 1e6)


def test_prune_cell_drops_dangling_vertices() -> None:
    m = [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]  # vertex 2 reaches nothing
    assert prune_cell(m, ["input", C3, C1, "output"]) == (
        [[0, 1, 0], [0, 0, 1], [0, 0, 0]],
        ["input", C3, "output"],
    )
    assert prune_cell([[0, 0], [0, 0]], ["input", "output"]) is None


def test_synthetic_dataset_is_valid_distinct_and_reproducible() -> None:
    d = synthetic_dataset(300, seed=5, budgets=(4, 12))
    assert d.arch_hash.is_unique and len(d) == 300
    for m, ops in zip(d.matrix, d.ops, strict=True):
        assert sum(map(sum, m)) <= 9
        assert prune_cell(m, ops) == (m, ops)  # every vertex on an input-output path
    assert set(d.epochs) == {4, 12}
    assert d.energy_j.to_numpy() == pytest.approx(d.energy_wh.to_numpy() * 3600)
    assert stats.pearsonr(d.true_energy_wh, d.energy_wh).statistic > 0.998
    pd.testing.assert_frame_equal(d, synthetic_dataset(300, seed=5, budgets=(4, 12)))


# --------------------------------------------------------------------------------------------
# Training machinery


def test_split_sizes_and_groups() -> None:
    tr, va, te = split_indices(4300, (0.7, 0.1, 0.2), seed=1)
    assert (len(tr), len(va), len(te)) == (3010, 430, 860)
    assert len(np.unique(np.concatenate([tr, va, te]))) == 4300
    groups = np.repeat(np.arange(100), 3)
    tr, va, te = split_indices(300, seed=2, groups=groups)
    assert not (set(groups[tr]) & set(groups[te])) and not (set(groups[va]) & set(groups[te]))
    assert (len(set(groups[tr])), len(set(groups[va])), len(set(groups[te]))) == (70, 10, 20)
    with pytest.raises(ValueError, match="sum"):
        split_indices(10, (0.5, 0.1, 0.1))


def test_hand_written_passes_equal_autograd() -> None:
    torch.manual_seed(0)
    net = S.build_mlp()
    stack = S._Stack([net], batch_size=32)
    x, delta = torch.randn(32, 36), torch.randn(32)
    out, acts, zs, cdfs = stack.forward(x)
    torch.testing.assert_close(out, net(x).squeeze(1).detach())
    stack.backward(delta, acts, zs, cdfs)
    (net(x).squeeze(1) * delta).sum().backward()
    torch.testing.assert_close(
        stack.grad[0], torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])
    )


def test_training_equals_autograd_with_torch_adam() -> None:
    """Three epochs of `_train_nets` against nn.Module + autograd + torch.optim.Adam, same batches."""
    d = synthetic_dataset(150, seed=1)
    x = S.encode_architectures(list(d.matrix), list(d.ops), d.params.to_numpy())
    # non-integer budgets keep exact cancellations (where rounding decides Adam's step sign) away
    ep = np.random.default_rng(0).uniform(1, 10, len(d))
    y = d.energy_wh.to_numpy()
    tr = np.arange(100)
    model, _, hist = S._train_nets(x, ep, y, tr, np.arange(0), SurrogateConfig(epochs=3), [7])[0]

    mean, std = x[tr].mean(0), x[tr].std(0)
    std = np.where(std > 0, std, 1.0)
    per_epoch = y[tr] / ep[tr]
    mu, sigma = float(per_epoch.mean()), float(per_epoch.std())
    xs = torch.tensor((x[tr] - mean) / std, dtype=torch.float32)
    et, yt = torch.tensor(ep[tr], dtype=torch.float32), torch.tensor(y[tr], dtype=torch.float32)
    torch.manual_seed(7)
    net = S.build_mlp()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(7)
    losses = []
    for _ in range(3):
        perm = torch.randperm(100, generator=gen)
        total = 0.0
        for start in range(0, 100, 32):
            idx = perm[start : start + 32]
            loss = (et[idx] * (mu + sigma * net(xs[idx]).squeeze(1)) - yt[idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / 100)
    for a, b in zip(net.parameters(), model.net.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(hist["train_l1_wh"], losses, rtol=1e-4)


def test_networks_trained_together_equal_networks_trained_alone() -> None:
    d = synthetic_dataset(200, seed=2)
    x = S.encode_architectures(list(d.matrix), list(d.ops), d.params.to_numpy())
    ep, y = d.epochs.to_numpy().astype(float), d.energy_wh.to_numpy()
    tr, va = np.arange(150), np.arange(150, 200)
    cfg = SurrogateConfig(epochs=4)
    together = S._train_nets(x, ep, y, tr, va, cfg, [3, 4])
    alone = S._train_nets(x, ep, y, tr, va, cfg, [4])[0]
    assert together[1][1] == alone[1]  # same best epoch
    for a, b in zip(together[1][0].net.parameters(), alone[0].net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_evaluate_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 10, 50)
    p = y + rng.normal(0, 0.5, 50)
    m = evaluate(y, p)
    assert m.pearson == pytest.approx(stats.pearsonr(y, p).statistic)
    assert m.kendall_tau == pytest.approx(stats.kendalltau(y, p).statistic)
    assert m.mae_wh == pytest.approx(np.mean(np.abs(y - p)))
    assert math.isnan(evaluate([1.0, 1.0], [1.0, 2.0]).pearson)


# --------------------------------------------------------------------------------------------
# The synthetic benchmark


def test_surrogate_reaches_pearson_099_on_synthetic_benchmark() -> None:
    """The recipe (MLP, L1, Adam 5e-3, batch 32, 0.7/0.1/0.2) on 2,000 cells for 40 epochs."""
    d = synthetic_dataset(2000, seed=0)
    fit = fit_surrogate(*_fit_args(d), SurrogateConfig(epochs=40), groups=d.arch_hash.to_numpy())
    assert fit.metrics.n == len(fit.test_index) == 400
    assert fit.metrics.pearson >= 0.99
    assert fit.metrics.kendall_tau > 0.9
    assert len(fit.history) == 40 and 1 <= fit.best_epoch <= 40
    # metrics are computed on the test split only
    assert fit.metrics == evaluate(d.energy_wh.to_numpy()[fit.test_index], fit.test_predicted_wh)
    assert fit.history["val_mae_wh"].min() == pytest.approx(
        fit.history["val_mae_wh"].iloc[fit.best_epoch - 1]
    )


@pytest.mark.slow
def test_full_benchmark_recipe() -> None:
    """EC-NAS's own size: 4,300 cells, 200 epochs (the benchmark's run; about 10-30 s on 2 cores)."""
    d = synthetic_dataset(4300, seed=0)
    fit = fit_surrogate(*_fit_args(d), SurrogateConfig(), groups=d.arch_hash.to_numpy())
    assert (len(fit.train_index), len(fit.val_index), len(fit.test_index)) == (3010, 430, 860)
    assert fit.metrics.pearson >= 0.99


def test_predicts_other_budgets_and_round_trips_through_a_file(tmp_path: Path) -> None:
    d = synthetic_dataset(600, seed=3, budgets=(4, 12))
    fit = fit_surrogate(*_fit_args(d), SurrogateConfig(epochs=15, seed=3))
    matrices, ops, params = list(d.matrix[:20]), list(d.ops[:20]), d.params.to_numpy()[:20]
    at4 = predict(fit.model, matrices, ops, params, 4)
    at108 = predict(fit.model, matrices, ops, params, 108)
    np.testing.assert_allclose(at108, at4 * 27, rtol=1e-6)  # a budget never measured
    path = save_model(fit.model, tmp_path / "model" / "surrogate.pt")
    loaded = load_model(path)
    np.testing.assert_array_equal(predict(loaded, matrices, ops, params, 4), at4)
    assert loaded.metadata["budget_mode"] == "per_epoch"
    assert loaded.metadata["test_pearson"] == pytest.approx(fit.metrics.pearson)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a surrogate model"):
        load_model(tmp_path / "other.pt")


def test_fit_from_runs_needs_one_gpu_type() -> None:
    d = synthetic_dataset(300, seed=4)
    runs = pd.concat(
        [d.assign(gpu_type="a100", seed=0), d.assign(gpu_type="v100", seed=0)], ignore_index=True
    )
    with pytest.raises(ValueError, match="gpu_type="):
        fit_surrogate_from_runs(runs, SurrogateConfig(epochs=2))
    fit = fit_surrogate_from_runs(runs, SurrogateConfig(epochs=2), gpu_type="v100")
    assert fit.model.metadata["gpu_type"] == "v100"
    assert len(fit.train_index) + len(fit.val_index) + len(fit.test_index) == 300


def test_fit_from_runs_keeps_seeds_of_one_cell_together() -> None:
    d = synthetic_dataset(200, seed=6)
    runs = pd.concat([d.assign(seed=s) for s in range(3)], ignore_index=True)
    fit = fit_surrogate_from_runs(runs, SurrogateConfig(epochs=2))
    hashes = runs.arch_hash.to_numpy()
    assert not set(hashes[fit.train_index]) & set(hashes[fit.test_index])


def test_learning_curve_and_figures(tmp_path: Path) -> None:
    d = synthetic_dataset(700, seed=7)
    curve = learning_curve(
        *_fit_args(d), train_sizes=[30, 480, 10_000], n_inits=3, config=SurrogateConfig(epochs=12)
    )
    assert list(curve.columns) == ["train_size", "n_inits", "mae_mean_wh", "mae_std_wh"]
    assert curve["train_size"].tolist() == [30, 480, 490]  # clipped to the 490 training cells
    assert (curve["n_inits"] == 3).all() and (curve["mae_std_wh"] > 0).all()
    assert curve["mae_mean_wh"].iloc[0] > curve["mae_mean_wh"].iloc[-1]
    fit = fit_surrogate(*_fit_args(d), SurrogateConfig(epochs=5))
    scatter = plot_predicted_vs_measured(
        fit.test_measured_wh, fit.test_predicted_wh, tmp_path / "scatter.png"
    )
    lc = plot_learning_curve(curve, tmp_path / "curve.png")
    assert scatter.stat().st_size > 10_000 and lc.stat().st_size > 10_000


# --------------------------------------------------------------------------------------------
# The project's energy model: ensemble, explicit validation, separate seeds, budget model


def _flops(d: pd.DataFrame) -> np.ndarray:
    return d.params.to_numpy(dtype=np.float64) * 300.0  # a stand-in: the model only needs a number per cell


def test_encode_padded_equals_the_per_cell_encoding() -> None:
    d = synthetic_dataset(40, seed=3)
    adj, codes = S.pad_cells(list(d.matrix), list(d.ops))
    ecnas = S.encode_padded(adj, codes, d.params.to_numpy())
    assert np.array_equal(ecnas, S.encode_architectures(list(d.matrix), list(d.ops), d.params.to_numpy()))
    ext = S.encode_padded(adj, codes, d.params.to_numpy(), _flops(d), "extended")
    assert ext.shape == (40, N_FEATURES + len(S.EXTENDED_FEATURES))
    row = 0
    n_c3 = sum(op == C3 for op in d.ops[row])
    assert ext[row, N_FEATURES] == n_c3 and ext[row, N_FEATURES + 3] == len(d.ops[row])
    assert ext[row, N_FEATURES + 4] == sum(map(sum, d.matrix[row]))
    with pytest.raises(ValueError, match="needs the cells' FLOPs"):
        S.encode_padded(adj, codes, d.params.to_numpy(), None, "extended")


def test_budget_offset_is_recovered_and_zero_without_evidence() -> None:
    rng = np.random.default_rng(0)
    f = rng.uniform(1.0, 5.0, 30)
    groups = np.repeat(np.arange(30), 4)
    epochs = np.tile([4.0, 12.0, 36.0, 108.0], 30)
    energy = f[groups] * (epochs + 0.7) * np.exp(rng.normal(0, 0.002, len(epochs)))
    alpha, info = S.fit_budget_offset(groups, epochs, energy)
    assert alpha == pytest.approx(0.7, abs=0.05)
    assert info["sse_affine"] < info["sse_linear"] and info["n_cells"] == 30
    alpha0, info0 = S.fit_budget_offset(np.arange(5), np.full(5, 4.0), np.ones(5))
    assert alpha0 == 0.0 and "linear" in info0["alpha_source"]


def test_energy_model_fits_on_all_cells_with_an_explicit_validation_set(tmp_path: Path) -> None:
    d = synthetic_dataset(300, seed=1, budgets=(4, 12))
    args = _fit_args(d)
    config = S.EnsembleConfig(members=3, epochs=15)
    val = np.arange(0, 300, 10)
    model = S.fit_energy_model(*args, flops=_flops(d), validation=val, init_seed=5, config=config,
                               groups=d.arch_hash.to_numpy(), network={"stem_channels": 128},
                               data={"source": "synthetic"})
    meta = model.metadata
    assert meta["n_train"] + meta["n_val"] == 300 and meta["n_val"] == 30  # no hidden test split
    assert meta["features"] == "extended" and "GFLOPs" in meta["feature_definition"]
    assert meta["network"] == {"stem_channels": 128} and meta["data"] == {"source": "synthetic"}
    assert meta["budgets_fitted"] == [4.0, 12.0] and len(model.members) == 3
    mean, spread = model.predict(*args[:3], args[3], _flops(d))
    assert mean.shape == spread.shape == (300,) and np.all(spread > 0)
    assert np.mean(np.abs(mean - args[4])) / np.mean(args[4]) < 0.1
    # a fraction draws the validation cells with the split seed; the initialisation has its own seed
    a = S.fit_energy_model(*args, flops=_flops(d), validation=0.2, split_seed=1, init_seed=0, config=config)
    b = S.fit_energy_model(*args, flops=_flops(d), validation=0.2, split_seed=2, init_seed=0, config=config)
    c = S.fit_energy_model(*args, flops=_flops(d), validation=0.2, split_seed=1, init_seed=0, config=config)
    assert a.metadata["n_val"] == 60
    pa_, pb, pc = (m.predict(*args[:3], 4, _flops(d))[0] for m in (a, b, c))
    assert np.array_equal(pa_, pc) and not np.array_equal(pa_, pb)
    path = S.save_energy_model(model, tmp_path / "energy.pt")
    loaded = S.load_energy_model(path)
    assert loaded.metadata["network"] == {"stem_channels": 128} and loaded.budget_offset == model.budget_offset
    np.testing.assert_allclose(loaded.predict(*args[:3], 36, _flops(d))[0], model.predict(*args[:3], 36, _flops(d))[0])


def test_the_ensemble_beats_ecnas_mlp_on_the_same_split_at_less_compute() -> None:
    # the benchmark's claim in small: same 70/10/20 split, same training rows, lower test MAE
    d = synthetic_dataset(600, seed=7, noise=0.02)
    args = _fit_args(d)
    groups = d.arch_hash.to_numpy()
    ecnas = fit_surrogate(*args, SurrogateConfig(seed=0, epochs=60), groups=groups)
    rows = np.concatenate([ecnas.train_index, ecnas.val_index])
    model = S.fit_energy_model(*(np.asarray(a, dtype=object)[rows] if i < 2 else np.asarray(a)[rows]
                                 for i, a in enumerate(args)),
                               flops=_flops(d)[rows], validation=np.arange(len(ecnas.train_index), len(rows)),
                               config=S.EnsembleConfig(members=4, epochs=15), budget_offset=0.0)
    te = ecnas.test_index
    pred = model.predict([d.matrix[i] for i in te], [d.ops[i] for i in te], args[2][te], args[3][te],
                         _flops(d)[te])[0]
    assert np.mean(np.abs(pred - args[4][te])) < ecnas.metrics.mae_wh
