"""Energy estimators of the architecture-and-environment study (003), and the baselines it beat.

Online (need the first epochs of the run itself):

- power-based: ``E = P_w x t``, the mean power of a window of ``w`` stable epochs times the run's
  duration;
- epoch-energy-based: ``E = E_w x s / w + E_u``, the energy of the window scaled to the ``s``
  stable epochs, plus the energy ``E_u`` of the unstable epochs before them.

The window starts at the *stabilizing epoch*: configured (003: after epoch 10, i.e. ten unstable
epochs, and a window of 5) or
detected from the run's epoch energies by `detect_stable_epoch` (the first epoch from which
``window`` consecutive epochs have a coefficient of variation of at most ``cv_threshold``).

Offline (need no measurement of the run): kernel ridge regression (RBF kernel, features and target
standardized, alpha and gamma chosen by 5-fold cross-validation) from the GPU's specs (TDP,
memory, CUDA cores), the model's GFLOPs, training and validation set sizes, batch and input size
to either the run's mean power (times its duration) or its mean epoch energy (times its epochs).

Baselines: the Green Algorithms formula
``PUE x (cores x power per core x CPU usage + GPUs x TDP x GPU usage + memory GB x 0.3725 W) x h``
and the ML CO2 Impact calculator's ``GPU TDP x hours``.

`compare_estimators` scores all of them on the same held-out runs by RMSE, MAE and R2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis.carbon import J_PER_WH
from analysis.settings import GreenAlgorithmsConfig

S_PER_H = 3600.0
#: Green Algorithms' memory power draw (W per GB).
MEMORY_POWER_W_PER_GB = 0.3725


# --------------------------------------------------------------------------------------------
# GPU specifications


@dataclass(frozen=True)
class GpuSpec:
    """A GPU model's data-sheet figures, as in ``conf/gpu/*.yaml``."""

    name: str
    tdp_w: float
    memory_gb: float
    cuda_cores: int
    boost_clock_mhz: float | None = None
    fp32_tflops: float | None = None

    @classmethod
    def from_mapping(cls, name: str, spec: Mapping[str, Any]) -> GpuSpec:
        """Build from a config mapping; keys other than the fields are ignored.

        Raises ValueError naming the missing keys (tdp_w, memory_gb and cuda_cores are required).
        """
        required = ("tdp_w", "memory_gb", "cuda_cores")
        missing = [k for k in required if spec.get(k) is None]
        if missing:
            raise ValueError(f"GPU spec {name!r} lacks {missing}; add them to its conf/gpu entry")
        opt = {k: float(spec[k]) for k in ("boost_clock_mhz", "fp32_tflops") if spec.get(k) is not None}
        return cls(
            name=name,
            tdp_w=float(spec["tdp_w"]),
            memory_gb=float(spec["memory_gb"]),
            cuda_cores=int(spec["cuda_cores"]),
            **opt,
        )


def gpu_specs_from_mappings(specs: Mapping[str, Mapping[str, Any] | GpuSpec]) -> dict[str, GpuSpec]:
    """Normalize ``{gpu_type: mapping or GpuSpec}`` to ``{gpu_type: GpuSpec}``."""
    return {k: v if isinstance(v, GpuSpec) else GpuSpec.from_mapping(k, v) for k, v in specs.items()}


def _spec(specs: Mapping[str, GpuSpec], gpu_type: str) -> GpuSpec:
    try:
        return specs[gpu_type]
    except KeyError:
        raise ValueError(
            f"no GPU spec for {gpu_type!r}; known: {sorted(specs)}; add conf/gpu/{gpu_type}.yaml"
        ) from None


# --------------------------------------------------------------------------------------------
# Online estimators


@dataclass(frozen=True)
class OnlineConfig:
    """Where the stable window starts and how long it is.

    ``stable_epoch`` is the 1-based first epoch of the window; ``None`` detects it per run
    (`detect_stable_epoch`). 003's "stable after epoch 10" is 0-based: ten unstable epochs, the
    window from epoch 11 (``stable_epoch=11`` here; ``analysis.stable_epoch=10`` with
    ``analysis.stable_epoch_base=0`` says it as the study does), and ``window=5``.
    """

    stable_epoch: int | None = None
    window: int = 5
    cv_threshold: float = 0.02


def detect_stable_epoch(
    epoch_energy_j: Sequence[float] | np.ndarray, window: int = 5, cv_threshold: float = 0.02
) -> int | None:
    """The first epoch (1-based) from which ``window`` consecutive epochs are stable, else None.

    Stable: the coefficient of variation (sample std / mean) of their energies is at most
    ``cv_threshold`` (2 % by default; 003 found epoch time and power very stable once warm, so a
    few per cent separates warm-up from noise). A warm-up epoch (compilation, autotuning, caches)
    breaks any window holding it, so the first stable window starts after the warm-up.
    """
    e = np.asarray(epoch_energy_j, dtype=np.float64)
    if window < 2:
        raise ValueError(f"window must be at least 2 epochs to measure variation, got {window}")
    for start in range(0, len(e) - window + 1):
        w = e[start : start + window]
        mean = w.mean()
        if np.all(np.isfinite(w)) and mean > 0 and w.std(ddof=1) / mean <= cv_threshold:
            return start + 1
    return None


def _window(epochs: pd.DataFrame, stable_epoch: int, window: int, total_epochs: int) -> pd.DataFrame:
    if window < 1:
        raise ValueError(f"window must be at least 1 epoch, got {window}")
    if stable_epoch < 1:
        raise ValueError(f"stable_epoch is 1-based, got {stable_epoch}")
    stable = total_epochs - stable_epoch + 1
    if window > stable:
        raise ValueError(
            f"window of {window} epochs from epoch {stable_epoch} exceeds the run's {total_epochs} epochs; "
            "use a smaller window or an earlier stabilizing epoch"
        )
    rows = epochs[(epochs["epoch"] >= stable_epoch) & (epochs["epoch"] < stable_epoch + window)]
    if len(rows) != window:
        raise ValueError(f"epochs {stable_epoch}..{stable_epoch + window - 1} are not all recorded")
    return rows


def online_power_estimate_j(
    epochs: pd.DataFrame,
    duration_s: float,
    stable_epoch: int,
    window: int = 5,
    total_epochs: int | None = None,
) -> float:
    """003's power-based estimate ``P_w x t`` (J) for one run.

    ``epochs``: that run's rows (epoch, duration_s, energy_j); P_w = window energy / window time
    (the time-weighted mean power of epochs ``stable_epoch .. stable_epoch + window - 1``);
    ``duration_s`` is the time the estimate covers (the run's duration); ``total_epochs`` defaults
    to the largest recorded epoch and only bounds the window.
    """
    total = int(epochs["epoch"].max()) if total_epochs is None else int(total_epochs)
    rows = _window(epochs, stable_epoch, window, total)
    power_w = float(rows["energy_j"].sum()) / float(rows["duration_s"].sum())
    return power_w * float(duration_s)


def online_epoch_energy_estimate_j(
    epochs: pd.DataFrame, total_epochs: int, stable_epoch: int, window: int = 5
) -> float:
    """003's epoch-energy-based estimate ``E_w x s / w + E_u`` (J) for one run of ``total_epochs``.

    E_w: energy of the window ``stable_epoch .. stable_epoch + window - 1``; s: the stable epochs
    ``total_epochs - stable_epoch + 1``; E_u: energy of epochs before ``stable_epoch``.
    """
    rows = _window(epochs, stable_epoch, window, int(total_epochs))
    unstable = epochs[epochs["epoch"] < stable_epoch]
    if len(unstable) != stable_epoch - 1:
        raise ValueError(f"epochs 1..{stable_epoch - 1} are not all recorded")
    stable = int(total_epochs) - stable_epoch + 1
    return float(rows["energy_j"].sum()) * stable / window + float(unstable["energy_j"].sum())


def _online_for_run(
    run_epochs: pd.DataFrame, duration_s: float, total_epochs: int, config: OnlineConfig
) -> tuple[float, float, str]:
    """(power-based J, epoch-energy-based J, note) for one run; NaN and a reason where not possible."""
    run_epochs = run_epochs.sort_values("epoch")
    stable = config.stable_epoch
    if stable is None:
        stable = detect_stable_epoch(run_epochs["energy_j"].to_numpy(), config.window, config.cv_threshold)
        if stable is None:
            return math.nan, math.nan, "no stable window"
    try:
        power = online_power_estimate_j(run_epochs, duration_s, stable, config.window, total_epochs)
        energy = online_epoch_energy_estimate_j(run_epochs, total_epochs, stable, config.window)
    except ValueError as err:
        return math.nan, math.nan, str(err)
    return power, energy, ""


# --------------------------------------------------------------------------------------------
# Baselines


def green_algorithms_energy_wh(
    duration_s: float,
    gpu_tdp_w: float,
    config: GreenAlgorithmsConfig | None = None,
    gpu_usage: float | None = None,
) -> float:
    """Green Algorithms (Lannelongue et al. 2021) energy in Wh.

    ``PSF x PUE x (cores x W/core x CPU usage + GPUs x TDP x GPU usage + memory GB x 0.3725) x hours``;
    ``gpu_usage`` (0-1) overrides ``config.gpu_usage``; with neither, 1.0.
    """
    c = config or GreenAlgorithmsConfig()
    usage = gpu_usage if gpu_usage is not None else (c.gpu_usage if c.gpu_usage is not None else 1.0)
    power_w = (
        c.n_cpu_cores * c.cpu_power_per_core_w * c.cpu_usage
        + c.n_gpus * gpu_tdp_w * usage
        + c.memory_gb * MEMORY_POWER_W_PER_GB
    )
    return c.psf * c.pue * power_w * duration_s / S_PER_H


def ml_co2_impact_energy_wh(duration_s: float, gpu_tdp_w: float, n_gpus: int = 1) -> float:
    """ML CO2 Impact calculator (Lacoste et al. 2019) energy in Wh: GPU TDP x GPUs x hours."""
    return gpu_tdp_w * n_gpus * duration_s / S_PER_H


# --------------------------------------------------------------------------------------------
# Offline estimators

#: Inputs of the offline regressors (003): GPU specs, model GFLOPs, data sizes, batch, input size.
OFFLINE_FEATURES: tuple[str, ...] = (
    "tdp_w",
    "memory_gb",
    "cuda_cores",
    "gflops",
    "train_images",
    "valid_images",
    "batch_size",
    "input_size",
)
#: Values for inputs the runs table may lack: NAS-Bench-101's recipe on CIFAR-10 (batch 256,
#: 32x32 images, 10,000 validation images). Columns of the same name in the runs win.
NASBENCH_CONSTANTS: dict[str, float] = {"batch_size": 256, "input_size": 32, "valid_images": 10_000}


@dataclass(frozen=True)
class OfflineConfig:
    """Kernel ridge regression and its hyper-parameter grid (chosen by K-fold cross-validation)."""

    alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    gammas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    cv_folds: int = 5
    seed: int = 0
    features: tuple[str, ...] = OFFLINE_FEATURES
    constants: Mapping[str, float] = field(default_factory=lambda: dict(NASBENCH_CONSTANTS))


def offline_features(
    runs: pd.DataFrame,
    gpu_specs: Mapping[str, GpuSpec],
    features: Sequence[str] = OFFLINE_FEATURES,
    constants: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The offline regressors' inputs for each run: GPU specs looked up by ``gpu_type``, ``gflops``
    from ``flops``, other features from same-named columns or ``constants``."""
    constants = dict(NASBENCH_CONSTANTS if constants is None else constants)
    out = pd.DataFrame(index=runs.index)
    specs = [_spec(gpu_specs, str(g)) for g in runs["gpu_type"]] if "gpu_type" in runs.columns else None
    for name in features:
        if name in ("tdp_w", "memory_gb", "cuda_cores") and name not in runs.columns:
            if specs is None:
                raise ValueError("runs lack gpu_type, needed to look up GPU specs")
            out[name] = [float(getattr(s, name)) for s in specs]
        elif name == "gflops" and name not in runs.columns:
            out[name] = runs["flops"].astype("float64") / 1e9
        elif name in runs.columns:
            out[name] = runs[name].astype("float64")
        elif name in constants:
            out[name] = float(constants[name])
        else:
            raise ValueError(
                f"offline feature {name!r} is neither a runs column nor in constants {sorted(constants)}"
            )
    return out


@dataclass
class OfflineEstimator:
    """A fitted offline regressor; `predict_energy_j` turns its output into energy per run."""

    target: Literal["power", "epoch_energy"]
    model: Any  # sklearn TransformedTargetRegressor(Pipeline(StandardScaler, KernelRidge))
    features: tuple[str, ...]
    constants: dict[str, float]
    best_params: dict[str, Any]
    cv_rmse: float  # power: W; epoch_energy: J per epoch

    def predict_energy_j(self, runs: pd.DataFrame, gpu_specs: Mapping[str, GpuSpec]) -> np.ndarray:
        """Energy (J) of each run: predicted mean power x ``duration_s``, or predicted mean epoch
        energy x ``epochs``."""
        x = offline_features(runs, gpu_specs, self.features, self.constants).to_numpy()
        with _one_blas_thread():
            pred = np.asarray(self.model.predict(x), dtype=np.float64)
        if self.target == "power":
            return pred * runs["duration_s"].to_numpy(dtype=np.float64)
        return pred * runs["epochs"].to_numpy(dtype=np.float64)


def fit_offline(
    runs: pd.DataFrame,
    gpu_specs: Mapping[str, GpuSpec],
    target: Literal["power", "epoch_energy"] = "power",
    config: OfflineConfig | None = None,
) -> OfflineEstimator:
    """Fit kernel ridge regression to the runs' mean power (W = energy_j / duration_s) or mean
    epoch energy (J = energy_j / epochs, warm-up epochs included, as 003 chose).

    alpha and gamma come from a grid search with K-fold cross-validation (K = min(cv_folds, runs)).
    """
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    config = config or OfflineConfig()
    if target not in ("power", "epoch_energy"):
        raise ValueError(f"target must be 'power' or 'epoch_energy', got {target!r}")
    energy = runs["energy_j"].to_numpy(dtype=np.float64)
    denom = runs["duration_s" if target == "power" else "epochs"].to_numpy(dtype=np.float64)
    y = energy / denom
    x = offline_features(runs, gpu_specs, config.features, config.constants).to_numpy()
    ok = np.isfinite(y) & np.all(np.isfinite(x), axis=1)
    x, y = x[ok], y[ok]
    if len(y) < 3:
        raise ValueError(f"{len(y)} usable runs; the offline estimator needs at least 3 to fit and validate")
    folds = min(config.cv_folds, len(y))
    # KRR has no intercept: standardize the target too, or an RBF model shrinks to 0 off the data.
    model = TransformedTargetRegressor(
        regressor=Pipeline([("scale", StandardScaler()), ("krr", KernelRidge(kernel="rbf"))]),
        transformer=StandardScaler(),
    )
    search = GridSearchCV(
        model,
        {"regressor__krr__alpha": list(config.alphas), "regressor__krr__gamma": list(config.gammas)},
        cv=KFold(folds, shuffle=True, random_state=config.seed),
        scoring="neg_root_mean_squared_error",
    )
    with _one_blas_thread():
        search.fit(x, y)
    return OfflineEstimator(
        target=target,
        model=search.best_estimator_,
        features=tuple(config.features),
        constants=dict(config.constants),
        best_params={k.rsplit("__", 1)[-1]: v for k, v in search.best_params_.items()},
        cv_rmse=float(-search.best_score_),
    )


def _one_blas_thread() -> Any:
    """A context that holds the linear-algebra libraries to one thread: kernel ridge's many small
    solves (a grid x folds) run several times faster so than with threads that contend for the
    cores (measured 1.5-2.5 s against 15-19 s for one grid search on a busy 2-core machine).
    ``threadpoolctl`` comes with scikit-learn; without it, nothing changes."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn requires it
        return contextlib.nullcontext()
    return threadpool_limits(1)


# --------------------------------------------------------------------------------------------
# Comparison

ESTIMATORS = (
    "online_power",
    "online_epoch_energy",
    "offline_power",
    "offline_epoch_energy",
    "green_algorithms",
    "ml_co2_impact",
)


def error_metrics(
    measured: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """RMSE, MAE (units of the inputs) and R2 = 1 - SS_res / SS_tot over pairs where both are finite."""
    y = np.asarray(measured, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(p)
    y, p = y[ok], p[ok]
    if y.size == 0:
        return {"n": 0, "rmse": math.nan, "mae": math.nan, "r2": math.nan}
    resid = y - p
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return {
        "n": int(y.size),
        "rmse": float(np.sqrt(np.mean(resid**2))),
        "mae": float(np.mean(np.abs(resid))),
        "r2": 1.0 - float(np.sum(resid**2)) / ss_tot if y.size > 1 and ss_tot > 0 else math.nan,
    }


@dataclass
class EstimatorComparison:
    """`compare_estimators`' result: the table, per-run predictions and the split."""

    table: pd.DataFrame  # estimator, n_runs, rmse_kj, mae_kj, r2, note
    predictions: pd.DataFrame  # run_id, estimator, measured_j, predicted_j, note
    train_run_ids: list[Any]
    test_run_ids: list[Any]


def split_runs(
    runs: pd.DataFrame, test_fraction: float = 0.3, seed: int = 0, group_by: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded (train, test) split of runs; with ``group_by`` (e.g. arch_hash) whole groups go to one side."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    if group_by is None:
        order = rng.permutation(len(runs))
        n_test = max(1, round(test_fraction * len(runs)))
        test_mask = np.zeros(len(runs), dtype=bool)
        test_mask[order[:n_test]] = True
    else:
        keys = runs[group_by].astype(str).to_numpy()
        uniq = np.unique(keys)
        chosen = rng.permutation(uniq)[: max(1, round(test_fraction * len(uniq)))]
        test_mask = np.isin(keys, chosen)
    return runs[~test_mask], runs[test_mask]


def online_estimates(epochs: pd.DataFrame, runs: pd.DataFrame, config: OnlineConfig) -> pd.DataFrame:
    """Both online estimates of every run of ``runs`` (run_id, duration_s, epochs), vectorised
    over the epoch rows (no Python loop per run): columns run_id, stable_epoch, power_j,
    epoch_energy_j, note (NaN and the reason where a run has no usable window). Equals
    `online_power_estimate_j` / `online_epoch_energy_estimate_j` run by run."""
    w = int(config.window)
    if w < 2 and config.stable_epoch is None:
        raise ValueError(f"window must be at least 2 epochs to measure variation, got {w}")
    ids = runs["run_id"].to_numpy()
    ep = epochs[epochs["run_id"].isin(ids)].sort_values(["run_id", "epoch"], kind="mergesort")
    rid = ep["run_id"].to_numpy()
    num = ep["epoch"].to_numpy(dtype=np.int64)
    e = ep["energy_j"].to_numpy(dtype=np.float64)
    d = ep["duration_s"].to_numpy(dtype=np.float64)
    out = pd.DataFrame({"run_id": ids, "duration_s": runs["duration_s"].to_numpy(dtype=np.float64),
                        "total": runs["epochs"].to_numpy(dtype=np.int64)})
    recorded = pd.Index(np.unique(rid))
    if config.stable_epoch is not None:
        out["stable_epoch"] = float(config.stable_epoch)
    else:
        pos = ep.groupby("run_id", sort=False).cumcount().to_numpy()
        start = np.full(len(e), False)
        if len(e) >= w:
            win = np.lib.stride_tricks.sliding_window_view(e, w)
            same_run = rid[w - 1:] == rid[: len(rid) - w + 1]
            mean = win.mean(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                cv = win.std(axis=1, ddof=1) / mean
            ok = same_run & np.isfinite(win).all(axis=1) & (mean > 0) & (cv <= config.cv_threshold)
            start[: len(ok)] = ok
        first = pd.Series(pos[start] + 1, index=rid[start]).groupby(level=0).min()
        out["stable_epoch"] = out["run_id"].map(first).astype("float64")
    s0 = out.set_index("run_id")["stable_epoch"]
    row_s0 = pd.Series(rid).map(s0).to_numpy(dtype=np.float64)
    in_win = (num >= row_s0) & (num < row_s0 + w)
    unstable = num < row_s0
    agg = pd.DataFrame({"run_id": rid, "we": np.where(in_win, e, 0.0), "wd": np.where(in_win, d, 0.0),
                        "nw": in_win.astype(np.int64), "ue": np.where(unstable, e, 0.0),
                        "nu": unstable.astype(np.int64)}).groupby("run_id").sum()
    a = agg.reindex(out["run_id"]).fillna(0.0)
    stable = out["stable_epoch"].to_numpy()
    total = out["total"].to_numpy()
    n_stable = total - stable + 1
    we, wd = a["we"].to_numpy(), a["wd"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        power = we / wd * out["duration_s"].to_numpy()
        energy = we * n_stable / w + a["ue"].to_numpy()
    notes = np.full(len(out), "", dtype=object)
    s_int = np.nan_to_num(stable, nan=0).astype(np.int64)
    checks = [
        (~out["run_id"].isin(recorded).to_numpy(), lambda i: "no epochs recorded"),
        (np.isnan(stable), lambda i: "no stable window"),
        (stable < 1, lambda i: f"stable_epoch is 1-based, got {s_int[i]}"),
        (w > n_stable, lambda i: f"window of {w} epochs from epoch {s_int[i]} exceeds the run's {total[i]} epochs; "
                                 "use a smaller window or an earlier stabilizing epoch"),
        (a["nw"].to_numpy() != w, lambda i: f"epochs {s_int[i]}..{s_int[i] + w - 1} are not all recorded"),
        (a["nu"].to_numpy() != stable - 1, lambda i: f"epochs 1..{s_int[i] - 1} are not all recorded"),
    ]
    bad = np.zeros(len(out), dtype=bool)
    for mask, text in checks:
        for i in np.flatnonzero(mask & ~bad):
            notes[i] = text(i)
        bad |= mask
    out["power_j"] = np.where(bad, np.nan, power)
    out["epoch_energy_j"] = np.where(bad, np.nan, energy)
    out["note"] = notes
    return out[["run_id", "stable_epoch", "power_j", "epoch_energy_j", "note"]]


def subsample(runs: pd.DataFrame, max_runs: int | None, seed: int) -> pd.DataFrame:
    """``runs``, or a seeded random sample of ``max_runs`` of them when there are more."""
    if max_runs is None or len(runs) <= max_runs:
        return runs
    keep = np.sort(np.random.default_rng(seed).choice(len(runs), max_runs, replace=False))
    return runs.iloc[keep]


def compare_estimators(
    runs: pd.DataFrame,
    epochs: pd.DataFrame,
    gpu_specs: Mapping[str, GpuSpec | Mapping[str, Any]],
    online: OnlineConfig | None = None,
    offline: OfflineConfig | None = None,
    green: GreenAlgorithmsConfig | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    group_by: str | None = None,
    test_run_ids: Sequence[Any] | None = None,
    offline_max_runs: int | None = None,
    per_run_hardware: bool = False,
) -> EstimatorComparison:
    """Score the six estimators against measured ``energy_j`` on the same held-out runs.

    The runs are split ``1 - test_fraction`` / ``test_fraction`` (003: 70/30) with ``seed``, or
    ``test_run_ids`` are held out as given (every other run trains); the offline regressors are
    fitted on the training part (with cross-validation inside it; on a seeded sample of at most
    ``offline_max_runs`` of its runs: kernel ridge is quadratic in memory and cubic in time); the
    online estimators read each test run's own epochs (their window must fit in the run, so runs
    too short for it are left out of their rows, and ``n_runs`` says how many each row rests on);
    the baselines need only duration, GPU type and, for Green Algorithms, utilization. With
    ``per_run_hardware`` the baselines take each run's ``power_limit_w`` (its recorded power
    limit) instead of the GPU type's TDP and Green Algorithms its ``job_memory_gb`` (the memory
    its job could use, as its worker recorded it) instead of ``green.memory_gb``, where the run
    has them.
    One row per estimator: n_runs, rmse_kj, mae_kj, r2 and a note.

    ``runs`` needs run_id, gpu_type, epochs, duration_s, energy_j, flops, train_images (and uses
    gpu_util_mean, batch_size, input_size, valid_images where present); ``epochs`` needs run_id,
    epoch, duration_s, energy_j. The online epoch-energy estimate covers the epochs only, so any
    energy of the run outside its epochs counts as its error.
    """
    online = online or OnlineConfig()
    green = green or GreenAlgorithmsConfig()
    specs = gpu_specs_from_mappings(gpu_specs)
    runs = runs[np.isfinite(runs["energy_j"].to_numpy(dtype=np.float64))]
    if test_run_ids is not None:
        wanted = set(test_run_ids)
        unknown = wanted - set(runs["run_id"])
        if unknown:
            raise ValueError(f"test run ids {sorted(unknown)[:10]} are not finished runs with an energy here")
        mask = runs["run_id"].isin(wanted).to_numpy()
        train, test = runs[~mask], runs[mask]
        if train.empty:
            raise ValueError("the test run ids hold every run: nothing is left to train the offline estimators")
    else:
        train, test = split_runs(runs, test_fraction, seed, group_by)

    preds: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    est = online_estimates(epochs, test, online)
    preds["online_power"] = est["power_j"].to_numpy(dtype=np.float64)
    preds["online_epoch_energy"] = est["epoch_energy_j"].to_numpy(dtype=np.float64)
    online_notes = list(est["note"])
    skipped = sum(1 for n in online_notes if n)
    if skipped:
        notes["online_power"] = notes["online_epoch_energy"] = (
            f"{skipped} test run(s) without a usable window"
        )

    fit_on = subsample(train, offline_max_runs, seed)
    sampled = (f"; fitted on a seeded sample of {len(fit_on)} of the {len(train)} training runs "
               f"(exact kernel ridge beyond {offline_max_runs} runs)" if len(fit_on) < len(train) else "")
    targets: tuple[Literal["power", "epoch_energy"], ...] = ("power", "epoch_energy")
    for target in targets:
        name = f"offline_{target}"
        try:
            fitted = fit_offline(fit_on, specs, target, offline)
            preds[name] = fitted.predict_energy_j(test, specs)
            notes[name] = f"alpha={fitted.best_params['alpha']:g}, gamma={fitted.best_params['gamma']:g}" + sampled
        except ValueError as err:
            preds[name] = np.full(len(test), math.nan)
            notes[name] = str(err)

    tdp = np.array([_spec(specs, str(g)).tdp_w for g in test["gpu_type"]], dtype=np.float64)
    memory = np.full(len(test), float(green.memory_gb))
    if per_run_hardware:
        hw = []
        if "power_limit_w" in test.columns:
            limit = pd.to_numeric(test["power_limit_w"], errors="coerce").to_numpy(dtype=np.float64)
            known = np.isfinite(limit) & (limit > 0)
            tdp = np.where(known, limit, tdp)
            hw.append(f"recorded power limit of {int(known.sum())} of {len(test)} test runs (else the TDP)")
        if "job_memory_gb" in test.columns and green.memory_gb > 0:
            mem = pd.to_numeric(test["job_memory_gb"], errors="coerce").to_numpy(dtype=np.float64)
            known = np.isfinite(mem) & (mem > 0)
            memory = np.where(known, mem, memory)
            hw.append(f"recorded memory of {int(known.sum())} test runs")
        if hw:
            notes["green_algorithms"] = "; ".join(hw)
            notes["ml_co2_impact"] = hw[0] if "power_limit_w" in test.columns else ""
    dur = test["duration_s"].to_numpy(dtype=np.float64)
    util = (
        test["gpu_util_mean"].to_numpy(dtype=np.float64) / 100.0
        if "gpu_util_mean" in test.columns
        else np.full(len(test), np.nan)
    )
    usage = np.full(len(test), float(green.gpu_usage)) if green.gpu_usage is not None else np.where(
        np.isfinite(util), util, 1.0)
    power_w = (green.n_cpu_cores * green.cpu_power_per_core_w * green.cpu_usage + green.n_gpus * tdp * usage
               + memory * MEMORY_POWER_W_PER_GB)
    preds["green_algorithms"] = green.psf * green.pue * power_w * dur / S_PER_H * J_PER_WH
    preds["ml_co2_impact"] = tdp * green.n_gpus * dur / S_PER_H * J_PER_WH

    measured = test["energy_j"].to_numpy(dtype=np.float64)
    rows, pred_frames = [], []
    blank = np.full(len(test), "", dtype=object)
    for name in ESTIMATORS:
        m = error_metrics(measured, preds[name])
        rows.append(
            {
                "estimator": name,
                "n_runs": m["n"],
                "rmse_kj": m["rmse"] / 1e3,
                "mae_kj": m["mae"] / 1e3,
                "r2": m["r2"],
                "note": notes.get(name, ""),
            }
        )
        pred_frames.append(pd.DataFrame({
            "run_id": test["run_id"].to_numpy(), "estimator": name, "measured_j": measured,
            "predicted_j": preds[name], "note": np.asarray(online_notes, dtype=object) if name.startswith("online")
            else blank}))
    return EstimatorComparison(
        table=pd.DataFrame(rows, columns=["estimator", "n_runs", "rmse_kj", "mae_kj", "r2", "note"]),
        predictions=pd.concat(pred_frames, ignore_index=True).reindex(
            columns=["run_id", "estimator", "measured_j", "predicted_j", "note"]),
        train_run_ids=list(train["run_id"]),
        test_run_ids=list(test["run_id"]),
    )
