"""The whole NAS-Bench-101 cell space, enumerated without sampling.

:func:`cell_space` returns every distinct cell (pruned, deduplicated by the NAS-Bench-101 hash that
:mod:`jobs.cell` computes) with at most ``max_vertices`` vertices and ``max_edges`` edges, in
columns (:class:`CellSpace`); :func:`enumerate_cells` yields the same cells as :class:`CellSpec`.
Sizes: 423,624 cells for 7 vertices and 9 edges (NAS-Bench-101), 91 for 4 vertices and 2,532 for
5 (EC-NAS's 4V and 5V spaces).

How it stays fast (the whole 7-vertex space in about 20 s of CPU time, split over the CPUs):

- the unlabelled graphs are enumerated once per isomorphism class: every full DAG (each vertex on
  an input->output path, so already pruned) of ``jobs.cell.full_dags``, kept only if its encoding
  is the smallest among those its topological orders give;
- every graph is labelled with all 3^(n-2) interior op tuples, and the hashes of all labellings of
  one graph are computed together: the same md5 chain as ``jobs.cell.hash_module`` (the strings
  hashed are identical byte for byte), with the strings assembled in numpy arrays, repeated
  strings hashed once, and hex order taken from the digests' bytes (hex order is byte order);
- labellings that an automorphism of the graph maps onto one another give the same hash and are
  kept once (the first in enumeration order), as are cells of different graphs that share a hash;
- the md5 calls (about 18 million for the 7-vertex space, most of the time) run in this process's
  interpreter one by one, so the 6- and 7-vertex graphs are split over worker processes, one per
  usable CPU (see :func:`_hash_all`); the result does not depend on the split.

The order is deterministic: by vertex count, then graph, then labelling (op indices in
``jobs.cell.OPS`` order, last vertex fastest).
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import operator
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache

import numpy as np

try:  # CPython's own md5 is about twice as fast as OpenSSL's on strings this short
    from _md5 import md5 as _md5
except ImportError:  # pragma: no cover - builds without it
    _md5 = hashlib.md5

from jobs.cell import INPUT, MAX_EDGES, MAX_VERTICES, OPS, OUTPUT, CellSpec, Matrix, full_dags
from jobs.network import NetworkConfig, cost_table

_DIGEST = operator.methodcaller("digest")
_HEXDIGEST = operator.methodcaller("hexdigest")


@dataclass(frozen=True)
class CellSpace:
    """A cell space in columns: cell ``i`` is ``graphs[graph_index[i]]`` labelled with
    ``labels[i]`` (the interior ops as indices into ``jobs.cell.OPS``, vertex 1 first; padded with
    -1 past the cell's last interior vertex), and its NAS-Bench-101 hash is ``hashes[i]``."""

    hashes: list[str]
    graphs: list[Matrix]
    graph_index: np.ndarray  # int32, one per cell
    labels: np.ndarray  # int8, (cells, max interior vertices)
    num_vertices: np.ndarray  # int8, one per cell
    num_edges: np.ndarray  # int8, one per cell

    def __len__(self) -> int:
        return len(self.hashes)

    def ops(self, i: int) -> tuple[str, ...]:
        """The op names of cell ``i``, input and output included."""
        k = int(self.num_vertices[i]) - 2
        return (INPUT, *(OPS[int(x)] for x in self.labels[i, :k]), OUTPUT)

    def matrix(self, i: int) -> Matrix:
        return self.graphs[int(self.graph_index[i])]

    def spec(self, i: int) -> CellSpec:
        """Cell ``i`` as a :class:`CellSpec` (its ``arch_hash`` already known)."""
        return CellSpec.trusted(self.matrix(i), self.ops(i), self.hashes[i])

    def __iter__(self) -> Iterator[CellSpec]:
        return (self.spec(i) for i in range(len(self)))

    def costs(self, cfg: NetworkConfig) -> tuple[np.ndarray, np.ndarray]:
        """Every cell's (parameters, forward FLOPs) under ``cfg`` as int64 arrays: exactly
        ``jobs.network.count_params`` and ``count_flops``, computed once per graph."""
        width = self.labels.shape[1]
        base = np.zeros((len(self.graphs), 2), dtype=np.int64)
        per_op = np.zeros((len(self.graphs), width, len(OPS), 2), dtype=np.int64)
        for g, matrix in enumerate(self.graphs):
            table = cost_table(matrix, cfg)
            base[g] = table.base_params, table.base_flops
            k = len(matrix) - 2
            if k:
                per_op[g, :k, :, 0] = table.op_params
                per_op[g, :k, :, 1] = table.op_flops
        totals = base[self.graph_index]
        for t in range(width):
            labels = self.labels[:, t]
            used = labels >= 0
            totals[used] += per_op[self.graph_index[used], t, labels[used]]
        return totals[:, 0].copy(), totals[:, 1].copy()


def enumerate_cells(max_vertices: int = MAX_VERTICES, max_edges: int = MAX_EDGES) -> Iterator[CellSpec]:
    """Every distinct cell with at most ``max_vertices`` vertices and ``max_edges`` edges, as
    :class:`CellSpec` (see :func:`cell_space` for the order and the columnar form)."""
    return iter(cell_space(max_vertices, max_edges))


def cell_space(max_vertices: int = MAX_VERTICES, max_edges: int = MAX_EDGES) -> CellSpace:
    """Every distinct cell with 2..``max_vertices`` vertices and at most ``max_edges`` edges.

    Raises ValueError unless 2 <= max_vertices <= 7 and 1 <= max_edges <= 9 (NAS-Bench-101's limits).
    """
    if isinstance(max_vertices, bool) or not isinstance(max_vertices, int) or not 2 <= max_vertices <= MAX_VERTICES:
        raise ValueError(f"max_vertices = {max_vertices!r} must be an integer from 2 to {MAX_VERTICES}")
    if isinstance(max_edges, bool) or not isinstance(max_edges, int) or not 1 <= max_edges <= MAX_EDGES:
        raise ValueError(f"max_edges = {max_edges!r} must be an integer from 1 to {MAX_EDGES}")
    return _cell_space(max_vertices, max_edges)


@cache
def _cell_space(max_vertices: int, max_edges: int) -> CellSpace:
    width = max(max_vertices - 2, 0)
    hashes: list[str] = []
    graphs: list[Matrix] = []
    graph_index: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    vertices: list[np.ndarray] = []
    edges: list[np.ndarray] = []
    seen: set[str] = set()
    for n in range(2, max_vertices + 1):
        grid = _labellings(n)
        rows = len(grid)
        found = unlabelled_graphs(n, max_edges)
        all_hashes = _hash_all(found, grid)
        keep = []
        for r, h in enumerate(all_hashes):
            if h not in seen:
                seen.add(h)
                keep.append(r)
                hashes.append(h)
        picked = np.asarray(keep, dtype=np.int64)
        g_of = picked // rows
        block = np.full((len(picked), width), -1, dtype=np.int8)
        block[:, : n - 2] = grid[picked % rows, 1 : n - 1]
        labels.append(block)
        graph_index.append((g_of + len(graphs)).astype(np.int32))
        vertices.append(np.full(len(picked), n, dtype=np.int8))
        edge_counts = np.array([sum(bin(c).count("1") for c in cols) for cols in found], dtype=np.int8)
        edges.append(edge_counts[g_of])
        graphs.extend(tuple(tuple(cols[j] >> i & 1 for j in range(n)) for i in range(n)) for cols in found)
    return CellSpace(
        hashes=hashes,
        graphs=graphs,
        graph_index=np.concatenate(graph_index),
        labels=np.concatenate(labels),
        num_vertices=np.concatenate(vertices),
        num_edges=np.concatenate(edges),
    )


# From this many labelled graphs of one vertex count on (the 6- and 7-vertex spaces), hashing is
# split over worker processes, one per usable CPU (at most _MAX_WORKERS): the md5 chain is pure
# CPU work under the GIL. The hashes and their order do not depend on the split.
_PARALLEL_ROWS = 100_000
_MAX_WORKERS = 8


def _workers() -> int:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        usable = os.cpu_count() or 1
    return max(1, min(usable, _MAX_WORKERS))


def _main_importable() -> bool:
    """Whether worker processes (forkserver or spawn) can import the main module again, as they
    do before they run anything: a module run with ``-m``, a script file, or none (``-c``); not
    a program read from standard input."""
    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def _hash_all(graphs: list[tuple[int, ...]], grid: np.ndarray, workers: int | None = None) -> list[str]:
    """``_hash_graphs(graphs, grid)``, over ``workers`` processes (default: the usable CPUs) when
    there are enough rows to pay for them; in this process when there are not, or when worker
    processes cannot be started. (As with any use of worker processes, a script that enumerates
    a large space keeps its top-level code under ``if __name__ == "__main__":``.)"""
    workers = _workers() if workers is None else workers
    if workers < 2 or len(graphs) < 2 or len(graphs) * len(grid) < _PARALLEL_ROWS or not _main_importable():
        return _hash_graphs(graphs, grid)
    pieces = min(len(graphs), 2 * workers)  # a few more pieces than workers, for balance
    bounds = [len(graphs) * k // pieces for k in range(pieces + 1)]
    chunks = [graphs[a:b] for a, b in itertools.pairwise(bounds)]
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    try:
        with ProcessPoolExecutor(min(workers, pieces), mp_context=context) as pool:
            parts = list(pool.map(_hash_graphs, chunks, itertools.repeat(grid)))
    except (OSError, RuntimeError, BrokenProcessPool):  # no worker processes here: do it in this one
        return _hash_graphs(graphs, grid)
    return [h for part in parts for h in part]


def unlabelled_graphs(n: int, max_edges: int = MAX_EDGES) -> list[tuple[int, ...]]:
    """One full DAG per isomorphism class (input and output fixed) on ``n`` vertices with at most
    ``max_edges`` edges, each as in-neighbour bitmasks per vertex (as ``jobs.cell.full_dags``)."""
    return [cols for cols in full_dags(n, max_edges) if _is_canonical(cols)]


def _is_canonical(cols: tuple[int, ...]) -> bool:
    """Whether this encoding is the smallest (as a bit string) among those that renumbering the
    interior vertices in another topological order gives."""
    n = len(cols)
    own = _bits(cols, list(range(n)))
    order = [0]

    def smaller(placed: int) -> bool:
        if len(order) == n - 1:
            return _bits(cols, [*order, n - 1]) < own
        for v in range(1, n - 1):
            if not placed >> v & 1 and cols[v] & ~placed == 0:
                order.append(v)
                found = smaller(placed | 1 << v)
                order.pop()
                if found:
                    return True
        return False

    return not smaller(1)


def _bits(cols: tuple[int, ...], order: list[int]) -> int:
    n = len(cols)
    position = {v: p for p, v in enumerate(order)}
    bits = 0
    for j in range(n):
        for i in range(j):
            if cols[j] >> i & 1:
                bits |= 1 << (n * n - 1 - (position[i] * n + position[j]))
    return bits


@cache
def _labellings(n: int) -> np.ndarray:
    """All labellings of an ``n``-vertex cell as NAS-Bench-101 hash labels: -1 for the input,
    -2 for the output, the op index for interior vertices (last vertex fastest)."""
    k = n - 2
    grid = np.empty((len(OPS) ** k, n), dtype=np.int8)
    grid[:, 0] = -1
    grid[:, n - 1] = -2
    if k:
        grid[:, 1 : n - 1] = np.array(list(itertools.product(range(len(OPS)), repeat=k)), dtype=np.int8)
    return grid


# Each byte value as its two lowercase hex characters, read as one native uint16.
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), dtype=np.uint16)


def _to_hex(digests: np.ndarray) -> np.ndarray:
    """(..., 16) digest bytes -> (..., 32) lowercase hex ASCII bytes."""
    return _HEX_PAIRS[digests].view(np.uint8)


def _md5_rows(text: np.ndarray) -> np.ndarray:
    """md5 digest of every row (a byte string without NUL bytes) of a 2-d uint8 array, as
    (rows, 16) bytes."""
    strings = np.ascontiguousarray(text).view(f"S{text.shape[1]}").ravel().tolist()
    digests = b"".join(map(_DIGEST, map(_md5, strings)))
    return np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16)


def _sorted_hex(hexes: np.ndarray, keys: np.ndarray, first: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """For each row ``i``, the hex strings of the vertices ``vertices[i]`` in ascending string
    order, concatenated. ``hexes`` (rows x vertices, 32) and ``keys`` (rows x vertices, 2: the
    digests as big-endian uint64 halves; hex order is byte order) are flat over (row, vertex);
    ``first[i]`` is the flat index of row ``i``'s vertex 0. Sorted by the first half, and by both
    where first halves tie."""
    count = vertices.shape[1]
    if count == 0:
        return np.empty((len(first), 0), dtype=np.uint8)
    index = first[:, None] + vertices  # (rows, count) flat indices
    if count == 2:
        a, b = keys[index[:, 0]], keys[index[:, 1]]
        swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
        index = np.where(swap[:, None], index[:, ::-1], index)
    elif count > 2:
        hi = keys[:, 0][index]
        order = np.argsort(hi, axis=1, kind="stable")
        ordered = np.take_along_axis(hi, order, axis=1)
        if (ordered[:, 1:] == ordered[:, :-1]).any():  # equal first halves: compare whole digests
            order = np.lexsort((keys[:, 1][index], hi), axis=-1)
        index = np.take_along_axis(index, order, axis=1)
    return hexes.take(index.ravel(), axis=0).reshape(len(first), 32 * count)


def _hash_graphs(graphs: list[tuple[int, ...]], grid: np.ndarray) -> list[str]:
    """``jobs.cell.hash_module`` of every graph (all on the same vertex count) under every
    labelling in ``grid``: graph-major, labelling-minor. The rows of all graphs are processed
    together, grouped by the in- and out-degree of the vertex being rehashed."""
    if not graphs:
        return []
    n = len(graphs[0])
    count = len(grid)
    total = len(graphs) * count
    preds = [[[w for w in range(n) if cols[v] >> w & 1] for v in range(n)] for cols in graphs]
    succs = [[[w for w in range(n) if cols[w] >> v & 1] for v in range(n)] for cols in graphs]
    # The initial hashes: md5(str((out_degree, in_degree, label))).
    table = np.empty((n + 1, n + 1, 5, 16), dtype=np.uint8)
    for out_degree, in_degree, label in itertools.product(range(n + 1), range(n + 1), range(-2, 3)):
        initial = str((out_degree, in_degree, label)).encode("utf-8")
        table[out_degree, in_degree, label + 2] = np.frombuffer(hashlib.md5(initial).digest(), dtype=np.uint8)
    outs = np.repeat(np.array([[len(s) for s in g] for g in succs], dtype=np.intp), count, axis=0)
    ins = np.repeat(np.array([[len(p) for p in g] for g in preds], dtype=np.intp), count, axis=0)
    labels = np.tile(grid.astype(np.intp) + 2, (len(graphs), 1))
    digests = table[outs, ins, labels]  # (total, n, 16)
    # Per vertex, the graphs grouped by (predecessors, successors): one text width per group.
    groups: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
    for v in range(n):
        by_shape: dict[tuple[int, int], list[int]] = {}
        for g in range(len(graphs)):
            by_shape.setdefault((len(preds[g][v]), len(succs[g][v])), []).append(g)
        vertex_groups = []
        for (p, s), members in by_shape.items():
            rows = (np.asarray(members, dtype=np.intp)[:, None] * count + np.arange(count)).ravel()
            pv = np.repeat(np.array([preds[g][v] for g in members], dtype=np.intp).reshape(len(members), p), count, axis=0)
            sv = np.repeat(np.array([succs[g][v] for g in members], dtype=np.intp).reshape(len(members), s), count, axis=0)
            vertex_groups.append((rows, pv, sv))
        groups.append(vertex_groups)
    bar = ord("|")
    for round_ in range(n):
        hexes = _to_hex(digests).reshape(total * n, 32)
        keys = digests.view(">u8").astype(np.uint64).reshape(total * n, 2)  # native order for sorting
        new = np.empty_like(digests)
        for v in range(n):
            for all_rows, all_pv, all_sv in groups[v]:
                rows, pv, sv = all_rows, all_pv, all_sv
                if round_ == 0:
                    # The first round's text depends only on the graph and the labels of the vertex
                    # and its neighbours: most rows repeat one of a few, each hashed once.
                    key = (rows // count).astype(np.int64) * 5**n + labels[rows, v] * 5**v
                    for w in (pv, sv):
                        if w.shape[1]:
                            key += (np.take_along_axis(labels[rows], w, axis=1) * 5**w).sum(axis=1)
                    _, first_of, inverse = np.unique(key, return_index=True, return_inverse=True)
                    rows, pv, sv = rows[first_of], pv[first_of], sv[first_of]
                first = rows * n
                p, q = 32 * pv.shape[1], 32 * sv.shape[1]
                text = np.empty((len(rows), p + q + 34), dtype=np.uint8)
                text[:, :p] = _sorted_hex(hexes, keys, first, pv)
                text[:, p] = bar
                text[:, p + 1 : p + 1 + q] = _sorted_hex(hexes, keys, first, sv)
                text[:, p + 1 + q] = bar
                text[:, p + 2 + q :] = hexes[first + v]
                hashed = _md5_rows(text)
                new[all_rows, v] = hashed[inverse.ravel()] if round_ == 0 else hashed
        digests = new
    # md5(str(sorted(hashes))): "['h1', 'h2', ...]"
    quoted = np.empty((total, n, 36), dtype=np.uint8)
    quoted[:, :, 0] = ord("'")
    quoted[:, :, 33] = ord("'")
    quoted[:, :, 34] = ord(",")
    quoted[:, :, 35] = ord(" ")
    vertices = np.broadcast_to(np.arange(n), (total, n))
    quoted[:, :, 1:33] = _sorted_hex(_to_hex(digests).reshape(total * n, 32),
                                     digests.view(">u8").astype(np.uint64).reshape(total * n, 2),
                                     np.arange(total) * n, vertices).reshape(total, n, 32)
    text = np.empty((total, n * 36), dtype=np.uint8)
    text[:, 0] = ord("[")
    text[:, 1:-1] = quoted.reshape(total, n * 36)[:, :-2]
    text[:, -1] = ord("]")
    strings = text.view(f"S{text.shape[1]}").ravel().tolist()
    return list(map(_HEXDIGEST, map(_md5, strings)))
