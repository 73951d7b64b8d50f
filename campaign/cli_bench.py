"""``campaign benchmark`` and ``campaign search``: a campaign's measurements as a tabular energy
benchmark of a whole cell space, and multi-objective search on it.

    campaign benchmark NAME [space=all|4v|5v|7v] [epochs=[4,12,36,108]] [members=4]
                       [nasbench=FILE] [overrides...]
    campaign search NAME [algo=random|semoa|nsga2|all] [runs=10] [epochs=4] [generations=100]
                    [population=10] [evaluations=1000] [benchmark=FILE]
                    [objectives=valid_accuracy,energy_wh] [overrides...]

Both take Hydra overrides (``root=DIR``, ``db.url=URL``) like every command. The keys above that
are not campaign settings (space, members, nasbench, algo, runs, generations, population,
evaluations, benchmark, and epochs, whose meaning here is the benchmark's budgets) are read here.
``nasbench=FILE`` points at NAS-Bench-101's published TFRecord file: its accuracies fill the
cells the campaign did not measure (read without TensorFlow). The
benchmark is written to ROOT/NAME/benchmark/NAME-SPACE.parquet; search reads the newest file
there (or ``benchmark=FILE``) and writes ROOT/NAME/search/.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from db.errors import CampaignError, ConfigError

#: EC-NAS's spaces: name -> (max vertices, max edges). ``all`` is NAS-Bench-101's whole space.
SPACES: dict[str, tuple[int, int]] = {"all": (7, 9), "4v": (4, 9), "5v": (5, 9), "7v": (7, 9)}
#: EC-NAS's budgets.
DEFAULT_EPOCHS = (4, 12, 36, 108)
BENCH_KEYS = ("space", "epochs", "members", "nasbench")
SEARCH_KEYS = ("algo", "runs", "epochs", "generations", "population", "evaluations", "benchmark", "objectives")


def register(subparsers: Any, common: Callable[[argparse.ArgumentParser], None] = lambda p: None) -> None:
    """Add ``benchmark`` and ``search`` to the ``campaign`` command's subparsers (``common`` adds
    the options every command takes)."""
    bench = subparsers.add_parser(
        "benchmark", help="write a tabular energy benchmark of a cell space from a campaign's runs",
        description="measured energy, time and accuracy where the campaign measured a cell, predicted (with a "
                    "spread) elsewhere, for every cell of a space and every budget, in one Parquet file under "
                    "ROOT/NAME/benchmark/. Keys: space=all|4v|5v|7v (default all), epochs=[4,12,36,108], members=4, "
                    "nasbench=FILE (NAS-Bench-101's TFRecord file: its accuracies for unmeasured cells)")
    common(bench)
    bench.add_argument("name", help="campaign name")
    bench.add_argument("overrides", nargs="*", help="space=..., epochs=[...], and Hydra overrides (root=DIR db.url=URL)")
    bench.set_defaults(fn=cmd_benchmark)
    search = subparsers.add_parser(
        "search", help="multi-objective search (random, SEMOA-like, NSGA-II) on a campaign's benchmark",
        description="runs each algorithm runs=N times on the newest benchmark under ROOT/NAME/benchmark/ and writes "
                    "fronts, attainment curves, hypervolumes, EC-NAS's table 2 (extrema and knee) and figures to "
                    "ROOT/NAME/search/. Keys: algo=random|semoa|nsga2|all (default all), runs=10, epochs=4, "
                    "generations=100, population=10, evaluations=1000, benchmark=FILE, "
                    "objectives=valid_accuracy,energy_wh")
    common(search)
    search.add_argument("name", help="campaign name")
    search.add_argument("overrides", nargs="*", help="algo=..., runs=N, and Hydra overrides (root=DIR db.url=URL)")
    search.set_defaults(fn=cmd_search)


# --------------------------------------------------------------------------------------------
# Our keys


def split_keys(overrides: Sequence[str], keys: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The ``key=value`` items whose key is one of ``keys``, and the rest (Hydra's)."""
    ours: dict[str, str] = {}
    rest: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in keys:
            if key in ours:
                raise ConfigError(f"{key}= is given twice ({ours[key]!r} and {value!r}); give it once")
            ours[key] = value
        else:
            rest.append(item)
    return ours, rest


def _int(key: str, value: str, low: int = 1) -> int:
    try:
        n = int(value)
    except ValueError:
        n = low - 1
    if n < low:
        raise ConfigError(f"{key}={value!r} must be an integer >= {low}")
    return n


def parse_epochs(value: str | None, default: Sequence[int] = DEFAULT_EPOCHS) -> list[int]:
    """``[4,12]``, ``4,12`` or ``4`` as a sorted list of distinct positive budgets."""
    if value is None:
        return list(default)
    items = [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
    if not items:
        raise ConfigError(f"epochs={value!r} names no budget; give e.g. epochs=[4,12,36,108]")
    return sorted({_int("epochs", v) for v in items})


def parse_space(value: str | None) -> str:
    space = (value or "all").lower()
    if space not in SPACES:
        raise ConfigError(f"space={value!r} is not one of {', '.join(SPACES)}")
    return space


# --------------------------------------------------------------------------------------------
# The space as columns, with parameters and FLOPs


def cell_table(space: str, network: Any) -> Any:
    """The cells of ``space`` (``jobs.space``) as an ``analysis.benchmark.CellTable``, with the
    network's parameter counts and FLOPs.

    Parameters and FLOPs are sums over the cell's vertices of a term that depends on the graph and
    on that vertex's op only (``jobs.network``'s counts), so they are computed per graph, once for
    all-maxpool ops and once per vertex and conv op, with ``count_params``/``count_flops``
    themselves, and combined per cell in numpy: 2,494 graphs instead of 423,624 cells.
    """
    import numpy as np

    from analysis.benchmark import CellTable
    from analysis.surrogate import OP_CODES, pad_cell
    from jobs.cell import INPUT, OPS, OUTPUT, CellSpec
    from jobs.network import count_flops, count_params
    from jobs.space import cell_space

    max_v, max_e = SPACES[space]
    cells = cell_space(max_v, max_e)
    graphs = cells.graphs
    n_graphs = len(graphs)
    width = 5
    pmax = OPS.index("maxpool3x3")
    base = np.zeros((2, n_graphs), dtype=np.int64)
    extra = np.zeros((2, n_graphs, width, len(OPS)), dtype=np.int64)  # [count, graph, vertex, op]
    padded = np.zeros((n_graphs, 7, 7), dtype=np.int8)
    for gi, m in enumerate(graphs):
        n = len(m)
        ops = [INPUT, *["maxpool3x3"] * (n - 2), OUTPUT]
        padded[gi] = pad_cell(m, ops)[0]
        spec = CellSpec.trusted(m, tuple(ops))
        base[:, gi] = count_params(spec, network), count_flops(spec, network)
        for v in range(1, n - 1):
            for k, op in enumerate(OPS):
                if k == pmax:
                    continue
                o = list(ops)
                o[v] = op
                s = CellSpec.trusted(m, tuple(o))
                extra[:, gi, v - 1, k] = count_params(s, network) - base[0, gi], count_flops(s, network) - base[1, gi]
    gidx = cells.graph_index.astype(np.int64)
    labels = np.full((len(cells), width), pmax, dtype=np.int64)
    lab = cells.labels.astype(np.int64)
    labels[:, : lab.shape[1]] = np.where(lab < 0, pmax, lab)
    cols = np.arange(width)
    counts = base[:, gidx] + extra[:, gidx[:, None], cols[None, :], labels].sum(axis=2)
    code_of = np.array([OP_CODES[op] for op in OPS] + [0], dtype=np.int8)  # index -1 -> padding
    codes = np.zeros((len(cells), 7), dtype=np.int8)
    codes[:, 0], codes[:, 6] = OP_CODES[INPUT], OP_CODES[OUTPUT]
    codes[:, 1 : 1 + lab.shape[1]] = code_of[lab]
    return CellTable(hashes=list(cells.hashes), adjacency=padded[gidx], codes=codes,
                     num_vertices=cells.num_vertices.astype(np.int8), num_edges=cells.num_edges.astype(np.int8),
                     params=counts[0], flops=counts[1],
                     description=f"{space}: at most {max_v} vertices and {max_e} edges ({len(cells):,} cells)")


def campaign_runs(runs: list[dict[str, Any]]) -> Any:
    """Finished runs as the benchmark reads them, with power_kind; where a GPU type has measured runs
    its simulated ones are left out (never pooled)."""
    import pandas as pd

    df = pd.DataFrame(runs)
    if df.empty:
        return df
    kind = {"nvml": "measured", "rapl": "measured", "simulated": "simulated"}
    df["power_kind"] = df["power_source"].map(lambda s: kind.get(str(s), "unknown"))
    measured = df.groupby("gpu_type")["power_kind"].transform(lambda k: (k == "measured").any())
    return df[~measured | (df["power_kind"] == "measured")].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Commands


def _open(name: str, overrides: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    from analysis.read import find_campaign
    from campaign.config import compose, db_url
    from campaign.session import campaign_paths
    from db.read import CampaignReader

    cfg = compose(list(overrides))
    url = db_url(cfg)
    reader = CampaignReader.open(url)
    info = find_campaign(reader, name)
    return cfg, reader, info, campaign_paths(overrides, cfg, info)


def cmd_benchmark(args: argparse.Namespace, console: Console) -> int:
    import dataclasses

    from analysis.benchmark import generate, read_nasbench101, write
    from campaign.revision import code_revision
    from jobs.network import NetworkConfig

    ours, rest = split_keys(args.overrides, BENCH_KEYS)
    space = parse_space(ours.get("space"))
    epochs = parse_epochs(ours.get("epochs"))
    members = _int("members", ours["members"]) if "members" in ours else 4
    nasbench = Path(ours["nasbench"]).expanduser() if "nasbench" in ours else None
    if nasbench is not None and not nasbench.is_file():
        raise ConfigError(f"nasbench={ours['nasbench']!r} is not a file; give NAS-Bench-101's .tfrecord file")
    _, reader, info, paths = _open(args.name, rest)
    try:
        runs = campaign_runs(reader.runs(info.id))
    finally:
        reader.engine.dispose()
    if runs.empty:
        raise CampaignError(f"campaign {info.name!r} has no finished run; run it (campaign resume {info.name}) first")
    recorded = info.config.get("network") or {}
    names = {f.name for f in dataclasses.fields(NetworkConfig)}
    network = NetworkConfig(**{k: v for k, v in recorded.items() if k in names})
    t0 = time.perf_counter()
    published = read_nasbench101(nasbench) if nasbench is not None else None
    cells = cell_table(space, network)
    t_cells = time.perf_counter() - t0
    try:
        table, meta = generate(cells, runs, epochs, campaign=info.name, revision=code_revision(),
                               network=dataclasses.asdict(network), space=cells.description, members=members,
                               published_accuracy=published, model_dir=paths.folder / "benchmark")
    except ValueError as exc:  # e.g. runs without a finite energy
        raise CampaignError(str(exc).splitlines()[0]) from None
    out = write(table, paths.folder / "benchmark" / f"{info.name}-{space}.parquet")
    seconds = time.perf_counter() - t0
    measured = sum(m["measured_rows"] for m in meta["models"].values())
    kinds = ", ".join(f"{g}: {m['power_kind']}" for g, m in meta["models"].items())
    console.print(f"benchmark of campaign {info.name}: {len(cells):,} cells x {len(epochs)} budget(s) "
                  f"{epochs} x {len(meta['gpu_types'])} GPU type(s) = {table.num_rows:,} rows, {measured:,} measured "
                  f"({kinds}), the rest predicted; {seconds:.1f} s ({t_cells:.1f} s for the space)")
    saved = [m["energy_model_file"] for m in meta["models"].values() if "energy_model_file" in m]
    console.print(f"written to {out} (energy models beside it: {', '.join(saved)})")
    return 0


def latest_benchmark(folder: Path) -> Path:
    files = sorted(folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not files:
        raise CampaignError(f"no benchmark under {folder}; write one first with campaign benchmark NAME")
    return files[-1]


def cmd_search(args: argparse.Namespace, console: Console) -> int:
    from analysis.benchmark import NUMERIC, Benchmark
    from analysis.search import ALGORITHMS, SearchSettings, run_study, write_study

    ours, rest = split_keys(args.overrides, SEARCH_KEYS)
    algo = ours.get("algo", "all").lower()
    algos = list(ALGORITHMS) if algo == "all" else [algo]
    if algos[0] not in ALGORITHMS:
        raise ConfigError(f"algo={ours.get('algo')!r} is not one of {', '.join([*ALGORITHMS, 'all'])}")
    objectives = tuple(o.strip() for o in ours.get("objectives", "valid_accuracy,energy_wh").strip("[]").split(","))
    if len(objectives) != 2 or any(o not in NUMERIC for o in objectives):
        raise ConfigError(f"objectives={ours.get('objectives')!r} must name two metrics of {', '.join(NUMERIC)} "
                          "(accuracies are turned into errors)")
    settings = SearchSettings(
        objectives=(objectives[0], objectives[1]),
        runs=_int("runs", ours["runs"]) if "runs" in ours else 10,
        generations=_int("generations", ours["generations"]) if "generations" in ours else 100,
        population=_int("population", ours["population"], 2) if "population" in ours else 10,
        evaluations=_int("evaluations", ours["evaluations"]) if "evaluations" in ours else 1000,
    )
    _, reader, info, paths = _open(args.name, rest)
    reader.engine.dispose()
    path = Path(ours["benchmark"]) if "benchmark" in ours else latest_benchmark(paths.folder / "benchmark")
    bench = Benchmark.load(path)
    epochs = parse_epochs(ours.get("epochs"), default=[4 if 4 in bench.epochs else bench.epochs[0]])
    if len(epochs) != 1 or epochs[0] not in bench.epochs:
        raise ConfigError(f"epochs={ours.get('epochs')!r} must be one budget of the benchmark: {list(bench.epochs)}")
    t0 = time.perf_counter()
    study = run_study(bench, algos, settings, epochs=epochs[0])
    files = write_study(study, paths.folder / "search")
    console.print(f"search on {path.name} ({len(bench):,} cells, {epochs[0]} epochs): {', '.join(algos)} x "
                  f"{settings.runs} run(s) in {time.perf_counter() - t0:.1f} s")
    for algo_name, hv in study.hypervolume_summary().items():
        console.print(f"  {algo_name}: hypervolume {hv[0]:.4g} +- {hv[1]:.2g} (reference {study.reference})")
    console.print(f"written to {paths.folder / 'search'}: {', '.join(f.name for f in files)}")
    return 0
