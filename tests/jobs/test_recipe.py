"""NAS-Bench-101's recipe: defaults, TF-style RMSProp against hand-computed steps, schedule, augmentation."""

from __future__ import annotations

import math

import pytest
import torch

from jobs.recipe import RecipeConfig, TFRMSprop, augment, lr_at, make_optimizer, normalize


def test_defaults_are_nasbench_values() -> None:
    r = RecipeConfig()
    assert (r.batch_size, r.learning_rate, r.momentum, r.rms_decay, r.rms_epsilon, r.weight_decay) == (
        256,
        0.2,  # 0.1 x 2 TPU shards
        0.9,
        0.9,
        1.0,
        1e-4,
    )
    assert (r.lr_schedule, r.zero_lr_first_step, r.augment, r.pad, r.flip, r.normalization) == (
        "cosine",
        True,
        True,
        4,
        True,
        "mean_std",
    )
    assert r.amp is False


@pytest.mark.parametrize(
    "kwargs",
    [{"batch_size": 0}, {"lr_schedule": "step"}, {"normalization": "none"}, {"rms_epsilon": 0.0}, {"momentum": 1.0}],
)
def test_recipe_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RecipeConfig(**kwargs)


def _hand_steps(p0: list[float], grads: list[list[float]], lr: float, decay: float, mom: float, eps: float, wd: float):
    """TF1 RMSPropOptimizer written out for scalars: ms starts at 1, mom at 0, eps inside the sqrt."""
    p = list(p0)
    ms = [1.0] * len(p)
    m = [0.0] * len(p)
    for g_step in grads:
        for i, g_raw in enumerate(g_step):
            g = g_raw + wd * p[i]
            ms[i] = decay * ms[i] + (1 - decay) * g * g
            m[i] = mom * m[i] + lr * g / math.sqrt(ms[i] + eps)
            p[i] -= m[i]
    return p


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_tf_rmsprop_matches_hand_computed_steps(foreach: bool, wd: float) -> None:
    p0 = [1.0, -2.0, 0.5]
    grads = [[0.5, 0.1, -3.0], [0.4, -0.2, 1.0], [-1.0, 0.0, 2.0]]
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = TFRMSprop([param], lr=0.1, decay=0.9, momentum=0.9, eps=1.0, weight_decay=wd, foreach=foreach)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expected = _hand_steps(p0, grads, lr=0.1, decay=0.9, mom=0.9, eps=1.0, wd=wd)
    assert param.detach().tolist() == pytest.approx(expected, rel=1e-12)


def test_tf_rmsprop_first_step_by_hand() -> None:
    """One step written out: ms = 0.9 * 1 + 0.1 * 0.25 = 0.925; step = 0.1 * 0.5 / sqrt(1.925)."""
    param = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = TFRMSprop([param], lr=0.1, decay=0.9, momentum=0.9, eps=1.0)
    param.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    assert param.item() == pytest.approx(1.0 - 0.05 / math.sqrt(1.925), rel=1e-12)
    assert opt.state[param]["ms"].item() == pytest.approx(0.925)


def test_tf_rmsprop_differs_from_torch_rmsprop() -> None:
    """The reason this class exists: torch's RMSprop (ms from 0, eps outside the sqrt) steps differently."""
    ours = torch.nn.Parameter(torch.ones(3))
    theirs = torch.nn.Parameter(torch.ones(3))
    a = TFRMSprop([ours], lr=0.2, momentum=0.9, eps=1.0)
    b = torch.optim.RMSprop([theirs], lr=0.2, alpha=0.9, momentum=0.9, eps=1.0)
    for opt, p in ((a, ours), (b, theirs)):
        p.grad = torch.tensor([0.01, 1.0, 100.0])
        opt.step()
    assert not torch.allclose(ours, theirs, rtol=1e-3)


def test_make_optimizer_decays_every_trainable_parameter() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    opt = make_optimizer(model, RecipeConfig())
    assert isinstance(opt, torch.optim.Optimizer)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-4 and group["eps"] == 1.0 and group["momentum"] == 0.9
    assert group["decay"] == 0.9
    # BN scale and shift and the dense bias are decayed too (NAS-Bench-101's tf.trainable_variables())
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters() if p.requires_grad}


def test_cosine_schedule() -> None:
    r = RecipeConfig()
    total = 1000
    assert lr_at(0, total, r) == 0.0  # NAS-Bench-101's first step only initialises
    assert lr_at(1, total, r) == pytest.approx(0.5 * 0.2 * (1 + math.cos(math.pi / total)))
    assert lr_at(500, total, r) == pytest.approx(0.1)
    assert lr_at(total - 1, total, r) == pytest.approx(0.2 * 0.5 * (1 - math.cos(math.pi / total)))
    assert lr_at(total, total, r) == pytest.approx(0.0, abs=1e-15)
    values = [lr_at(s, total, r) for s in range(1, total)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    no_zero = RecipeConfig(zero_lr_first_step=False)
    assert lr_at(0, total, no_zero) == 0.2
    assert lr_at(10, total, RecipeConfig(lr_schedule="constant")) == 0.2
    with pytest.raises(ValueError):
        lr_at(0, 0, r)


def test_schedule_length_follows_the_budget() -> None:
    """The epoch budget changes only the schedule's length: the same fraction gives the same lr."""
    r = RecipeConfig()
    assert lr_at(300, 1200, r) == pytest.approx(lr_at(100, 400, r))


def _reference_augment(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flips: torch.Tensor, pad: int):
    out = []
    for i in range(len(x)):
        padded = torch.nn.functional.pad(x[i], (pad, pad, pad, pad))
        crop = padded[:, oy[i] : oy[i] + x.shape[2], ox[i] : ox[i] + x.shape[3]]
        out.append(crop.flip(2) if flips[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_pads_crops_and_flips(dtype: torch.dtype) -> None:
    x = torch.randint(1, 256, (16, 3, 32, 32)).to(dtype)
    out = augment(x, torch.Generator().manual_seed(5))
    # the same draws, in augment's order: offsets (2, n) then flips (n)
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 9, (2, 16), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    assert torch.equal(out, _reference_augment(x, offsets[0], offsets[1], flips, 4))
    assert out.dtype == dtype and out.shape == x.shape
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert bool(flips.any()) and not bool(flips.all())
    # padding is zero (black) on the raw pixel scale; a crop at offset 0 shows it
    assert (out == 0).any()


def test_augment_is_seeded_and_can_be_disabled() -> None:
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment(x, torch.Generator(), pad=0, flip=False), x)


def test_normalize() -> None:
    x = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    out = normalize(x, (100.0, 50.0, 0.0), (1.0, 10.0, 50.0))
    assert out.dtype == torch.float32
    assert out[:, 0].eq(0).all() and out[:, 1].eq(5).all() and out[:, 2].eq(2).all()
    assert normalize(x, (10.0, 10.0, 10.0), None)[0, 0, 0, 0].item() == 90.0
