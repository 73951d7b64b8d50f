"""NAS-Bench-101 cell specs: validation, pruning, the graph hash and sampling.

A cell ("module" in NAS-Bench-101) is a DAG of at most 7 vertices and 9 edges given by a strictly
upper-triangular 0/1 adjacency matrix and one op per vertex; vertex 0 is the input, the last vertex
the output. The rules, the pruning and the hash follow google-research/nasbench:
``nasbench/lib/model_spec.py`` (pruning), ``nasbench/api.py`` (``_check_spec``: the limits are checked
on the pruned graph) and ``nasbench/lib/graph_util.py`` (``hash_module``), so that a spec's
``arch_hash`` is the key NAS-Bench-101 and EC-NAS use for the same architecture.

Pure functions and a frozen dataclass: no torch, no I/O except :func:`load_specs`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from db.errors import CampaignError

try:  # CPython's own md5: about twice as fast as OpenSSL's on the short strings hashed here
    from _md5 import md5 as _md5
except ImportError:  # pragma: no cover - builds without it
    _md5 = hashlib.md5

OPS: tuple[str, ...] = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
INPUT = "input"
OUTPUT = "output"
MAX_VERTICES = 7
MAX_EDGES = 9

# Number of unique (non-isomorphic) cells in the space (NAS-Bench-101's README); asking for more
# distinct samples than this can never finish.
NUM_UNIQUE_CELLS = 423_624

Matrix = tuple[tuple[int, ...], ...]


class CellSpecError(CampaignError, ValueError):
    """An invalid cell spec; the message is one line naming the bad value and the rule it breaks."""


def _fail(message: str) -> CellSpecError:
    return CellSpecError(f"cell spec: {message}")


def _as_matrix(matrix: Any) -> Matrix:
    """Converts nested sequences (lists, tuples, numpy arrays) of 0/1 to a tuple matrix, or raises."""
    if hasattr(matrix, "tolist"):  # numpy arrays: plain Python ints, not numpy scalars
        matrix = matrix.tolist()
    if isinstance(matrix, str | bytes) or not isinstance(matrix, Sequence):
        raise _fail(f"matrix must be a list of rows, got {type(matrix).__name__}")
    n = len(matrix)
    rows: list[tuple[int, ...]] = []
    for i, row in enumerate(matrix):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise _fail(f"matrix row {i} must be a list, got {row!r}")
        if len(row) != n:
            lengths = [len(r) if isinstance(r, Sequence) else None for r in matrix]
            raise _fail(f"matrix must be square, got {n} rows of lengths {lengths}")
        values = []
        for j, value in enumerate(row):
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, int | float) or value not in (0, 1):
                raise _fail(f"matrix entry [{i}][{j}] = {value!r} is not 0 or 1")
            values.append(int(value))
        rows.append(tuple(values))
    return tuple(rows)


def _prune(matrix: Matrix, ops: tuple[str, ...]) -> tuple[Matrix, tuple[str, ...]] | None:
    """NAS-Bench-101's ModelSpec._prune: keep vertices on an input->output path; None if there is none."""
    n = len(matrix)
    from_input = {0}
    frontier = [0]
    while frontier:
        src = frontier.pop()
        for dst in range(src + 1, n):
            if matrix[src][dst] and dst not in from_input:
                from_input.add(dst)
                frontier.append(dst)
    to_output = {n - 1}
    frontier = [n - 1]
    while frontier:
        dst = frontier.pop()
        for src in range(dst):
            if matrix[src][dst] and src not in to_output:
                to_output.add(src)
                frontier.append(src)
    keep = sorted(from_input & to_output)
    # NAS-Bench-101 calls a spec invalid when fewer than 2 vertices survive, i.e. input and output
    # are not connected.
    if len(keep) < 2 or keep[0] != 0 or keep[-1] != n - 1:
        return None
    pruned = tuple(tuple(matrix[i][j] for j in keep) for i in keep)
    return pruned, tuple(ops[i] for i in keep)


def hash_module(matrix: Matrix, labeling: Sequence[int]) -> str:
    """NAS-Bench-101's ``graph_util.hash_module``: an isomorphism-invariant md5 of a labelled DAG.

    Each vertex starts from md5(str((out_degree, in_degree, label))); then, as many times as there
    are vertices, it becomes md5(sorted in-neighbour hashes + "|" + sorted out-neighbour hashes +
    "|" + own hash); the fingerprint is md5(str(sorted vertex hashes)). The string forms (Python
    tuple and list reprs of ints and hex strings) are part of the definition.
    """
    n = len(matrix)
    if len(labeling) != n:
        raise ValueError(f"labeling has {len(labeling)} labels for {n} vertices")
    in_degree = [sum(matrix[w][v] for w in range(n)) for v in range(n)]
    out_degree = [sum(matrix[v]) for v in range(n)]
    md5 = _md5
    hashes = [
        md5(str((out_degree[v], in_degree[v], int(labeling[v]))).encode("utf-8")).hexdigest()
        for v in range(n)
    ]
    preds = [[w for w in range(n) if matrix[w][v]] for v in range(n)]
    succs = [[w for w in range(n) if matrix[v][w]] for v in range(n)]
    for _ in range(n):
        hashes = [
            md5(
                (
                    "".join(sorted([hashes[w] for w in preds[v]]))
                    + "|"
                    + "".join(sorted([hashes[w] for w in succs[v]]))
                    + "|"
                    + hashes[v]
                ).encode("utf-8")
            ).hexdigest()
            for v in range(n)
        ]
    return md5(str(sorted(hashes)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CellSpec:
    """A valid, pruned NAS-Bench-101 cell. Build it with :meth:`create` (which validates and prunes).

    Two specs are ``==`` only if their pruned matrices and ops are identical; isomorphic cells
    (the same architecture with vertices numbered differently) share :attr:`arch_hash`, which is
    the architecture's identity.
    """

    matrix: Matrix
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        # Direct construction must not smuggle in an unpruned or invalid spec.
        matrix = _as_matrix(self.matrix)
        ops = tuple(self.ops)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "ops", ops)
        _validate(matrix, ops)
        pruned = _prune(matrix, ops)
        if pruned is None or pruned[0] != matrix:
            raise _fail("CellSpec(...) needs a pruned spec; use CellSpec.create(matrix, ops)")
        _check_edges(matrix)

    @classmethod
    def create(cls, matrix: Any, ops: Sequence[str]) -> CellSpec:
        """Validates (matrix, ops) by NAS-Bench-101's rules and returns the pruned spec.

        Raises CellSpecError (one line) for: a non-square or non-0/1 matrix, an entry on or below
        the diagonal, more than 7 vertices, an op count that differs from the vertex count, a first
        op other than 'input', a last op other than 'output', an interior op not in OPS, no path
        from input to output, or more than 9 edges after pruning (NAS-Bench-101 counts edges of the
        pruned graph, so extra edges that pruning removes are allowed). Ops are checked before
        pruning (NAS-Bench-101 checks only the surviving ones), so a typo is reported even on a
        vertex that pruning would drop.
        """
        m = _as_matrix(matrix)
        if isinstance(ops, str | bytes) or not isinstance(ops, Sequence):
            raise _fail(f"ops must be a list of op names, got {ops!r}")
        op_tuple = tuple(ops)
        _validate(m, op_tuple)
        pruned = _prune(m, op_tuple)
        if pruned is None:
            raise _fail(
                f"no path from the input (vertex 0) to the output (vertex {len(m) - 1}); "
                "the cell would compute nothing"
            )
        return cls(*pruned)  # the constructor checks the edge limit of the pruned cell

    @classmethod
    def trusted(cls, matrix: Matrix, ops: tuple[str, ...], arch_hash: str | None = None) -> CellSpec:
        """A spec known to be valid and pruned (``jobs.space`` builds them), without validation;
        ``arch_hash``, when given, must be its hash (it is not recomputed)."""
        spec = object.__new__(cls)
        object.__setattr__(spec, "matrix", matrix)
        object.__setattr__(spec, "ops", ops)
        if arch_hash is not None:
            spec.__dict__["arch_hash"] = arch_hash
        return spec

    @property
    def num_vertices(self) -> int:
        """Vertices of the pruned cell, input and output included."""
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        """Edges of the pruned cell."""
        return sum(map(sum, self.matrix))

    @cached_property
    def arch_hash(self) -> str:
        """NAS-Bench-101's hash of this cell (``ModelSpec.hash_spec`` with its canonical op order)."""
        labeling = [-1] + [OPS.index(op) for op in self.ops[1:-1]] + [-2]
        return hash_module(self.matrix, labeling)

    def to_dict(self) -> dict[str, Any]:
        """The pruned spec as plain JSON-able data: ``{"matrix": [[...]], "ops": [...]}``."""
        return {"matrix": [list(row) for row in self.matrix], "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, data: Any) -> CellSpec:
        """Inverse of :meth:`to_dict`; also accepts unpruned specs (validated and pruned by create)."""
        if not isinstance(data, dict):
            raise _fail(f"expected a mapping with keys 'matrix' and 'ops', got {type(data).__name__}")
        missing = [k for k in ("matrix", "ops") if k not in data]
        if missing:
            raise _fail(f"missing key(s) {missing} (a spec is {{matrix: [[0/1 ...]], ops: [...]}})")
        extra = sorted(set(data) - {"matrix", "ops", "hash", "arch_hash"})
        if extra:
            raise _fail(f"unknown key(s) {extra} (a spec has only 'matrix' and 'ops')")
        return cls.create(data["matrix"], data["ops"])


def _check_edges(pruned: Matrix) -> None:
    edges = sum(map(sum, pruned))
    if edges > MAX_EDGES:
        raise _fail(f"{edges} edges after pruning exceed the maximum of {MAX_EDGES}")


def _validate(matrix: Matrix, ops: tuple[str, ...]) -> None:
    """The structural rules (everything but connectivity and the edge limit)."""
    n = len(matrix)
    if n < 2:
        raise _fail(f"{n} vertices; a cell needs at least an input and an output vertex")
    if n > MAX_VERTICES:
        raise _fail(f"{n} vertices exceed the maximum of {MAX_VERTICES}")
    for i in range(n):
        for j in range(i + 1):
            if matrix[i][j]:
                raise _fail(
                    f"matrix entry [{i}][{j}] = 1 is on or below the diagonal "
                    "(the matrix must be strictly upper triangular)"
                )
    if len(ops) != n:
        raise _fail(f"{len(ops)} ops for a {n}x{n} matrix (need one op per vertex)")
    if ops[0] != INPUT:
        raise _fail(f"first op is {ops[0]!r}, must be {INPUT!r}")
    if ops[-1] != OUTPUT:
        raise _fail(f"last op is {ops[-1]!r}, must be {OUTPUT!r}")
    for v, op in enumerate(ops[1:-1], start=1):
        if op not in OPS:
            raise _fail(f"op {op!r} at vertex {v} is not allowed (allowed: {', '.join(OPS)})")


def sample_specs(n: int, seed: int, method: str = "uniform") -> list[CellSpec]:
    """``n`` distinct (by hash) cells drawn with ``seed``; the same arguments give the same list.

    ``method="uniform"`` (default) draws uniformly from the unique architectures of the space (the
    423,624 cells of NAS-Bench-101), so that a sample looks like the benchmark's population: an
    encoding (a full DAG of 2..7 vertices with at most 9 edges and its ops, the set NAS-Bench-101's
    ``generate_graphs.py`` enumerates) is drawn uniformly and accepted with probability
    1 / (number of encodings of its isomorphism class). Most such cells have 7 vertices.

    ``method="nasbench_random"`` is the random search of NAS-Bench-101's notebook (``random_spec``):
    every upper-triangular entry of a 7x7 matrix is an edge with probability 1/2, every interior op
    uniform, invalid draws rejected; it favours small cells (mostly 5-6 vertices after pruning).

    Duplicates by hash are skipped until ``n`` are found.
    """
    if n < 0:
        raise ValueError(f"sample_specs: n = {n} must be >= 0")
    if n > NUM_UNIQUE_CELLS:
        raise ValueError(f"sample_specs: n = {n} exceeds the {NUM_UNIQUE_CELLS} unique cells in the space")
    draws = {"uniform": _draw_uniform, "nasbench_random": _draw_nasbench_random}
    if method not in draws:
        raise ValueError(f"sample_specs: method = {method!r} is not one of {', '.join(draws)}")
    draw = draws[method]
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[CellSpec] = []
    while len(out) < n:
        spec = draw(rng, MAX_VERTICES, MAX_EDGES)
        if spec is not None and spec.arch_hash not in seen:
            seen.add(spec.arch_hash)
            out.append(spec)
    return out


def _draw_nasbench_random(rng: random.Random, max_vertices: int, max_edges: int) -> CellSpec | None:
    rows = [[0] * max_vertices for _ in range(max_vertices)]
    for i in range(max_vertices):
        for j in range(i + 1, max_vertices):
            rows[i][j] = rng.getrandbits(1)
    ops = [INPUT] + [OPS[rng.randrange(len(OPS))] for _ in range(max_vertices - 2)] + [OUTPUT]
    try:
        spec = CellSpec.create(rows, ops)
    except CellSpecError:
        return None
    return spec if spec.num_edges <= max_edges else None


@cache
def full_dags(num_vertices: int, max_edges: int = MAX_EDGES) -> tuple[tuple[int, ...], ...]:
    """Every full DAG (all vertices on an input->output path) on ``num_vertices`` vertices with at
    most ``max_edges`` edges, each as its in-neighbour bitmasks per vertex (vertex 0's is 0)."""
    choices = [[(m, bin(m).count("1")) for m in range(1, 1 << j)] for j in range(num_vertices)]
    need_out = (1 << (num_vertices - 1)) - 1  # every vertex but the output needs an out-edge
    found: list[tuple[int, ...]] = []
    cols = [0] * num_vertices

    def extend(j: int, edges: int, has_out: int) -> None:
        if j == num_vertices:
            if has_out == need_out:
                found.append(tuple(cols))
            return
        for mask, count in choices[j]:
            if edges + count <= max_edges:
                cols[j] = mask
                extend(j + 1, edges + count, has_out | mask)

    if num_vertices >= 2:
        extend(1, 0, 0)
    return tuple(found)


def _encodings_in_class(cols: tuple[int, ...], ops: tuple[str, ...]) -> int:
    """How many distinct (matrix, ops) encodings the labelled DAG has: one per topological order of
    its interior vertices, up to orders that give the same encoding (automorphisms). Two orders
    give the same encoding exactly when they differ by an automorphism that keeps the ops, so the
    count is the number of orders over the number of those automorphisms."""
    orders, automorphisms = _orders_and_automorphisms(cols)
    kept = sum(1 for perm in automorphisms if all(ops[perm[v]] == ops[v] for v in range(len(ops))))
    return orders // kept


@cache
def _orders_and_automorphisms(cols: tuple[int, ...]) -> tuple[int, tuple[tuple[int, ...], ...]]:
    """The number of topological orders of the DAG (input first, output last) and the orders that
    give the same unlabelled encoding as the identity (its automorphisms, the identity included)."""
    n = len(cols)
    edges = [(i, j) for j in range(n) for i in range(j) if cols[j] >> i & 1]
    identity = sum(1 << (i * n + j) for i, j in edges)
    automorphisms: list[tuple[int, ...]] = []
    count = 0
    order = [0]

    def extend(placed: int) -> None:
        nonlocal count
        if len(order) == n - 1:
            count += 1
            full = [*order, n - 1]
            position = {v: p for p, v in enumerate(full)}
            bits = 0
            for i, j in edges:
                bits |= 1 << (position[i] * n + position[j])
            if bits == identity:
                automorphisms.append(tuple(full))
            return
        for v in range(1, n - 1):
            if not placed >> v & 1 and cols[v] & ~placed == 0:
                order.append(v)
                extend(placed | 1 << v)
                order.pop()

    extend(1)
    return count, tuple(automorphisms)


@cache
def _encoding_weights(max_vertices: int, max_edges: int) -> tuple[list[int], list[int]]:
    """Vertex counts and how many encodings (full DAG x interior ops) each has."""
    sizes = list(range(2, max_vertices + 1))
    return sizes, [len(full_dags(v, max_edges)) * len(OPS) ** (v - 2) for v in sizes]


def _draw_uniform(rng: random.Random, max_vertices: int, max_edges: int) -> CellSpec | None:
    sizes, weights = _encoding_weights(max_vertices, max_edges)
    v = rng.choices(sizes, weights)[0]
    dags = full_dags(v, max_edges)
    cols = dags[rng.randrange(len(dags))]
    ops = (INPUT, *(OPS[rng.randrange(len(OPS))] for _ in range(v - 2)), OUTPUT)
    if rng.random() * _encodings_in_class(cols, ops) >= 1.0:
        return None
    matrix = tuple(tuple(cols[j] >> i & 1 for j in range(v)) for i in range(v))
    return CellSpec.trusted(matrix, ops)  # a full DAG of valid ops within the limits: pruned and valid


def load_specs(path: str | Path) -> list[CellSpec]:
    """Reads a JSON or YAML file holding a list of ``{matrix, ops}`` and returns the pruned specs.

    Every problem (unreadable file, bad syntax, not a list, an invalid entry) raises CellSpecError
    with the file name and, for an entry, its 0-based index.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CellSpecError(f"cell spec file {p}: cannot read it ({exc.strerror or exc})") from exc
    data = _parse(p, text)
    if not isinstance(data, list):
        raise CellSpecError(
            f"cell spec file {p}: expected a list of {{matrix, ops}} entries, got {type(data).__name__}"
        )
    specs = []
    for index, entry in enumerate(data):
        try:
            specs.append(CellSpec.from_dict(entry))
        except CellSpecError as exc:
            raise CellSpecError(f"cell spec file {p}: entry {index}: {exc}") from exc
    return specs


def _parse(path: Path, text: str) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CellSpecError(f"cell spec file {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    import yaml  # YAML is a superset of JSON, so it also reads files with other suffixes

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise CellSpecError(f"cell spec file {path}: invalid YAML: {detail}") from exc
