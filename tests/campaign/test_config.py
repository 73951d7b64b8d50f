"""Bad input is refused with one line naming the value and what is allowed."""

from __future__ import annotations

import pytest

from campaign.config import CampaignConfig, ConfigError, compose
from campaign.plan import resolve_architectures


def _refused(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        cfg = compose(["+sweep=smoke", *overrides])
        resolve_architectures(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_gpu_type() -> None:
    msg = _refused(["gpus=[cpu,h900]"])
    assert "'h900'" in msg and "a100" in msg and "v100" in msg


def test_epoch_budget_zero() -> None:
    msg = _refused(["epochs=[0,4]"])
    assert "0" in msg and ">= 1" in msg


def test_invalid_cell_spec_op() -> None:
    msg = _refused(["architectures.specs=[{matrix: [[0,1],[0,0]], ops: [input, conv5x5]}]"])
    assert "specs[0]" in msg


def test_invalid_cell_spec_not_upper_triangular() -> None:
    msg = _refused(["architectures.specs=[{matrix: [[0,1,0],[1,0,1],[0,0,0]], ops: [input, conv3x3-bn-relu, output]}]"])
    assert "specs[0]" in msg


def test_unknown_key_and_wrong_type_from_hydra() -> None:
    assert "protocol.idle" in _refused(["protocol.idle=3"])
    assert "abc" in _refused(["seeds=abc"])


def test_unknown_sweep_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="available: cifar_cells, layers, layers_smoke, smoke"):
        compose(["+sweep=nope"])


def test_negative_pause_and_unknown_launcher() -> None:
    assert "protocol.cooldown_s" in _refused(["protocol.cooldown_s=-1"])
    assert "'pbs'" in _refused(["launcher.name=pbs"])


def test_overrides_work_as_hydra_users_expect() -> None:
    cfg = compose(["+sweep=smoke", "protocol.cooldown_s=0", "db.url=sqlite:////tmp/x.db", "seeds=5"])
    assert cfg.protocol.cooldown_s == 0
    assert cfg.db.url == "sqlite:////tmp/x.db"
    assert cfg.seeds == 5


def test_a_local_ray_clusters_resources_are_given_as_a_mapping() -> None:
    """``launcher.local_resources`` takes the user's own resource names, as written in the docs
    (``KEY={...}``, ``+KEY.NAME=...``); a bad amount is one line naming it."""
    assert compose(["launcher=ray"]).launcher.local_resources == {}
    given = compose(["launcher=ray", "launcher.local_resources={gpu_a100: 1, gpu_v100: 2}"])
    assert given.launcher.local_resources == {"gpu_a100": 1.0, "gpu_v100": 2.0}
    assert compose(["+launcher.local_resources.gpu_a100=1"]).launcher.local_resources == {"gpu_a100": 1.0}
    with pytest.raises(ConfigError, match=r"gpu_a100: Value 'lots' .* Float") as bad:
        compose(["launcher=ray", "launcher.local_resources={gpu_a100: lots}"])
    assert "\n" not in str(bad.value)
    # a campaign recorded when the setting was null still reads back (a resume of it)
    recorded = compose(["launcher=ray"]).to_dict()
    recorded["launcher"]["local_resources"] = None
    assert CampaignConfig.from_dict(recorded).launcher.local_resources == {}


def test_recipe_defaults_equal_the_code_defaults() -> None:
    """conf/recipe/nasbench101.yaml and jobs.recipe.RecipeConfig state the same recipe."""
    import dataclasses

    from jobs.network import NetworkConfig
    from jobs.recipe import RecipeConfig

    cfg = compose(["+sweep=cifar_cells"]).to_dict()
    code = dataclasses.asdict(RecipeConfig())
    assert {k: code[k] for k in cfg["recipe"]} == cfg["recipe"]
    net = dataclasses.asdict(NetworkConfig())
    assert {k: net[k] for k in cfg["network"]} == cfg["network"]


def test_gpu_types_are_read_once_and_each_caller_gets_its_own_copy() -> None:
    from campaign.config import _read_gpu_types, gpu_types

    first = gpu_types()
    assert {"cpu", "a100", "v100"} <= set(first)
    reads = _read_gpu_types.cache_info().misses
    first["a100"].name = "changed by a caller"
    again = gpu_types()
    assert again["a100"].name == "a100"
    assert _read_gpu_types.cache_info().misses == reads  # no second read of conf/gpu
