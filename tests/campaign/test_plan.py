from __future__ import annotations

from collections import Counter

from campaign.config import compose
from campaign.plan import make_plan, resolve_architectures


def _plan(overrides: list[str]):
    cfg = compose(["+sweep=smoke", *overrides])
    return cfg, make_plan(cfg, resolve_architectures(cfg))


def test_counts_are_the_full_product() -> None:
    cfg, plan = _plan(["seeds=3", "epochs=[1,2,4]"])
    assert len(plan.archs) == 2
    assert len(plan.trials) == 2 * 3 * 1 * 3
    assert plan.counts() == Counter({("cpu", 1): 6, ("cpu", 2): 6, ("cpu", 4): 6})
    assert {t.seed for t in plan.trials} == {0, 1, 2}


def test_identities_are_stable_and_unique() -> None:
    _, a = _plan([])
    _, b = _plan([])
    assert [t.trial_key for t in a.trials] == [t.trial_key for t in b.trials]
    assert len({t.trial_key for t in a.trials}) == len(a.trials)


def test_identity_changes_with_the_measurement_not_with_the_launch() -> None:
    _, base = _plan([])
    _, other_root = _plan(["root=/elsewhere", "db.url=sqlite:////tmp/x.db", "name=foo", "order_seed=7"])
    _, other_recipe = _plan(["recipe.batch_size=128"])
    keys = {t.trial_key for t in base.trials}
    assert keys == {t.trial_key for t in other_root.trials}
    assert keys.isdisjoint({t.trial_key for t in other_recipe.trials})


def test_order_is_a_seeded_shuffle() -> None:
    _, a = _plan(["seeds=4"])
    _, b = _plan(["seeds=4"])
    _, c = _plan(["seeds=4", "order_seed=1"])
    order = [t.trial_key for t in a.trials]
    assert order == [t.trial_key for t in b.trials]
    assert order != [t.trial_key for t in c.trials]
    assert sorted(t.order_index for t in a.trials) == list(range(len(a.trials)))
    # randomized: the plan is not the nested-loop order (arch, epochs, seed) of the product
    nested = sorted(a.trials, key=lambda t: (t.arch_hash, t.epochs, t.seed))
    assert order != [t.trial_key for t in nested]


def test_duplicate_specs_collapse_by_hash() -> None:
    spec = "{matrix: [[0,1],[0,0]], ops: [input, output]}"
    # the same cell once more, with a vertex off every input-output path that pruning removes
    dangling = "{matrix: [[0,1,1],[0,0,0],[0,0,0]], ops: [input, conv3x3-bn-relu, output]}"
    _, plan = _plan([f"architectures.specs=[{spec},{spec},{dangling}]"])
    assert len(plan.archs) == 1
    assert plan.archs[0].ops == ["input", "output"]


def test_cifar_cells_plans_every_budget_and_gpu() -> None:
    cfg = compose(["+sweep=cifar_cells"])
    plan = make_plan(cfg, resolve_architectures(cfg))
    assert sorted({t.epochs for t in plan.trials}) == [4, 12, 36, 108]
    assert len(plan.trials) == len(plan.archs) * 4 * len(cfg.gpus) * 3
    assert all(a.params > 0 and a.flops > 0 for a in plan.archs)
