"""NAS-Bench-101's training recipe: hyperparameters, TF-style RMSProp, the schedule, augmentation.

Every default is NAS-Bench-101's, with the place google-research/nasbench defines it:

==================  =========  ======================================================================
field               default    where NAS-Bench-101 sets it
==================  =========  ======================================================================
batch_size          256        ``lib/config.py`` flag ``batch_size``
learning_rate       0.2        ``lib/config.py`` ``learning_rate`` 0.1, multiplied by ``tpu_num_shards``
                               (2) in ``lib/model_builder.py`` (``base_lr *= config['tpu_num_shards']``)
momentum            0.9        ``lib/config.py`` ``momentum``, passed to ``tf.train.RMSPropOptimizer``
rms_decay           0.9        ``tf.train.RMSPropOptimizer``'s default ``decay`` (model_builder.py does
                               not override it)
rms_epsilon         1.0        ``lib/model_builder.py``: ``RMSPropOptimizer(..., epsilon=1.0)``
weight_decay        1e-4       ``lib/config.py`` ``weight_decay``; model_builder.py adds
                               ``weight_decay * sum(tf.nn.l2_loss(v))`` over *all* trainable variables
lr_schedule         cosine     ``lib/config.py`` ``lr_decay_method = COSINE_BY_STEP``: lr =
                               0.5 * base * (1 + cos(pi * step / total_steps)), total_steps = epochs *
                               train images / batch size
zero_lr_first_step  True       ``lib/model_builder.py``: "Set LR to 0 for step 0"
augment             True       ``lib/cifar.py`` ``_preprocess``: pad 4 px with 0 (on raw pixel values),
                               random 32x32 crop, random horizontal flip
normalization       mean_std   ``lib/cifar.py`` ``_parser``: subtract ``RGB_MEAN`` and divide by
                               ``RGB_STD`` per channel, after augmentation
==================  =========  ======================================================================

Batch-norm momentum 0.997 and epsilon 1e-5 (``lib/base_ops.py``) live in ``NetworkConfig``.
NAS-Bench-101 trained on TPUs with the batch split over 2 shards (batch-norm statistics over 128
images each); here one device normalises over the whole batch of 256.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch


@dataclass
class RecipeConfig:
    """NAS-Bench-101's training hyperparameters (see the module docstring for their sources)."""

    batch_size: int = 256
    learning_rate: float = 0.2
    momentum: float = 0.9
    rms_decay: float = 0.9
    rms_epsilon: float = 1.0
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # "cosine" (by step, to 0 over the epoch budget) | "constant"
    zero_lr_first_step: bool = True
    augment: bool = True
    pad: int = 4
    flip: bool = True
    normalization: str = "mean_std"  # "mean_std" (NAS-Bench-101) | "mean" (subtract the mean only)
    # Speed settings; they do not change the computation except amp, which is part of the recipe.
    amp: bool = False  # bfloat16 autocast on CUDA
    channels_last: bool = True
    cudnn_benchmark: bool = True
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"recipe.batch_size = {self.batch_size} and eval_batch_size must be >= 1")
        if self.learning_rate < 0:
            raise ValueError(f"recipe.learning_rate = {self.learning_rate} must be >= 0")
        if not 0.0 <= self.momentum < 1.0 or not 0.0 <= self.rms_decay < 1.0:
            raise ValueError("recipe.momentum and recipe.rms_decay must be in [0, 1)")
        if self.rms_epsilon <= 0 or self.weight_decay < 0 or self.pad < 0:
            raise ValueError("recipe.rms_epsilon must be > 0, weight_decay and pad >= 0")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"recipe.lr_schedule = {self.lr_schedule!r} is not one of 'cosine', 'constant'")
        if self.normalization not in ("mean_std", "mean"):
            raise ValueError(f"recipe.normalization = {self.normalization!r} is not one of 'mean_std', 'mean'")


if TYPE_CHECKING:  # what type checkers see; at run time the class comes from _tf_rmsprop_class()

    class TFRMSprop(torch.optim.Optimizer):
        def __init__(
            self,
            params: Iterable[Any],
            lr: float,
            decay: float = 0.9,
            momentum: float = 0.0,
            eps: float = 1e-10,
            weight_decay: float = 0.0,
            foreach: bool | None = None,
        ) -> None: ...


def __getattr__(name: str) -> Any:
    # TFRMSprop subclasses torch.optim.Optimizer; building it on first access keeps
    # ``import jobs.recipe`` (RecipeConfig, lr_at) free of torch for the planner and the CLI.
    if name == "TFRMSprop":
        return _tf_rmsprop_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _tf_rmsprop_class() -> type:
    import torch

    class TFRMSprop(torch.optim.Optimizer):
        """RMSProp as TensorFlow 1's ``tf.train.RMSPropOptimizer`` (non-centered) computes it.

        Per parameter, with gradient g (plus ``weight_decay * p``, i.e. the gradient of an L2 term
        ``weight_decay * sum(p**2) / 2`` added to the loss, which is NAS-Bench-101's ``tf.nn.l2_loss``)::

            ms  = decay * ms + (1 - decay) * g**2          # ms starts at 1 (TF's "rms" slot), not 0
            mom = momentum * mom + lr * g / sqrt(ms + eps)  # eps inside the square root
            p   = p - mom

        torch.optim.RMSprop differs: ms starts at 0, eps is added outside the square root and the
        learning rate multiplies the momentum buffer instead of the step; with NAS-Bench-101's eps = 1.0
        the two behave very differently.
        """

        def __init__(
            self,
            params: Iterable[Any],
            lr: float,
            decay: float = 0.9,
            momentum: float = 0.0,
            eps: float = 1e-10,
            weight_decay: float = 0.0,
            foreach: bool | None = None,
        ) -> None:
            if lr < 0 or eps <= 0 or not 0.0 <= decay < 1.0 or not 0.0 <= momentum < 1.0 or weight_decay < 0:
                raise ValueError(
                    f"TFRMSprop: invalid lr={lr}, decay={decay}, momentum={momentum}, eps={eps}, "
                    f"weight_decay={weight_decay}"
                )
            defaults = {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps, "weight_decay": weight_decay}
            super().__init__(params, defaults)
            self.foreach = foreach

        @torch.no_grad()
        def step(self, closure: Callable[[], Any] | None = None) -> Any:
            """Applies one update to every parameter that has a gradient; returns closure's loss, if any."""
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                params, grads, ms, mom = [], [], [], []
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if p.grad.is_sparse:
                        raise RuntimeError("TFRMSprop does not support sparse gradients")
                    state = self.state[p]
                    if not state:
                        state["ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                        state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    params.append(p)
                    grads.append(p.grad)
                    ms.append(state["ms"])
                    mom.append(state["mom"])
                if not params:
                    continue
                use_foreach = self.foreach
                if use_foreach is None:
                    use_foreach = len({(p.device, p.dtype) for p in params}) == 1
                update = _update_foreach if use_foreach else _update_loop
                update(params, grads, ms, mom, group)
            return loss

    TFRMSprop.__module__ = __name__
    TFRMSprop.__qualname__ = "TFRMSprop"
    return TFRMSprop


def _update_loop(params: list, grads: list, ms: list, mom: list, group: dict) -> None:
    lr, decay, momentum = group["lr"], group["decay"], group["momentum"]
    eps, wd = group["eps"], group["weight_decay"]
    for p, g, m, b in zip(params, grads, ms, mom, strict=True):
        if wd:
            g = g.add(p, alpha=wd)
        m.mul_(decay).addcmul_(g, g, value=1.0 - decay)
        denom = m.add(eps).sqrt_()
        b.mul_(momentum).addcdiv_(g, denom, value=lr)
        p.sub_(b)


def _update_foreach(params: list, grads: list, ms: list, mom: list, group: dict) -> None:
    # The same arithmetic as _update_loop with multi-tensor kernels (a few launches per step on CUDA).
    import torch

    lr, decay, momentum = group["lr"], group["decay"], group["momentum"]
    eps, wd = group["eps"], group["weight_decay"]
    if wd:
        grads = list(torch._foreach_add(grads, params, alpha=wd))
    torch._foreach_mul_(ms, decay)
    torch._foreach_addcmul_(ms, grads, grads, value=1.0 - decay)
    denom = torch._foreach_add(ms, eps)
    torch._foreach_sqrt_(denom)
    torch._foreach_mul_(mom, momentum)
    torch._foreach_addcdiv_(mom, grads, denom, value=lr)
    torch._foreach_sub_(params, mom)


def make_optimizer(model: torch.nn.Module, recipe: RecipeConfig) -> TFRMSprop:
    """NAS-Bench-101's optimizer for ``model``: TF-style RMSProp, L2 decay on every trainable parameter.

    NAS-Bench-101 decays all ``tf.trainable_variables()`` (conv kernels, batch-norm scales and shifts,
    dense kernel and bias), so there is a single parameter group. The learning rate is set each
    step from :func:`lr_at`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return _tf_rmsprop_class()(
        params,
        lr=recipe.learning_rate,
        decay=recipe.rms_decay,
        momentum=recipe.momentum,
        eps=recipe.rms_epsilon,
        weight_decay=recipe.weight_decay,
    )


def lr_at(step: int, total_steps: int, recipe: RecipeConfig) -> float:
    """Learning rate for 0-based optimizer step ``step`` of ``total_steps``.

    Cosine: 0.5 * lr * (1 + cos(pi * step / total_steps)), which falls to 0 at the end of the budget;
    step 0 gets 0 when ``zero_lr_first_step`` (NAS-Bench-101's first step only initialises the
    batch-norm statistics and the RMS accumulators).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps = {total_steps} must be >= 1")
    if step == 0 and recipe.zero_lr_first_step:
        return 0.0
    if recipe.lr_schedule == "constant":
        return recipe.learning_rate
    progress = min(max(step, 0), total_steps) / total_steps
    return 0.5 * recipe.learning_rate * (1.0 + math.cos(math.pi * progress))


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """NAS-Bench-101's augmentation of a batch: zero-pad ``pad`` px, random crop back, random h-flip.

    ``x`` is NCHW (uint8 raw pixels, as NAS-Bench-101 pads before normalising, or float) on any
    device; the result has the same dtype, shape and device, laid out channels-last. Offsets and
    flips are drawn on the CPU from ``generator``, so a seed gives the same batch on CPU and GPU;
    they reach a GPU through pinned memory without waiting for it.
    """
    import torch

    n, c, h, w = x.shape
    if n == 0:
        return x
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    dev = x.device
    drawn = to_device(torch.cat([offsets, flips[None].long()]), dev)  # one copy for the three
    oy, ox, flips = drawn[0], drawn[1], drawn[2].bool()
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad else x
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]  # (n, h)
    cols = torch.arange(w, device=dev)[None, :].expand(n, w)
    cols = torch.where(flips[:, None], (w - 1) - cols, cols) + ox[:, None]  # (n, w)
    batch = torch.arange(n, device=dev)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: (n, h, w, c), i.e. channels-last.
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for a GPU goes through pinned memory asynchronously
    (a copy from pageable memory would wait for the GPU's queue to drain)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor | None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(x - mean) / std per channel in ``dtype`` (default float32; std None: subtract the mean only).

    ``mean``/``std`` are per-channel sequences or tensors broadcastable to x (pass tensors already on
    x's device in a loop: building them from Python numbers costs a host-to-device copy per call).
    """
    import torch

    dtype = dtype or torch.float32
    shape = (1, -1, 1, 1)
    m = mean if isinstance(mean, torch.Tensor) else torch.tensor(mean, dtype=dtype, device=x.device).view(shape)
    out = x.to(dtype) - m
    if std is not None:
        sd = std if isinstance(std, torch.Tensor) else torch.tensor(std, dtype=dtype, device=x.device).view(shape)
        out = out / sd
    return out
