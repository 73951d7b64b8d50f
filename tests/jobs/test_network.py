"""The NAS-Bench-101 network: parameter counts (published and derived), FLOPs, structure, forward/backward."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.cell import INPUT, OPS, OUTPUT, CellSpec, sample_specs
from jobs.network import NetworkConfig, build_network, compute_vertex_channels, count_flops, count_params
from tests.jobs.test_cell import FIRST_MATRIX, FIRST_OPS, INCEPTION_MATRIX, INCEPTION_OPS

C3, C1, MP = OPS


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Published trainable_parameters of NAS-Bench-101 (full 128-channel, 3x3-cell network):
# - Inception-like README cell: 2,694,282 (the query output in NAS-Bench-101's NASBench.ipynb);
# - the data set's first cell (hash 00005c14...): 8,555,530 (dumps of nasbench_only108.tfrecord;
#   NNI's NAS-Bench-101 example prints 8.55553 M).
@pytest.mark.parametrize(
    ("matrix", "ops", "published"),
    [(INCEPTION_MATRIX, INCEPTION_OPS, 2_694_282), (FIRST_MATRIX, FIRST_OPS, 8_555_530)],
)
def test_param_count_equals_published_nasbench(matrix: list[list[int]], ops: list[str], published: int) -> None:
    spec = CellSpec.create(matrix, ops)
    assert count_params(spec, NetworkConfig()) == published
    torch.manual_seed(0)
    assert _trainable(build_network(spec, NetworkConfig())) == published


def test_param_counts_derived_by_hand() -> None:
    """Small networks: stem 16, one stack of one cell, 10 classes, 3-channel input."""
    cfg = NetworkConfig(stem_channels=16, num_stacks=1, cells_per_stack=1)
    stem = 3 * 3 * 3 * 16 + 2 * 16  # 3x3 conv, no bias, + BN scale and shift = 464
    dense = 16 * 10 + 10  # 170
    projection = 16 * 16 + 2 * 16  # 1x1 conv 16->16 + BN = 288
    # input -> output only: the cell is one projection
    only_skip = CellSpec.create([[0, 1], [0, 0]], [INPUT, OUTPUT])
    assert count_params(only_skip, cfg) == stem + projection + dense == 922
    # input -> conv3x3 -> output: projection to 16 channels, then 3x3 16->16 + BN
    conv = CellSpec.create([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [INPUT, C3, OUTPUT])
    assert count_params(conv, cfg) == stem + projection + (9 * 16 * 16 + 32) + dense == 3258
    # two branches to the output: channels split 8 + 8; projections 16->8 (+BN 16) each,
    # a 1x1 conv 8->8 (+BN) and a max-pool (no weights); plus the input->output projection 16->16
    branches = CellSpec.create(
        [[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [INPUT, C1, MP, OUTPUT]
    )
    cell = 2 * (16 * 8 + 16) + (8 * 8 + 16) + projection
    assert count_params(branches, cfg) == stem + cell + dense == 1290
    for spec in (only_skip, conv, branches):
        assert _trainable(build_network(spec, cfg)) == count_params(spec, cfg)


def test_second_stack_doubles_channels_after_pooling() -> None:
    cfg = NetworkConfig(stem_channels=8, num_stacks=2, cells_per_stack=1)
    spec = CellSpec.create([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [INPUT, C3, OUTPUT])
    stem = 27 * 8 + 16
    cell1 = (8 * 8 + 16) + (9 * 64 + 16)  # 8 -> 8
    cell2 = (8 * 16 + 32) + (9 * 256 + 32)  # 8 -> 16 after the max-pool
    dense = 16 * 10 + 10
    assert count_params(spec, cfg) == stem + cell1 + cell2 + dense


@pytest.mark.parametrize(
    ("in_channels", "out_channels", "matrix", "expected"),
    [
        # no branching
        (8, 8, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [8, 8, 8, 8]),
        (8, 16, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [8, 16, 16, 16]),
        (16, 8, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [16, 8, 8, 8]),
        (1, 5, [[0, 1], [0, 0]], [1, 5]),
        # the output's channels split among its inputs, remainder to the first ones
        (8, 8, [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [8, 4, 4, 8]),
        (8, 15, [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [8, 8, 7, 15]),
        (8, 8, [[0, 1, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0] * 5], [8, 3, 3, 2, 8]),
        # a vertex not feeding the output takes the max of its successors
        (8, 9, [[0, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0] * 5], [8, 5, 5, 4, 9]),
        (8, 15, [[0, 1, 0, 1, 0], [0, 0, 1, 0, 1], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1], [0] * 5], [8, 8, 7, 7, 15]),
    ],
)
def test_vertex_channels(in_channels: int, out_channels: int, matrix: list[list[int]], expected: list[int]) -> None:
    m = tuple(tuple(r) for r in matrix)
    assert compute_vertex_channels(in_channels, out_channels, m) == expected


def test_structure_follows_nasbench() -> None:
    spec = CellSpec.create(INCEPTION_MATRIX, INCEPTION_OPS)
    net = build_network(spec, NetworkConfig())
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d) and m.kernel_size == 2]
    assert convs and all(c.bias is None for c in convs)
    assert convs[0].in_channels == 3 and convs[0].out_channels == 128 and convs[0].kernel_size == (3, 3)
    assert all(b.momentum == pytest.approx(0.003) and b.eps == 1e-5 for b in bns)
    assert len(pools) == 2  # between 3 stacks
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1 and linear[0].in_features == 512 and linear[0].out_features == 10
    out = net.eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 10)


def test_initialisation_is_seeded() -> None:
    spec = CellSpec.create(FIRST_MATRIX, FIRST_OPS)
    cfg = NetworkConfig(stem_channels=8, num_stacks=1, cells_per_stack=1)
    torch.manual_seed(3)
    a = build_network(spec, cfg).state_dict()
    torch.manual_seed(3)
    b = build_network(spec, cfg).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


SMALL = NetworkConfig(stem_channels=8, num_stacks=2, cells_per_stack=1, image_size=8)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000), stem=st.sampled_from([4, 8, 13]), stacks=st.integers(1, 3))
def test_random_specs_count_build_and_train_step(seed: int, stem: int, stacks: int) -> None:
    """Property: for random valid cells, the analytic count equals the module's, and a
    forward/backward pass gives finite gradients for every parameter."""
    spec = sample_specs(1, seed)[0]
    cfg = NetworkConfig(stem_channels=stem, num_stacks=stacks, cells_per_stack=2 if stacks == 1 else 1, image_size=8)
    torch.manual_seed(seed)
    net = build_network(spec, cfg)
    assert _trainable(net) == count_params(spec, cfg)
    x = torch.randn(2, 3, 8, 8)
    logits = net(x)
    assert logits.shape == (2, 10)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_count_params_for_many_specs() -> None:
    for spec in sample_specs(20, seed=11, method="nasbench_random") + sample_specs(20, seed=12):
        for cfg in (SMALL, NetworkConfig(stem_channels=5, num_stacks=3, cells_per_stack=2, num_classes=7)):
            assert _trainable(build_network(spec, cfg)) == count_params(spec, cfg), spec


def _hooked_flops(net: torch.nn.Module, image_size: int) -> int:
    """2 x multiply-accumulates of every Conv2d and Linear, from the shapes seen in a forward pass."""
    total = 0

    def conv_hook(module: torch.nn.Conv2d, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * output.numel() * module.in_channels * kh * kw

    def linear_hook(module: torch.nn.Linear, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, image_size, image_size))
    return total


def test_flops_match_torch_flop_counter() -> None:
    """count_flops uses torch's convention (2 per multiply-accumulate of convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = CellSpec.create(FIRST_MATRIX, FIRST_OPS)
    for cfg in (NetworkConfig(stem_channels=4, cells_per_stack=1), NetworkConfig(stem_channels=4, num_stacks=2, image_size=9)):
        net = build_network(spec, cfg).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
        assert counter.get_total_flops() == count_flops(spec, cfg)


def test_flops_match_the_built_network() -> None:
    specs = [CellSpec.create([[0, 1], [0, 0]], [INPUT, OUTPUT]), CellSpec.create(INCEPTION_MATRIX, INCEPTION_OPS)]
    for spec in specs + sample_specs(3, seed=5):
        for cfg in (NetworkConfig(stem_channels=4, cells_per_stack=1), NetworkConfig(stem_channels=6, num_stacks=2, image_size=9)):
            assert _hooked_flops(build_network(spec, cfg), cfg.image_size) == count_flops(spec, cfg)


def test_flops_scale_like_the_network() -> None:
    spec = CellSpec.create(INCEPTION_MATRIX, INCEPTION_OPS)
    full = count_flops(spec, NetworkConfig())
    assert 1e8 < full < 1e10  # NAS-Bench-101 networks need 0.1-10 GFLOPs per CIFAR image forward
    assert count_flops(spec, NetworkConfig(stem_channels=64)) < full / 3


def test_odd_image_sizes_pool_like_tf_same_padding() -> None:
    spec = CellSpec.create([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [INPUT, MP, OUTPUT])
    cfg = NetworkConfig(stem_channels=4, num_stacks=3, cells_per_stack=1, image_size=9)  # 9 -> 5 -> 3
    net = build_network(spec, cfg)
    feats = net.features(torch.zeros(1, 3, 9, 9))
    assert feats.shape == (1, 16, 3, 3)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="stem_channels"):
        NetworkConfig(stem_channels=0)
    with pytest.raises(ValueError, match="bn_momentum"):
        NetworkConfig(bn_momentum=1.0)


def _reference_cell(cell: torch.nn.Module, spec: CellSpec, x: torch.Tensor) -> torch.Tensor:
    """NAS-Bench-101's build_module written out plainly with the cell's weights: one projection per
    input edge (slices of the fused one), sums into interior vertices, concat into the output."""
    import torch.nn.functional as F

    m, n = spec.matrix, len(spec.matrix)
    vc = compute_vertex_channels(x.shape[1], cell.vc[-1], m)
    conv, bn = (cell.proj[0], cell.proj[1]) if cell.proj is not None else (None, None)
    bounds = {}
    start = 0
    for target, width in zip([*cell.proj_targets, "out"][: len(cell.proj_split)], cell.proj_split, strict=True):
        bounds[target] = (start, start + width)
        start += width

    def projection(target: object) -> torch.Tensor:
        a, b = bounds[target]
        y = F.conv2d(x, conv.weight[a:b])
        y = F.batch_norm(y, bn.running_mean[a:b].clone(), bn.running_var[a:b].clone(), bn.weight[a:b], bn.bias[a:b],
                         training=bn.training, momentum=0.0, eps=bn.eps)
        return F.relu(y)

    if n == 2:
        return projection("out")
    tensors = [x]
    for t in range(1, n - 1):
        add_in = [tensors[s][:, : vc[t]] for s in range(1, t) if m[s][t]]
        if m[0][t]:
            add_in.append(projection(t))
        tensors.append(cell.ops[t - 1](sum(add_in[1:], add_in[0])))
    concat = [tensors[t] for t in range(1, n - 1) if m[t][n - 1]]
    out = torch.cat(concat, dim=1)
    if m[0][n - 1]:
        out = out + projection("out")
    return out


@pytest.mark.parametrize("training", [True, False])
def test_cells_compute_nasbench_build_module(training: bool) -> None:
    """The fused input projections give exactly what separate NAS-Bench-101 projections give."""
    torch.manual_seed(0)
    specs = [CellSpec.create(INCEPTION_MATRIX, INCEPTION_OPS), CellSpec.create(FIRST_MATRIX, FIRST_OPS)]
    specs += [CellSpec.create([[0, 1], [0, 0]], [INPUT, OUTPUT])] + sample_specs(6, seed=21)
    for spec in specs:
        net = build_network(spec, NetworkConfig(stem_channels=6, num_stacks=2, cells_per_stack=1, image_size=8))
        for module in net.modules():  # non-trivial BN statistics and affine parameters
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                with torch.no_grad():
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.5, 0.5)
        net.train(training)
        cells = [mod for mod in net.features if type(mod).__name__ == "Cell"]
        assert len(cells) == 2
        for cell in cells:
            x = torch.randn(3, cell.vc[0], 8, 8)
            with torch.no_grad():
                expected = _reference_cell(cell, spec, x)
                actual = cell(x)
            assert actual.shape == (3, cell.vc[-1], 8, 8)
            assert torch.allclose(actual, expected, atol=1e-5), spec
