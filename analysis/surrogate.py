"""EC-NAS energy surrogate: an MLP from a NAS-Bench-101 cell to its training energy in Wh.

Features (36 for the 7-vertex space, as EC-NAS):

- the upper triangle of the padded 7x7 adjacency matrix, diagonal included (28 values; the
  diagonal of a DAG is always zero, EC-NAS keeps it, so do we, to keep the 36-feature layout);
- the 7 op codes as integers (``OP_CODES``: EC-NAS's mapping input=1, conv1x1-bn-relu=2,
  conv3x3-bn-relu=3, maxpool3x3=4, output=5, plus 0 for a padding vertex); the op names, the
  vertex and edge limits and the pruning are NAS-Bench-101's as ``jobs.cell`` defines them;
- the parameter count in millions.

Cells with fewer than 7 vertices are padded as NAS-Bench-101 tools do: zero rows and columns are
inserted *before* the output vertex, so the output is always vertex 6, and the padded vertices get
op code 0.

Epoch budget: the network predicts the energy *per epoch* (Wh/epoch) from the 36 features, and the
prediction for a run is ``epochs x per-epoch energy``. We chose this over a 37th input because the
budget is a multiplier, not a property of the cell: EC-NAS measured 4-epoch runs and extrapolated
to 4/12/36/108, and the architecture-and-environment study (003) found epoch energy stable after
warm-up. An MLP given the budget as an input has no reason to extrapolate sensibly to a budget
it never saw; a per-epoch model scales by construction, and one model uses every measurement
instead of splitting them by budget. The L1 loss is still taken on the run's energy in Wh, as
EC-NAS does. The price: energy that does not scale with epochs (start-up, a final evaluation) is
spread over the epochs of the budgets trained on, so predictions for far larger budgets carry it
in proportion.

Training follows EC-NAS (the numbers are `SurrogateConfig`'s defaults, the report's
``analysis.surrogate`` settings): MLP 36-128-64-32-32-1 with GELU after each hidden layer, L1 loss, Adam at
lr 5e-3, batch 32, 200 epochs, split 0.7/0.1/0.2 with a seed (grouped by architecture when
groups are given, so one cell's seeds never straddle train and test). Features are standardized
with the training split's mean and standard deviation. Model selection: after every epoch the
validation MAE (Wh) is computed and the weights of the best epoch are kept (an early checkpoint);
the test split is touched once, at the end. Metrics (Pearson, Kendall tau-b, MAE) are computed on
the test split only (EC-NAS's own code left a dummy zero point in its predictions).

The training loop writes the forward and backward passes and Adam's update out by hand over one
parameter tensor (see `_train_nets`); tests check it against nn.Module + autograd +
torch.optim.Adam. On a 2-core CPU it runs the 200 epochs on 3,010 cells in about 10 s, a third of
what autograd needs, and trains the learning curve's 10 initialisations side by side.

Fit one surrogate per GPU type: energy is a property of cell *and* hardware.

The project's own energy model, `fit_energy_model` (an ensemble on extended features with a
fitted budget model, no hidden test split), is at the end of this module; the tabular benchmark
(``analysis.benchmark``) predicts with it. On EC-NAS's development data and protocol it has a
lower test MAE than this EC-NAS MLP at less fit time (``python -m benchmarks.surrogate``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.carbon import J_PER_WH
from analysis.settings import SurrogateConfig
from jobs.cell import INPUT, MAX_EDGES, MAX_VERTICES, OPS, OUTPUT, CellSpec, CellSpecError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

N_VERTICES = MAX_VERTICES
CONV3X3, CONV1X1, MAXPOOL3X3 = OPS  # NAS-Bench-101's interior ops (jobs.cell)
PAD_OP = "none"
#: EC-NAS's op codes (input=1 ... output=5) with 0 for vertices added by padding.
OP_CODES: dict[str, int] = {PAD_OP: 0, INPUT: 1, CONV1X1: 2, CONV3X3: 3, MAXPOOL3X3: 4, OUTPUT: 5}
N_ADJACENCY_FEATURES = N_VERTICES * (N_VERTICES + 1) // 2  # 28, diagonal included
N_FEATURES = N_ADJACENCY_FEATURES + N_VERTICES + 1  # 36
FORMAT = "campaign.surrogate/1"


# --------------------------------------------------------------------------------------------
# Encoding


def pad_cell(
    matrix: Sequence[Sequence[int]] | np.ndarray, ops: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Pad a pruned cell to 7 vertices, inserting empty vertices before the output vertex.

    Raises ValueError for a non-square, non-upper-triangular or oversized matrix, or ops that do
    not start with ``input`` and end with ``output``.
    """
    m = np.asarray(matrix, dtype=np.int64)
    n = m.shape[0] if m.ndim == 2 else -1
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"adjacency matrix must be square, got shape {m.shape}")
    if not 2 <= n <= N_VERTICES:
        raise ValueError(f"a cell has 2 to {N_VERTICES} vertices, got {n}; prune it first")
    if len(ops) != n:
        raise ValueError(f"{len(ops)} ops for a {n}x{n} matrix; give one op per vertex")
    if np.any(np.tril(m) != 0):
        raise ValueError("adjacency matrix must be strictly upper-triangular (a DAG in topological order)")
    if ops[0] != INPUT or ops[-1] != OUTPUT:
        raise ValueError(f"ops must start with {INPUT!r} and end with {OUTPUT!r}, got {list(ops)}")
    padded = np.zeros((N_VERTICES, N_VERTICES), dtype=np.int64)
    k = n - 1  # vertices before the output
    padded[:k, :k] = m[:k, :k]
    padded[:k, N_VERTICES - 1] = m[:k, n - 1]
    padded_ops = list(ops[:k]) + [PAD_OP] * (N_VERTICES - n) + [ops[-1]]
    return padded, padded_ops


def encode_architecture(
    matrix: Sequence[Sequence[int]] | np.ndarray, ops: Sequence[str], params: float
) -> np.ndarray:
    """The 36 EC-NAS features of one cell: 28 adjacency entries, 7 op codes, params in millions."""
    padded, padded_ops = pad_cell(matrix, ops)
    unknown = [op for op in padded_ops if op not in OP_CODES]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; known ops are {sorted(OP_CODES)}")
    rows, cols = np.triu_indices(N_VERTICES)
    codes = [OP_CODES[op] for op in padded_ops]
    return np.concatenate([padded[rows, cols], codes, [float(params) / 1e6]]).astype(np.float64)


def encode_architectures(
    matrices: Sequence[Any], ops: Sequence[Sequence[str]], params: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Encode many cells into an (n, 36) float array; the three sequences must have equal length."""
    if not len(matrices) == len(ops) == len(params):
        raise ValueError(f"lengths differ: {len(matrices)} matrices, {len(ops)} ops, {len(params)} params")
    if len(matrices) == 0:
        return np.zeros((0, N_FEATURES))
    return np.stack([encode_architecture(m, o, p) for m, o, p in zip(matrices, ops, params, strict=True)])


# --------------------------------------------------------------------------------------------
# Configuration and results


@dataclass(frozen=True)
class SurrogateMetrics:
    """Agreement of predicted and measured energy on one split."""

    n: int
    pearson: float
    kendall_tau: float
    mae_wh: float


@dataclass
class SurrogateModel:
    """A trained surrogate: the network, its feature scaling and metadata (all that `predict` needs)."""

    net: Any  # torch.nn.Sequential
    feature_mean: np.ndarray
    feature_std: np.ndarray
    target_mean_wh_per_epoch: float
    target_std_wh_per_epoch: float
    hidden: tuple[int, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SurrogateFit:
    """The outcome of `fit_surrogate`: the model, the split, test-set predictions and metrics."""

    model: SurrogateModel
    metrics: SurrogateMetrics
    train_index: np.ndarray
    val_index: np.ndarray
    test_index: np.ndarray
    test_measured_wh: np.ndarray
    test_predicted_wh: np.ndarray
    best_epoch: int
    history: pd.DataFrame  # epoch, train_l1_wh, val_mae_wh
    train_seconds: float  # wall clock
    train_cpu_seconds: float  # this process's CPU time (less sensitive to other load)


# --------------------------------------------------------------------------------------------
# Splitting and metrics


def split_indices(
    n: int,
    fractions: Sequence[float] | None = None,
    seed: int = 0,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/validation/test indices of ``n`` samples (``fractions``: default
    `SurrogateConfig`'s split).

    Validation and test sizes are ``round(fraction x count)``, train takes the rest. With
    ``groups`` (e.g. architecture hashes) whole groups are assigned, so no group straddles splits.
    """
    if fractions is None:
        fractions = SurrogateConfig().split
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    if groups is None:
        units = rng.permutation(n)
        n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
        n_train = n - n_val - n_test
        return (
            np.sort(units[:n_train]),
            np.sort(units[n_train : n_train + n_val]),
            np.sort(units[n_train + n_val :]),
        )
    g = np.asarray(groups)
    if len(g) != n:
        raise ValueError(f"{len(g)} groups for {n} samples")
    uniq, inverse = np.unique(g, return_inverse=True)
    order = rng.permutation(len(uniq))
    k = len(uniq)
    k_val, k_test = round(fractions[1] * k), round(fractions[2] * k)
    k_train = k - k_val - k_test
    group_split = np.empty(k, dtype=np.int64)
    group_split[order[:k_train]] = 0
    group_split[order[k_train : k_train + k_val]] = 1
    group_split[order[k_train + k_val :]] = 2
    split_of_sample = group_split[inverse]
    return tuple(np.flatnonzero(split_of_sample == s) for s in range(3))  # type: ignore[return-value]


def evaluate(
    measured_wh: Sequence[float] | np.ndarray, predicted_wh: Sequence[float] | np.ndarray
) -> SurrogateMetrics:
    """Pearson r, Kendall tau-b (scipy) and MAE in Wh of predictions against measurements."""
    from scipy import stats

    y = np.asarray(measured_wh, dtype=np.float64)
    p = np.asarray(predicted_wh, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"measured {y.shape} and predicted {p.shape} differ in shape")
    n = int(y.size)
    mae = float(np.mean(np.abs(y - p))) if n else math.nan
    if n < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return SurrogateMetrics(n=n, pearson=math.nan, kendall_tau=math.nan, mae_wh=mae)
    return SurrogateMetrics(
        n=n,
        pearson=float(stats.pearsonr(y, p).statistic),
        kendall_tau=float(stats.kendalltau(y, p).statistic),
        mae_wh=mae,
    )


# --------------------------------------------------------------------------------------------
# Training


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    # Adam's second moments of near-zero gradients decay into denormal floats, which make every
    # element-wise op on the parameter tensor an order of magnitude slower on x86.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(before)


def build_mlp(n_features: int = N_FEATURES, hidden: Sequence[int] | None = None) -> torch.nn.Sequential:
    """The EC-NAS MLP: Linear layers of widths ``hidden`` (default `SurrogateConfig`'s) with GELU
    after each, then Linear to 1."""
    from torch import nn

    if hidden is None:
        hidden = SurrogateConfig().hidden
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _as_epochs(epochs: float | Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    e = np.asarray(epochs, dtype=np.float64)
    if e.ndim == 0:
        e = np.full(n, float(e))
    if e.shape != (n,):
        raise ValueError(f"epochs must be a scalar or {n} values, got shape {e.shape}")
    if np.any(~np.isfinite(e)) or np.any(e <= 0):
        raise ValueError("epoch budgets must be positive and finite")
    return e


_SQRT1_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


class _Stack:
    """K MLPs whose parameters are views of one (K, P) tensor, with hand-written passes.

    On a CPU a batch of 32 is dominated by per-operation overhead, so the passes avoid every
    avoidable dispatch: 2-D matmuls when K = 1 (batched ones otherwise), transposed weight views
    made once, constants held as 0-dim float32 tensors (a Python float costs a conversion per
    operation), bias gradients as a matmul with a row of ones.
    """

    def __init__(self, nets: Sequence[Any], batch_size: int) -> None:
        import torch

        self.k = len(nets)
        self.shapes = [tuple(p.shape) for p in nets[0].parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.n_layers = len(self.shapes) // 2
        self.theta = torch.stack(
            [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in nets]
        )
        self.grad = torch.zeros_like(self.theta)
        self.weights, self.biases = self._views(self.theta)
        self.g_weights, self.g_biases = self._views(self.grad)
        if self.k == 1:
            self.weights_t = [w.t() for w in self.weights]
            self.g_biases = [g.view(1, -1) for g in self.g_biases]
        else:
            self.weights_t = [w.transpose(1, 2) for w in self.weights]
        self.ones = torch.ones(1, batch_size) if self.k == 1 else torch.ones(self.k, 1, batch_size)
        self.c_sqrt1_2 = torch.tensor(_SQRT1_2)
        self.c_half = torch.tensor(0.5)
        self.c_minus_half = torch.tensor(-0.5)

    def _views(self, flat: Any) -> tuple[list[Any], list[Any]]:
        import torch

        parts = torch.split(flat, self.sizes, dim=1)
        n = self.n_layers
        if self.k == 1:
            return (
                [parts[2 * i][0].view(self.shapes[2 * i]) for i in range(n)],
                [parts[2 * i + 1][0] for i in range(n)],
            )
        weights = [parts[2 * i].view(self.k, *self.shapes[2 * i]) for i in range(n)]
        biases = [parts[2 * i + 1].view(self.k, 1, self.shapes[2 * i + 1][0]) for i in range(n)]
        return weights, biases

    def forward(self, h: Any) -> tuple[Any, list[Any], list[Any], list[Any]]:
        """Output (K, B), or (B,) for K = 1, plus each layer's input, pre-activation z and Phi(z)."""
        import torch

        acts: list[Any] = [h]
        zs: list[Any] = []
        cdfs: list[Any] = []
        last = self.n_layers - 1
        for i in range(self.n_layers):
            if self.k == 1:
                z = torch.addmm(self.biases[i], h, self.weights_t[i])
            else:
                z = torch.baddbmm(self.biases[i], h, self.weights_t[i])
            if i == last:
                return z.squeeze(-1), acts, zs, cdfs
            # Phi(z) = 0.5 + 0.5 erf(z / sqrt 2); exact GELU is z * Phi(z), as nn.GELU()
            cdf = torch.add(self.c_half, torch.erf(torch.mul(z, self.c_sqrt1_2)), alpha=0.5)
            h = torch.mul(z, cdf)
            acts.append(h)
            zs.append(z)
            cdfs.append(cdf)
        raise AssertionError("unreachable")

    def backward(self, delta: Any, acts: list[Any], zs: list[Any], cdfs: list[Any]) -> None:
        """Fill ``self.grad`` from d loss / d output (same shape as the output)."""
        import torch

        d = delta.unsqueeze(-1)
        b = d.shape[-2]
        ones = self.ones[..., :b]
        for i in range(self.n_layers - 1, -1, -1):
            if self.k == 1:
                torch.mm(d.t(), acts[i], out=self.g_weights[i])
                torch.mm(ones, d, out=self.g_biases[i])
            else:
                torch.bmm(d.transpose(1, 2), acts[i], out=self.g_weights[i])
                torch.bmm(ones, d, out=self.g_biases[i])
            if i > 0:
                z = zs[i - 1]
                # GELU'(z) = Phi(z) + z phi(z), phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
                pdf = torch.exp(torch.mul(torch.mul(z, z), self.c_minus_half))
                dgelu = torch.addcmul(cdfs[i - 1], z, pdf, value=_INV_SQRT_2PI)
                back = torch.mm(d, self.weights[i]) if self.k == 1 else torch.bmm(d, self.weights[i])
                d = back.mul_(dgelu)


def _train_nets(
    x: np.ndarray,
    epochs_arr: np.ndarray,
    energy_wh: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: SurrogateConfig,
    init_seeds: Sequence[int],
) -> list[tuple[SurrogateModel, int, pd.DataFrame]]:
    """Train one network per seed in ``init_seeds`` on ``train_idx``, all at once.

    Speed (the benchmark asks for 200 epochs on 4,300 cells in under 30 s on a 2-core CPU): the
    networks' parameters live in one tensor, forward and backward passes are written out as
    matmuls and Adam is applied to the whole tensor with torch.optim.Adam's update rule
    (bias-corrected, eps added outside the square root). For batches of 32 on a CPU, where
    per-operation overhead dominates, this takes a third of the time autograd with nn.Module and
    torch.optim.Adam take; tests check the result against that reference. Every network has its
    own initialisation and batch order (both from its seed) and keeps the weights of its epoch
    with the lowest validation MAE.

    The loss is L1 on the run's energy in Wh, ``|epochs x (mu + sigma x net(x)) - E|``, with mu and
    sigma the mean and std of the training split's per-epoch energy.
    """
    import torch

    if len(train_idx) == 0:
        raise ValueError("the training split is empty; give more samples or a larger train fraction")
    x_tr = x[train_idx]
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant features (the zero diagonal) stay zero
    per_epoch = energy_wh / epochs_arr
    t_mean = float(per_epoch[train_idx].mean())
    t_std = float(per_epoch[train_idx].std()) or 1.0
    # |e (mu + sigma out) - E| = e sigma |out - target|: train on the standardized per-epoch target
    # with per-sample weight e sigma, which keeps the loss in Wh and the inner loop short.
    target = torch.tensor((per_epoch - t_mean) / t_std, dtype=torch.float32)
    weight = torch.tensor(epochs_arr * t_std, dtype=torch.float32)
    xs = torch.tensor((x - mean) / std, dtype=torch.float32)
    xt, yt, wt = xs[train_idx], target[train_idx], weight[train_idx]
    xv, yv, wv = xs[val_idx], target[val_idx], weight[val_idx]

    n_models = len(init_seeds)
    nets = []
    for seed in init_seeds:
        torch.manual_seed(seed)
        nets.append(build_mlp(x.shape[1], config.hidden))
    stack = _Stack(nets, config.batch_size)
    theta, grad = stack.theta, stack.grad
    grad_sq = torch.zeros_like(theta)
    one = torch.tensor(1.0)
    exp_avg = torch.zeros_like(theta)
    exp_avg_sq = torch.zeros_like(theta)
    beta1, beta2 = _ADAM_BETAS
    lr = config.learning_rate

    gens = [torch.Generator().manual_seed(int(s)) for s in init_seeds]
    n_tr, bs = len(train_idx), config.batch_size
    starts = list(range(0, n_tr, bs))
    # 1 / (size of the batch holding each position), so delta = sign x weight / batch size
    inv_batch = torch.full((n_tr,), 1.0 / bs)
    inv_batch[starts[-1] :] = 1.0 / (n_tr - starts[-1])
    if n_models > 1:
        xv = xv.expand(n_models, -1, -1)
    best_val = torch.full((n_models,), math.inf)
    best_theta = theta.clone()
    best_epoch = [config.epochs] * n_models
    history: list[list[tuple[int, float, float]]] = [[] for _ in range(n_models)]
    step = 0
    with torch.no_grad():
        for epoch in range(1, config.epochs + 1):
            perms = [torch.randperm(n_tr, generator=g) for g in gens]
            perm = perms[0] if n_models == 1 else torch.stack(perms)
            # pre-permuted tensors; the batches are contiguous slices of them
            xe, ye, we = xt[perm], yt[perm], wt[perm] * inv_batch
            total = torch.zeros(n_models)
            for start in starts:
                end = start + bs
                out, acts, zs, cdfs = stack.forward(xe[..., start:end, :])
                resid = out - ye[..., start:end]
                delta = torch.sign(resid).mul_(we[..., start:end])  # sign(0) = 0, as autograd's abs
                # sum |resid| x weight: this batch's mean L1 in Wh, times its size
                batch_l1 = torch.dot(resid, delta) if n_models == 1 else (resid * delta).sum(-1)
                total.add_(batch_l1, alpha=min(bs, n_tr - start))
                stack.backward(delta, acts, zs, cdfs)
                step += 1
                # Adam: theta -= lr/c1 * m / (sqrt(v)/s + eps) with c1 = 1 - b1^t, s = sqrt(1 - b2^t),
                # written as lr*s/c1 * m / (sqrt(v) + eps*s) to keep scalars out of tensor ops
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.lerp_(torch.mul(grad, grad, out=grad_sq), 1.0 - beta2)
                bias_c2_sqrt = math.sqrt(1.0 - beta2**step)
                denom = torch.sqrt(exp_avg_sq).add_(one, alpha=_ADAM_EPS * bias_c2_sqrt)
                theta.addcdiv_(exp_avg, denom, value=-lr * bias_c2_sqrt / (1.0 - beta1**step))
            train_l1 = (total / n_tr).tolist()
            if len(val_idx):
                out_v = stack.forward(xv)[0]
                val_mae = ((out_v - yv).abs_() * wv).mean(-1).reshape(n_models)
                better = val_mae < best_val
                if bool(better.any()):
                    best_val = torch.where(better, val_mae, best_val)
                    best_theta[better] = theta[better]
                    for k in torch.nonzero(better).flatten().tolist():
                        best_epoch[k] = epoch
                val_list = val_mae.tolist()
            else:
                val_list = [math.nan] * n_models
            for k in range(n_models):
                history[k].append((epoch, train_l1[k], val_list[k]))
    final = best_theta if len(val_idx) else theta
    results = []
    for k, net in enumerate(nets):
        offset = 0
        for p, size in zip(net.parameters(), stack.sizes, strict=True):
            p.data.copy_(final[k, offset : offset + size].view_as(p))
            offset += size
        net.eval()
        model = SurrogateModel(
            net=net,
            feature_mean=mean,
            feature_std=std,
            target_mean_wh_per_epoch=t_mean,
            target_std_wh_per_epoch=t_std,
            hidden=tuple(config.hidden),
        )
        hist = pd.DataFrame(history[k], columns=["epoch", "train_l1_wh", "val_mae_wh"])
        results.append((model, best_epoch[k], hist))
    return results


def _predict_features(model: SurrogateModel, x: np.ndarray, epochs_arr: np.ndarray) -> np.ndarray:
    import torch

    if x.shape[0] == 0:
        return np.zeros(0)
    xs = torch.as_tensor((x - model.feature_mean) / model.feature_std, dtype=torch.float32)
    model.net.eval()
    with torch.inference_mode():
        out = model.net(xs).squeeze(1).double().numpy()
    return epochs_arr * (model.target_mean_wh_per_epoch + model.target_std_wh_per_epoch * out)


def fit_surrogate(
    matrices: Sequence[Any],
    ops: Sequence[Sequence[str]],
    params: Sequence[float] | np.ndarray,
    epochs: float | Sequence[float] | np.ndarray,
    energy_wh: Sequence[float] | np.ndarray,
    config: SurrogateConfig | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> SurrogateFit:
    """Train the EC-NAS surrogate on measured runs and score it on the held-out test split.

    ``epochs`` is each run's budget and ``energy_wh`` its measured energy. ``groups`` (e.g.
    ``arch_hash``) keeps every run of one cell in one split. Deterministic for a given config.
    """
    config = config or SurrogateConfig()
    x = encode_architectures(matrices, ops, params)
    n = x.shape[0]
    ep = _as_epochs(epochs, n)
    y = np.asarray(energy_wh, dtype=np.float64)
    if y.shape != (n,) or np.any(~np.isfinite(y)):
        raise ValueError(f"energy_wh must be {n} finite values")
    train_idx, val_idx, test_idx = split_indices(n, config.split, config.seed, groups)
    with _torch_threads(config.num_threads):
        t0, c0 = time.perf_counter(), time.process_time()
        model, best_epoch, history = _train_nets(x, ep, y, train_idx, val_idx, config, [config.seed])[0]
        train_seconds, train_cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        pred_test = _predict_features(model, x[test_idx], ep[test_idx])
    metrics = evaluate(y[test_idx], pred_test)
    model.metadata = {
        "format": FORMAT,
        "budget_mode": "per_epoch",
        "op_codes": dict(OP_CODES),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_test": len(test_idx),
        "best_epoch": best_epoch,
        "seed": config.seed,
        "epochs_trained": config.epochs,
        "learning_rate": config.learning_rate,
        "batch_size": config.batch_size,
        "test_pearson": metrics.pearson,
        "test_kendall_tau": metrics.kendall_tau,
        "test_mae_wh": metrics.mae_wh,
        "budgets_seen": sorted({float(b) for b in ep}),
    }
    log.info("surrogate: best epoch %d, test %s, %.1f s", best_epoch, metrics, train_seconds)
    return SurrogateFit(
        model=model,
        metrics=metrics,
        train_index=train_idx,
        val_index=val_idx,
        test_index=test_idx,
        test_measured_wh=y[test_idx],
        test_predicted_wh=pred_test,
        best_epoch=best_epoch,
        history=history,
        train_seconds=train_seconds,
        train_cpu_seconds=train_cpu_seconds,
    )


def fit_surrogate_from_runs(
    runs: pd.DataFrame, config: SurrogateConfig | None = None, gpu_type: str | None = None
) -> SurrogateFit:
    """`fit_surrogate` on a runs table (columns matrix, ops, params, epochs, energy_j, arch_hash, gpu_type).

    Runs are split by ``arch_hash``. With several GPU types in ``runs`` name one with ``gpu_type``.
    """
    df = runs
    if "gpu_type" in df.columns:
        if gpu_type is not None:
            df = df[df["gpu_type"] == gpu_type]
        elif df["gpu_type"].nunique() > 1:
            raise ValueError(
                f"runs span GPU types {sorted(df['gpu_type'].unique())}; energy depends on the GPU, "
                "so fit one surrogate per type: pass gpu_type=..."
            )
    df = df[np.isfinite(df["energy_j"].to_numpy(dtype=np.float64))]
    if df.empty:
        raise ValueError(f"no runs with a finite energy_j{f' on {gpu_type}' if gpu_type else ''}")
    fit = fit_surrogate(
        list(df["matrix"]),
        list(df["ops"]),
        df["params"].to_numpy(dtype=np.float64),
        df["epochs"].to_numpy(dtype=np.float64),
        df["energy_j"].to_numpy(dtype=np.float64) / J_PER_WH,
        config,
        groups=df["arch_hash"].astype(str).to_numpy() if "arch_hash" in df.columns else None,
    )
    if gpu_type is not None or "gpu_type" in df.columns:
        fit.model.metadata["gpu_type"] = gpu_type or str(df["gpu_type"].iloc[0])
    return fit


def predict(
    model: SurrogateModel,
    matrices: Sequence[Any],
    ops: Sequence[Sequence[str]],
    params: Sequence[float] | np.ndarray,
    epochs: float | Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Predicted training energy in Wh of each cell at its epoch budget (a scalar applies to all)."""
    x = encode_architectures(matrices, ops, params)
    return _predict_features(model, x, _as_epochs(epochs, x.shape[0]))


def learning_curve(
    matrices: Sequence[Any],
    ops: Sequence[Sequence[str]],
    params: Sequence[float] | np.ndarray,
    epochs: float | Sequence[float] | np.ndarray,
    energy_wh: Sequence[float] | np.ndarray,
    train_sizes: Sequence[int],
    n_inits: int = 10,
    config: SurrogateConfig | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Test MAE (Wh) against training-set size, mean and std over ``n_inits`` initialisations.

    The split is fixed by ``config.seed``; the training subsets are nested (the first m samples of
    the shuffled training split) and only the network's initialisation and batch order change
    between repetitions. Sizes larger than the training split are clipped to it.
    Columns: train_size, n_inits, mae_mean_wh, mae_std_wh (sample std, ddof=1).
    """
    config = config or SurrogateConfig()
    x = encode_architectures(matrices, ops, params)
    n = x.shape[0]
    ep = _as_epochs(epochs, n)
    y = np.asarray(energy_wh, dtype=np.float64)
    train_idx, val_idx, test_idx = split_indices(n, config.split, config.seed, groups)
    shuffled = np.random.default_rng(config.seed + 1).permutation(train_idx)
    rows = []
    with _torch_threads(config.num_threads):
        for size in sorted({min(int(s), len(shuffled)) for s in train_sizes}):
            if size < 1:
                continue
            seeds = [config.seed + 1000 + i for i in range(n_inits)]
            maes = []
            for model, _, _ in _train_nets(x, ep, y, shuffled[:size], val_idx, config, seeds):
                pred = _predict_features(model, x[test_idx], ep[test_idx])
                maes.append(float(np.mean(np.abs(pred - y[test_idx]))))
            rows.append(
                {
                    "train_size": size,
                    "n_inits": n_inits,
                    "mae_mean_wh": float(np.mean(maes)),
                    "mae_std_wh": float(np.std(maes, ddof=1)) if n_inits > 1 else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=["train_size", "n_inits", "mae_mean_wh", "mae_std_wh"])


# --------------------------------------------------------------------------------------------
# Persistence


def save_model(model: SurrogateModel, path: str | Path) -> Path:
    """Write the model (weights, feature scaling, metadata) to ``path``; returns the path."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "state_dict": model.net.state_dict(),
        "hidden": list(model.hidden),
        "n_features": int(model.feature_mean.shape[0]),
        "feature_mean": [float(v) for v in model.feature_mean],
        "feature_std": [float(v) for v in model.feature_std],
        "target_mean_wh_per_epoch": model.target_mean_wh_per_epoch,
        "target_std_wh_per_epoch": model.target_std_wh_per_epoch,
        "op_codes": dict(OP_CODES),
        "metadata": model.metadata,
    }
    torch.save(payload, path)
    return path


def load_model(path: str | Path) -> SurrogateModel:
    """Read a model written by `save_model`; refuses files of another format or op-code mapping."""
    import torch

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a surrogate model file of format {FORMAT!r}")
    if payload["op_codes"] != OP_CODES:
        raise ValueError(
            f"{path} was trained with op codes {payload['op_codes']}, this code uses {OP_CODES}; retrain it"
        )
    net = build_mlp(payload["n_features"], payload["hidden"])
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return SurrogateModel(
        net=net,
        feature_mean=np.asarray(payload["feature_mean"], dtype=np.float64),
        feature_std=np.asarray(payload["feature_std"], dtype=np.float64),
        target_mean_wh_per_epoch=float(payload["target_mean_wh_per_epoch"]),
        target_std_wh_per_epoch=float(payload["target_std_wh_per_epoch"]),
        hidden=tuple(payload["hidden"]),
        metadata=dict(payload["metadata"]),
    )


# --------------------------------------------------------------------------------------------
# Figures


def plot_predicted_vs_measured(
    measured_wh: Sequence[float] | np.ndarray,
    predicted_wh: Sequence[float] | np.ndarray,
    path: str | Path,
    title: str = "Energy surrogate: test split",
) -> Path:
    """Scatter of predicted against measured energy (Wh) with the identity line and the metrics; PNG."""
    from analysis.figures import surrogate_scatter

    m = evaluate(np.asarray(measured_wh, dtype=np.float64), np.asarray(predicted_wh, dtype=np.float64))
    text = f"Pearson r = {m.pearson:.4f}\nKendall $\\tau$ = {m.kendall_tau:.4f}\nMAE = {m.mae_wh:.3g} Wh"
    return surrogate_scatter(np.asarray(measured_wh), np.asarray(predicted_wh), None, path, text, title)


def plot_learning_curve(
    curve: pd.DataFrame, path: str | Path, title: str = "Energy surrogate: learning curve"
) -> Path:
    """Test MAE (Wh) against training-set size with std error bars, from `learning_curve`; PNG."""
    from analysis.figures import learning_curve_figure

    return learning_curve_figure(curve, path, title, size_unit="architectures")


# --------------------------------------------------------------------------------------------
# Synthetic benchmark
#
# Plain Python lists and random.Random: thousands of 7-vertex graphs are built one scalar draw at a
# time, where numpy's per-call overhead would dominate.

#: Per-epoch energy (Wh) of one vertex of each op in the synthetic benchmark.
SYNTHETIC_OP_WH: dict[str, float] = {CONV3X3: 4.0, CONV1X1: 1.5, MAXPOOL3X3: 0.8}
#: Vertex counts of synthetic cells and their probabilities; most NAS-Bench-101 cells have 7.
SYNTHETIC_VERTEX_P: dict[int, float] = {3: 0.01, 4: 0.02, 5: 0.05, 6: 0.15, 7: 0.77}
_SYNTHETIC_CHANNELS = 128
Matrix = list[list[int]]


def prune_cell(
    matrix: Sequence[Sequence[int]] | np.ndarray, ops: Sequence[str]
) -> tuple[Matrix, list[str]] | None:
    """Drop vertices not on an input-to-output path (NAS-Bench-101's pruning, ``jobs.cell.CellSpec``),
    as plain lists; None if the output is unreachable or the cell breaks another of its rules."""
    try:
        spec = CellSpec.create(matrix, ops)
    except CellSpecError:
        return None
    return [list(row) for row in spec.matrix], list(spec.ops)


def synthetic_params(matrix: Sequence[Sequence[int]], ops: Sequence[str]) -> int:
    """A stand-in parameter count with NAS-Bench-101's shape (3 stacks x 3 cells, channels doubling)."""
    c2 = _SYNTHETIC_CHANNELS**2
    per_cell = 0
    for v, op in enumerate(ops):
        if op == CONV3X3:
            per_cell += 9 * c2
        elif op == CONV1X1:
            per_cell += c2
        if 0 < v < len(ops) - 1 and matrix[0][v]:
            per_cell += c2  # 1x1 projection from the cell input
    return int(per_cell * 3 * (1 + 4 + 16) + 3 * 3 * _SYNTHETIC_CHANNELS + 10 * 4 * _SYNTHETIC_CHANNELS)


def synthetic_energy_wh_per_epoch(
    matrix: Sequence[Sequence[int]], ops: Sequence[str], params: float
) -> float:
    """The benchmark's true per-epoch energy (Wh).

    5 Wh base + 0.25 Wh per vertex on the longest input-output path + 0.05 Wh per million
    parameters + for each interior vertex its op's cost (``SYNTHETIC_OP_WH``) raised by 15 % per
    extra incoming edge.
    """
    n = len(ops)
    depth = [0] * n
    for j in range(1, n):
        preds = [depth[i] for i in range(j) if matrix[i][j]]
        depth[j] = max(preds) + 1 if preds else 0
    energy = 5.0 + 0.25 * depth[-1] + 0.05 * params / 1e6
    for v in range(1, n - 1):
        fan_in = sum(matrix[i][v] for i in range(v))
        energy += SYNTHETIC_OP_WH[ops[v]] * (1.0 + 0.15 * (fan_in - 1))
    return float(energy)


def random_cell(rng: random.Random, extra_edge_p: float = 0.2) -> tuple[Matrix, list[str]]:
    """A random valid NAS-Bench-101 cell: every vertex on an input-to-output path, at most 9 edges.

    The vertex count is drawn from ``SYNTHETIC_VERTEX_P``; each vertex gets one random earlier
    parent, each interior vertex without a child one random later child (so nothing needs
    pruning), then every other forward edge is added with probability ``extra_edge_p``; a graph
    with more than ``jobs.cell.MAX_EDGES`` (9) edges is rejected and drawn again.
    """
    ops_choice = [CONV1X1, CONV3X3, MAXPOOL3X3]
    counts = list(SYNTHETIC_VERTEX_P)
    weights = list(SYNTHETIC_VERTEX_P.values())
    while True:
        n = rng.choices(counts, weights)[0]
        m = [[0] * n for _ in range(n)]
        for v in range(1, n):
            m[rng.randrange(v)][v] = 1
        for v in range(n - 2, 0, -1):
            if not any(m[v][v + 1 :]):
                m[v][rng.randrange(v + 1, n)] = 1
        for i in range(n):
            for j in range(i + 1, n):
                if rng.random() < extra_edge_p:
                    m[i][j] = 1
        if sum(map(sum, m)) <= MAX_EDGES:
            return m, [INPUT] + [rng.choice(ops_choice) for _ in range(n - 2)] + [OUTPUT]


def synthetic_dataset(
    n: int, seed: int = 0, budgets: Sequence[int] = (4,), noise: float = 0.01
) -> pd.DataFrame:
    """``n`` distinct random cells whose energy is a known function of the cell times lognormal noise.

    Energy in Wh = budget x `synthetic_energy_wh_per_epoch` x exp(N(0, noise)); with the default
    1 % noise the best possible Pearson r between measured and true energy is about 0.999.
    Columns follow the runs contract: arch_hash, matrix, ops, params, epochs, energy_wh, energy_j,
    plus true_energy_wh (noise-free). Each cell gets a budget drawn from ``budgets``.
    """
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        m, ops = random_cell(rng)
        key = hashlib.sha256((str(m) + "|" + ",".join(ops)).encode()).hexdigest()[:16]
        if key in seen:
            continue
        seen.add(key)
        params = synthetic_params(m, ops)
        epochs = int(rng.choice(list(budgets)))
        true_wh = epochs * synthetic_energy_wh_per_epoch(m, ops, params)
        measured = true_wh * math.exp(rng.gauss(0.0, noise))
        rows.append(
            {
                "arch_hash": key,
                "matrix": m,
                "ops": ops,
                "params": params,
                "epochs": epochs,
                "true_energy_wh": true_wh,
                "energy_wh": measured,
                "energy_j": measured * J_PER_WH,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# The project's energy model: an ensemble on extended features, with a fitted budget model
#
# EC-NAS's surrogate (`fit_surrogate` above) stays as the paper describes it, for the report and
# for comparisons. `fit_energy_model` is the model the tabular benchmark predicts with. It differs
# in four ways, each measured on EC-NAS's development data (``python -m benchmarks.surrogate``):
#
# - features: EC-NAS's 36 plus the counts of each interior op, the vertex and edge counts and the
#   forward GFLOPs per image (``EXTENDED_FEATURES``); FLOPs carry the spatial size of every stack,
#   which the parameter count does not;
# - an ensemble of ``members`` networks trained side by side (each its own initialisation and batch
#   order), predicting their mean with their standard deviation as the spread; larger batches and
#   fewer epochs keep the whole ensemble's fit time at or below one EC-NAS network's;
# - the caller gives the validation set (indices or a fraction); nothing is held back as a hidden
#   test split, and the split seed and the initialisation seed are separate;
# - the budget: energy = f(cell) x (epochs + alpha), ``alpha`` fitted on cells measured at several
#   budgets (`fit_budget_offset`). EC-NAS's 4-vertex measurements (every budget its own run) give
#   alpha = 0.69 epochs: 108 epochs cost 23.3x 4 epochs, not 27x, a fixed cost of about two thirds
#   of an epoch per run; a power law fits them worse. Without such cells alpha = 0 (linear).

#: Features after EC-NAS's 36 in the ``extended`` feature set.
EXTENDED_FEATURES = ("n_conv3x3", "n_conv1x1", "n_maxpool3x3", "n_vertices", "n_edges", "flops_g")
FEATURE_SETS: dict[str, str] = {
    "ecnas36": "upper triangle of the padded 7x7 adjacency (28, diagonal included), 7 op codes "
    f"{OP_CODES}, parameters in millions",
    "extended": "ecnas36 + counts of conv3x3, conv1x1 and maxpool3x3 vertices, vertices, edges, "
    "forward GFLOPs per image",
}
ENERGY_MODEL_FORMAT = "campaign.energy_model/1"


def pad_cells(matrices: Sequence[Any], ops: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Cells as arrays: (n, 7, 7) padded adjacency (int8) and (n, 7) op codes (`OP_CODES`, int8)."""
    n = len(matrices)
    adj = np.zeros((n, N_VERTICES, N_VERTICES), dtype=np.int8)
    codes = np.zeros((n, N_VERTICES), dtype=np.int8)
    for i, (m, o) in enumerate(zip(matrices, ops, strict=True)):
        padded, padded_ops = pad_cell(m, o)
        unknown = [op for op in padded_ops if op not in OP_CODES]
        if unknown:
            raise ValueError(f"unknown op(s) {unknown}; known ops are {sorted(OP_CODES)}")
        adj[i] = padded
        codes[i] = [OP_CODES[op] for op in padded_ops]
    return adj, codes


def encode_padded(
    adjacency: np.ndarray,
    codes: np.ndarray,
    params: Sequence[float] | np.ndarray,
    flops: Sequence[float] | np.ndarray | None = None,
    features: str = "ecnas36",
) -> np.ndarray:
    """Features of padded cells (`pad_cells`), vectorised: ``ecnas36`` (as `encode_architectures`)
    or ``extended`` (needs ``flops``, forward FLOPs per image)."""
    if features not in FEATURE_SETS:
        raise ValueError(f"feature set {features!r} is not one of {', '.join(FEATURE_SETS)}")
    adj = np.asarray(adjacency)
    c = np.asarray(codes)
    rows, cols = np.triu_indices(N_VERTICES)
    parts = [adj[:, rows, cols].astype(np.float64), c.astype(np.float64),
             np.asarray(params, dtype=np.float64).reshape(-1, 1) / 1e6]
    if features == "extended":
        if flops is None:
            raise ValueError("the extended feature set needs the cells' FLOPs")
        counts = [(c == OP_CODES[op]).sum(axis=1) for op in (CONV3X3, CONV1X1, MAXPOOL3X3)]
        n_vertices = (c != OP_CODES[PAD_OP]).sum(axis=1)
        n_edges = adj.reshape(len(adj), -1).sum(axis=1)
        parts.append(np.column_stack([*counts, n_vertices, n_edges,
                                      np.asarray(flops, dtype=np.float64) / 1e9]))
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class EnsembleConfig:
    """The project's energy model (`fit_energy_model`): ensemble size and training recipe."""

    members: int = 4
    hidden: tuple[int, ...] = (128, 64, 32, 32)
    learning_rate: float = 1e-2
    batch_size: int = 128
    epochs: int = 50
    features: str = "extended"
    num_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.members < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"members, epochs and batch_size must be >= 1, got {self}")
        if self.features not in FEATURE_SETS:
            raise ValueError(f"features {self.features!r} is not one of {', '.join(FEATURE_SETS)}")


@dataclass
class EnergyModel:
    """An ensemble energy model: energy in Wh = f(cell) x (epochs + budget_offset), f the members' mean."""

    members: list[SurrogateModel]
    features: str
    budget_offset: float
    metadata: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = math.nan
    val_mae_wh: float = math.nan

    def predict_features(self, x: np.ndarray, epochs: float | Sequence[float] | np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread (standard deviation over the members) of the energy in Wh."""
        ep = _as_epochs(epochs, x.shape[0]) + self.budget_offset
        preds = np.stack([_predict_features(m, x, ep) for m in self.members])
        spread = preds.std(axis=0, ddof=1) if len(self.members) > 1 else np.zeros(x.shape[0])
        return preds.mean(axis=0), spread

    def predict(self, matrices: Sequence[Any], ops: Sequence[Sequence[str]], params: Sequence[float] | np.ndarray,
                epochs: float | Sequence[float] | np.ndarray, flops: Sequence[float] | np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of the energy in Wh of each cell at its budget (a scalar applies to all)."""
        adj, codes = pad_cells(matrices, ops)
        return self.predict_features(encode_padded(adj, codes, params, flops, self.features), epochs)


def budget_ratio(epochs: float | np.ndarray, reference: float, offset: float) -> np.ndarray:
    """Energy at ``epochs`` over energy at ``reference`` under the affine budget model."""
    return (np.asarray(epochs, dtype=np.float64) + offset) / (reference + offset)


def fit_budget_offset(groups: Sequence[Any] | np.ndarray, epochs: Sequence[float] | np.ndarray,
                      energy_wh: Sequence[float] | np.ndarray, max_offset: float = 50.0) -> tuple[float, dict[str, Any]]:
    """``alpha`` of energy = f(cell) x (epochs + alpha), by least squares on log energy over the cells
    measured at two or more budgets (f per cell profiled out); 0 (linear) without such cells.

    Returns alpha and a description: cells used, the sum of squares of alpha, of the linear model
    (alpha = 0) and of a power law (energy = f x epochs^b).
    """
    from scipy.optimize import minimize_scalar

    df = pd.DataFrame({"g": np.asarray(groups), "e": np.asarray(epochs, dtype=np.float64),
                       "y": np.asarray(energy_wh, dtype=np.float64)})
    df = df[np.isfinite(df["y"]) & (df["y"] > 0)]
    means = df.groupby(["g", "e"], sort=True)["y"].mean().reset_index()
    multi = means.groupby("g")["e"].transform("nunique") > 1
    means = means[multi]
    info: dict[str, Any] = {"model": "energy = f(cell) x (epochs + alpha)", "n_cells": int(means["g"].nunique()),
                            "budgets": sorted(float(b) for b in means["e"].unique())}
    if means.empty:
        info["alpha_source"] = "no cell measured at two budgets: linear in the budget (alpha = 0), an assumption"
        return 0.0, info
    logy, e, g = np.log(means["y"].to_numpy()), means["e"].to_numpy(), means["g"].to_numpy()
    codes = pd.factorize(g)[0]
    counts = np.bincount(codes)

    def sse(pred: np.ndarray) -> float:
        r = logy - pred
        r = r - (np.bincount(codes, weights=r) / counts)[codes]  # f per cell profiled out
        return float(r @ r)

    res = minimize_scalar(lambda a: sse(np.log(e + a)), bounds=(0.0, max_offset), method="bounded")
    power = minimize_scalar(lambda b: sse(b * np.log(e)), bounds=(0.1, 2.0), method="bounded")
    alpha = float(res.x)
    info.update({"alpha": alpha, "sse_affine": float(res.fun), "sse_linear": sse(np.log(e)),
                 "power_law_exponent": float(power.x), "sse_power_law": float(power.fun),
                 "alpha_source": "fitted on cells measured at several budgets"})
    return alpha, info


def fit_energy_model(
    matrices: Sequence[Any],
    ops: Sequence[Sequence[str]],
    params: Sequence[float] | np.ndarray,
    epochs: float | Sequence[float] | np.ndarray,
    energy_wh: Sequence[float] | np.ndarray,
    *,
    flops: Sequence[float] | np.ndarray | None = None,
    validation: float | Sequence[int] | np.ndarray = 0.1,
    split_seed: int = 0,
    init_seed: int = 0,
    groups: Sequence[Any] | np.ndarray | None = None,
    config: EnsembleConfig | None = None,
    budget_offset: float | None = None,
    network: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> EnergyModel:
    """Fit the project's energy model on every given run; no test split is carved out.

    ``validation``: a fraction of the cells (by ``groups``, e.g. arch_hash, so a cell's runs stay
    together; drawn with ``split_seed``) or the row indices of the validation set; it picks each
    member's best epoch. ``init_seed`` seeds the members' initialisations and batch orders.
    ``budget_offset`` None fits alpha (`fit_budget_offset`). ``network`` (the network
    configuration that ``params`` and ``flops`` assume) and ``data`` (what was fitted on) are
    recorded in the metadata, with the feature definition and the budgets.
    """
    config = config or EnsembleConfig()
    adj, codes = pad_cells(matrices, ops)
    x = encode_padded(adj, codes, params, flops, config.features)
    n = x.shape[0]
    ep = _as_epochs(epochs, n)
    y = np.asarray(energy_wh, dtype=np.float64)
    if y.shape != (n,) or np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError(f"energy_wh must be {n} positive finite values")
    g = np.asarray(groups) if groups is not None else np.arange(n)
    if np.ndim(validation) == 0:
        frac = float(validation)  # type: ignore[arg-type]
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"validation fraction {frac} must be in [0, 1)")
        train_idx, val_idx, _ = split_indices(n, (1.0 - frac, frac, 0.0), split_seed, g)
    else:
        val_idx = np.unique(np.asarray(validation, dtype=np.int64))
        if len(val_idx) and (val_idx.min() < 0 or val_idx.max() >= n):
            raise ValueError(f"validation indices must lie in [0, {n})")
        train_idx = np.setdiff1d(np.arange(n), val_idx)
    if budget_offset is None:
        alpha, budget_info = fit_budget_offset(g, ep, y)
    else:
        alpha, budget_info = float(budget_offset), {"model": "energy = f(cell) x (epochs + alpha)", "alpha": float(budget_offset),
                                                     "alpha_source": "given"}
    sc = SurrogateConfig(hidden=config.hidden, learning_rate=config.learning_rate, batch_size=config.batch_size,
                         epochs=config.epochs, seed=init_seed, num_threads=config.num_threads)
    seeds = [init_seed * 1000 + k for k in range(config.members)]
    with _torch_threads(config.num_threads):
        t0 = time.perf_counter()
        fitted = _train_nets(x, ep + alpha, y, train_idx, val_idx, sc, seeds)
        fit_seconds = time.perf_counter() - t0
    model = EnergyModel(members=[m for m, _, _ in fitted], features=config.features, budget_offset=alpha,
                        fit_seconds=fit_seconds)
    if len(val_idx):
        model.val_mae_wh = float(np.mean(np.abs(model.predict_features(x[val_idx], ep[val_idx])[0] - y[val_idx])))
    model.metadata = {
        "format": ENERGY_MODEL_FORMAT,
        "features": config.features,
        "feature_definition": FEATURE_SETS[config.features],
        "op_codes": dict(OP_CODES),
        "network": dict(network or {}),
        "budget_model": budget_info,
        "budgets_fitted": sorted({float(b) for b in ep}),
        "config": {"members": config.members, "hidden": list(config.hidden), "learning_rate": config.learning_rate,
                   "batch_size": config.batch_size, "epochs": config.epochs},
        "split_seed": split_seed,
        "init_seed": init_seed,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "best_epochs": [b for _, b, _ in fitted],
        "val_mae_wh": model.val_mae_wh,
        "data": dict(data or {}),
        "energy_unit": "Wh",
    }
    return model


def save_energy_model(model: EnergyModel, path: str | Path) -> Path:
    """Write an `EnergyModel` (every member's weights and scaling, the budget offset, the metadata)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = [{"state_dict": m.net.state_dict(), "hidden": list(m.hidden),
                "feature_mean": [float(v) for v in m.feature_mean], "feature_std": [float(v) for v in m.feature_std],
                "target_mean": m.target_mean_wh_per_epoch, "target_std": m.target_std_wh_per_epoch}
               for m in model.members]
    torch.save({"format": ENERGY_MODEL_FORMAT, "features": model.features, "budget_offset": model.budget_offset,
                "op_codes": dict(OP_CODES), "members": members, "metadata": model.metadata}, path)
    return path


def load_energy_model(path: str | Path) -> EnergyModel:
    """Read a model written by `save_energy_model`."""
    import torch

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != ENERGY_MODEL_FORMAT:
        raise ValueError(f"{path} is not an energy model file of format {ENERGY_MODEL_FORMAT!r}")
    if payload["op_codes"] != OP_CODES:
        raise ValueError(f"{path} was trained with op codes {payload['op_codes']}, this code uses {OP_CODES}")
    members = []
    for m in payload["members"]:
        net = build_mlp(len(m["feature_mean"]), m["hidden"])
        net.load_state_dict(m["state_dict"])
        net.eval()
        members.append(SurrogateModel(net=net, feature_mean=np.asarray(m["feature_mean"]),
                                      feature_std=np.asarray(m["feature_std"]), target_mean_wh_per_epoch=m["target_mean"],
                                      target_std_wh_per_epoch=m["target_std"], hidden=tuple(m["hidden"])))
    return EnergyModel(members=members, features=payload["features"], budget_offset=float(payload["budget_offset"]),
                       metadata=dict(payload["metadata"]))
