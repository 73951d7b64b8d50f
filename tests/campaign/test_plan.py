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


# --- planning at scale -------------------------------------------------------------------------

def test_trial_keys_stay_what_they_were() -> None:
    from campaign.plan import TrialKeys, measurement_fields, trial_key

    # the identity of recorded campaigns: sha256 of the canonical JSON payload, pinned
    m = {"recipe": {"lr": 0.1, "name": "sgd"}, "dataset": {"name": "cifar10"}, "u": "\u00e9"}
    pinned = "2d23288443a6fcefff26cb0eba1a4c06"
    assert trial_key("7c65f6bd01b87407734781b6038050bc", 4, "a100", 2, m) == pinned
    assert TrialKeys(m)("7c65f6bd01b87407734781b6038050bc", 4, "a100", 2) == pinned
    # the planner's keys (measurement serialised once) are the reference function's
    cfg, plan = _plan(["seeds=3", "epochs=[1,2,4]"])
    measurement = measurement_fields(cfg)
    assert plan.trials
    for t in plan.trials:
        assert t.trial_key == trial_key(t.arch_hash, t.epochs, t.gpu_type, t.seed, measurement)


def test_source_all_enumerates_the_space() -> None:
    from jobs.cell import CellSpec
    from jobs.network import count_flops, count_params

    cfg, plan = _plan(["architectures.source=all", "architectures.max_vertices=4", "architectures.max_edges=9"])
    assert len(plan.archs) == 91
    assert len({a.arch_hash for a in plan.archs}) == 91
    assert len(plan.trials) == 91 * len(cfg.epochs) * len(cfg.gpus) * cfg.seeds
    for a in plan.archs:
        spec = CellSpec.create(a.matrix, a.ops)
        assert spec.arch_hash == a.arch_hash
        assert (a.params, a.flops) == (count_params(spec, cfg.network), count_flops(spec, cfg.network))
        assert a.num_vertices == spec.num_vertices <= 4
        assert a.num_edges == spec.num_edges
    _, fewer = _plan(["architectures.source=all", "architectures.max_vertices=4", "architectures.max_edges=3"])
    assert 0 < len(fewer.archs) < 91 and max(a.num_edges for a in fewer.archs) == 3


def test_sampling_draws_without_replacement_within_the_limits() -> None:
    import pytest

    from db.errors import ConfigError

    overrides = ["architectures.source=sample", "architectures.max_vertices=5", "architectures.seed=3"]
    _, whole = _plan([*overrides, "architectures.n=2532"])  # every cell: no coupon collector
    assert len({a.arch_hash for a in whole.archs}) == 2532
    assert max(a.num_vertices for a in whole.archs) == 5
    _, some = _plan([*overrides, "architectures.n=40"])
    _, again = _plan([*overrides, "architectures.n=40"])
    _, other = _plan([*overrides[:2], "architectures.seed=4", "architectures.n=40"])
    assert [a.arch_hash for a in some.archs] == [a.arch_hash for a in again.archs]
    assert [a.arch_hash for a in some.archs] != [a.arch_hash for a in other.archs]
    assert len({a.arch_hash for a in some.archs}) == 40
    assert {a.arch_hash for a in some.archs} <= {a.arch_hash for a in whole.archs}
    with pytest.raises(ConfigError, match="architectures.n=2533 exceeds the 2532 distinct cells"):
        _plan([*overrides, "architectures.n=2533"])


def test_small_samples_of_the_whole_space_are_drawn_as_before() -> None:
    from jobs.cell import sample_specs

    _, plan = _plan(["architectures.source=sample", "architectures.n=12", "architectures.seed=5"])
    assert [a.arch_hash for a in plan.archs] == [s.arch_hash for s in sample_specs(12, seed=5)]
