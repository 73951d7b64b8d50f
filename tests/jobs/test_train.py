"""The training loop: it learns, marks its phases, calls on_step, is seeded, and stops on divergence."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from jobs.cell import INPUT, OPS, OUTPUT, CellSpec
from jobs.data import make_synthetic
from jobs.network import NetworkConfig, count_params
from jobs.recipe import RecipeConfig
from jobs.train import TrainingDiverged, prepare_training, run_training, train

C3, C1, MP = OPS
SPEC = CellSpec.create([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]], [INPUT, C3, MP, OUTPUT])
# NAS-Bench-101's skeleton shrunk for a CPU. Batch-norm momentum 0.9 instead of 0.997: evaluation
# uses the moving statistics, and at 0.997 they need hundreds of steps (NAS-Bench-101's shortest
# budget has 625) to leave their initial values; these runs have tens.
SMALL = NetworkConfig(stem_channels=16, num_stacks=1, cells_per_stack=1, bn_momentum=0.9)


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(2000, 250, 250, seed=0)


def test_learns_marks_phases_and_steps(synthetic) -> None:
    marks: list[tuple[str, int | None]] = []
    steps = [0]

    def on_step() -> None:
        steps[0] += 1

    recipe = RecipeConfig(batch_size=64)
    result = train(
        SPEC, SMALL, recipe, synthetic, epochs=2, seed=0, mark=lambda p, e: marks.append((p, e)), on_step=on_step
    )
    assert marks == [("train", 1), ("eval", 1), ("train", 2), ("eval", 2), ("eval", None)]
    assert steps[0] == 2 * (2000 // 64)
    assert [e.epoch for e in result.epochs] == [1, 2]
    assert all(e.images == (2000 // 64) * 64 for e in result.epochs)
    last = result.epochs[-1]
    assert last.valid_accuracy > 0.3 and result.test_accuracy > 0.3  # chance is 0.1
    assert result.valid_accuracy == last.valid_accuracy
    assert last.train_loss < result.epochs[0].train_loss
    assert result.params == count_params(SPEC, SMALL)
    assert result.train_images_per_s > 0
    for e in result.epochs:
        assert e.duration_s == pytest.approx(e.train_s + e.eval_s)
        assert e.train_s > 0 and e.eval_s > 0


def test_same_seed_same_run(synthetic) -> None:
    small = dataclasses.replace(synthetic, x_train=synthetic.x_train[:512], y_train=synthetic.y_train[:512])
    recipe = RecipeConfig(batch_size=128)
    runs = [train(SPEC, SMALL, recipe, small, epochs=1, seed=s) for s in (7, 7, 8)]
    fields = ("train_loss", "train_accuracy", "valid_accuracy")
    first, again, other = ([getattr(r.epochs[0], f) for f in fields] + [r.test_accuracy] for r in runs)
    assert first == again
    assert first != other


def test_divergence_raises(synthetic) -> None:
    broken = dataclasses.replace(
        synthetic, x_train=torch.full((64, 3, 32, 32), float("nan")), y_train=synthetic.y_train[:64]
    )
    steps = [0]
    with pytest.raises(TrainingDiverged, match="non-finite loss in epoch 1"):
        train(SPEC, SMALL, RecipeConfig(batch_size=16), broken, epochs=1, seed=0, on_step=lambda: steps.__setitem__(0, steps[0] + 1))
    assert steps[0] < 4  # stopped at the epoch's end, before the remaining steps


def test_bad_arguments(synthetic) -> None:
    with pytest.raises(ValueError, match="epochs = 0 must be >= 1"):
        train(SPEC, SMALL, RecipeConfig(), synthetic, epochs=0, seed=0)
    with pytest.raises(ValueError, match="the network expects"):
        train(SPEC, dataclasses.replace(SMALL, image_size=16), RecipeConfig(), synthetic, epochs=1, seed=0)
    with pytest.raises(ValueError, match="labels outside 0..4"):
        train(SPEC, dataclasses.replace(SMALL, num_classes=5), RecipeConfig(), synthetic, epochs=1, seed=0)


def test_setup_with_a_first_batch_leaves_the_run_unchanged(synthetic) -> None:
    """The setup's one-off batch (cuDNN autotuning on CUDA) restores what it touched: the same seed
    trains to the same losses, and ``train`` is setup then run."""
    small = dataclasses.replace(synthetic, x_train=synthetic.x_train[:512], y_train=synthetic.y_train[:512])
    recipe = RecipeConfig(batch_size=128)
    plain = train(SPEC, SMALL, recipe, small, epochs=1, seed=3)
    prepared = prepare_training(SPEC, SMALL, recipe, small, epochs=1, seed=3, first_batch=True)
    warmed = run_training(prepared)
    assert warmed.epochs[0].train_loss == plain.epochs[0].train_loss
    assert warmed.test_accuracy == plain.test_accuracy and warmed.params == plain.params
