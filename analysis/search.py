"""Multi-objective search on a tabular benchmark (EC-NAS section 4): random search, a
hypervolume-based evolutionary algorithm in the spirit of SEMOA, and NSGA-II from Optuna.

Objectives, both minimized, at one budget: ``1 - valid_accuracy`` and ``energy_wh`` (the default
pair; any two of the benchmark's metrics, accuracies turned into errors). Budgets of evaluations
are EC-NAS's: 1,000 random evaluations; 100 generations of 10 for the evolutionary algorithms.
Each run's result is the front of everything it evaluated.

- ``random``: ``evaluations`` cells drawn uniformly (with replacement) from the benchmark.
- ``semoa``: (mu + mu) evolution, mu = ``population``: a random initial population, then per
  generation mu offspring, each a mutation (one edge flipped, or one op changed, until the pruned
  cell is valid and in the benchmark) of a parent drawn uniformly; survivors by non-dominated
  rank, the last admitted rank thinned by dropping the point of least hypervolume contribution
  one at a time (as SMS-EMOA does). Hypervolume selection is the principle EC-NAS's SEMOA is built on.
- ``nsga2``: Optuna's ``NSGAIISampler`` (population ``population``, ``generations`` x
  ``population`` trials) over NAS-Bench-101's encoding (one 0/1 choice per upper-triangle edge
  of a ``max vertices`` cell, one op per interior vertex); a cell that prunes to something
  invalid or not in the benchmark is infeasible (Optuna's constraints) and scores the reference
  point. Optuna, not pymoo: it is maintained, pure Python, its NSGA-II handles categorical
  variables and constraints without a custom encoding, and it is one dependency.

Every algorithm's evaluations count the infeasible ones too. Hypervolumes use one reference point
for all algorithms: 1.1 x the worst value of each objective over the whole benchmark; the
exhaustive front (every cell) gives the best attainable hypervolume.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.pareto import DEFAULT_KNEE_METHOD, hypervolume_2d, knee_index, pareto_mask
from db.errors import CampaignError
from jobs.cell import INPUT, MAX_EDGES, OPS, OUTPUT, CellSpec

ALGORITHMS = ("random", "semoa", "nsga2")
ROLES = (("min_error", "r0"), ("knee", "rk"), ("min_energy", "r1"))


@dataclass(frozen=True)
class SearchSettings:
    """EC-NAS's budgets: 10 runs; 100 generations of 10; 1,000 random evaluations."""

    runs: int = 10
    generations: int = 100
    population: int = 10
    evaluations: int = 1000
    objectives: tuple[str, str] = ("valid_accuracy", "energy_wh")
    seed: int = 0
    knee_method: str = DEFAULT_KNEE_METHOD


class Problem:
    """The benchmark at one budget as an array of objective pairs, indexed by cell."""

    def __init__(self, bench: Any, epochs: int, objectives: Sequence[str] = ("valid_accuracy", "energy_wh"),
                 gpu_type: str | None = None) -> None:
        self.bench = bench
        self.epochs = epochs
        self.objectives = tuple(objectives)
        cols = []
        for key in self.objectives:
            v = np.asarray(bench.column(key, epochs, gpu_type), dtype=np.float64)
            cols.append(1.0 - v if "accuracy" in key else v)
        f = np.column_stack(cols)
        f[~np.all(np.isfinite(f), axis=1)] = np.inf
        self.f = f
        self.names = tuple(f"1 - {k}" if "accuracy" in k else k for k in self.objectives)
        finite = f[np.all(np.isfinite(f), axis=1)]
        if len(finite) == 0:
            raise ValueError(f"no cell of the benchmark has finite {' and '.join(self.objectives)} at {epochs} epochs")
        worst = finite.max(axis=0)
        ref = [float(w * 1.1 if w > 0 else w + 0.1) for w in worst]
        self.reference: tuple[float, float] = (ref[0], ref[1])
        self.max_vertices = int(bench.max_vertices)
        models = bench.metadata.get("models", {})
        gpu = gpu_type or (bench.gpu_types[0] if bench.gpu_types else "")
        kind = models.get(gpu, {}).get("power_kind", "unknown")
        #: How the energies were obtained, for figures: the campaign's power kind, predicted where not measured.
        self.energy_label = (f"{gpu}, {'SIMULATED power, ' if kind == 'simulated' else kind + ' energy, '}"
                             "surrogate-predicted where not measured")
        self._hash_cache: dict[tuple[Any, ...], int | None] = {}

    def __len__(self) -> int:
        return len(self.f)

    def index(self, matrix: Sequence[Sequence[int]], ops: Sequence[str]) -> int | None:
        """The benchmark index of the cell (after pruning), or None if it is invalid or absent."""
        key = (tuple(map(tuple, matrix)), tuple(ops))
        if key in self._hash_cache:
            return self._hash_cache[key]
        try:
            spec = CellSpec.create(matrix, ops)
            idx = self.bench.index_of(spec.arch_hash) if len(spec.matrix) <= self.max_vertices else None
        except ValueError:
            idx = None
        self._hash_cache[key] = idx
        return idx

    def exhaustive_front(self) -> np.ndarray:
        return self.f[pareto_mask(np.where(np.isfinite(self.f), self.f, np.nan))]

    def hypervolume(self, indices: Sequence[int] | np.ndarray) -> float:
        pts = self.f[np.asarray(indices, dtype=np.int64)] if len(indices) else np.zeros((0, 2))
        return hypervolume_2d(pts, self.reference)

    # -- the encoding the evolutionary algorithms vary: a padded max_vertices cell
    def padded(self, idx: int, rng: random.Random) -> tuple[list[list[int]], list[str]]:
        m, ops = self.bench.cell(self.bench.hash_at(idx))
        n, v = len(m), self.max_vertices
        big = [[0] * v for _ in range(v)]
        for i in range(n - 1):
            for j in range(n - 1):
                big[i][j] = m[i][j]
            big[i][v - 1] = m[i][n - 1]
        interior = list(ops[1 : n - 1]) + [rng.choice(OPS) for _ in range(v - n)]
        return big, [INPUT, *interior, OUTPUT]

    def mutate(self, idx: int, rng: random.Random, tries: int = 100) -> int:
        """A neighbour of cell ``idx``: one edge flipped or one op changed, valid and in the benchmark."""
        for _ in range(tries):
            m, ops = self.padded(idx, rng)
            v = len(m)
            if v > 2 and rng.random() < 0.5:
                k = rng.randrange(1, v - 1)
                ops[k] = rng.choice([o for o in OPS if o != ops[k]])
            else:
                i = rng.randrange(v - 1)
                j = rng.randrange(i + 1, v)
                m[i][j] = 1 - m[i][j]
                if sum(map(sum, m)) > MAX_EDGES:
                    continue
            new = self.index(m, ops)
            if new is not None and new != idx:
                return new
        return rng.randrange(len(self))


@dataclass
class RunResult:
    algorithm: str
    run: int
    evaluated: list[int]  # cell indices in evaluation order (-1: an infeasible evaluation)
    hypervolume: float = math.nan
    front: list[int] = field(default_factory=list)


def front_of(problem: Problem, evaluated: Sequence[int]) -> list[int]:
    """Distinct feasible cells of ``evaluated`` on their front, by first objective ascending."""
    idx = np.unique(np.asarray([i for i in evaluated if i >= 0], dtype=np.int64))
    if len(idx) == 0:
        return []
    pts = problem.f[idx]
    keep = idx[pareto_mask(np.where(np.isfinite(pts), pts, np.nan))]
    return [int(i) for i in keep[np.lexsort((problem.f[keep, 1], problem.f[keep, 0]))]]


def random_search(problem: Problem, settings: SearchSettings, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.integers(0, len(problem), size=settings.evaluations)]


def _hv_contributions(points: np.ndarray, reference: Sequence[float]) -> np.ndarray:
    total = hypervolume_2d(points, reference)
    return np.array([total - hypervolume_2d(np.delete(points, k, axis=0), reference) for k in range(len(points))])


def _ranks(points: np.ndarray) -> np.ndarray:
    rank = np.full(len(points), -1)
    left = np.arange(len(points))
    r = 0
    while len(left):
        p = points[left]
        mask = pareto_mask(np.where(np.isfinite(p), p, np.nan))
        if not mask.any():  # infinite rows: last
            rank[left] = r
            break
        rank[left[mask]] = r
        left = left[~mask]
        r += 1
    return rank


def semoa(problem: Problem, settings: SearchSettings, seed: int) -> list[int]:
    rng = random.Random(seed)
    mu = settings.population
    pop = [rng.randrange(len(problem)) for _ in range(mu)]
    evaluated = list(pop)
    ref = problem.reference
    for _ in range(settings.generations - 1):
        children = [problem.mutate(rng.choice(pop), rng) for _ in range(mu)]
        evaluated += children
        pool = list(dict.fromkeys(pop + children))  # distinct cells
        if len(pool) <= mu:
            pop = pool + [rng.randrange(len(problem)) for _ in range(mu - len(pool))]
            continue
        pts = problem.f[pool]
        rank = _ranks(pts)
        chosen: list[int] = []
        for r in range(int(rank.max()) + 1):
            layer = [k for k in range(len(pool)) if rank[k] == r]
            if len(chosen) + len(layer) <= mu:
                chosen += layer
                continue
            while len(chosen) + len(layer) > mu:
                lp = np.where(np.isfinite(pts[layer]), pts[layer], np.array(ref) * 10)
                contrib = _hv_contributions(lp, ref)
                layer.pop(int(np.argmin(contrib)))
            chosen += layer
            break
        pop = [pool[k] for k in chosen]
    return evaluated


def nsga2(problem: Problem, settings: SearchSettings, seed: int) -> list[int]:
    try:
        import optuna
    except ImportError:
        raise CampaignError("algo=nsga2 needs Optuna (pip install 'optuna>=5.0,<6'); random and semoa run "
                            "without it") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    v = problem.max_vertices
    edges = [(i, j) for i in range(v) for j in range(i + 1, v)]
    evaluated: list[int] = []

    def objective(trial: Any) -> tuple[float, float]:
        m = [[0] * v for _ in range(v)]
        for i, j in edges:
            m[i][j] = int(trial.suggest_categorical(f"e{i}_{j}", [0, 1]))
        ops = [INPUT, *(trial.suggest_categorical(f"op{k}", list(OPS)) for k in range(1, v - 1)), OUTPUT]
        idx = problem.index(m, ops) if sum(map(sum, m)) <= MAX_EDGES else None
        evaluated.append(-1 if idx is None else idx)
        trial.set_constraint("invalid_cell", 0.0 if idx is not None else 1.0)
        if idx is None or not np.all(np.isfinite(problem.f[idx])):
            return problem.reference
        return float(problem.f[idx, 0]), float(problem.f[idx, 1])

    sampler = optuna.samplers.NSGAIISampler(population_size=settings.population, seed=seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=settings.generations * settings.population)
    return evaluated


RUNNERS = {"random": random_search, "semoa": semoa, "nsga2": nsga2}


@dataclass
class Study:
    problem: Problem
    settings: SearchSettings
    results: list[RunResult]

    @property
    def reference(self) -> tuple[float, float]:
        return self.problem.reference

    @property
    def exhaustive_hypervolume(self) -> float:
        return self.problem.hypervolume(np.flatnonzero(np.all(np.isfinite(self.problem.f), axis=1)))

    def hypervolume_summary(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for algo in dict.fromkeys(r.algorithm for r in self.results):
            hv = np.array([r.hypervolume for r in self.results if r.algorithm == algo])
            out[algo] = (float(hv.mean()), float(hv.std(ddof=1)) if len(hv) > 1 else 0.0)
        return out


def run_study(bench: Any, algorithms: Sequence[str], settings: SearchSettings | None = None, epochs: int = 4,
              gpu_type: str | None = None) -> Study:
    """Every algorithm ``settings.runs`` times (run r seeded ``settings.seed + r``)."""
    settings = settings or SearchSettings()
    unknown = [a for a in algorithms if a not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown algorithm(s) {unknown}; known: {', '.join(RUNNERS)}")
    problem = Problem(bench, epochs, settings.objectives, gpu_type)
    results = []
    for algo in algorithms:
        for r in range(settings.runs):
            evaluated = RUNNERS[algo](problem, settings, settings.seed + r)
            front = front_of(problem, evaluated)
            results.append(RunResult(algo, r, evaluated, problem.hypervolume(front), front))
    return Study(problem, settings, results)


# --------------------------------------------------------------------------------------------
# Tables


def fronts_table(study: Study) -> pd.DataFrame:
    p, rows = study.problem, []
    for res in study.results:
        for i in res.front:
            h = p.bench.hash_at(i)
            q = p.bench.query_hash(h, p.epochs)
            rows.append({"algorithm": res.algorithm, "run": res.run, "arch_hash": h,
                         p.names[0]: p.f[i, 0], p.names[1]: p.f[i, 1], "valid_accuracy": q["valid_accuracy"],
                         "energy_wh": q["energy_wh"], "energy_source": q["energy_source"],
                         "training_time_s": q["training_time_s"], "params": q["params"]})
    return pd.DataFrame(rows)


def hypervolume_table(study: Study) -> pd.DataFrame:
    best = study.exhaustive_hypervolume
    ref = study.reference
    rows = [{"algorithm": r.algorithm, "run": r.run, "evaluations": len(r.evaluated), "front_size": len(r.front),
             "hypervolume": r.hypervolume, "exhaustive_hypervolume": best,
             "relative": r.hypervolume / best if best > 0 else math.nan,
             f"reference_{study.problem.names[0]}": ref[0], f"reference_{study.problem.names[1]}": ref[1]}
            for r in study.results]
    return pd.DataFrame(rows)


def knee_extrema_table(study: Study) -> pd.DataFrame:
    """EC-NAS table 2: per algorithm, the extrema r0 (lowest error), r1 (lowest energy) and the knee
    rk of each run's front, mean and standard deviation over the runs."""
    p = study.problem
    rows = []
    for algo in dict.fromkeys(r.algorithm for r in study.results):
        picks: dict[str, list[dict[str, float]]] = {role: [] for role, _ in ROLES}
        for res in (r for r in study.results if r.algorithm == algo):
            if not res.front:
                continue
            pts = p.f[res.front]
            k = knee_index(pts, study.settings.knee_method)
            for role, i in (("min_error", 0), ("knee", k), ("min_energy", len(res.front) - 1)):
                if i is None:
                    continue
                q = p.bench.query_hash(p.bench.hash_at(res.front[i]), p.epochs)
                picks[role].append({"valid_accuracy": q["valid_accuracy"], "energy_kwh": q["energy_wh"] / 1000.0,
                                    "training_time_s": q["training_time_s"], "params_m": q["params"] / 1e6})
        for role, label in ROLES:
            df = pd.DataFrame(picks[role])
            row: dict[str, Any] = {"algorithm": algo, "point": label, "role": role, "runs": len(df),
                                   "knee_method": study.settings.knee_method if role == "knee" else ""}
            for col in ("valid_accuracy", "energy_kwh", "training_time_s", "params_m"):
                row[f"{col}_mean"] = float(df[col].mean()) if len(df) else math.nan
                row[f"{col}_std"] = float(df[col].std(ddof=1)) if len(df) > 1 else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def attainment_table(study: Study, points: int = 200) -> pd.DataFrame:
    """Per algorithm, on a grid of the second objective (energy): the best first objective (error)
    each run attains at or below it; median and interquartile range over the runs."""
    p = study.problem
    fronts = [p.f[r.front] for r in study.results if r.front]
    if not fronts:
        return pd.DataFrame(columns=["algorithm", "x", "median", "q25", "q75"])
    allx = np.concatenate([f[:, 1] for f in fronts])
    lo, hi = float(allx.min()), float(allx.max())
    grid = np.geomspace(lo, hi, points) if lo > 0 else np.linspace(lo, hi, points)
    rows = []
    for algo in dict.fromkeys(r.algorithm for r in study.results):
        curves = []
        for r in (r for r in study.results if r.algorithm == algo and r.front):
            f = p.f[r.front]
            order = np.argsort(f[:, 1])
            xs, ys = f[order, 1], np.minimum.accumulate(f[order, 0])
            pos = np.searchsorted(xs, grid, side="right") - 1
            curves.append(np.where(pos >= 0, ys[np.clip(pos, 0, None)], np.nan))
        c = np.array(curves)
        with np.errstate(all="ignore"):
            q = np.nanpercentile(np.where(np.isnan(c), np.inf, c), [25, 50, 75], axis=0)
        for x, a, m, b in zip(grid, q[0], q[1], q[2], strict=True):
            rows.append({"algorithm": algo, "x": x, "median": m, "q25": a, "q75": b})
    return pd.DataFrame(rows).rename(columns={"x": p.names[1]})


# --------------------------------------------------------------------------------------------
# Figures and files


def _figure(width: float, height: float, **kw: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", **kw)


def attainment_figure(study: Study, table: pd.DataFrame, path: Path) -> Path:
    p = study.problem
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    front = p.exhaustive_front()
    front = front[np.argsort(front[:, 1])]
    ax.step(front[:, 1], front[:, 0], where="post", color="black", lw=0.8, ls=":", label="exhaustive front")
    for k, (algo, grp) in enumerate(table.groupby("algorithm", sort=False)):
        color = f"C{k}"
        x = grp[p.names[1]].to_numpy()
        ok = np.isfinite(grp["median"].to_numpy())
        ax.step(x[ok], grp["median"].to_numpy()[ok], where="post", color=color, label=f"{algo} (median)")
        lo, hi = grp["q25"].to_numpy(), grp["q75"].to_numpy()
        band = np.isfinite(lo) & np.isfinite(hi)
        ax.fill_between(x[band], lo[band], hi[band], step="post", color=color, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel(f"{p.names[1]} (energy at {p.epochs} epochs)" if "energy" in p.names[1] else p.names[1])
    ax.set_ylabel(p.names[0])
    ax.set_title(f"Attainment curves, median and IQR over {study.settings.runs} run(s)\n({p.energy_label})",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return path


def radar_figure(table: pd.DataFrame, path: Path) -> Path:
    """Knee of each algorithm on axes where larger is better, each scaled by its best algorithm:
    validation accuracy, 1/energy, 1/training time, 1/parameters."""
    knees = table[table["role"] == "knee"].set_index("algorithm")
    axes = [("valid_accuracy_mean", "accuracy", False), ("energy_kwh_mean", "1 / energy", True),
            ("training_time_s_mean", "1 / time", True), ("params_m_mean", "1 / params", True)]
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot(projection="polar")
    angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False)
    for k, (algo, row) in enumerate(knees.iterrows()):
        vals = []
        for col, _, inverse in axes:
            v = np.asarray(knees[col], dtype=np.float64)
            v = 1.0 / v if inverse else v
            mine = 1.0 / row[col] if inverse else row[col]
            vals.append(float(mine / np.nanmax(v)) if np.isfinite(mine) and np.nanmax(v) > 0 else 0.0)
        ax.plot(np.append(angles, angles[0]), vals + vals[:1], color=f"C{k}", label=str(algo))
        ax.fill(np.append(angles, angles[0]), vals + vals[:1], color=f"C{k}", alpha=0.1)
    ax.set_xticks(angles, [a[1] for a in axes])
    ax.set_ylim(0, 1.05)
    ax.set_title("Knee of each algorithm (scaled by the best)")
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=120)
    return path


def write_study(study: Study, folder: str | Path) -> list[Path]:
    """fronts.csv, hypervolume.csv, attainment.csv, knee_extrema.csv (EC-NAS table 2),
    attainment.png and radar.png under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table2 = knee_extrema_table(study)
    attain = attainment_table(study)
    files = []
    for name, df in (("fronts.csv", fronts_table(study)), ("hypervolume.csv", hypervolume_table(study)),
                     ("attainment.csv", attain), ("knee_extrema.csv", table2)):
        df.to_csv(folder / name, index=False)
        files.append(folder / name)
    files.append(attainment_figure(study, attain, folder / "attainment.png"))
    files.append(radar_figure(table2, folder / "radar.png"))
    return files
