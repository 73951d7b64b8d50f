"""The training loop of one trial: NAS-Bench-101's network and recipe on a data set, epoch by epoch.

Phase boundaries for the power trace come from the loop itself: ``mark("train", e)`` when epoch
e's training starts, ``mark("eval", e)`` before its validation pass and ``mark("eval", None)``
before the final test evaluation. On CUDA the loop waits for the GPU before each mark and before
each timing, so that a phase's samples and durations cover its own GPU work.

Differences from NAS-Bench-101's TPU loop, all deliberate and small:

- epochs are real epochs: each shuffles the training split and runs ``n_train // batch_size`` full
  batches (NAS-Bench-101 streamed a repeated data set for ``int(epochs * 40000 / 256)`` steps, so
  its epoch boundaries fell inside batches: 16,875 steps at 108 epochs against 16,848 here);
- the training accuracy is the running accuracy over the epoch's augmented batches in training
  mode (NAS-Bench-101 evaluated data_batch_1 in inference mode after training);
- validation and test use every image (NAS-Bench-101 dropped the last partial batch of 256).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.cell import CellSpec
from jobs.data import DataSplits
from jobs.network import NetworkConfig, build_network
from jobs.recipe import RecipeConfig, augment, lr_at, make_optimizer, normalize, to_device

if TYPE_CHECKING:
    import torch

# How often (in steps) the running loss is checked for NaN/inf: each check waits for the GPU.
_FINITE_CHECK_EVERY = 10


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class EpochResult:
    """One epoch: wall-clock seconds (train + validation), losses and accuracies (fractions)."""

    epoch: int  # 1-based
    duration_s: float
    train_s: float
    eval_s: float
    train_loss: float
    train_accuracy: float
    valid_accuracy: float
    images: int  # training images processed in the epoch


@dataclass
class TrainResult:
    """A finished training run."""

    epochs: list[EpochResult]
    test_accuracy: float
    valid_accuracy: float  # of the last epoch
    params: int
    train_images_per_s: float


def _derived_seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for weight init, shuffling and augmentation from the trial's seed."""
    import numpy as np

    states = [s.generate_state(1, np.uint64)[0] for s in np.random.SeedSequence(seed).spawn(3)]
    a, b, c = (int(s) & (2**63 - 1) for s in states)
    return a, b, c


def train(
    spec: CellSpec,
    net: NetworkConfig,
    recipe: RecipeConfig,
    data: DataSplits,
    epochs: int,
    seed: int,
    device: str = "cpu",
    mark: Callable[[str, int | None], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> TrainResult:
    """Trains ``build_network(spec, net)`` for ``epochs`` epochs and evaluates it.

    The cosine schedule spans exactly ``epochs`` (the budget changes only its length). Fully
    seeded: the same arguments on the same device and software give the same losses (on CUDA,
    ``recipe.cudnn_benchmark`` may pick different kernels and break bit-equality). ``on_step`` is
    called after every optimizer step (heartbeats, preemption checks; it may raise to stop).
    Raises TrainingDiverged on a NaN/inf loss (detected within 10 steps) and ValueError on
    arguments that do not fit together. Sets torch's global seed; keeps torch's CPU thread count.
    """
    import torch
    import torch.nn.functional as F

    if epochs < 1:
        raise ValueError(f"epochs = {epochs} must be >= 1")
    _check_data(data, net)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    init_seed, shuffle_seed, augment_seed = _derived_seeds(seed)
    if cuda:
        torch.backends.cudnn.benchmark = recipe.cudnn_benchmark
    memory_format = torch.channels_last if (cuda and recipe.channels_last) else torch.contiguous_format

    torch.manual_seed(init_seed)  # weights are drawn on the CPU: the same network on every device
    model = build_network(spec, net).to(dev).to(memory_format=memory_format)
    optimizer = make_optimizer(model, recipe)
    shuffle_gen = torch.Generator().manual_seed(shuffle_seed)
    augment_gen = torch.Generator().manual_seed(augment_seed)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # The whole split goes to the device once (CIFAR-10's 40k training images are 123 MB as uint8);
    # batches are then gathered and augmented there, with no loader workers in the way.
    x_train, y_train = to_device(data.x_train, dev), to_device(data.y_train, dev)
    x_valid, y_valid = to_device(data.x_valid, dev), to_device(data.y_valid, dev)
    mean = torch.tensor(data.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    std = (
        torch.tensor(data.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
        if recipe.normalization == "mean_std"
        else None
    )
    n_train = len(y_train)
    batch = min(recipe.batch_size, n_train)
    steps_per_epoch = n_train // batch
    total_steps = epochs * steps_per_epoch

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def signal(phase: str, epoch: int | None) -> None:
        sync()
        if mark is not None:
            mark(phase, epoch)

    def autocast() -> torch.autocast:
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda and recipe.amp)

    results: list[EpochResult] = []
    step = 0
    for epoch in range(1, epochs + 1):
        signal("train", epoch)
        start = time.perf_counter()
        model.train()
        order = to_device(torch.randperm(n_train, generator=shuffle_gen), dev)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            xb, yb = x_train[idx], y_train[idx]
            if recipe.augment:
                xb = augment(xb, augment_gen, pad=recipe.pad, flip=recipe.flip)
            xb = normalize(xb, mean, std).contiguous(memory_format=memory_format)
            lr = lr_at(step, total_steps, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast():
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.detach().double() * len(yb)
            correct += (logits.detach().argmax(dim=1) == yb).sum()
            seen += len(yb)
            if (step % _FINITE_CHECK_EVERY == 0 or i == steps_per_epoch - 1) and not torch.isfinite(loss_sum).item():
                raise TrainingDiverged(
                    f"training diverged: non-finite loss in epoch {epoch} by step {step} of {total_steps} "
                    f"(lr {lr:.4g}); this spec/recipe/seed is numerically unstable"
                )
            if on_step is not None:
                on_step()
        sync()
        train_s = time.perf_counter() - start
        train_loss = float(loss_sum.item()) / seen
        train_accuracy = int(correct.item()) / seen

        signal("eval", epoch)
        start = time.perf_counter()
        valid_accuracy = _accuracy(model, x_valid, y_valid, mean, std, recipe, memory_format, autocast)
        sync()
        eval_s = time.perf_counter() - start
        results.append(
            EpochResult(
                epoch=epoch,
                duration_s=train_s + eval_s,
                train_s=train_s,
                eval_s=eval_s,
                train_loss=train_loss,
                train_accuracy=train_accuracy,
                valid_accuracy=valid_accuracy,
                images=seen,
            )
        )

    signal("eval", None)
    x_test, y_test = to_device(data.x_test, dev), to_device(data.y_test, dev)
    test_accuracy = _accuracy(model, x_test, y_test, mean, std, recipe, memory_format, autocast)
    sync()
    total_train_s = sum(r.train_s for r in results)
    total_images = sum(r.images for r in results)
    return TrainResult(
        epochs=results,
        test_accuracy=test_accuracy,
        valid_accuracy=results[-1].valid_accuracy,
        params=params,
        train_images_per_s=total_images / total_train_s if total_train_s > 0 else 0.0,
    )


def _check_data(data: DataSplits, net: NetworkConfig) -> None:
    expected = (net.in_channels, net.image_size, net.image_size)
    for split in ("train", "valid", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        if len(y) == 0 or len(x) != len(y):
            raise ValueError(f"data split {split!r} has {len(x)} images and {len(y)} labels; need the same, > 0")
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"data split {split!r} has images {tuple(x.shape[1:])}, the network expects {expected}")
        if int(y.max()) >= net.num_classes or int(y.min()) < 0:
            raise ValueError(f"data split {split!r} has labels outside 0..{net.num_classes - 1}")


def _accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor | None,
    recipe: RecipeConfig,
    memory_format: torch.memory_format,
    autocast: Callable[[], torch.autocast],
) -> float:
    """Top-1 accuracy in inference mode (batch-norm moving statistics), no augmentation."""
    import torch

    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    with torch.inference_mode():
        for start in range(0, len(y), recipe.eval_batch_size):
            xb = normalize(x[start : start + recipe.eval_batch_size], mean, std)
            with autocast():
                logits = model(xb.contiguous(memory_format=memory_format))
            correct += (logits.argmax(dim=1) == y[start : start + recipe.eval_batch_size]).sum()
    model.train()
    return int(correct.item()) / len(y)
