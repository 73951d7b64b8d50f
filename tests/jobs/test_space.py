from __future__ import annotations

import itertools
import random

import pytest

from jobs.cell import INPUT, OPS, OUTPUT, CellSpec, CellSpecError, hash_module
from jobs.network import NetworkConfig, count_flops, count_params, count_params_flops
from jobs.space import cell_space, enumerate_cells, unlabelled_graphs


def _brute_force(max_vertices: int, max_edges: int) -> set[str]:
    """Every matrix and labelling on up to ``max_vertices`` vertices, pruned and hashed by
    jobs.cell (what NAS-Bench-101's generator does), independent of jobs.space."""
    found: set[str] = set()
    for n in range(2, max_vertices + 1):
        slots = [(i, j) for i in range(n) for j in range(i + 1, n)]
        for bits in range(1 << len(slots)):
            matrix = [[0] * n for _ in range(n)]
            for k, (i, j) in enumerate(slots):
                matrix[i][j] = bits >> k & 1
            for ops in itertools.product(OPS, repeat=n - 2):
                try:
                    spec = CellSpec.create(matrix, [INPUT, *ops, OUTPUT])
                except CellSpecError:
                    continue
                if spec.num_edges <= max_edges:
                    found.add(spec.arch_hash)
    return found


def _encodings(n: int) -> tuple[tuple[int, ...], ...]:
    from jobs.cell import full_dags

    return full_dags(n, 9)


def test_small_spaces_have_ec_nas_sizes() -> None:
    assert len(cell_space(2, 9)) == 1
    assert len(cell_space(4, 9)) == 91
    assert len(cell_space(5, 9)) == 2532


@pytest.mark.parametrize(("vertices", "edges"), [(3, 9), (4, 9), (4, 3), (4, 2)])
def test_the_space_is_what_brute_force_finds(vertices: int, edges: int) -> None:
    space = cell_space(vertices, edges)
    assert len(set(space.hashes)) == len(space)  # no duplicates
    assert set(space.hashes) == _brute_force(vertices, edges)


def test_hashes_and_limits_are_those_of_jobs_cell() -> None:
    space = cell_space(5, 9)
    for i, spec in enumerate(enumerate_cells(5, 9)):
        again = CellSpec.create(spec.matrix, spec.ops)  # validates and prunes: a no-op here
        assert again == spec
        labeling = [-1] + [OPS.index(op) for op in spec.ops[1:-1]] + [-2]
        assert hash_module(spec.matrix, labeling) == space.hashes[i] == spec.arch_hash
        assert spec.num_vertices == space.num_vertices[i] <= 5
        assert spec.num_edges == space.num_edges[i] <= 9
    assert max(space.num_vertices) == 5


def test_edge_limit_is_respected() -> None:
    space = cell_space(6, 5)
    assert int(space.num_edges.max()) == 5
    assert set(space.hashes) < set(cell_space(6, 9).hashes)
    assert all(CellSpec.create(s.matrix, s.ops).num_edges <= 5 for s in enumerate_cells(6, 5))


def test_a_sample_of_the_six_vertex_space_hashes_as_jobs_cell() -> None:
    space = cell_space(6, 9)
    assert len(space) == len(set(space.hashes))
    for i in random.Random(1).sample(range(len(space)), 300):
        assert CellSpec.create(space.matrix(i), space.ops(i)).arch_hash == space.hashes[i]


def test_unlabelled_graphs_are_one_per_class() -> None:
    # 4 vertices: two parallel interior vertices (with or without input->output: 2 graphs), or a
    # chain input->1->2->output with any of input->2, 1->output, input->output (8 graphs)
    graphs = unlabelled_graphs(4, 9)
    assert len(graphs) == len(set(graphs)) == 10
    # 5 vertices: swapping two interior vertices gives another encoding of the same graph
    assert len(unlabelled_graphs(5, 9)) < len(set(unlabelled_graphs(5, 9)) | set(_encodings(5)))


def test_costs_are_exact() -> None:
    small = NetworkConfig(stem_channels=16, num_stacks=2, cells_per_stack=1, image_size=31, num_classes=3)
    space = cell_space(5, 9)
    for cfg in (NetworkConfig(), small):
        params, flops = space.costs(cfg)
        for i, spec in enumerate(space):
            assert (int(params[i]), int(flops[i])) == (count_params(spec, cfg), count_flops(spec, cfg))
            assert count_params_flops(spec, cfg) == (count_params(spec, cfg), count_flops(spec, cfg))


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_vertices = 8"):
        cell_space(8, 9)
    with pytest.raises(ValueError, match="max_edges = 0"):
        cell_space(7, 0)


@pytest.mark.slow
def test_the_whole_space_has_423624_cells() -> None:
    space = cell_space(7, 9)
    assert len(space) == 423_624
    assert len(set(space.hashes)) == len(space)
    for i in random.Random(2).sample(range(len(space)), 200):
        assert CellSpec.create(space.matrix(i), space.ops(i)).arch_hash == space.hashes[i]


def test_hashing_split_over_processes_gives_the_same_hashes_in_the_same_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs import space

    monkeypatch.setattr(space, "_PARALLEL_ROWS", 0)
    graphs, grid = unlabelled_graphs(5), space._labellings(5)
    serial = space._hash_graphs(graphs, grid)
    assert space._hash_all(graphs, grid, workers=2) == serial
    assert space._hash_all(graphs, grid, workers=1) == serial
    assert len(serial) == len(graphs) * len(grid)
