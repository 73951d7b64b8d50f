"""Analysis of a layer campaign (the layer-wise study, seed 002, redone on measured windows):
per-layer-type predictors of energy per pass, time per pass and mean power (polynomial baseline,
random forest, gradient boosting), evaluated by RMSPE on held-out models (split by model), whole
models predicted as the sum of their layers' predictions (optionally times the fitted additivity
factor), the additivity factor P(model) / sum P(layer) against model size, the FLOPs-power
correlation, a saved predictor, and a report page.

Reads plain rows (``db.layers.layer_rows``): one per measured window, with the layer's features
(``db/layers.py`` columns). Nothing here imports the workload: a model to predict is given as its
layer rows (``jobs.workloads.layers.describe_model`` makes them before it runs).

The study's "power consumption of a forward pass" is an energy per pass; additivity is judged on
it (energies of parts add up; mean powers do not). A mean power for a whole model is predicted as
its predicted energy per pass over its predicted time per pass.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from db.errors import CampaignError

FEATURES: tuple[str, ...] = ("batch_size", "in_channels", "in_h", "in_w", "out_channels", "out_h", "out_w",
                             "kernel_size", "stride", "padding", "groups", "in_features", "out_features", "flops",
                             "params")
TARGETS: tuple[str, ...] = ("energy_per_pass_j", "time_per_pass_s", "mean_power_w")
METHODS: tuple[str, ...] = ("polynomial", "random_forest", "gradient_boosting")
METHOD_NAMES = {"polynomial": "Polynomial regression (degree 2)", "random_forest": "Random forest",
                "gradient_boosting": "Gradient boosting (histogram)"}
PREDICTOR_FORMAT = 1
LOG_MARGIN = math.log(10.0)
MIN_TYPE_ROWS = 3  # a layer type with fewer training rows is predicted by the all-types model


class LayerAnalysisError(CampaignError):
    """A layer campaign that cannot be analysed (no layer table, no finished window)."""


def rmspe(y: Sequence[float] | np.ndarray, yhat: Sequence[float] | np.ndarray) -> float:
    """Root mean square percentage error, in percent: sqrt(mean(((y - yhat) / y)^2)) x 100."""
    a, b = np.asarray(y, dtype=float), np.asarray(yhat, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b) & (a != 0)
    if not keep.any():
        return math.nan
    return float(np.sqrt(np.mean(((a[keep] - b[keep]) / a[keep]) ** 2)) * 100.0)


def _matrix(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The feature matrix (missing features 0; FLOPs and parameters as log1p, sizes as they are)."""
    out = np.zeros((len(rows), len(FEATURES)))
    for i, r in enumerate(rows):
        for j, f in enumerate(FEATURES):
            v = r.get(f)
            v = 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
            out[i, j] = math.log1p(v) if f in ("flops", "params") else v
    return out


def make_regressor(method: str, seed: int = 0) -> Any:
    """An unfitted scikit-learn regressor for ``method`` (fitted on log targets by the callers)."""
    if method == "polynomial":
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import PolynomialFeatures, StandardScaler

        return make_pipeline(StandardScaler(), PolynomialFeatures(2), Ridge(alpha=1e-3))
    if method == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=1)
    if method == "gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(random_state=seed, min_samples_leaf=3, max_iter=300)
    raise CampaignError(f"predictor method {method!r} is not known (allowed: {', '.join(METHODS)})")


@dataclasses.dataclass
class LayerPredictor:
    """One target's per-layer-type regressors (and one for all types, for types it did not see)."""

    method: str
    target: str
    by_type: dict[str, Any]
    fallback: Any
    log_range: tuple[float, float] = (-math.inf, math.inf)  # of the training targets

    @classmethod
    def fit(cls, rows: Sequence[Mapping[str, Any]], target: str, method: str, seed: int = 0) -> LayerPredictor:
        rows = [r for r in rows if _positive(r.get(target))]
        if not rows:
            raise LayerAnalysisError(f"no layer window with a positive {target} to fit on")
        types: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:
            types.setdefault(str(r["layer_type"]), []).append(r)

        def fitted(rs: Sequence[Mapping[str, Any]]) -> Any:
            from threadpoolctl import threadpool_limits

            model = make_regressor(method, seed)
            # One thread: the data are small, and OpenMP's spinning threads on a busy node cost minutes.
            with threadpool_limits(limits=1):
                model.fit(_matrix(rs), np.log([float(r[target]) for r in rs]))
            return model

        by_type = {t: fitted(rs) for t, rs in types.items() if len(rs) >= MIN_TYPE_ROWS}
        logs = np.log([float(r[target]) for r in rows])
        return cls(method, target, by_type, fitted(rows), (float(logs.min()), float(logs.max())))

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The target for each layer row (per pass, one call)."""
        out = np.zeros(len(rows))
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(str(r["layer_type"]), []).append(i)
        for t, idx in groups.items():
            from threadpoolctl import threadpool_limits

            model = self.by_type.get(t, self.fallback)
            with threadpool_limits(limits=1):
                logs = model.predict(_matrix([rows[i] for i in idx]))
            # A polynomial far outside its data explodes: no prediction leaves the training range by more
            # than a factor of 10.
            out[idx] = np.exp(np.clip(logs, self.log_range[0] - LOG_MARGIN, self.log_range[1] + LOG_MARGIN))
        return out


@dataclasses.dataclass
class SavedPredictor:
    """What ``campaign`` applies to a model before it runs: predictors of energy and time per
    pass, the additivity factor fitted on the campaign's models, and where the data came from."""

    method: str
    energy: LayerPredictor
    time: LayerPredictor
    additivity_factor: float | None
    power_source: str
    campaign: str
    format: int = PREDICTOR_FORMAT

    def predict_model(self, layer_rows: Sequence[Mapping[str, Any]], with_additivity: bool = False) -> dict[str, float]:
        """A model's energy per pass (J), time per pass (s) and mean power (W) from its layer rows
        (each with ``calls``): sums of the layers' predictions, the energy optionally times the
        additivity factor."""
        calls = np.array([float(r.get("calls") or 1) for r in layer_rows])
        energy = float(np.sum(self.energy.predict(layer_rows) * calls))
        duration = float(np.sum(self.time.predict(layer_rows) * calls))
        if with_additivity and self.additivity_factor:
            energy *= self.additivity_factor
        return {"energy_per_pass_j": energy, "time_per_pass_s": duration,
                "mean_power_w": energy / duration if duration > 0 else math.nan}

    def save(self, path: Path) -> Path:
        """Write the predictor to ``path`` (a pickle: load only files you wrote)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            pickle.dump(self, fh)
        return path

    @staticmethod
    def load(path: Path) -> SavedPredictor:
        """A predictor written by ``save``; LayerAnalysisError names a file that is not one."""
        try:
            with open(path, "rb") as fh:
                obj = pickle.load(fh)  # noqa: S301 - the campaign's own file
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as exc:
            raise LayerAnalysisError(f"{path} is not a saved layer predictor: {exc}") from exc
        if not isinstance(obj, SavedPredictor) or obj.format != PREDICTOR_FORMAT:
            raise LayerAnalysisError(f"{path} is not a saved layer predictor of format {PREDICTOR_FORMAT}")
        return obj


def _positive(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v) and v > 0


# -- the study's figures ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelWindow:
    """A measured model configuration (one run) with its layers measured alone."""

    run_id: int
    model_name: str
    batch_size: int
    input_size: int | None
    measured: Mapping[str, Any]
    layers: list[Mapping[str, Any]]

    def layer_sum(self, key: str) -> float | None:
        total = 0.0
        for r in self.layers:
            v = r.get(key)
            if v is None or not _positive(v):
                return None
            total += float(v) * float(r.get("calls") or 1)
        return total if self.layers else None

    def additivity(self, key: str = "energy_per_pass_j") -> float | None:
        total = self.layer_sum(key)
        m = self.measured.get(key)
        return float(m) / total if total and m is not None and _positive(m) else None


def model_windows(rows: Sequence[Mapping[str, Any]]) -> list[ModelWindow]:
    """The runs that measured a whole model, each with its layers' windows."""
    by_run: dict[int, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_run.setdefault(int(r["run_id"]), []).append(r)
    out = []
    for run_id, rs in by_run.items():
        whole = [r for r in rs if r["scope"] == "model"]
        if whole:
            m = whole[0]
            out.append(ModelWindow(run_id, str(m["model_name"]), int(m["batch_size"]), m.get("input_size"), m,
                                   [r for r in rs if r["scope"] == "layer"]))
    return out


def split_models(names: Sequence[str], test_fraction: float = 0.3, seed: int = 0) -> tuple[set[str], set[str]]:
    """Model names into (train, test), seeded; the test set holds at least one where there are two or more."""
    unique = sorted(set(names))
    random.Random(seed).shuffle(unique)
    if len(unique) < 2:
        return set(unique), set()
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    return set(unique[n_test:]), set(unique[:n_test])


@dataclasses.dataclass
class Evaluation:
    """RMSPE per layer type and method on held-out models' layers, and on whole held-out models."""

    train_models: set[str]
    test_models: set[str]
    by_type: dict[str, dict[str, float]]  # layer type -> method -> RMSPE %
    type_counts: dict[str, tuple[int, int]]  # layer type -> (train rows, test rows)
    models: dict[str, float]  # method -> RMSPE % of the sum of layer predictions
    models_additive: dict[str, float]  # method -> RMSPE % of the sum times the training models' factor
    additivity_train: float | None
    predictions: list[dict[str, Any]]  # per held-out model window and method


def evaluate(rows: Sequence[Mapping[str, Any]], target: str = "energy_per_pass_j", seed: int = 0,
             test_fraction: float = 0.3, methods: Sequence[str] = METHODS) -> Evaluation:
    """Fit on the layers of the training models (and the standalone layer specs), predict the
    held-out models' layers and the held-out models as sums of them."""
    layers = [r for r in rows if r["scope"] == "layer" and _positive(r.get(target))]
    windows = model_windows(rows)
    train_m, test_m = split_models([w.model_name for w in windows], test_fraction, seed)
    train = [r for r in layers if r.get("model_name") is None or r["model_name"] in train_m]
    test = [r for r in layers if r.get("model_name") in test_m]
    factors = [f for w in windows if w.model_name in train_m and (f := w.additivity(target)) is not None]
    factor = float(np.median(factors)) if factors else None
    by_type: dict[str, dict[str, float]] = {}
    counts: dict[str, tuple[int, int]] = {}
    for t in sorted({str(r["layer_type"]) for r in layers}):
        counts[t] = (sum(r["layer_type"] == t for r in train), sum(r["layer_type"] == t for r in test))
    models: dict[str, float] = {}
    additive: dict[str, float] = {}
    predictions: list[dict[str, Any]] = []
    if not train:
        return Evaluation(train_m, test_m, by_type, counts, models, additive, factor, predictions)
    for method in methods:
        predictor = LayerPredictor.fit(train, target, method, seed)
        if test:
            yhat = predictor.predict(test)
            for t in counts:
                idx = [i for i, r in enumerate(test) if r["layer_type"] == t]
                if idx:
                    by_type.setdefault(t, {})[method] = rmspe([test[i][target] for i in idx], yhat[idx])
        measured, summed = [], []
        for w in windows:
            if w.model_name not in test_m or not w.layers or not _positive(w.measured.get(target)):
                continue
            calls = np.array([float(r.get("calls") or 1) for r in w.layers])
            total = float(np.sum(predictor.predict(w.layers) * calls))
            measured.append(float(w.measured[target]))
            summed.append(total)
            predictions.append({"model": w.model_name, "batch_size": w.batch_size, "input_size": w.input_size,
                                "method": method, "measured": float(w.measured[target]), "predicted": total})
        if measured:
            models[method] = rmspe(measured, summed)
            if factor:
                additive[method] = rmspe(measured, [s * factor for s in summed])
    return Evaluation(train_m, test_m, by_type, counts, models, additive, factor, predictions)


def correlation(x: Sequence[Any], y: Sequence[Any]) -> dict[str, float]:
    """Pearson (on logs) and Spearman correlation of positive pairs, and how many."""
    from scipy import stats

    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True) if _positive(a) and _positive(b)]
    if len(pairs) < 3:
        return {"n": len(pairs), "pearson_log": math.nan, "spearman": math.nan}
    a, b = np.array(pairs).T
    return {"n": len(pairs), "pearson_log": float(stats.pearsonr(np.log(a), np.log(b))[0]),
            "spearman": float(stats.spearmanr(a, b)[0])}


# -- the report -------------------------------------------------------------------------------
def _engine_and_id(reader_or_engine: Any, campaign: Any) -> tuple[Any, int, str]:
    engine = getattr(reader_or_engine, "engine", reader_or_engine)
    if hasattr(campaign, "id"):
        return engine, int(campaign.id), str(campaign.name)
    if hasattr(reader_or_engine, "campaign"):
        info = reader_or_engine.campaign(str(campaign))
        return engine, int(info.id), str(info.name)
    from sqlalchemy import select

    from db.schema import Campaign

    with engine.connect() as conn:
        cid = conn.execute(select(Campaign.id).where(Campaign.name == str(campaign))).scalar_one_or_none()
    if cid is None:
        raise LayerAnalysisError(f"no campaign {campaign!r} in this database")
    return engine, int(cid), str(campaign)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def analyze_layers(reader_or_engine: Any, campaign: Any, out_dir: Path | str, seed: int = 0,
                   test_fraction: float = 0.3) -> Path:
    """Analyse the layer campaign ``campaign`` (a name, or a ``CampaignInfo``) read through a
    ``CampaignReader`` or an engine; write ``layers.md``, its figures and ``layer_predictor.pkl``
    in ``out_dir``; return the page's path. LayerAnalysisError (one line) where nothing was measured."""
    from db.layers import has_layer_table, layer_rows

    engine, cid, name = _engine_and_id(reader_or_engine, campaign)
    if not has_layer_table(engine):
        raise LayerAnalysisError("this database has no layer_measurement table (upgrade it: campaign db upgrade)")
    rows = layer_rows(engine, cid)
    if not rows:
        raise LayerAnalysisError(f"campaign {name!r} has no finished layer measurement yet; nothing to analyse")
    return write_layer_report(rows, name, Path(out_dir), seed=seed, test_fraction=test_fraction)


def write_layer_report(rows: Sequence[Mapping[str, Any]], name: str, out: Path, seed: int = 0,
                       test_fraction: float = 0.3) -> Path:
    """The report of plain layer rows (see ``analyze_layers``)."""
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted({str(r.get("power_source") or "unknown") for r in rows})
    simulated = any(s == "simulated" for s in sources)
    methods = sorted({str(r.get("energy_method") or "unknown") for r in rows})
    invalid = sum(not r.get("valid") for r in rows)
    ev = evaluate(rows, "energy_per_pass_j", seed, test_fraction)
    ev_power = evaluate(rows, "mean_power_w", seed, test_fraction, methods=("random_forest",))
    windows = model_windows(rows)
    additivity = [(w, w.additivity("energy_per_pass_j"), w.additivity("energy_above_idle_per_pass_j"))
                  for w in windows]
    models = [r for r in rows if r["scope"] == "model"]
    layers = [r for r in rows if r["scope"] == "layer"]
    corr_models = correlation([r["flops"] for r in models], [r.get("energy_per_pass_j") for r in models])
    corr_models_power = correlation([r["flops"] for r in models], [r.get("mean_power_w") for r in models])
    corr_layers = correlation([r["flops"] for r in layers], [r.get("energy_per_pass_j") for r in layers])
    best = min(ev.models, key=lambda m: ev.models[m]) if ev.models else "random_forest"
    predictor_path: Path | None = None
    fit_rows = [r for r in layers if _positive(r.get("energy_per_pass_j")) and _positive(r.get("time_per_pass_s"))]
    if fit_rows:
        factors = [f for _, f, _ in additivity if f is not None]
        saved = SavedPredictor(best, LayerPredictor.fit(fit_rows, "energy_per_pass_j", best, seed),
                               LayerPredictor.fit(fit_rows, "time_per_pass_s", best, seed),
                               float(np.median(factors)) if factors else None, ",".join(sources), name)
        predictor_path = saved.save(out / "layer_predictor.pkl")
    figures = _figures(out, ev, additivity, models)

    label = ("**simulated** (no device was measured: power follows the process's CPU load; the figures "
             "exercise the method, they are not measurements)") if simulated else ", ".join(sources)
    lines = [f"# Layer-wise power: {name}", "",
             f"- power source: {label}",
             f"- energy methods of the windows: {', '.join(methods)}",
             f"- windows: {len(rows)} ({len(models)} whole models, {len(layers)} layers alone; "
             f"{invalid} break the validity rule)",
             f"- models held out for testing (split by model, seed {seed}): "
             f"{', '.join(sorted(ev.test_models)) or 'none (fewer than two models)'}", "",
             "Energy per pass is the window's energy over its passes; a model's prediction is the sum of its "
             "layers' predictions (each times its calls per pass). RMSPE = sqrt(mean(((y - ŷ) / y)²)), in %.", "",
             "## RMSPE of energy per pass on held-out models, per layer type", ""]
    head = "| layer type | train / test windows | " + " | ".join(METHOD_NAMES[m] for m in METHODS) + " |"
    lines += [head, "|" + "---|" * (2 + len(METHODS))]
    for t, (n_train, n_test) in ev.type_counts.items():
        cells = [_fmt(ev.by_type.get(t, {}).get(m), 3) for m in METHODS]
        lines.append(f"| {t} | {n_train} / {n_test} | " + " | ".join(cells) + " |")
    lines.append("| **overall model** (sum of layers) | – | " + " | ".join(_fmt(ev.models.get(m)) for m in METHODS) + " |")
    if ev.models_additive:
        lines.append(f"| overall model × additivity factor {_fmt(ev.additivity_train)} | – | "
                     + " | ".join(_fmt(ev.models_additive.get(m)) for m in METHODS) + " |")
    if ev_power.by_type:
        lines += ["", "RMSPE of mean power (random forest) per layer type: "
                  + ", ".join(f"{t} {_fmt(v.get('random_forest'))} %" for t, v in ev_power.by_type.items())]
    lines += ["", "## Additivity factor", "",
              "additivity factor(M) = E(M) / Σ_l E(l): a model's energy per pass over the sum of its layers' "
              "energies per pass, each layer measured alone (1: the layers add up). Above idle: the same with "
              "the idle power's share taken out of every window. Functional operations that are not modules "
              "(residual additions, reshapes) are in the model's pass but in no layer.", ""]
    facs = [f for _, f, _ in additivity if f is not None]
    if facs:
        lines.append(f"Over {len(facs)} model configurations: median {_fmt(float(np.median(facs)))}, "
                     f"min {_fmt(min(facs))}, max {_fmt(max(facs))}.")
        lines += ["", "| model | batch | input | parameters | additivity factor | above idle |", "|---|---|---|---|---|---|"]
        for w, f, fa in sorted(additivity, key=lambda x: (x[0].model_name, x[0].batch_size)):
            lines.append(f"| {w.model_name} | {w.batch_size} | {_fmt(w.input_size)} | {w.measured.get('params')} | "
                         f"{_fmt(f)} | {_fmt(fa)} |")
    else:
        lines.append("No model was measured together with its layers alone (layers.isolate_layers).")
    lines += ["", "## FLOPs and power", "",
              "| windows | n | Pearson (log FLOPs, log energy per pass) | Spearman |", "|---|---|---|---|",
              f"| whole models | {corr_models['n']} | {_fmt(corr_models['pearson_log'])} | {_fmt(corr_models['spearman'])} |",
              f"| layers alone | {corr_layers['n']} | {_fmt(corr_layers['pearson_log'])} | {_fmt(corr_layers['spearman'])} |",
              "", f"Whole models, FLOPs against mean power: Spearman {_fmt(corr_models_power['spearman'])} "
              f"(n={corr_models_power['n']}).", ""]
    if ev.predictions:
        lines += ["## Held-out models: measured and predicted energy per pass", "",
                  "| model | batch | input | method | measured (J) | predicted (J) |", "|---|---|---|---|---|---|"]
        for p in ev.predictions:
            lines.append(f"| {p['model']} | {p['batch_size']} | {_fmt(p['input_size'])} | {p['method']} | "
                         f"{_fmt(p['measured'], 4)} | {_fmt(p['predicted'], 4)} |")
        lines.append("")
    if predictor_path is not None:
        lines += ["## Saved predictor", "",
                  f"`{predictor_path.name}` ({METHOD_NAMES[best]}, fitted on every layer window of this campaign; "
                  "energy and time per pass, the additivity factor): applies to any torchvision model or "
                  "NAS-Bench-101 cell from its layers, before it runs.", ""]
    for title, path in figures:
        lines += [f"![{title}]({path.name})", ""]
    page = out / "layers.md"
    page.write_text("\n".join(lines) + "\n")
    return page


def _figures(out: Path, ev: Evaluation, additivity: Sequence[tuple[ModelWindow, float | None, float | None]],
             models: Sequence[Mapping[str, Any]]) -> list[tuple[str, Path]]:
    from matplotlib.figure import Figure

    written: list[tuple[str, Path]] = []
    pts = [(float(w.measured.get("params") or 0), f) for w, f, _ in additivity if f is not None]
    if pts:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        ax.scatter([p for p, _ in pts], [f for _, f in pts], s=14)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("symlog")
        ax.set_xlabel("model parameters")
        ax.set_ylabel("additivity factor E(model) / Σ E(layer)")
        fig.tight_layout()
        fig.savefig(out / "layers_additivity.png", dpi=110)
        written.append(("additivity factor against model size", out / "layers_additivity.png"))
    fl = [(float(r["flops"]), float(r["energy_per_pass_j"])) for r in models
          if _positive(r.get("flops")) and _positive(r.get("energy_per_pass_j"))]
    if fl:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        ax.scatter([a for a, _ in fl], [b for _, b in fl], s=14)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FLOPs per pass")
        ax.set_ylabel("energy per pass (J)")
        fig.tight_layout()
        fig.savefig(out / "layers_flops.png", dpi=110)
        written.append(("FLOPs against energy per pass, whole models", out / "layers_flops.png"))
    if ev.predictions:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        for m in METHODS:
            ps = [p for p in ev.predictions if p["method"] == m]
            if ps:
                ax.scatter([p["measured"] for p in ps], [p["predicted"] for p in ps], s=14, label=METHOD_NAMES[m])
        lo = min(min(p["measured"], p["predicted"]) for p in ev.predictions)
        hi = max(max(p["measured"], p["predicted"]) for p in ev.predictions)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel("measured energy per pass (J)")
        ax.set_ylabel("sum of layer predictions (J)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "layers_models.png", dpi=110)
        written.append(("held-out models: measured and predicted", out / "layers_models.png"))
    return written
