"""Multi-objective view (EC-NAS section 4): Pareto front of (1 - validation accuracy, energy).

Both objectives are minimized. Per epoch budget:

- the **front**: architectures no other architecture beats in one objective without losing in the
  other (an exact duplicate of a front point is kept once, the first in input order);
- the **extrema**: the front's two ends, lowest error (EC-NAS's r0) and lowest energy (r1);
- the **knee** (r_k), by one of two methods (`KNEE_METHODS`), both on objectives min-max
  normalized over the front (so the extrema are (0, 1) and (1, 0)); fronts of fewer than 3 points
  have no knee:

  * ``"extrema_line"`` (the default): the interior point farthest from the straight line through
    the two extrema, on the side towards the ideal point (``1 - x - y``, up to the constant
    ``1/sqrt 2``). It looks at the whole front, so a small zigzag between close neighbours cannot
    win; on EC-NAS's published 7-vertex search runs it reproduces table 2's knee, where the
    local-turn angle lands on such zigzags. It is the default for that reason.
  * ``"turn"``: the interior point where the front turns most sharply between its neighbours. The
    direction of the segment arriving from the lower-error neighbour and of the one leaving to
    the lower-energy neighbour are taken with ``arctan2(d_energy, d_error)``; the knee maximizes
    the turn ``theta_out - theta_in`` (wrapped to (-180, 180] degrees), the point whose interior
    angle between the two segments is smallest. Local: on a jagged front it picks a sharp
    zigzag, not the front's overall bend;
- the **hypervolume**: the area dominated by the front and bounded by a reference point, by default
  1.1 x the front's nadir (its worst error and worst energy; an objective whose nadir is 0 gets
  0.1). Compare hypervolumes only under one explicit reference point.

Architectures are first aggregated over their seeds (`aggregate_architectures`), so every point
is one (architecture, budget) with mean and std of its metrics, as EC-NAS's Table 2 reports.

Pure computation: the figures of fronts are drawn by ``analysis.figures`` (`pareto_figure`,
`plot_pareto_fronts`), which reads these results; this module imports no plotting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.carbon import J_PER_KWH

ROLES = ("min_error", "knee", "min_energy")
#: Knee methods (see the module docstring); the first is the default.
KNEE_METHODS = ("extrema_line", "turn")
DEFAULT_KNEE_METHOD = KNEE_METHODS[0]


def pareto_mask(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of an (n, 2) array (both columns minimized).

    Rows with NaN are never on the front; of identical rows only the first is.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros(len(p), dtype=bool)
    finite = np.flatnonzero(np.all(np.isfinite(p), axis=1))
    order = finite[np.lexsort((finite, p[finite, 1], p[finite, 0]))]  # by f1, then f2, then index
    best_f2 = math.inf
    for i in order:
        if p[i, 1] < best_f2:
            mask[i] = True
            best_f2 = p[i, 1]
    return mask


def _normalized(front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The front's objectives min-max normalized over it, and a NaN score per point to fill."""
    f = np.asarray(front, dtype=np.float64).reshape(-1, 2)
    lo, span = f.min(axis=0) if len(f) else 0.0, np.ptp(f, axis=0) if len(f) else 1.0
    return (f - lo) / np.where(span > 0, span, 1.0), np.full(len(f), np.nan)


def turn_angles_deg(front: np.ndarray) -> np.ndarray:
    """Turn of the front at each point (degrees; NaN at the two ends), front sorted by f1 ascending.

    Objectives are min-max normalized over the front; segment directions come from ``arctan2``;
    the turn is ``theta_out - theta_in`` wrapped to (-180, 180].
    """
    z, out = _normalized(front)
    if len(z) < 3:
        return out
    d = np.diff(z, axis=0)
    theta = np.arctan2(d[:, 1], d[:, 0])
    turn = theta[1:] - theta[:-1]
    turn = (turn + np.pi) % (2 * np.pi) - np.pi
    turn[turn == -np.pi] = np.pi
    out[1:-1] = np.degrees(turn)
    return out


def extrema_line_distances(front: np.ndarray) -> np.ndarray:
    """Signed distance of each front point from the line through the front's two extrema, with both
    objectives min-max normalized over the front (positive: towards the ideal point); NaN at the
    two ends. ``front`` is sorted by f1 ascending."""
    z, out = _normalized(front)
    if len(z) < 3:
        return out
    out[1:-1] = (1.0 - z[1:-1, 0] - z[1:-1, 1]) / math.sqrt(2.0)
    return out


def knee_index(front: np.ndarray, method: str = DEFAULT_KNEE_METHOD) -> int | None:
    """Index (into ``front``, sorted by f1 ascending) of the knee by ``method`` (`KNEE_METHODS`),
    or None for fewer than 3 points. Ties go to the lower-error point."""
    if method not in KNEE_METHODS:
        raise ValueError(f"knee method {method!r} is not one of {', '.join(KNEE_METHODS)}")
    score = extrema_line_distances(front) if method == "extrema_line" else turn_angles_deg(front)
    if len(score) < 3:
        return None
    return int(np.nanargmax(score))


def reference_point(front: np.ndarray, factor: float = 1.1) -> tuple[float, float]:
    """The default hypervolume reference: ``factor`` x the front's nadir (0.1 where the nadir is 0)."""
    f = np.asarray(front, dtype=np.float64).reshape(-1, 2)
    if len(f) == 0:
        raise ValueError("an empty front has no nadir; pass a reference point")
    nadir = f.max(axis=0)
    ref = np.where(nadir > 0, factor * nadir, nadir + (factor - 1.0))
    return float(ref[0]), float(ref[1])


def hypervolume_2d(points: np.ndarray | Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by ``points`` (both objectives minimized) and bounded by ``reference``.

    Points not strictly better than the reference in both objectives add nothing.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    rx, ry = float(reference[0]), float(reference[1])
    p = p[np.all(np.isfinite(p), axis=1) & (p[:, 0] < rx) & (p[:, 1] < ry)]
    if len(p) == 0:
        return 0.0
    f = p[pareto_mask(p)]
    f = f[np.argsort(f[:, 0], kind="mergesort")]
    right = np.append(f[1:, 0], rx)
    return float(np.sum((right - f[:, 0]) * (ry - f[:, 1])))


# --------------------------------------------------------------------------------------------
# Over a runs table


def aggregate_architectures(runs: pd.DataFrame, by: Sequence[str] = ("arch_hash", "epochs")) -> pd.DataFrame:
    """One row per (architecture, budget): mean and std over seeds of accuracy, energy and time.

    Columns: the ``by`` columns, n_runs, params_m, valid_accuracy_mean/std, error (1 - mean
    validation accuracy), energy_kwh_mean/std, duration_s_mean/std, and test_accuracy_mean,
    energy_uncertainty_kwh_mean, matrix, ops, gpu_type where the runs have them.
    """
    keys = list(by)
    missing = set(keys) | {"valid_accuracy", "energy_j", "duration_s"}
    missing -= set(runs.columns)
    if missing:
        raise ValueError(f"runs lack column(s) {sorted(missing)}")
    df = runs.assign(energy_kwh=runs["energy_j"].astype("float64") / J_PER_KWH)
    g = df.groupby(keys, sort=True, dropna=False)
    out = pd.DataFrame(
        {
            "n_runs": g.size(),
            "valid_accuracy_mean": g["valid_accuracy"].mean(),
            "valid_accuracy_std": g["valid_accuracy"].std(),
            "energy_kwh_mean": g["energy_kwh"].mean(),
            "energy_kwh_std": g["energy_kwh"].std(),
            "duration_s_mean": g["duration_s"].mean(),
            "duration_s_std": g["duration_s"].std(),
        }
    )
    out["error"] = 1.0 - out["valid_accuracy_mean"]
    if "params" in df.columns:
        out["params_m"] = g["params"].first() / 1e6
    if "test_accuracy" in df.columns:
        out["test_accuracy_mean"] = g["test_accuracy"].mean()
    if "energy_uncertainty_j" in df.columns:  # the stated uncertainty of the runs' energy, mean over seeds
        out["energy_uncertainty_kwh_mean"] = g["energy_uncertainty_j"].mean() / J_PER_KWH
    for col in ("matrix", "ops", "gpu_type"):
        if col in df.columns:
            out[col] = g[col].first()
    return out.reset_index()


@dataclass
class ParetoResult:
    """The front of one budget with its extrema, knee and hypervolume."""

    epochs: Any
    front: pd.DataFrame  # aggregated rows on the front, by error ascending, with turn_deg and role
    min_error: pd.Series
    min_energy: pd.Series
    knee: pd.Series | None
    hypervolume: float
    reference: tuple[float, float]  # (error, energy in kWh)
    n_architectures: int


def pareto_front(
    archs: pd.DataFrame,
    error_col: str = "error",
    energy_col: str = "energy_kwh_mean",
    reference: tuple[float, float] | None = None,
    epochs: Any = None,
    knee_method: str = DEFAULT_KNEE_METHOD,
) -> ParetoResult:
    """Front, extrema, knee (by ``knee_method``) and hypervolume of one set of (aggregated)
    architectures. The front carries both knee scores, ``turn_deg`` and ``extrema_distance``."""
    pts = archs[[error_col, energy_col]].to_numpy(dtype=np.float64)
    mask = pareto_mask(pts)
    if not mask.any():
        raise ValueError(f"no architecture has finite {error_col!r} and {energy_col!r}")
    front = archs[mask].sort_values([error_col, energy_col], kind="mergesort").copy()
    fpts = front[[error_col, energy_col]].to_numpy(dtype=np.float64)
    front["turn_deg"] = turn_angles_deg(fpts)
    front["extrema_distance"] = extrema_line_distances(fpts)
    k = knee_index(fpts, knee_method)
    front["role"] = ""
    front.iloc[-1, front.columns.get_loc("role")] = "min_energy"
    front.iloc[0, front.columns.get_loc("role")] = "min_error"
    if k is not None:
        front.iloc[k, front.columns.get_loc("role")] = "knee"
    ref = reference if reference is not None else reference_point(fpts)
    return ParetoResult(
        epochs=epochs,
        front=front,
        min_error=front.iloc[0],
        min_energy=front.iloc[-1],
        knee=front.iloc[k] if k is not None else None,
        hypervolume=hypervolume_2d(fpts, ref),
        reference=(float(ref[0]), float(ref[1])),
        n_architectures=int(np.all(np.isfinite(pts), axis=1).sum()),
    )


def pareto_by_budget(
    archs: pd.DataFrame,
    by: str = "epochs",
    error_col: str = "error",
    energy_col: str = "energy_kwh_mean",
    reference: tuple[float, float] | None = None,
    knee_method: str = DEFAULT_KNEE_METHOD,
) -> dict[Any, ParetoResult]:
    """`pareto_front` per value of ``by`` (the epoch budget), in sorted order."""
    return {
        level: pareto_front(grp, error_col, energy_col, reference, epochs=level, knee_method=knee_method)
        for level, grp in archs.groupby(by, sort=True)
    }


def pareto_table(results: dict[Any, ParetoResult]) -> pd.DataFrame:
    """EC-NAS Table 2 per budget: the two extrema and the knee with their metrics (mean and std)."""
    rows = []
    for level, res in results.items():
        picks = [("min_error", res.min_error), ("knee", res.knee), ("min_energy", res.min_energy)]
        for role, row in picks:
            if row is None:
                continue
            rec = {"epochs": level, "role": role}
            rec.update({k: row[k] for k in row.index if k not in ("role", "epochs")})
            rows.append(rec)
    return pd.DataFrame(rows)


def hypervolume_table(results: dict[Any, ParetoResult]) -> pd.DataFrame:
    """Per budget: architectures, front size, hypervolume and its reference point."""
    return pd.DataFrame(
        [
            {
                "epochs": level,
                "n_architectures": res.n_architectures,
                "n_front": len(res.front),
                "hypervolume": res.hypervolume,
                "reference_error": res.reference[0],
                "reference_energy_kwh": res.reference[1],
            }
            for level, res in results.items()
        ]
    )
