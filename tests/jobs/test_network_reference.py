"""The benchmark's plain reference network (benchmarks/network_speed.py) is the project's network:
same parameter count, same outputs, gradients and batch-norm updates once the weights are copied.
So the speed comparison of the two compares like with like."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.network_speed import (
    INCEPTION,
    ReferenceNetwork,
    load_project_weights,
    reference_vertex_channels,
    weight_map,
)
from jobs.cell import INPUT, OPS, OUTPUT, CellSpec, sample_specs
from jobs.network import NetworkConfig, build_network, compute_vertex_channels, count_params
from tests.jobs.test_cell import FIRST_MATRIX, FIRST_OPS

C3, C1, MP = OPS

ONLY_SKIP = CellSpec.create([[0, 1], [0, 0]], [INPUT, OUTPUT])
# With 7 output channels: vertex 1 gets 4, vertex 2 gets 3, so the edge 1 -> 2 truncates.
TRUNCATING = CellSpec.create(
    [[0, 1, 0, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [INPUT, C3, C1, OUTPUT]
)
FIXED = [INCEPTION, CellSpec.create(FIRST_MATRIX, FIRST_OPS), ONLY_SKIP, TRUNCATING]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny tensors: a second OpenMP thread on a shared 2-core machine makes each op several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _pair(spec: CellSpec, cfg: NetworkConfig) -> tuple[torch.nn.Module, ReferenceNetwork]:
    """The project's network with non-trivial batch-norm state, and the reference with its weights."""
    project = build_network(spec, cfg)
    for module in project.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            assert module.num_batches_tracked is not None
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(3)
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    ref = ReferenceNetwork(spec, cfg)
    load_project_weights(ref, project)
    return project, ref


def _check_same_function(spec: CellSpec, cfg: NetworkConfig, batch: int = 3) -> None:
    project, ref = _pair(spec, cfg)
    assert _params(ref) == _params(project) == count_params(spec, cfg)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (batch,))

    # Inference mode: moving statistics.
    project.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(x), project(x), rtol=1e-4, atol=1e-5)

    # Training mode: batch statistics, the same gradients and the same moving-average updates. In
    # float64, where float32 round-off amplified by batch norm over few values cannot hide a real
    # difference behind a loose tolerance.
    project.train().double()
    ref.train().double()
    F.cross_entropy(project(x.double()), y).backward()
    F.cross_entropy(ref(x.double()), y).backward()
    mapping = weight_map(ref, project)
    project_params = dict(project.named_parameters())
    project_state = project.state_dict()
    ref_state = ref.state_dict()
    for ref_name, ref_param in ref.named_parameters():
        project_name, rows = mapping[ref_name]
        grad = project_params[project_name].grad
        assert grad is not None and ref_param.grad is not None
        torch.testing.assert_close(
            ref_param.grad, grad if rows is None else grad[rows], rtol=1e-9, atol=1e-11
        )
    for ref_name, (project_name, rows) in mapping.items():
        if "running" in ref_name or "num_batches" in ref_name:
            expected = project_state[project_name]
            torch.testing.assert_close(
                ref_state[ref_name], expected if rows is None else expected[rows], rtol=1e-9, atol=1e-11
            )


def _check_map_partitions_project_state(spec: CellSpec, cfg: NetworkConfig) -> None:
    """Every project tensor is covered by the reference exactly once (row slices tile it)."""
    project = build_network(spec, cfg)
    ref = ReferenceNetwork(spec, cfg)
    covered: dict[str, list[int]] = {}
    state = project.state_dict()
    for project_name, rows in weight_map(ref, project).values():
        tensor = state[project_name]
        size = tensor.shape[0] if tensor.dim() else 1
        hits = covered.setdefault(project_name, [0] * size)
        for i in range(size)[rows] if rows is not None else range(size):
            hits[i] += 1
    assert set(covered) == set(state)
    for name, hits in covered.items():
        if "num_batches_tracked" in name:  # one counter per BN, shared by the slices
            assert min(hits) >= 1, name
        else:
            assert hits == [1] * len(hits), name


@pytest.mark.parametrize("spec", FIXED, ids=["inception", "first", "only_skip", "truncating"])
def test_fixed_specs_compute_the_same_function(spec: CellSpec) -> None:
    torch.manual_seed(0)
    _check_same_function(spec, NetworkConfig(stem_channels=7, num_stacks=2, cells_per_stack=2, image_size=8))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    method=st.sampled_from(["uniform", "nasbench_random"]),
    stem=st.sampled_from([5, 7, 8, 13]),
    stacks=st.integers(1, 3),
    cells=st.integers(1, 2),
)
def test_random_specs_compute_the_same_function(
    seed: int, method: str, stem: int, stacks: int, cells: int
) -> None:
    spec = sample_specs(1, seed=seed, method=method)[0]
    cfg = NetworkConfig(stem_channels=stem, num_stacks=stacks, cells_per_stack=cells, image_size=8)
    torch.manual_seed(seed)
    _check_same_function(spec, cfg)
    _check_map_partitions_project_state(spec, cfg)


def test_truncation_is_exercised() -> None:
    assert reference_vertex_channels(7, 7, TRUNCATING.matrix) == [7, 4, 3, 7]


def test_reference_vertex_channels_equal_the_projects() -> None:
    for spec in FIXED + sample_specs(200, seed=3) + sample_specs(100, seed=4, method="nasbench_random"):
        for cin, cout in ((128, 128), (128, 256), (7, 14), (13, 13)):
            assert reference_vertex_channels(cin, cout, spec.matrix) == compute_vertex_channels(
                cin, cout, spec.matrix
            )


def test_full_reference_has_nasbench_published_parameter_count() -> None:
    # NAS-Bench-101's trainable_parameters for its README's Inception-like cell.
    torch.manual_seed(0)
    assert _params(ReferenceNetwork(INCEPTION, NetworkConfig())) == 2_694_282
