"""The second workload: power of forward passes (optionally forward + backward) through single
layers and whole models, the layer-wise study's measurements (seed 002) redone under the protocol.

A trial is one configuration: a layer spec, or a model, at one batch size and input size. A model
trial measures the whole model and, when ``layers.isolate_layers`` is set, each of its layers
alone (every leaf module's call, captured with forward hooks, the module taken out of the model
and run on a random input of the shape it saw). Each of these is one measured window: the phase
``eval`` (forward only) or ``train`` (forward and backward), tagged with its 1-based position in
the trial as the trace's ``epoch`` column, in a seeded random order. A window runs passes until
it is long enough for the meter's validity rule (``meter.min_window_samples`` at
``meter.rate_hz``, and ``layers.min_window_s``), at least ``layers.min_passes`` and at most
``layers.max_passes``. The rows of ``layer_measurement`` (``db/layers.py``) are its records.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from db.errors import ConfigError
from db.records import Phase
from jobs.workloads.base import PlannedTrial, TrialContext, digest
from jobs.workloads.layer_spec import (
    LayersConfig,
    check_layer,
    check_model,
    layer_features,
    model_name,
    spec_features,
)

log = logging.getLogger(__name__)

NAME = "layers"
TABLE = "layer_measurement"
# A window is this much longer than the validity rule's minimum, so that boundary effects never
# leave it one sample short.
WINDOW_MARGIN = 1.25


class LayerMeasurementError(RuntimeError):
    """A trial of the layer workload that cannot run (a model that cannot be built here)."""


# -- building ---------------------------------------------------------------------------------
def torchvision_classifiers() -> list[str]:
    """The names of torchvision's classification model builders."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_layer(layer: Mapping[str, Any]) -> Any:
    """A ``torch.nn.Module`` for a checked layer spec (two-input layers take one tensor and use it twice)."""
    import torch
    from torch import nn

    kind = layer["type"]

    class Twice(nn.Module):
        def __init__(self, concat: bool) -> None:
            super().__init__()
            self.concat = concat

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x], dim=1) if self.concat else x + x

    simple = {"relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
              "tanh": nn.Tanh, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid, "leakyrelu": nn.LeakyReLU}
    if kind in simple:
        return simple[kind]()
    if kind == "softmax":
        return nn.Softmax(dim=1)
    if kind == "conv2d":
        return nn.Conv2d(layer["in_channels"], layer["out_channels"], layer["kernel_size"], stride=layer["stride"],
                         padding=layer["padding"], groups=layer["groups"], bias=bool(layer["bias"]))
    if kind == "linear":
        return nn.Linear(layer["in_features"], layer["out_features"], bias=bool(layer["bias"]))
    if kind == "maxpool2d":
        return nn.MaxPool2d(layer["kernel_size"], stride=layer.get("stride"), padding=layer["padding"])
    if kind == "avgpool2d":
        return nn.AvgPool2d(layer["kernel_size"], stride=layer.get("stride"), padding=layer["padding"])
    if kind == "adaptiveavgpool2d":
        return nn.AdaptiveAvgPool2d(layer["output_size"])
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(layer["channels"])
    if kind == "zeropad2d":
        return nn.ZeroPad2d(layer["padding"])
    if kind == "dropout":
        return nn.Dropout(layer["p"])
    if kind == "flatten":
        return nn.Flatten()
    if kind in ("add", "concat"):
        return Twice(kind == "concat")
    raise ConfigError(f"unknown layer type {kind!r}")


def build_model(model: Mapping[str, Any], network: Mapping[str, Any] | None, input_size: int,
                num_classes: int = 1000) -> Any:
    """A torchvision classifier (``weights=None``: nothing is downloaded) or a NAS-Bench-101 network."""
    if "torchvision" in model:
        import warnings

        import torchvision

        with warnings.catch_warnings():  # inception_v3's notice about its future default initialisation
            warnings.simplefilter("ignore", FutureWarning)
            return torchvision.models.get_model(str(model["torchvision"]), weights=None, num_classes=num_classes)
    from jobs.cell import CellSpec
    from jobs.network import NetworkConfig, build_network

    net = NetworkConfig(**{**dict(network or {}), "image_size": input_size})
    return build_network(CellSpec.from_dict(model["cell"]), net)


def module_type(module: Any) -> str:
    """The layer type of a torch module: the spec's name where there is one, else the class name, lower case."""
    return type(module).__name__.lower()


def _attrs(module: Any) -> dict[str, Any]:
    attrs = {k: getattr(module, k) for k in ("kernel_size", "stride", "padding", "groups") if hasattr(module, k)}
    attrs["params"] = sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
    return attrs


@dataclasses.dataclass
class LayerCall:
    """One call of a leaf module during a model's forward pass."""

    name: str
    module: Any
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    calls: int = 1  # calls of this module with this input shape in one forward pass

    def features(self) -> dict[str, Any]:
        return layer_features(module_type(self.module), _attrs(self.module), self.in_shape, self.out_shape)


def capture_layers(model: Any, x: Any) -> list[LayerCall]:
    """Every leaf module's calls in one forward pass of ``model`` on ``x`` (grouped by module and
    input shape, in first-call order). Works on the meta device too (shapes only)."""
    import torch

    found: dict[tuple[str, tuple[int, ...]], LayerCall] = {}
    handles = []

    def hook(name: str) -> Any:
        def on_call(module: Any, args: tuple[Any, ...], out: Any) -> None:
            if not args or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
                return
            shape = tuple(int(v) for v in args[0].shape)
            key = (name, shape)
            if key in found:
                found[key].calls += 1
            else:
                found[key] = LayerCall(name, module, shape, tuple(int(v) for v in out.shape))
        return on_call

    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


def describe_model(model: Mapping[str, Any], batch_size: int, input_size: int,
                   network: Mapping[str, Any] | None = None, num_classes: int = 1000) -> list[dict[str, Any]]:
    """The layer features of every leaf module call of a model at this batch and input size,
    without running it at that size: traced on the meta device (no memory, no weights), or, for a
    builder the meta device cannot run, on the CPU with one image (shapes scaled to the batch).
    What a saved predictor needs to predict a model before it runs. Each row also has
    ``layer_name``, ``calls``, ``batch_size`` and ``input_size``."""
    import torch

    channels = _in_channels(model, network)
    try:
        with torch.device("meta"):
            net = build_model(model, network, input_size, num_classes)
            calls = capture_layers(net.eval(), torch.empty(1, channels, input_size, input_size))
    except Exception:  # e.g. an initialiser the meta device cannot run
        net = build_model(model, network, input_size, num_classes)
        calls = capture_layers(net.eval(), torch.zeros(1, channels, input_size, input_size))
    rows = []
    for c in calls:
        c.in_shape, c.out_shape = (batch_size, *c.in_shape[1:]), (batch_size, *c.out_shape[1:])
        rows.append({**c.features(), "layer_name": c.name, "calls": c.calls, "batch_size": batch_size,
                     "input_size": input_size})
    return rows


def _in_channels(model: Mapping[str, Any], network: Mapping[str, Any] | None) -> int:
    return 3 if "torchvision" in model else int((network or {}).get("in_channels", 3))


def model_size(model: Mapping[str, Any], network: Mapping[str, Any] | None, input_size: int,
               num_classes: int = 1000) -> tuple[int, int]:
    """Trainable parameters and forward FLOPs per input image: for a cell, ``jobs.network``'s
    counts (as the training workload records them); for a torchvision model, the sum over its
    leaf layers (``describe_model``)."""
    if "cell" in model:
        from jobs.cell import CellSpec
        from jobs.network import NetworkConfig, count_flops, count_params

        spec = CellSpec.from_dict(model["cell"])
        net = NetworkConfig(**{**dict(network or {}), "image_size": input_size})
        return count_params(spec, net), count_flops(spec, net)
    try:
        rows = describe_model(model, 1, input_size, network, num_classes)
    except Exception as exc:  # a builder that cannot be traced: sizes unknown, not an error
        log.warning("sizes of %s not computed: %s", model_name(model), exc)
        return 0, 0
    return sum(r["params"] for r in rows), sum(r["flops"] * r["calls"] for r in rows)


# -- the workload ------------------------------------------------------------------------------
@dataclasses.dataclass
class Item:
    """One measured window: the whole model, a layer of it alone, or a layer spec."""

    scope: str  # model | layer
    model_name: str | None
    layer_name: str | None
    module: Any
    inputs: Any
    features: dict[str, Any]
    calls: int = 1
    spec: Mapping[str, Any] | None = None
    memory_mb: float | None = None
    memory_method: str | None = None


@dataclasses.dataclass
class Window:
    """What one window ran: passes and their wall time (monotonic, device synchronised)."""

    position: int
    item: Item
    passes: int
    wall_s: float


@dataclasses.dataclass
class Prepared:
    items: list[Item]
    phase: str
    config: LayersConfig
    batch_size: int
    input_size: int


class LayerWorkload:
    """Layer specs and models at batch sizes x input sizes (spec: ``{kind, layer|model, batch_size,
    input_size, backward, isolate_layers, passes}``)."""

    name = NAME
    tables: tuple[str, ...] = (TABLE,)

    # -- planning -----------------------------------------------------------------------------
    def plan(self, config: Mapping[str, Any]) -> list[PlannedTrial]:
        """Every layer spec and model x batch size x input size (a linear layer once per batch
        size: its input has no spatial size). ConfigError on a bad spec."""
        cfg = LayersConfig.from_mapping(config.get("layers"))
        if not cfg.layers and not cfg.models:
            raise ConfigError("layers.layers and layers.models are both empty (list layer specs or models to measure)")
        common = {"backward": cfg.backward, "isolate_layers": cfg.isolate_layers, "min_passes": cfg.min_passes,
                  "max_passes": cfg.max_passes, "min_window_s": cfg.min_window_s}
        out: dict[str, PlannedTrial] = {}
        for i, raw in enumerate(cfg.layers):
            layer = check_layer(raw, i)
            for b in cfg.batch_sizes:
                for s in (cfg.input_sizes if layer["type"] != "linear" else cfg.input_sizes[:1]):
                    feats = spec_features(layer, b, s, i)  # refuses a kernel larger than its input
                    size = None if layer["type"] == "linear" else s
                    spec = {"kind": "layer", "layer": layer, "batch_size": b, "input_size": size, **common}
                    label = f"{layer['type']}#{i}/b{b}" + (f"/{s}px" if size else "")
                    out.setdefault(digest(spec), PlannedTrial(spec=spec, identity=spec, label=label,
                                                              params=feats["params"], flops=feats["flops"] // b))
        names = torchvision_classifiers() if any(not (isinstance(m, Mapping) and "cell" in m)
                                                 for m in cfg.models) else []
        network = dict(config.get("network") or {})
        for i, raw in enumerate(cfg.models):
            model = check_model(raw, i, names)
            net = network if "cell" in model else None
            for s in cfg.input_sizes:
                params, flops = model_size(model, net, s, cfg.num_classes)
                for b in cfg.batch_sizes:
                    spec = {"kind": "model", "model": model, "batch_size": b, "input_size": s,
                            "num_classes": cfg.num_classes, **common}
                    if net is not None:
                        spec["network"] = net
                    out.setdefault(digest(spec), PlannedTrial(
                        spec=spec, identity=spec, label=f"{model_name(model)}/b{b}/{s}px", params=params, flops=flops))
        return list(out.values())

    def trial_key(self, planned: PlannedTrial, gpu_type: str, seed: int, measurement: Mapping[str, Any]) -> str:
        """sha256 over the workload, the spec, the GPU type, the seed and the measurement settings
        (the training settings, recipe and data set, do not change a layer measurement)."""
        m = {k: v for k, v in measurement.items() if k in ("protocol", "meter")}
        return digest({"workload": NAME, "spec": dict(planned.identity), "gpu": gpu_type, "seed": seed, "m": m})

    # -- running --------------------------------------------------------------------------------
    def prepare(self, ctx: TrialContext) -> Prepared:
        """Build the layer or the model (and its layers alone), the random inputs, on the device."""
        import torch

        spec = ctx.trial.spec
        cfg = LayersConfig(min_passes=int(spec["min_passes"]), max_passes=int(spec["max_passes"]),
                           min_window_s=float(spec["min_window_s"]), backward=bool(spec["backward"]),
                           isolate_layers=bool(spec["isolate_layers"]))
        torch.manual_seed(ctx.trial.seed)
        b, s, dev = int(spec["batch_size"]), int(spec.get("input_size") or 1), ctx.device
        items: list[Item] = []
        if spec["kind"] == "layer":
            layer = check_layer(spec["layer"], "the trial's layer")
            feats = spec_features(layer, b, s)
            from jobs.workloads.layer_spec import input_shape

            module = build_layer(layer).to(dev)
            items.append(Item("layer", None, None, module, torch.randn(*input_shape(layer, b, s), device=dev), feats,
                              spec=layer))
        else:
            model = spec["model"]
            net = build_model(model, spec.get("network"), s, int(spec.get("num_classes", 1000))).to(dev).eval()
            x = torch.randn(b, _in_channels(model, spec.get("network")), s, s, device=dev)
            calls = capture_layers(net, x)
            name = model_name(model)
            whole = {**layer_features("model", {}, tuple(x.shape), tuple(x.shape)),
                     "out_channels": None, "out_h": None, "out_w": None,
                     "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
                     "flops": sum(c.features()["flops"] * c.calls for c in calls)}
            whole.update({"in_channels": int(x.shape[1]), "in_h": s, "in_w": s})
            items.append(Item("model", name, None, net, x, whole, spec=model))
            if cfg.isolate_layers:
                for c in calls:
                    alone = copy.deepcopy(c.module).eval()
                    items.append(Item("layer", name, c.name, alone, torch.randn(*c.in_shape, device=dev),
                                      c.features(), calls=c.calls))
        if cfg.backward:
            for it in items:
                it.module.train()
        for it in items:
            it.memory_mb, it.memory_method = _memory(it, dev, cfg.backward)
        random.Random(ctx.trial.seed).shuffle(items)
        return Prepared(items, Phase.TRAIN if cfg.backward else Phase.EVAL, cfg, b, s)

    def execute(self, prepared: Prepared, ctx: TrialContext) -> list[Window]:
        """Each item in its window, passes repeated until the window is long enough."""
        meter = ctx.settings.meter
        target_s = max(WINDOW_MARGIN * meter.min_window_samples / meter.rate_hz, prepared.config.min_window_s)
        windows = []
        for position, item in enumerate(prepared.items, 1):
            if ctx.abandoned():
                raise RuntimeError("attempt abandoned: the database declared it stale or cancelled")
            ctx.mark(prepared.phase, position)
            passes, wall_s = run_window(item, ctx.device, prepared.config, target_s)
            windows.append(Window(position, item, passes, wall_s))
        return windows

    def figures(self, summary: Mapping[str, Any], outcome: Any, ctx: TrialContext) -> dict[str, Any]:
        """The run's figures: its energy is that of all its windows (phase eval or train)."""
        run = summary["run"]
        return dict(
            energy_j=run["energy_j"], energy_above_idle_j=run["energy_above_idle_j"],
            energy_uncertainty_j=run["energy_uncertainty_j"], error_basis=run["error_basis"],
            counter_energy_j=run["counter_energy_j"], integrated_energy_j=run["integrated_energy_j"],
            energy_disagreement=run["energy_disagreement"], duration_s=run["duration_s"],
            dataset="random input",
        )  # fmt: skip

    def records(self, summary: Mapping[str, Any], outcome: Any, ctx: TrialContext,
                samples: Sequence[Any]) -> dict[str, list[dict[str, Any]]]:
        """One ``layer_measurement`` row per window."""
        from jobs.protocol import WindowRule

        meter = ctx.settings.meter
        rule = WindowRule(meter.min_window_samples, meter.min_rate_hz)
        spec = ctx.trial.spec
        clock = min((s.device for s in samples), default=0)
        counts: dict[int, int] = {}
        for s in samples:
            if s.device == clock and s.epoch is not None and s.phase in (Phase.EVAL, Phase.TRAIN):
                counts[s.epoch] = counts.get(s.epoch, 0) + 1
        rows = []
        for w in outcome:
            fig = summary["epoch_figures"].get(w.position, {})
            energy, duration = fig.get("energy_j"), fig.get("duration_s")
            n = counts.get(w.position, 0)

            def per(v: float | None, passes: int = w.passes) -> float | None:
                return None if v is None else v / passes

            rows.append({
                "position": w.position, "scope": w.item.scope, "model_name": w.item.model_name,
                "layer_name": w.item.layer_name, "calls": w.item.calls, "batch_size": int(spec["batch_size"]),
                "input_size": spec.get("input_size"), "backward": bool(spec["backward"]),
                **w.item.features,
                "passes": w.passes, "wall_time_s": w.wall_s, "time_per_pass_s": w.wall_s / w.passes,
                "window_s": duration, "energy_j": energy, "energy_per_pass_j": per(energy),
                "energy_above_idle_per_pass_j": per(fig.get("energy_above_idle_j")),
                "uncertainty_per_pass_j": per(fig.get("uncertainty_j")),
                "mean_power_w": energy / duration if energy is not None and duration else None,
                "energy_method": fig.get("method"), "samples": n,
                "valid": bool(duration and rule.holds(n, max(n - 1, 0), duration)),
                "memory_mb": w.item.memory_mb, "memory_method": w.item.memory_method,
                "spec_json": json.dumps(w.item.spec, sort_keys=True) if w.item.spec is not None else None,
            })  # fmt: skip
        return {TABLE: rows}


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _one_pass(item: Item, backward: bool) -> None:
    import torch

    if backward:
        out = item.module(item.inputs)
        if out.requires_grad:
            out.float().sum().backward()
    else:
        with torch.inference_mode():
            item.module(item.inputs)


def run_window(item: Item, device: str, cfg: LayersConfig, target_s: float) -> tuple[int, float]:
    """Passes until ``target_s`` has passed (and ``cfg.min_passes`` ran), at most ``cfg.max_passes``;
    the device is synchronised after each chunk. Returns (passes, wall seconds)."""
    passes, chunk = 0, 1
    t0 = time.perf_counter()
    while True:
        for _ in range(chunk):
            _one_pass(item, cfg.backward)
        _sync(device)
        passes += chunk
        elapsed = time.perf_counter() - t0
        if passes >= cfg.max_passes or (elapsed >= target_s and passes >= cfg.min_passes):
            return passes, elapsed
        per = elapsed / passes
        want = max(cfg.min_passes - passes, int((target_s - elapsed) / per) + 1 if per > 0 else passes)
        chunk = max(1, min(want, cfg.max_passes - passes, 2 * passes))


def _memory(item: Item, device: str, backward: bool) -> tuple[float | None, str]:
    """Peak device memory of one pass on CUDA (measured); elsewhere the bytes of parameters,
    input and output (counted, not measured)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _one_pass(item, backward)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20, "cuda_max_allocated"
    with torch.inference_mode():
        out = item.module(item.inputs)
    size = sum(p.numel() * p.element_size() for p in item.module.parameters())
    size += item.inputs.numel() * item.inputs.element_size()
    size += out.numel() * out.element_size() if isinstance(out, torch.Tensor) else 0
    return size / 2**20, "tensor_bytes"
