"""Cell specs: NAS-Bench-101's validation rules, pruning, graph hash and sampling."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.cell import (
    INPUT,
    MAX_EDGES,
    MAX_VERTICES,
    OPS,
    OUTPUT,
    CellSpec,
    CellSpecError,
    _draw_uniform,
    _encodings_in_class,
    full_dags,
    hash_module,
    load_specs,
    sample_specs,
)

C3, C1, MP = OPS

# Published (spec, hash) pairs.
# 1. The first architecture of the NAS-Bench-101 data set, as printed by NNI's NAS-Bench-101
#    example (microsoft/nni v1.7 BenchmarksExample: 'hash': '00005c142e6f48ac74fdcf73e3439874',
#    parameters 8.55553 M) and by dumps of nasbench_only108.tfrecord ('n_params': 8555530).
FIRST_MATRIX = [
    [0, 1, 0, 0, 1, 1, 0],
    [0, 0, 1, 0, 0, 0, 0],
    [0, 0, 0, 1, 0, 0, 1],
    [0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 0],
]
FIRST_OPS = [INPUT, C3, MP, C3, C3, C1, OUTPUT]
FIRST_HASH = "00005c142e6f48ac74fdcf73e3439874"
# 2. The Inception-like cell of NAS-Bench-101's README; google-research/unified_functional_hashing
#    uses it with graph_hash "28cfc7874f6d200472e1a9dcd8650aa0" in its NAS-Bench-101 tests.
INCEPTION_MATRIX = [
    [0, 1, 1, 1, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 1, 0, 0],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 0],
]
INCEPTION_OPS = [INPUT, C1, C3, C3, C3, MP, OUTPUT]
INCEPTION_HASH = "28cfc7874f6d200472e1a9dcd8650aa0"
# The same cell as NAS-Bench-101 stores it (module_adjacency / module_operations printed by the
# query in NASBench.ipynb): an isomorphic relabelling that must hash identically.
INCEPTION_STORED_MATRIX = [
    [0, 1, 1, 1, 1, 0, 0],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 0],
]
INCEPTION_STORED_OPS = [INPUT, C3, C1, MP, C3, C3, OUTPUT]


def test_hash_equals_published_nasbench_hashes() -> None:
    assert CellSpec.create(FIRST_MATRIX, FIRST_OPS).arch_hash == FIRST_HASH
    assert CellSpec.create(INCEPTION_MATRIX, INCEPTION_OPS).arch_hash == INCEPTION_HASH
    assert CellSpec.create(INCEPTION_STORED_MATRIX, INCEPTION_STORED_OPS).arch_hash == INCEPTION_HASH


def test_hash_ignores_pruned_vertices() -> None:
    """A dangling vertex is pruned before hashing, as NAS-Bench-101 hashes the pruned spec."""
    matrix = [row[:] for row in INCEPTION_MATRIX]
    matrix[1][6] = 0  # vertex 1 (conv1x1) now leads nowhere: the Inception cell without that branch
    six = CellSpec.create(
        [[0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1],
         [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]],
        [INPUT, C3, C3, C3, MP, OUTPUT],
    )
    seven = CellSpec.create(matrix, INCEPTION_OPS)
    assert seven.num_vertices == 6
    assert seven == six
    assert seven.arch_hash == six.arch_hash


def _random_topological_relabel(spec: CellSpec, rng: random.Random) -> tuple[list[list[int]], list[str]]:
    """The same DAG with its interior vertices renumbered in a random topological order."""
    n = spec.num_vertices
    placed = [0]
    remaining = set(range(1, n - 1))
    while remaining:
        ready = [v for v in remaining if all(u in placed for u in range(n) if spec.matrix[u][v])]
        v = rng.choice(sorted(ready))
        placed.append(v)
        remaining.remove(v)
    placed.append(n - 1)
    new_index = {old: new for new, old in enumerate(placed)}
    matrix = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if spec.matrix[i][j]:
                matrix[new_index[i]][new_index[j]] = 1
    ops = [spec.ops[old] for old in placed]
    return matrix, ops


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_hash_is_invariant_under_vertex_permutation(seed: int) -> None:
    rng = random.Random(seed)
    spec = sample_specs(1, seed)[0]
    matrix, ops = _random_topological_relabel(spec, rng)
    relabelled = CellSpec.create(matrix, ops)
    assert relabelled.arch_hash == spec.arch_hash


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_hash_module_is_invariant_under_any_permutation(seed: int) -> None:
    """hash_module works on any labelled digraph, not only upper-triangular ones (as NAS-Bench-101's)."""
    rng = random.Random(seed)
    n = rng.randint(3, 9)
    matrix = tuple(tuple(rng.randint(0, 1) for _ in range(n)) for _ in range(n))
    labels = [rng.randint(-2, 3) for _ in range(n)]
    perm = list(range(n))
    rng.shuffle(perm)
    inverse = {p: i for i, p in enumerate(perm)}
    permuted = tuple(tuple(matrix[inverse[i]][inverse[j]] for j in range(n)) for i in range(n))
    assert hash_module(permuted, [labels[inverse[i]] for i in range(n)]) == hash_module(matrix, labels)


def test_hash_separates_nasbench_tricky_cases() -> None:
    """Non-isomorphic pairs that a weaker hash confuses (cases from NAS-Bench-101's graph_util tests)."""
    chain = ((0, 1, 0, 0, 0), (0, 0, 1, 0, 0), (0, 0, 0, 1, 0), (0, 0, 0, 0, 1), (0, 0, 0, 0, 0))
    # needs the vertex's own hash in the update
    assert hash_module(chain, [-1, 1, 0, 0, -2]) != hash_module(chain, [-1, 0, 0, 1, -2])
    # needs edge directions
    skip = ((0, 1, 0, 1), (0, 0, 1, 0), (0, 0, 0, 1), (0, 0, 0, 0))
    assert hash_module(skip, [-1, 1, 0, -2]) != hash_module(skip, [-1, 0, 1, -2])
    # needs in-neighbours, not only out-neighbours
    fan = (
        (0, 1, 1, 1, 1, 0, 0),
        (0, 0, 1, 0, 0, 0, 0),
        (0, 0, 0, 0, 0, 0, 1),
        (0, 0, 0, 0, 0, 1, 0),
        (0, 0, 0, 0, 0, 1, 0),
        (0, 0, 0, 0, 0, 0, 1),
        (0, 0, 0, 0, 0, 0, 0),
    )
    assert hash_module(fan, [-1, 1, 0, 0, 0, 0, -2]) != hash_module(fan, [-1, 0, 0, 0, 1, 0, -2])
    # swapping the labels of the two branches of a diamond is an isomorphism
    diamond = ((0, 1, 1, 0), (0, 0, 0, 1), (0, 0, 0, 1), (0, 0, 0, 0))
    assert hash_module(diamond, [-1, 1, 2, -2]) == hash_module(diamond, [-1, 2, 1, -2])


# --- validation: one rule per case, one line per message ------------------------------------------

GOOD = [[0, 1, 0], [0, 0, 1], [0, 0, 0]]


@pytest.mark.parametrize(
    ("matrix", "ops", "fragment"),
    [
        ([[0, 1], [0, 0, 1]], [INPUT, OUTPUT], "must be square"),
        ([[0, 2, 0], [0, 0, 1], [0, 0, 0]], [INPUT, C3, OUTPUT], "entry [0][1] = 2 is not 0 or 1"),
        ([[0, 1, 0], [0, 0, 1], [1, 0, 0]], [INPUT, C3, OUTPUT], "entry [2][0] = 1 is on or below the diagonal"),
        ([[1, 1, 0], [0, 0, 1], [0, 0, 0]], [INPUT, C3, OUTPUT], "entry [0][0] = 1 is on or below the diagonal"),
        ([[0] * 8 for _ in range(8)], [INPUT] + [C3] * 6 + [OUTPUT], "8 vertices exceed the maximum of 7"),
        ([[0]], [INPUT], "at least an input and an output"),
        (GOOD, [INPUT, OUTPUT], "2 ops for a 3x3 matrix"),
        (GOOD, [C3, C3, OUTPUT], "first op is 'conv3x3-bn-relu', must be 'input'"),
        (GOOD, [INPUT, C3, C1], "last op is 'conv1x1-bn-relu', must be 'output'"),
        (
            GOOD,
            [INPUT, "conv5x5", OUTPUT],
            "op 'conv5x5' at vertex 1 is not allowed (allowed: conv3x3-bn-relu, conv1x1-bn-relu, maxpool3x3)",
        ),
        (GOOD, [INPUT, INPUT, OUTPUT], "op 'input' at vertex 1 is not allowed"),
        ([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [INPUT, C3, C3, OUTPUT], "no path from the input"),
        ([[0, 0], [0, 0]], [INPUT, OUTPUT], "no path from the input"),
        ("0101", [INPUT, OUTPUT], "matrix must be a list of rows"),
        (GOOD, "input", "ops must be a list"),
    ],
)
def test_invalid_specs_name_the_rule(matrix: object, ops: object, fragment: str) -> None:
    with pytest.raises(CellSpecError) as info:
        CellSpec.create(matrix, ops)  # type: ignore[arg-type]
    message = str(info.value)
    assert fragment in message
    assert message.startswith("cell spec: ")
    assert "\n" not in message


def _full_upper(n: int) -> list[list[int]]:
    return [[1 if j > i else 0 for j in range(n)] for i in range(n)]


def test_edge_limit_counts_the_pruned_graph() -> None:
    # 6 vertices fully connected: 15 edges, nothing to prune
    with pytest.raises(CellSpecError, match=r"15 edges after pruning exceed the maximum of 9"):
        CellSpec.create(_full_upper(6), [INPUT, C3, C3, C3, C3, OUTPUT])
    # 10 edges; vertex 5 reaches nothing and vertex 1 only reaches 5, so pruning leaves 7, and
    # NAS-Bench-101 (api._check_spec counts the pruned matrix) accepts it
    matrix = [
        [0, 1, 1, 1, 1, 0, 1],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    assert sum(map(sum, matrix)) == 10
    spec = CellSpec.create(matrix, [INPUT, C3, C1, MP, C3, C1, OUTPUT])
    assert spec.num_edges <= MAX_EDGES
    assert spec.num_vertices == 5
    assert spec.ops == (INPUT, C1, MP, C3, OUTPUT)


def test_exactly_nine_edges_is_allowed() -> None:
    matrix = [
        [0, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ]
    assert CellSpec.create(matrix, [INPUT, C3, C1, MP, C3, C1, OUTPUT]).num_edges == 8
    matrix[0][6] = 1
    assert CellSpec.create(matrix, [INPUT, C3, C1, MP, C3, C1, OUTPUT]).num_edges == 9


# --- pruning ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matrix", "ops", "pruned_matrix", "pruned_ops"),
    [
        # nothing to prune
        (GOOD, [INPUT, C3, OUTPUT], GOOD, [INPUT, C3, OUTPUT]),
        ([[0, 1, 1], [0, 0, 1], [0, 0, 0]], [INPUT, MP, OUTPUT], [[0, 1, 1], [0, 0, 1], [0, 0, 0]], [INPUT, MP, OUTPUT]),
        # an island (vertex 2 reached from nothing and leading nowhere)
        ([[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], [INPUT, C3, C1, OUTPUT], GOOD, [INPUT, C3, OUTPUT]),
        # a vertex reached from the input but leading nowhere
        ([[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], [INPUT, C3, C1, OUTPUT], GOOD, [INPUT, C1, OUTPUT]),
        # a vertex leading to the output but not reached from the input
        ([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [INPUT, C3, C1, OUTPUT], GOOD, [INPUT, C1, OUTPUT]),
        # only the input->output edge survives
        ([[0, 1, 1], [0, 0, 0], [0, 0, 0]], [INPUT, C3, OUTPUT], [[0, 1], [0, 0]], [INPUT, OUTPUT]),
    ],
)
def test_pruning_matches_nasbench(
    matrix: list[list[int]], ops: list[str], pruned_matrix: list[list[int]], pruned_ops: list[str]
) -> None:
    spec = CellSpec.create(matrix, ops)
    assert spec.to_dict() == {"matrix": pruned_matrix, "ops": pruned_ops}


def test_direct_construction_must_be_pruned_and_valid() -> None:
    with pytest.raises(CellSpecError, match="needs a pruned spec"):
        CellSpec(((0, 1, 0, 0), (0, 0, 0, 1), (0, 0, 0, 0), (0, 0, 0, 0)), (INPUT, C3, C1, OUTPUT))
    with pytest.raises(CellSpecError, match="not allowed"):
        CellSpec(((0, 1, 0), (0, 0, 1), (0, 0, 0)), (INPUT, "conv7x7", OUTPUT))
    spec = CellSpec(((0, 1, 0), (0, 0, 1), (0, 0, 0)), (INPUT, C3, OUTPUT))
    assert spec == CellSpec.create(GOOD, [INPUT, C3, OUTPUT])


def test_accepts_numpy_and_bool_matrices() -> None:
    np = pytest.importorskip("numpy")
    a = CellSpec.create(np.array(FIRST_MATRIX), FIRST_OPS)
    b = CellSpec.create([[bool(v) for v in row] for row in FIRST_MATRIX], tuple(FIRST_OPS))
    assert a == b
    assert a.arch_hash == FIRST_HASH
    assert all(type(v) is int for row in a.matrix for v in row)


def test_properties_and_dict_round_trip() -> None:
    spec = CellSpec.create(INCEPTION_MATRIX, INCEPTION_OPS)
    assert spec.num_vertices == 7
    assert spec.num_edges == 9
    data = spec.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert CellSpec.from_dict(data) == spec
    assert CellSpec.from_dict({**data, "hash": spec.arch_hash}) == spec


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"matrix": GOOD}, "missing key(s) ['ops']"),
        ({"matrix": GOOD, "ops": [INPUT, C3, OUTPUT], "op": 1}, "unknown key(s) ['op']"),
        ([GOOD], "expected a mapping"),
    ],
)
def test_from_dict_errors(data: object, fragment: str) -> None:
    with pytest.raises(CellSpecError) as info:
        CellSpec.from_dict(data)
    assert fragment in str(info.value)


# --- sampling ---------------------------------------------------------------------------------------


def test_sample_specs_is_seeded_distinct_and_valid() -> None:
    specs = sample_specs(200, seed=7)
    assert len(specs) == 200
    assert len({s.arch_hash for s in specs}) == 200
    assert [s.to_dict() for s in specs] == [s.to_dict() for s in sample_specs(200, seed=7)]
    assert [s.arch_hash for s in sample_specs(20, seed=8)] != [s.arch_hash for s in specs[:20]]
    for s in specs:
        # drawn without validation (full DAGs of valid ops): exactly what validation and pruning build
        assert CellSpec.create(s.matrix, s.ops) == s and CellSpec(s.matrix, s.ops) == s
        assert 2 <= s.num_vertices <= MAX_VERTICES
        assert s.num_edges <= MAX_EDGES
        assert s.ops[0] == INPUT and s.ops[-1] == OUTPUT
        assert set(s.ops[1:-1]) <= set(OPS)
    # the space is explored: full 7-vertex cells and every op show up
    assert any(s.num_vertices == MAX_VERTICES for s in specs)
    assert {op for s in specs for op in s.ops[1:-1]} == set(OPS)


def test_sample_specs_nasbench_random_method() -> None:
    specs = sample_specs(50, seed=3, method="nasbench_random")
    assert len({s.arch_hash for s in specs}) == 50
    assert all(s.num_edges <= MAX_EDGES for s in specs)
    # NAS-Bench-101's random search favours small cells; the uniform sampler favours 7 vertices
    mean_uniform = sum(s.num_vertices for s in sample_specs(50, seed=3)) / 50
    assert sum(s.num_vertices for s in specs) / 50 < mean_uniform
    with pytest.raises(ValueError, match="method = 'grid' is not one of"):
        sample_specs(1, seed=3, method="grid")


def test_full_dags_match_brute_force() -> None:
    """The encodings the uniform sampler draws from: full DAGs with <= 9 edges (generate_graphs.py's set)."""
    for v in range(2, 7):
        pairs = [(i, j) for j in range(v) for i in range(j)]
        count = 0
        for bits in range(1 << len(pairs)):
            edges = [pairs[k] for k in range(len(pairs)) if bits >> k & 1]
            if len(edges) > MAX_EDGES:
                continue
            has_out = {i for i, _ in edges}
            has_in = {j for _, j in edges}
            if has_out >= set(range(v - 1)) and has_in >= set(range(1, v)):
                count += 1
        assert len(full_dags(v)) == count
    # V = 7 (2^21 masks) was enumerated the same way offline: 4,793
    assert [len(full_dags(v)) for v in range(2, 8)] == [1, 2, 10, 121, 1545, 4793]


def test_class_sizes_agree_with_the_hash() -> None:
    """Counting classes as sum(1 / encodings per class) equals counting distinct hashes (V <= 5).

    Offline, the same sum over V = 2..7 gives 423,624, NAS-Bench-101's number of unique cells."""
    hashes = set()
    classes = Fraction(0)
    for v in range(2, 6):
        for cols in full_dags(v):
            matrix = tuple(tuple(cols[j] >> i & 1 for j in range(v)) for i in range(v))
            for labels in itertools.product(range(len(OPS)), repeat=v - 2):
                ops = (INPUT, *(OPS[k] for k in labels), OUTPUT)
                classes += Fraction(1, _encodings_in_class(cols, ops))
                hashes.add(hash_module(matrix, [-1, *labels, -2]))
    assert classes == len(hashes) == 1 + 6 + 84 + 2441


def test_uniform_sampler_is_uniform_over_classes() -> None:
    """On the space of cells with at most 4 vertices (91 classes), every class is equally likely."""
    rng = random.Random(1)
    counts: Counter[str] = Counter()
    accepted = 0
    while accepted < 91 * 40:
        spec = _draw_uniform(rng, 4, MAX_EDGES)
        if spec is not None:
            counts[spec.arch_hash] += 1
            accepted += 1
    assert len(counts) == 91
    expected = accepted / 91
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 150  # 90 degrees of freedom: mean 90, sd 13.4


def test_sample_specs_edge_cases() -> None:
    assert sample_specs(0, seed=1) == []
    with pytest.raises(ValueError, match="exceeds the 423624 unique cells"):
        sample_specs(500_000, seed=1)
    with pytest.raises(ValueError, match="must be >= 0"):
        sample_specs(-1, seed=1)


# --- files ------------------------------------------------------------------------------------------


def test_load_specs_json_and_yaml(tmp_path: Path) -> None:
    entries = [{"matrix": FIRST_MATRIX, "ops": FIRST_OPS}, {"matrix": INCEPTION_MATRIX, "ops": INCEPTION_OPS}]
    json_file = tmp_path / "specs.json"
    json_file.write_text(json.dumps(entries))
    yaml_file = tmp_path / "specs.yaml"
    yaml_file.write_text(
        "- matrix: [[0, 1, 0], [0, 0, 1], [0, 0, 0]]\n"
        "  ops: [input, conv3x3-bn-relu, output]\n"
        "- {matrix: [[0, 1], [0, 0]], ops: [input, output]}\n"
    )
    assert [s.arch_hash for s in load_specs(json_file)] == [FIRST_HASH, INCEPTION_HASH]
    loaded = load_specs(str(yaml_file))
    assert [s.num_vertices for s in loaded] == [3, 2]


def test_load_specs_errors_name_file_and_entry(tmp_path: Path) -> None:
    bad_entry = tmp_path / "bad.yaml"
    bad_entry.write_text(
        "- {matrix: [[0, 1], [0, 0]], ops: [input, output]}\n"
        "- {matrix: [[0, 1, 0], [0, 0, 1], [0, 0, 0]], ops: [input, conv5x5, output]}\n"
    )
    with pytest.raises(CellSpecError) as info:
        load_specs(bad_entry)
    message = str(info.value)
    assert str(bad_entry) in message and "entry 1" in message and "'conv5x5'" in message
    assert "\n" not in message

    not_a_list = tmp_path / "map.json"
    not_a_list.write_text('{"matrix": [], "ops": []}')
    with pytest.raises(CellSpecError, match="expected a list"):
        load_specs(not_a_list)

    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(CellSpecError, match=r"broken.json: invalid JSON at line 1"):
        load_specs(broken)

    broken_yaml = tmp_path / "broken.yml"
    broken_yaml.write_text("- [unclosed\n")
    with pytest.raises(CellSpecError, match="invalid YAML"):
        load_specs(broken_yaml)

    with pytest.raises(CellSpecError, match="cannot read it"):
        load_specs(tmp_path / "missing.yaml")


def test_spec_modules_do_not_import_torch() -> None:
    """The planner and the CLI import these for counting and checking; torch would cost seconds."""
    code = (
        "import sys; import jobs.cell, jobs.network, jobs.recipe, jobs.data;"
        "from jobs.network import count_params, count_flops, NetworkConfig;"
        "from jobs.cell import sample_specs;"
        "[count_params(s, NetworkConfig()) + count_flops(s, NetworkConfig()) for s in sample_specs(5, 0)];"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
