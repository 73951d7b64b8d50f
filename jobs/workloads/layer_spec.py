"""Layer and model specs of the layer workload, and its configuration schema: pure data and
arithmetic (shapes, FLOPs, parameters), no torch.

A layer spec is a mapping with a ``type`` (one of ``LAYER_TYPES``) and that type's keys; a model
spec names a torchvision classifier (``{torchvision: resnet18}``, built with ``weights=None``) or
a NAS-Bench-101 cell (``{cell: {matrix, ops}}``, built by ``jobs.network`` under the campaign's
network settings). Every check raises ``ConfigError`` in one line naming the entry, the value and
what is allowed, at planning time, before anything is recorded.

The features of a layer (``layer_features``) are the same plain fields whether the layer comes
from a spec or was captured from a model: they are the layer table's columns and the predictors'
inputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

from db.errors import ConfigError

# type -> (required keys, optional keys with defaults)
_ACTIVATION: tuple[dict[str, Any], dict[str, Any]] = ({}, {"channels": 3})
LAYER_TYPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "conv2d": ({"in_channels": int, "out_channels": int, "kernel_size": int},
               {"stride": 1, "padding": 0, "groups": 1, "bias": True}),
    "linear": ({"in_features": int, "out_features": int}, {"bias": True}),
    "maxpool2d": ({"kernel_size": int}, {"stride": None, "padding": 0, "channels": 3}),
    "avgpool2d": ({"kernel_size": int}, {"stride": None, "padding": 0, "channels": 3}),
    "adaptiveavgpool2d": ({}, {"output_size": 1, "channels": 3}),
    "batchnorm2d": ({"channels": int}, {}),
    "zeropad2d": ({"padding": int}, {"channels": 3}),
    "dropout": ({}, {"p": 0.5, "channels": 3}),
    "flatten": ({}, {"channels": 3}),
    "add": ({}, {"channels": 3}),
    "concat": ({}, {"channels": 3}),
    **{a: _ACTIVATION for a in ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
                                "leakyrelu", "softmax")},
}
ACTIVATIONS = ("relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leakyrelu", "softmax")
# The layer table's feature columns (see db/layers.py), in order.
FEATURE_COLUMNS = ("layer_type", "in_channels", "in_h", "in_w", "out_channels", "out_h", "out_w", "kernel_size",
                   "stride", "padding", "groups", "in_features", "out_features", "flops", "params")


def _where(index: int | str) -> str:
    return f"layers.layers[{index}]" if isinstance(index, int) else str(index)


def check_layer(spec: Any, index: int | str = 0) -> dict[str, Any]:
    """The layer spec with its defaults filled in; ConfigError names an unknown type, an unknown
    or missing key, or a size that is not a positive integer."""
    where = _where(index)
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(f"{where} must be a mapping with a 'type' (one of {', '.join(LAYER_TYPES)}), got {spec!r}")
    kind = str(spec["type"]).lower()
    if kind not in LAYER_TYPES:
        raise ConfigError(f"{where}: unknown layer type {spec['type']!r} (allowed: {', '.join(LAYER_TYPES)})")
    required, optional = LAYER_TYPES[kind]
    unknown = sorted(set(spec) - {"type"} - set(required) - set(optional))
    if unknown:
        raise ConfigError(f"{where}: {kind} has no key {unknown[0]!r} (allowed: {', '.join([*required, *optional])})")
    missing = [k for k in required if k not in spec]
    if missing:
        raise ConfigError(f"{where}: {kind} needs {missing[0]!r} (required: {', '.join(required)})")
    out: dict[str, Any] = {"type": kind, **optional, **{k: v for k, v in spec.items() if k != "type"}}
    for key, value in out.items():
        if key in ("type", "bias") or value is None:
            continue
        if key == "p":
            if not isinstance(value, int | float) or not 0 <= value < 1:
                raise ConfigError(f"{where}: p={value!r} is not allowed (a dropout probability in [0, 1))")
            continue
        low = 0 if key == "padding" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{where}: {key}={value!r} is not allowed (must be an integer >= {low})")
    if kind == "conv2d" and (out["in_channels"] % out["groups"] or out["out_channels"] % out["groups"]):
        raise ConfigError(f"{where}: groups={out['groups']} must divide in_channels={out['in_channels']} "
                          f"and out_channels={out['out_channels']}")
    return out


def input_shape(layer: Mapping[str, Any], batch_size: int, input_size: int) -> tuple[int, ...]:
    """The input a standalone layer is measured on: ``(batch, in_features)`` for linear, else
    ``(batch, channels, input_size, input_size)``."""
    if layer["type"] == "linear":
        return (batch_size, int(layer["in_features"]))
    channels = layer["in_channels"] if layer["type"] == "conv2d" else layer.get("channels", 3)
    return (batch_size, int(channels), input_size, input_size)


def _window(size: int, kernel: int, stride: int, padding: int, where: str, key: str = "kernel_size") -> int:
    if kernel > size + 2 * padding:
        raise ConfigError(f"{where}: {key}={kernel} is larger than its input ({size} + 2 x padding {padding}); "
                          "use a smaller kernel or a larger input_size")
    return (size + 2 * padding - kernel) // stride + 1


def output_shape(layer: Mapping[str, Any], in_shape: Sequence[int], index: int | str = 0) -> tuple[int, ...]:
    """The output shape of ``layer`` on ``in_shape``; ConfigError where the kernel is larger than
    the (padded) input."""
    where, kind, shape = _where(index), layer["type"], tuple(int(v) for v in in_shape)
    if kind == "linear":
        return (*shape[:-1], int(layer["out_features"]))
    if kind in ("flatten",):
        return (shape[0], math.prod(shape[1:]))
    if kind == "concat":
        return (shape[0], 2 * shape[1], *shape[2:])
    if len(shape) != 4:
        return shape
    n, c, h, w = shape
    if kind == "conv2d":
        k, s, p = layer["kernel_size"], layer.get("stride", 1), layer.get("padding", 0)
        return (n, int(layer["out_channels"]), _window(h, k, s, p, where), _window(w, k, s, p, where))
    if kind in ("maxpool2d", "avgpool2d"):
        k, p = layer["kernel_size"], layer.get("padding", 0)
        s = layer.get("stride") or k
        return (n, c, _window(h, k, s, p, where), _window(w, k, s, p, where))
    if kind == "adaptiveavgpool2d":
        o = layer.get("output_size", 1)
        return (n, c, o, o)
    if kind == "zeropad2d":
        p = layer["padding"]
        return (n, c, h + 2 * p, w + 2 * p)
    return shape


def layer_features(layer_type: str, attrs: Mapping[str, Any], in_shape: Sequence[int],
                   out_shape: Sequence[int]) -> dict[str, Any]:
    """The plain features of one layer call: shapes, its hyperparameters, FLOPs of one forward
    pass over the whole batch (2 per multiply-accumulate; 1 per element for elementwise layers,
    comparisons of pooling included) and trainable parameters."""
    ins, outs = [int(v) for v in in_shape], [int(v) for v in out_shape]
    in_numel, out_numel = math.prod(ins), math.prod(outs)

    def dim(shape: list[int], i: int) -> int | None:
        return shape[i] if len(shape) == 4 else None

    k = attrs.get("kernel_size")
    k = int(k[0] if isinstance(k, tuple | list) else k) if k is not None else None
    s = attrs.get("stride")
    s = int(s[0] if isinstance(s, tuple | list) else s) if s is not None else (k if layer_type.endswith("pool2d") else None)
    p = attrs.get("padding")
    p = int(p[0] if isinstance(p, tuple | list) else p) if isinstance(p, int | tuple | list) else None
    groups = int(attrs.get("groups", 1) or 1)
    params = int(attrs.get("params", 0) or 0)
    if layer_type == "conv2d":
        flops = 2 * out_numel * (ins[1] // groups) * (k or 1) ** 2
    elif layer_type == "linear":
        flops = 2 * out_numel * ins[-1]
    elif layer_type in ("maxpool2d", "avgpool2d"):
        flops = out_numel * (k or 1) ** 2
    elif layer_type == "batchnorm2d":
        flops = 2 * in_numel
    else:
        flops = max(in_numel, out_numel)
    return {
        "layer_type": layer_type,
        "in_channels": ins[1] if len(ins) >= 2 else None, "in_h": dim(ins, 2), "in_w": dim(ins, 3),
        "out_channels": outs[1] if len(outs) >= 2 else None, "out_h": dim(outs, 2), "out_w": dim(outs, 3),
        "kernel_size": k, "stride": s, "padding": p, "groups": groups if layer_type == "conv2d" else None,
        "in_features": ins[-1] if layer_type == "linear" else None,
        "out_features": outs[-1] if layer_type == "linear" else None,
        "flops": int(flops), "params": params,
    }  # fmt: skip


def spec_params(layer: Mapping[str, Any]) -> int:
    """Trainable parameters of a layer spec."""
    kind = layer["type"]
    if kind == "conv2d":
        w = layer["out_channels"] * (layer["in_channels"] // layer["groups"]) * layer["kernel_size"] ** 2
        return int(w + (layer["out_channels"] if layer.get("bias", True) else 0))
    if kind == "linear":
        return int(layer["in_features"] * layer["out_features"] + (layer["out_features"] if layer.get("bias", True) else 0))
    if kind == "batchnorm2d":
        return 2 * int(layer["channels"])
    return 0


def spec_features(layer: Mapping[str, Any], batch_size: int, input_size: int, index: int | str = 0) -> dict[str, Any]:
    """``layer_features`` of a (checked) layer spec measured alone at this batch and input size."""
    shape = input_shape(layer, batch_size, input_size)
    return layer_features(layer["type"], {**layer, "params": spec_params(layer)}, shape,
                          output_shape(layer, shape, index))


def check_model(spec: Any, index: int, torchvision_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A model spec: ``{torchvision: NAME}`` or ``{cell: {matrix, ops}}`` (a bare string is a
    torchvision name). ConfigError names an unknown model or a bad cell."""
    where = f"layers.models[{index}]"
    if isinstance(spec, str):
        spec = {"torchvision": spec}
    if not isinstance(spec, Mapping) or len(set(spec) & {"torchvision", "cell"}) != 1:
        raise ConfigError(f"{where} must be {{torchvision: NAME}} or {{cell: {{matrix, ops}}}}, got {spec!r}")
    if "torchvision" in spec:
        name = str(spec["torchvision"])
        if torchvision_names is not None and name not in torchvision_names:
            close = [n for n in torchvision_names if n.startswith(name[:3])][:8]
            raise ConfigError(f"{where}: torchvision={name!r} is not a torchvision classifier "
                              f"(e.g. {', '.join(close or torchvision_names[:8])})")
        return {"torchvision": name}
    from jobs.cell import CellSpec, CellSpecError

    cell = spec["cell"]
    if not isinstance(cell, Mapping) or "matrix" not in cell or "ops" not in cell:
        raise ConfigError(f"{where}: cell must be a mapping with 'matrix' and 'ops', got {cell!r}")
    try:
        c = CellSpec.create(cell["matrix"], cell["ops"])
    except CellSpecError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return {"cell": c.to_dict(), "arch_hash": c.arch_hash}


def model_name(model: Mapping[str, Any]) -> str:
    """``resnet18`` or ``cell:<first 8 of the hash>``."""
    return str(model["torchvision"]) if "torchvision" in model else f"cell:{str(model['arch_hash'])[:8]}"


@dataclasses.dataclass
class LayersConfig:
    """The layer workload (conf/sweep/layers*.yaml, key ``layers``): single layers and whole
    models, each measured at every batch size x input size, forward only or forward and
    backward, each window repeated until it meets the meter's validity rule."""

    batch_sizes: list[int] = field(default_factory=lambda: [16, 32, 64])
    input_sizes: list[int] = field(default_factory=lambda: [300, 400, 500])  # square inputs, pixels
    layers: list[Any] = field(default_factory=list)  # layer specs: {type: conv2d, in_channels: 3, ...}
    models: list[Any] = field(default_factory=list)  # {torchvision: resnet18} | {cell: {matrix, ops}}
    isolate_layers: bool = True  # also measure each layer of a model alone (the additivity factor needs it)
    backward: bool = False  # forward and backward passes (phase train) instead of forward only (phase eval)
    min_passes: int = 3  # every window runs at least this many passes ...
    max_passes: int = 100000  # ... and at most this many, even where the window is still short
    min_window_s: float = 0.0  # a window lasts at least this long (besides the meter's validity rule)
    num_classes: int = 1000  # the torchvision classifiers' output size

    def __post_init__(self) -> None:
        for key in ("batch_sizes", "input_sizes"):
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"layers.{key} is empty (give at least one, e.g. layers.{key}=[16])")
            for v in values:
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError(f"{v!r} in layers.{key} is not allowed (must be an integer >= 1)")
        for key in ("min_passes", "max_passes", "num_classes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"layers.{key}={getattr(self, key)} is not allowed (must be >= 1)")
        if self.max_passes < self.min_passes:
            raise ConfigError(f"layers.max_passes={self.max_passes} is below layers.min_passes={self.min_passes}")
        if self.min_window_s < 0:
            raise ConfigError(f"layers.min_window_s={self.min_window_s} is not allowed (must be >= 0)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> LayersConfig:
        """The section as recorded (plain data); unknown keys are refused in one line."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"layers.{unknown[0]} is not a key of the layer workload (keys: {', '.join(sorted(known))})")
        return cls(**values)
