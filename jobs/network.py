"""The NAS-Bench-101 network for a cell spec, and its parameter and FLOP counts.

Follows google-research/nasbench ``nasbench/lib/model_builder.py`` and ``base_ops.py``:

- stem: 3x3 conv (no bias) + batch norm + ReLU to ``stem_channels`` (128);
- ``num_stacks`` (3) stacks of ``cells_per_stack`` (3) cells; before every stack but the first, a
  2x2 max-pool with stride 2 ("same" padding) and a doubling of the channel count;
- inside a cell (``build_module``): the output channels are split among the vertices that feed the
  output vertex (the first ``C mod k`` of them get one extra channel), every other interior vertex
  takes the max of its successors' channels; an edge from the input is a 1x1 conv-bn-relu
  projection to the destination's channels, an edge between interior vertices truncates to the
  first channels when the counts differ by one; inputs to an interior vertex are summed, inputs to
  the output vertex are concatenated, and an input->output edge adds a projection of the input;
- global average pool and a dense layer (with bias) to ``num_classes``.

Convolutions have no bias; batch norm has a trainable scale and shift. Initialisation follows the
TF1 defaults NAS-Bench-101 relied on: convolution kernels from ``tf.variance_scaling_initializer()``
(truncated normal, fan-in, scale 1), the dense kernel Glorot-uniform, biases and BN shifts zero, BN
scales one.

The counting functions (:func:`count_params`, :func:`count_flops`, :func:`compute_vertex_channels`)
are plain Python and never import torch, so the planner can call them for thousands of specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from jobs.cell import OPS, CellSpec

if TYPE_CHECKING:
    import torch

# Kernel size of each op; 0 means no weights (max-pool keeps its input's channels).
_KERNEL = {"conv3x3-bn-relu": 3, "conv1x1-bn-relu": 1, "maxpool3x3": 0}
assert set(_KERNEL) == set(OPS)

# Standard deviation of a standard normal truncated to [-2, 2]; TF's variance scaling divides by it
# so that the truncated distribution has the requested variance.
_TRUNC_STD = 0.87962566103423978


@dataclass
class NetworkConfig:
    """The network skeleton. Defaults are NAS-Bench-101's (``nasbench/lib/config.py`` flags
    ``stem_filter_size``, ``num_stacks``, ``num_modules_per_stack``, ``num_labels``;
    ``nasbench/lib/base_ops.py`` ``BN_MOMENTUM`` and ``BN_EPSILON``)."""

    stem_channels: int = 128
    num_stacks: int = 3
    cells_per_stack: int = 3
    num_classes: int = 10
    bn_momentum: float = 0.997  # TF convention: moving = m * moving + (1 - m) * batch
    bn_eps: float = 1e-5
    image_size: int = 32
    in_channels: int = 3

    def __post_init__(self) -> None:
        for name in ("stem_channels", "num_stacks", "cells_per_stack", "num_classes", "image_size", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"network.{name} = {value!r} must be a positive integer")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"network.bn_momentum = {self.bn_momentum!r} must be in [0, 1) (TF convention)")
        if self.bn_eps <= 0:
            raise ValueError(f"network.bn_eps = {self.bn_eps!r} must be > 0")


def compute_vertex_channels(in_channels: int, out_channels: int, matrix: tuple[tuple[int, ...], ...]) -> list[int]:
    """Channels at every vertex of a pruned cell (NAS-Bench-101's ``compute_vertex_channels``)."""
    n = len(matrix)
    channels = [0] * n
    channels[0] = in_channels
    channels[n - 1] = out_channels
    if n == 2:
        return channels
    fan_in = sum(matrix[v][n - 1] for v in range(1, n - 1))  # the input->output edge is not counted
    base, extra = divmod(out_channels, fan_in)
    for v in range(1, n - 1):
        if matrix[v][n - 1]:
            channels[v] = base + (1 if extra > 0 else 0)
            extra -= 1
    for v in range(n - 3, 0, -1):
        if not matrix[v][n - 1]:
            for dst in range(v + 1, n - 1):
                if matrix[v][dst]:
                    channels[v] = max(channels[v], channels[dst])
    if any(c <= 0 for c in channels[1:-1]):
        # Happens only when out_channels < fan_in; NAS-Bench-101 asserts on it too.
        raise ValueError(f"{out_channels} output channels cannot be split among {fan_in} vertices")
    return channels


def _stack_plan(cfg: NetworkConfig) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, spatial size) of every cell, in order."""
    plan = []
    channels = cfg.stem_channels
    in_channels = cfg.stem_channels
    size = cfg.image_size
    for stack in range(cfg.num_stacks):
        if stack > 0:
            channels *= 2
            size = (size + 1) // 2  # 2x2/2 max-pool with "same" padding
        for _ in range(cfg.cells_per_stack):
            plan.append((in_channels, channels, size))
            in_channels = channels
    return plan


def _cell_counts(spec: CellSpec, in_channels: int, out_channels: int) -> tuple[int, int]:
    """(parameters, multiply-accumulates per output pixel) of one cell."""
    m = spec.matrix
    n = len(m)
    vc = compute_vertex_channels(in_channels, out_channels, m)
    params = 0
    macs = 0
    for t in range(1, n - 1):
        if m[0][t]:  # 1x1 projection of the input + BN
            params += in_channels * vc[t] + 2 * vc[t]
            macs += in_channels * vc[t]
        k = _KERNEL[spec.ops[t]]
        if k:
            params += k * k * vc[t] * vc[t] + 2 * vc[t]
            macs += k * k * vc[t] * vc[t]
    if n == 2 or m[0][n - 1]:
        params += in_channels * out_channels + 2 * out_channels
        macs += in_channels * out_channels
    return params, macs


def count_params(spec: CellSpec, cfg: NetworkConfig) -> int:
    """Trainable parameters of ``build_network(spec, cfg)``, computed without torch.

    Counts conv kernels, batch-norm scales and shifts, and the dense kernel and bias: exactly
    NAS-Bench-101's ``trainable_parameters`` (BN moving averages are not trainable).
    """
    params = 9 * cfg.in_channels * cfg.stem_channels + 2 * cfg.stem_channels
    final_channels = cfg.stem_channels
    for in_channels, out_channels, _ in _stack_plan(cfg):
        params += _cell_counts(spec, in_channels, out_channels)[0]
        final_channels = out_channels
    return params + final_channels * cfg.num_classes + cfg.num_classes


def count_flops(spec: CellSpec, cfg: NetworkConfig) -> int:
    """Forward FLOPs for one image, computed without torch.

    Convention: 2 FLOPs per multiply-accumulate of every convolution (stem, projections, cell
    convs) and of the dense layer. Batch norm (foldable into the convolutions at inference), ReLU,
    max-pooling, the additions and concatenations inside cells and the global average pool are not
    counted. Backward is not included (it is roughly twice the forward).
    """
    size = cfg.image_size
    macs = 9 * cfg.in_channels * cfg.stem_channels * size * size
    final_channels = cfg.stem_channels
    for in_channels, out_channels, cell_size in _stack_plan(cfg):
        macs += _cell_counts(spec, in_channels, out_channels)[1] * cell_size * cell_size
        final_channels = out_channels
    macs += final_channels * cfg.num_classes
    return 2 * macs


@dataclass(frozen=True)
class CostTable:
    """A cell graph's parameter and FLOP counts under one network, split so that a labelling's
    counts are sums: ``base + sum(per_op[v - 1][op index of vertex v])`` over the interior
    vertices (``count_params_flops`` and ``jobs.space.CellSpace.costs`` use it; exact integers)."""

    base_params: int
    base_flops: int
    op_params: tuple[tuple[int, ...], ...]  # per interior vertex, per op of jobs.cell.OPS
    op_flops: tuple[tuple[int, ...], ...]


def cost_table(matrix: tuple[tuple[int, ...], ...], cfg: NetworkConfig) -> CostTable:
    """The :class:`CostTable` of a pruned cell graph (memoised per graph and network)."""
    return _cost_table(matrix, _network_key(cfg))


def _network_key(cfg: NetworkConfig) -> tuple[int, ...]:
    return (cfg.stem_channels, cfg.num_stacks, cfg.cells_per_stack, cfg.num_classes, cfg.image_size, cfg.in_channels)


@cache
def _cost_table(matrix: tuple[tuple[int, ...], ...], key: tuple[int, ...]) -> CostTable:
    stem, stacks, per_stack, classes, image, in_ch = key
    cfg = NetworkConfig(stem_channels=stem, num_stacks=stacks, cells_per_stack=per_stack, num_classes=classes,
                        image_size=image, in_channels=in_ch)
    n = len(matrix)
    params = 9 * in_ch * stem + 2 * stem
    macs = 9 * in_ch * stem * image * image
    op_params = [[0] * len(OPS) for _ in range(n - 2)]
    op_macs = [[0] * len(OPS) for _ in range(n - 2)]
    final_channels = stem
    for in_channels, out_channels, size in _stack_plan(cfg):
        vc = compute_vertex_channels(in_channels, out_channels, matrix)
        area = size * size
        for t in range(1, n - 1):
            if matrix[0][t]:
                params += in_channels * vc[t] + 2 * vc[t]
                macs += in_channels * vc[t] * area
            for o, op in enumerate(OPS):
                k = _KERNEL[op]
                if k:
                    op_params[t - 1][o] += k * k * vc[t] * vc[t] + 2 * vc[t]
                    op_macs[t - 1][o] += k * k * vc[t] * vc[t] * area
        if n == 2 or matrix[0][n - 1]:
            params += in_channels * out_channels + 2 * out_channels
            macs += in_channels * out_channels * area
        final_channels = out_channels
    params += final_channels * classes + classes
    macs += final_channels * classes
    return CostTable(params, 2 * macs, tuple(map(tuple, op_params)), tuple(tuple(2 * m for m in row) for row in op_macs))


def count_params_flops(spec: CellSpec, cfg: NetworkConfig) -> tuple[int, int]:
    """``(count_params(spec, cfg), count_flops(spec, cfg))``, fast for many cells that share
    graphs (the per-graph part is memoised); exactly the same integers."""
    table = cost_table(spec.matrix, cfg)
    params, flops = table.base_params, table.base_flops
    for t, op in enumerate(spec.ops[1:-1]):
        o = OPS.index(op)
        params += table.op_params[t][o]
        flops += table.op_flops[t][o]
    return params, flops


def build_network(spec: CellSpec, cfg: NetworkConfig) -> torch.nn.Module:
    """The NAS-Bench-101 network for ``spec`` (a ``torch.nn.Module`` taking float NCHW images).

    Its trainable parameter count equals ``count_params(spec, cfg)``. Initialisation draws from
    torch's global RNG: seed it (``torch.manual_seed``) before calling for a reproducible network.
    """
    return _classes()["Network"](spec, cfg)


@cache
def _classes() -> dict[str, Any]:
    """The torch modules, defined on first use so that importing this module stays torch-free."""
    import torch
    from torch import nn

    @torch.no_grad()
    def _truncated_normal_(weight: torch.Tensor, std: float) -> None:
        # N(0, std) truncated to two standard deviations by redrawing the outliers (about 4.6 %):
        # the distribution of nn.init.trunc_normal_, several times faster on big kernels.
        flat = weight.view(-1)
        flat.normal_(0.0, std)
        todo = (flat.abs() > 2.0 * std).nonzero().squeeze(1)
        while todo.numel():
            values = torch.empty(todo.numel(), dtype=flat.dtype).normal_(0.0, std)
            ok = values.abs() <= 2.0 * std
            flat[todo[ok]] = values[ok]
            todo = todo[~ok]

    def conv_bn_relu(cin: int, cout: int, kernel: int, cfg: NetworkConfig) -> nn.Sequential:
        conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        _truncated_normal_(conv.weight, (1.0 / (cin * kernel * kernel)) ** 0.5 / _TRUNC_STD)
        # PyTorch's momentum is the weight of the new batch statistic: 1 - TF's decay.
        bn = nn.BatchNorm2d(cout, eps=cfg.bn_eps, momentum=1.0 - cfg.bn_momentum)
        return nn.Sequential(conv, bn, nn.ReLU(inplace=True))

    class Cell(nn.Module):
        """One NAS-Bench-101 module ("cell") with fixed input and output channel counts."""

        def __init__(self, spec: CellSpec, in_channels: int, out_channels: int, cfg: NetworkConfig) -> None:
            super().__init__()
            m = spec.matrix
            n = len(m)
            self.n = n
            self.vc = compute_vertex_channels(in_channels, out_channels, m)
            # Interior predecessors of each vertex, and the vertices feeding the output (concat order).
            self.preds = [[s for s in range(1, t) if m[s][t]] for t in range(n)]
            self.concat = [t for t in range(1, n - 1) if m[t][n - 1]]
            # All 1x1 projections of the cell input (to interior vertices and to the output) run as
            # one convolution: separate projections are the same function with their kernels and BN
            # parameters stacked, so the parameter count and the distribution of the initial weights
            # are unchanged and the GEMM is bigger (faster).
            self.proj_targets = [t for t in range(1, n - 1) if m[0][t]]
            proj_out = [self.vc[t] for t in self.proj_targets]
            self.out_proj = n == 2 or bool(m[0][n - 1])
            if self.out_proj:
                proj_out.append(out_channels)
            self.proj_split = proj_out
            self.proj = conv_bn_relu(in_channels, sum(proj_out), 1, cfg) if proj_out else None
            self.ops = nn.ModuleList()
            for t in range(1, n - 1):
                op = spec.ops[t]
                k = _KERNEL[op]
                if k:
                    self.ops.append(conv_bn_relu(self.vc[t], self.vc[t], k, cfg))
                else:
                    self.ops.append(nn.MaxPool2d(3, stride=1, padding=1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            projected: dict[int, torch.Tensor] = {}
            out_projection = None
            if self.proj is not None:
                parts = torch.split(self.proj(x), self.proj_split, dim=1)
                projected = dict(zip(self.proj_targets, parts, strict=False))
                if self.out_proj:
                    out_projection = parts[-1]
            if self.n == 2:
                assert out_projection is not None
                return out_projection
            tensors: list[torch.Tensor] = [x]
            for t in range(1, self.n - 1):
                c = self.vc[t]
                # Interior inputs are truncated to the first c channels (they have c or c + 1).
                inputs = [tensors[s][:, :c] for s in self.preds[t]]
                if t in projected:
                    inputs.append(projected[t])
                v = inputs[0]
                for other in inputs[1:]:
                    v = v + other
                tensors.append(self.ops[t - 1](v))
            outs = [tensors[t] for t in self.concat]
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
            if out_projection is not None:
                out = out + out_projection
            return out

    class Network(nn.Module):
        """Stem, stacks of cells with down-sampling between them, global average pool, dense."""

        def __init__(self, spec: CellSpec, cfg: NetworkConfig) -> None:
            super().__init__()
            self.spec = spec
            layers: list[nn.Module] = [conv_bn_relu(cfg.in_channels, cfg.stem_channels, 3, cfg)]
            channels = cfg.stem_channels
            for stack, (in_channels, out_channels, _) in enumerate(_stack_plan(cfg)):
                if stack % cfg.cells_per_stack == 0 and stack > 0:
                    # ceil_mode reproduces TF's "same" padding for odd sizes (no-op for even ones).
                    layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
                layers.append(Cell(spec, in_channels, out_channels, cfg))
                channels = out_channels
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(channels, cfg.num_classes)
            nn.init.xavier_uniform_(self.classifier.weight)
            nn.init.zeros_(self.classifier.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            return self.classifier(x.mean(dim=(2, 3)))

    return {"Cell": Cell, "Network": Network}
