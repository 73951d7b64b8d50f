"""The training loop of one trial: NAS-Bench-101's network and recipe on a data set, epoch by epoch.

A trial's work is split in two: ``prepare_training`` does everything before training can start
(network, optimizer, data on the device, one-off costs), which the worker measures as its own
``setup`` phase before the idle window; ``run_training`` is the loop. ``train`` is both.

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


@dataclass
class PreparedTraining:
    """A trial's training, set up and ready to run (``prepare_training``); ``run_training`` runs it
    once (its generators and the network's weights are consumed by the run)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    recipe: RecipeConfig
    epochs: int
    dev: torch.device
    memory_format: torch.memory_format
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor | None
    shuffle_gen: torch.Generator
    augment_gen: torch.Generator
    params: int

    @property
    def cuda(self) -> bool:
        return self.dev.type == "cuda"

    @property
    def batch(self) -> int:
        return min(self.recipe.batch_size, len(self.y_train))

    @property
    def steps_per_epoch(self) -> int:
        return len(self.y_train) // self.batch

    def sync(self) -> None:
        """Wait for the device (CUDA) so that what was queued is done."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.dev)

    def autocast(self) -> torch.autocast:
        import torch

        return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16, enabled=self.cuda and self.recipe.amp)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return _accuracy(self.model, x, y, self.mean, self.std, self.recipe, self.memory_format, self.autocast)


def prepare_training(
    spec: CellSpec,
    net: NetworkConfig,
    recipe: RecipeConfig,
    data: DataSplits,
    epochs: int,
    seed: int,
    device: str = "cpu",
    first_batch: bool | None = None,
) -> PreparedTraining:
    """Everything before training can start: the network (seeded), the optimizer, every split on
    the device, and (``first_batch``; default: on CUDA) one forward and backward pass of a training
    batch and one evaluation batch, paying one-off costs (cuDNN autotuning, lazy library start-up)
    here rather than in the first epoch. That pass leaves no trace: the weights and batch-norm
    statistics are restored, no optimizer step is taken and no generator is drawn from.

    Raises ValueError on arguments that do not fit together. Sets torch's global seed."""
    import torch

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
    # The whole data set goes to the device once (CIFAR-10's 40k training images are 123 MB as
    # uint8); batches are then gathered and augmented there, with no loader workers in the way.
    prepared = PreparedTraining(
        model=model, optimizer=make_optimizer(model, recipe), recipe=recipe, epochs=epochs, dev=dev,
        memory_format=memory_format,
        x_train=to_device(data.x_train, dev), y_train=to_device(data.y_train, dev),
        x_valid=to_device(data.x_valid, dev), y_valid=to_device(data.y_valid, dev),
        x_test=to_device(data.x_test, dev), y_test=to_device(data.y_test, dev),
        mean=torch.tensor(data.mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1),
        std=(torch.tensor(data.std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
             if recipe.normalization == "mean_std" else None),
        shuffle_gen=torch.Generator().manual_seed(shuffle_seed),
        augment_gen=torch.Generator().manual_seed(augment_seed),
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )  # fmt: skip
    if cuda if first_batch is None else first_batch:
        _pay_one_off_costs(prepared)
    prepared.sync()
    return prepared


def _pay_one_off_costs(t: PreparedTraining) -> None:
    """One training batch forward and backward, and one evaluation batch, without a trace."""
    import torch.nn.functional as F

    saved = {k: v.detach().clone() for k, v in t.model.state_dict().items()}
    xb = normalize(t.x_train[: t.batch], t.mean, t.std).contiguous(memory_format=t.memory_format)
    with t.autocast():
        logits = t.model(xb)
    F.cross_entropy(logits.float(), t.y_train[: t.batch]).backward()
    t.optimizer.zero_grad(set_to_none=True)
    n = t.recipe.eval_batch_size
    t.accuracy(t.x_valid[:n], t.y_valid[:n])
    t.model.load_state_dict(saved)


def run_training(
    t: PreparedTraining,
    mark: Callable[[str, int | None], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> TrainResult:
    """Trains a prepared network for its epochs and evaluates it (see ``train``)."""
    import torch
    import torch.nn.functional as F

    model, optimizer, recipe, dev = t.model, t.optimizer, t.recipe, t.dev
    n_train, batch, steps_per_epoch = len(t.y_train), t.batch, t.steps_per_epoch
    total_steps = t.epochs * steps_per_epoch

    def signal(phase: str, epoch: int | None) -> None:
        t.sync()
        if mark is not None:
            mark(phase, epoch)

    results: list[EpochResult] = []
    step = 0
    for epoch in range(1, t.epochs + 1):
        signal("train", epoch)
        start = time.perf_counter()
        model.train()
        order = to_device(torch.randperm(n_train, generator=t.shuffle_gen), dev)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        seen = 0
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            xb, yb = t.x_train[idx], t.y_train[idx]
            if recipe.augment:
                xb = augment(xb, t.augment_gen, pad=recipe.pad, flip=recipe.flip)
            xb = normalize(xb, t.mean, t.std).contiguous(memory_format=t.memory_format)
            lr = lr_at(step, total_steps, recipe)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with t.autocast():
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
        t.sync()
        train_s = time.perf_counter() - start
        train_loss = float(loss_sum.item()) / seen
        train_accuracy = int(correct.item()) / seen

        signal("eval", epoch)
        start = time.perf_counter()
        valid_accuracy = t.accuracy(t.x_valid, t.y_valid)
        t.sync()
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
    test_accuracy = t.accuracy(t.x_test, t.y_test)
    t.sync()
    total_train_s = sum(r.train_s for r in results)
    total_images = sum(r.images for r in results)
    return TrainResult(
        epochs=results,
        test_accuracy=test_accuracy,
        valid_accuracy=results[-1].valid_accuracy,
        params=t.params,
        train_images_per_s=total_images / total_train_s if total_train_s > 0 else 0.0,
    )


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
    """Trains ``build_network(spec, net)`` for ``epochs`` epochs and evaluates it:
    ``run_training(prepare_training(...), mark, on_step)``.

    The cosine schedule spans exactly ``epochs`` (the budget changes only its length). Fully
    seeded: the same arguments on the same device and software give the same losses (on CUDA,
    ``recipe.cudnn_benchmark`` may pick different kernels and break bit-equality). ``on_step`` is
    called after every optimizer step (heartbeats, preemption checks; it may raise to stop).
    Raises TrainingDiverged on a NaN/inf loss (detected within 10 steps) and ValueError on
    arguments that do not fit together. Sets torch's global seed; keeps torch's CPU thread count.
    """
    return run_training(prepare_training(spec, net, recipe, data, epochs, seed, device), mark, on_step)


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
