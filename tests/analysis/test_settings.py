"""analysis.settings as the configuration's schema, and the import rules of analysis/."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from analysis.settings import (
    AnalysisError,
    AnalysisSettings,
    EnergyTarget,
    GreenAlgorithmsConfig,
    GreenAlgorithmsSettings,
    PAdjust,
    PowerKind,
    SplitBy,
    SurrogateConfig,
    SurrogateSettings,
)
from db.errors import CampaignError, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_conf_group_adds_nothing_to_the_schema() -> None:
    conf = OmegaConf.load(ROOT / "conf" / "analysis" / "default.yaml")
    assert OmegaConf.to_container(conf) == {}
    composed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(AnalysisSettings), conf))
    assert composed == AnalysisSettings() == AnalysisSettings.from_mapping({}) == AnalysisSettings.from_mapping(None)


def test_the_surrogate_recipe_is_written_once() -> None:
    recipe = {f.name: getattr(SurrogateConfig(), f.name) for f in dataclasses.fields(SurrogateConfig)}
    settings = SurrogateSettings()
    assert isinstance(settings, SurrogateConfig)
    assert {k: getattr(settings, k) for k in recipe} == recipe
    assert (settings.epochs, settings.learning_rate, settings.batch_size, settings.split) == (200, 5e-3, 32,
                                                                                             (0.7, 0.1, 0.2))


def test_the_green_algorithms_inputs_are_written_once() -> None:
    settings = GreenAlgorithmsSettings()
    assert isinstance(settings, GreenAlgorithmsConfig)
    assert dataclasses.asdict(settings) == dataclasses.asdict(GreenAlgorithmsConfig())


def test_the_schemas_are_the_same_objects_where_the_code_uses_them() -> None:
    import analysis.estimators
    import analysis.report
    import analysis.settings
    import analysis.stats
    import analysis.surrogate

    assert analysis.surrogate.SurrogateConfig is SurrogateConfig
    assert analysis.estimators.GreenAlgorithmsConfig is GreenAlgorithmsConfig
    assert analysis.stats.PAdjust is PAdjust
    assert AnalysisSettings().min_group_size == analysis.stats.MIN_GROUP_SIZE
    assert tuple(m.value for m in PAdjust) == analysis.stats.P_ADJUST_METHODS
    for name in ("AnalysisError", "AnalysisSettings", "CarbonSettings", "EnergyTarget", "GreenAlgorithmsSettings",
                 "ParetoSettings", "PowerKind", "SplitBy", "SurrogateSettings"):
        assert getattr(analysis.report, name) is getattr(analysis.settings, name), name


def test_the_settings_import_no_numerical_library() -> None:
    """The CLI composes the configuration for every command: its analysis schema must stay light."""
    heavy = ("numpy", "pandas", "scipy", "sklearn", "torch", "matplotlib", "sqlalchemy")
    code = f"import sys, analysis.settings; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_enum_names_equal_their_values() -> None:
    for kind in (PAdjust, SplitBy, EnergyTarget, PowerKind):
        assert [m.name for m in kind] == [m.value for m in kind]


def test_overrides_apply_in_place_and_bad_values_are_one_line() -> None:
    cfg = OmegaConf.structured(AnalysisSettings)
    OmegaConf.update(cfg, "p_adjust", "fdr_bh")  # the composed configuration is not read-only
    OmegaConf.update(cfg, "surrogate.split", [0.5, 0.25, 0.25])
    s = OmegaConf.to_object(cfg)
    assert isinstance(s, AnalysisSettings) and s.p_adjust == "fdr_bh" and s.surrogate.split == (0.5, 0.25, 0.25)
    assert issubclass(AnalysisError, ConfigError) and issubclass(AnalysisError, CampaignError)
    assert issubclass(AnalysisError, ValueError)
    for values, message in (
        ({"surrogate": {"epochs": "abc"}}, "analysis.surrogate.epochs='abc' must be an integer"),
        ({"surrogate": 3}, "analysis.surrogate must be a mapping of settings, got 3"),
        ({"split_by": "nosuchcol"}, "analysis.split_by='nosuchcol' is not allowed (allowed: arch_hash, gpu_type"),
        ({"stable_epoch": 0}, "analysis.stable_epoch=0 must be >= 1"),
        ({"surrogate": {"split": [0.5, 0.5, 0.5]}}, "analysis.surrogate.split=[0.5, 0.5, 0.5] must be three"),
        ({"green_algorithms": {"pue": 0.9}}, "analysis.green_algorithms.pue=0.9 must be >= 1"),
        ({"energy": "dynamic"}, "analysis.energy='dynamic' is not allowed (allowed: total, above_idle)"),
        ({"power_source": "nvml"}, "analysis.power_source='nvml' is not allowed (allowed: measured, simulated or null)"),
    ):
        with pytest.raises(AnalysisError) as err:
            AnalysisSettings.from_mapping(values)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(AnalysisError, match=r"analysis.p_adjust='sidak' is not allowed"):
        AnalysisSettings(p_adjust="sidak")  # type: ignore[arg-type]
    with pytest.raises(AnalysisError, match=r"^analysis.energy='idle' is not allowed \(allowed: total, above_idle\)$"):
        AnalysisSettings(energy="idle")  # type: ignore[arg-type]


def test_energy_target_and_power_source() -> None:
    """analysis.energy picks the energy compared (default: total); analysis.power_source one kind of
    power (default null: every run, a mixture refused unless allow_mixed_sources)."""
    default = AnalysisSettings()
    assert default.energy == EnergyTarget.total and default.power_source is None
    s = AnalysisSettings.from_mapping({"energy": "above_idle", "power_source": "measured"})
    assert s.energy is EnergyTarget.above_idle and s.power_source is PowerKind.measured
    assert AnalysisSettings.from_mapping({"power_source": None}).power_source is None
    cfg = OmegaConf.structured(AnalysisSettings)
    OmegaConf.update(cfg, "energy", "above_idle")  # as a command-line override does
    OmegaConf.update(cfg, "power_source", "simulated")
    composed = OmegaConf.to_object(cfg)
    assert isinstance(composed, AnalysisSettings)
    assert (composed.energy, composed.power_source) == (EnergyTarget.above_idle, PowerKind.simulated)
    assert AnalysisSettings(energy="above_idle").energy is EnergyTarget.above_idle  # type: ignore[arg-type]


def _imports(path: Path) -> set[str]:
    """Every module an analysis/ file imports, wherever the statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_analysis_imports_no_cycle_only_jobs_cell_and_never_campaign() -> None:
    modules = {}
    for path in (ROOT / "analysis").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        imported = _imports(path)
        assert not {m for m in imported if m.split(".")[0] == "campaign"}, name
        jobs = {m for m in imported if m.split(".")[0] == "jobs"}
        assert all(m == "jobs.cell" or m.startswith("jobs.cell.") for m in jobs), name
        graph[name] = {m for m in imported if m in modules and m != name}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, f"import cycle: {' -> '.join([*path[path.index(node):], node])}"
        if node not in done:
            for nxt in sorted(graph[node]):
                visit(nxt, [*path, node])
            done.add(node)

    for name in sorted(graph):
        visit(name, [])
