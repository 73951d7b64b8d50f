"""Energy estimators of the architecture-and-environment study (003), and the baselines it beat.

Online (need the first epochs of the run itself):

- power-based: ``E = P_w x t``, the mean power of a window of ``w`` stable epochs times the run's
  duration;
- epoch-energy-based: ``E = E_w x s / w + E_u``, the energy of the window scaled to the ``s``
  stable epochs, plus the energy ``E_u`` of the unstable epochs before them.

The window starts at the *stabilizing epoch*: configured (003 uses epoch 10 and a window of 5) or
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

    ``stable_epoch=None`` detects it per run (`detect_stable_epoch`); 003 used ``stable_epoch=10``
    (the window starts at epoch 10; epochs 1-9 are the unstable ones) and ``window=5``.
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
    search.fit(x, y)
    return OfflineEstimator(
        target=target,
        model=search.best_estimator_,
        features=tuple(config.features),
        constants=dict(config.constants),
        best_params={k.rsplit("__", 1)[-1]: v for k, v in search.best_params_.items()},
        cv_rmse=float(-search.best_score_),
    )


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
) -> EstimatorComparison:
    """Score the six estimators against measured ``energy_j`` on the same held-out runs.

    The runs are split ``1 - test_fraction`` / ``test_fraction`` (003: 70/30) with ``seed``; the
    offline regressors are fitted on the training part (with cross-validation inside it); the
    online estimators read each test run's own epochs (their window must fit in the run, so runs
    too short for it are left out of their rows, and ``n_runs`` says how many each row rests on);
    the baselines need only duration, GPU type and, for Green Algorithms, utilization.
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
    train, test = split_runs(runs, test_fraction, seed, group_by)

    preds: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    by_run = dict(tuple(epochs.groupby("run_id")))
    online_rows = [
        _online_for_run(by_run[rid], float(dur), int(n_ep), online)
        if rid in by_run
        else (math.nan, math.nan, "no epochs recorded")
        for rid, dur, n_ep in zip(test["run_id"], test["duration_s"], test["epochs"], strict=True)
    ]
    preds["online_power"] = np.array([r[0] for r in online_rows], dtype=np.float64)
    preds["online_epoch_energy"] = np.array([r[1] for r in online_rows], dtype=np.float64)
    online_notes = [r[2] for r in online_rows]
    skipped = sum(1 for n in online_notes if n)
    if skipped:
        notes["online_power"] = notes["online_epoch_energy"] = (
            f"{skipped} test run(s) without a usable window"
        )

    targets: tuple[Literal["power", "epoch_energy"], ...] = ("power", "epoch_energy")
    for target in targets:
        name = f"offline_{target}"
        try:
            est = fit_offline(train, specs, target, offline)
            preds[name] = est.predict_energy_j(test, specs)
            notes[name] = f"alpha={est.best_params['alpha']:g}, gamma={est.best_params['gamma']:g}"
        except ValueError as err:
            preds[name] = np.full(len(test), math.nan)
            notes[name] = str(err)

    tdp = np.array([_spec(specs, str(g)).tdp_w for g in test["gpu_type"]])
    dur = test["duration_s"].to_numpy(dtype=np.float64)
    util = (
        test["gpu_util_mean"].to_numpy(dtype=np.float64) / 100.0
        if "gpu_util_mean" in test.columns
        else np.full(len(test), np.nan)
    )
    ga = []
    for d, t, u in zip(dur, tdp, util, strict=True):
        usage = green.gpu_usage if green.gpu_usage is not None else (u if np.isfinite(u) else None)
        ga.append(green_algorithms_energy_wh(d, t, green, usage) * J_PER_WH)
    preds["green_algorithms"] = np.asarray(ga)
    preds["ml_co2_impact"] = (
        np.array([ml_co2_impact_energy_wh(d, t, green.n_gpus) for d, t in zip(dur, tdp, strict=True)])
        * J_PER_WH
    )

    measured = test["energy_j"].to_numpy(dtype=np.float64)
    rows, pred_rows = [], []
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
        for i, rid in enumerate(test["run_id"]):
            note = online_notes[i] if name.startswith("online") else ""
            pred_rows.append(
                {
                    "run_id": rid,
                    "estimator": name,
                    "measured_j": measured[i],
                    "predicted_j": preds[name][i],
                    "note": note,
                }
            )
    return EstimatorComparison(
        table=pd.DataFrame(rows, columns=["estimator", "n_runs", "rmse_kj", "mae_kj", "r2", "note"]),
        predictions=pd.DataFrame(
            pred_rows, columns=["run_id", "estimator", "measured_j", "predicted_j", "note"]
        ),
        train_run_ids=list(train["run_id"]),
        test_run_ids=list(test["run_id"]),
    )
