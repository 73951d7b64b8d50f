"""The layer workload: its specs refused in one line, a tiny configuration measured on the CPU
under the simulated meter, its rows stored by revision 0007's table and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from db.errors import ConfigError
from jobs.workloads import workload
from jobs.workloads.base import WorkloadTrial, expand
from jobs.workloads.layer_spec import LayersConfig, check_layer, output_shape, spec_features

CELL = {"matrix": [[0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
        "ops": ["input", "conv3x3-bn-relu", "conv1x1-bn-relu", "output"]}
TINY_NET = {"stem_channels": 4, "num_stacks": 1, "cells_per_stack": 1, "num_classes": 10, "bn_momentum": 0.9,
            "bn_eps": 1e-5, "image_size": 32, "in_channels": 3}


def plan(layers: list[Any], models: list[Any] | None = None, **more: Any) -> list[Any]:
    cfg = {"batch_sizes": [2], "input_sizes": [8], "layers": layers, "models": models or [], **more}
    return workload("layers").plan({"layers": cfg, "network": TINY_NET})


@pytest.mark.parametrize(("spec", "says"), [
    ({"type": "conv3d", "in_channels": 3}, "unknown layer type 'conv3d' (allowed: conv2d, linear"),
    ({"type": "conv2d", "in_channels": 3, "out_channels": -4, "kernel_size": 3}, "out_channels=-4 is not allowed"),
    ({"type": "linear", "in_features": 0, "out_features": 3}, "in_features=0 is not allowed (must be an integer >= 1)"),
    ({"type": "maxpool2d", "kernel_size": 3, "padding": -1}, "padding=-1 is not allowed (must be an integer >= 0)"),
    ({"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 11}, "kernel_size=11 is larger than its input (8"),
    ({"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "dilation": 2}, "conv2d has no key 'dilation'"),
    ({"type": "conv2d", "in_channels": 3, "kernel_size": 3}, "conv2d needs 'out_channels'"),
    ({"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}, "groups=2 must divide"),
    ("relu", "must be a mapping with a 'type'"),
])
def test_a_bad_layer_spec_is_refused_in_one_line_at_planning(spec: Any, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan([{"type": "relu"}, spec])
    message = str(info.value)
    assert says in message and "\n" not in message
    assert message.startswith("layers.layers[1]")


@pytest.mark.parametrize(("models", "says"), [
    ([{"torchvision": "resnet19"}], "layers.models[0]: torchvision='resnet19' is not a torchvision classifier"),
    ([{"cell": {"matrix": [[0, 1], [0, 0]], "ops": ["input", "conv9x9"]}}], "layers.models[0]: "),
    ([{"onnx": "x"}], "layers.models[0] must be {torchvision: NAME} or {cell: {matrix, ops}}"),
])
def test_a_bad_model_spec_is_refused_in_one_line(models: list[Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan([], models)
    assert str(info.value).startswith(says) and "\n" not in str(info.value)


@pytest.mark.parametrize(("values", "says"), [
    ({"batch_sizes": [0]}, "0 in layers.batch_sizes is not allowed"),
    ({"input_sizes": []}, "layers.input_sizes is empty"),
    ({"min_passes": 5, "max_passes": 2}, "layers.max_passes=2 is below layers.min_passes=5"),
    ({"colour": 1}, "layers.colour is not a key of the layer workload"),
])
def test_the_layers_section_is_checked(values: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("(", r"\(")):
        LayersConfig.from_mapping(values)


def test_shapes_flops_and_parameters_of_a_spec() -> None:
    conv = check_layer({"type": "conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3, "stride": 2,
                        "padding": 1, "groups": 2})
    assert output_shape(conv, (2, 4, 9, 9)) == (2, 8, 5, 5)
    f = spec_features(conv, 2, 9)
    assert f["flops"] == 2 * (2 * 8 * 5 * 5) * (4 // 2) * 9 and f["params"] == 8 * 2 * 9 + 8
    lin = spec_features(check_layer({"type": "linear", "in_features": 10, "out_features": 3}), 4, 300)
    assert (lin["in_features"], lin["out_features"], lin["flops"], lin["params"]) == (10, 3, 2 * 4 * 3 * 10, 33)


def test_plan_keys_are_stable_and_differ_by_what_changes_the_measurement() -> None:
    w = workload("layers")
    planned = plan([{"type": "relu"}, {"type": "linear", "in_features": 8, "out_features": 2}], [{"cell": CELL}],
                   input_sizes=[8, 12])
    # relu at 2 input sizes, linear once (no spatial input), the cell at 2 input sizes
    assert sorted(p.label for p in planned) == ["cell:" + planned[-1].spec["model"]["arch_hash"][:8] + s
                                                for s in ("/b2/12px", "/b2/8px")] + ["linear#1/b2", "relu#0/b2/12px",
                                                                                     "relu#0/b2/8px"]
    m = {"protocol": {"idle_s": 1}, "meter": {"rate_hz": 10}, "recipe": {"lr": 1}}
    keys = expand(w, planned, ["cpu"], 2, 0, m)
    assert len({k.trial_key for k in keys}) == 10
    again = expand(w, plan([{"type": "relu"}, {"type": "linear", "in_features": 8, "out_features": 2}],
                           [{"cell": CELL}], input_sizes=[8, 12]), ["cpu"], 2, 0, {**m, "recipe": {"lr": 2}})
    assert [k.trial_key for k in keys] == [k.trial_key for k in again]  # the recipe does not enter a layer key
    other = expand(w, planned, ["cpu"], 2, 0, {**m, "meter": {"rate_hz": 20}})
    assert not {k.trial_key for k in keys} & {k.trial_key for k in other}


def test_the_training_adapter_keeps_todays_trial_keys() -> None:
    from campaign.config import compose
    from campaign.plan import make_plan, measurement_fields, resolve_architectures

    cfg = compose(["+sweep=smoke"])
    today = make_plan(cfg, resolve_architectures(cfg))
    w = workload("nasbench101")
    planned = w.plan(cfg.to_dict())
    keyed = expand(w, planned, cfg.gpus, cfg.seeds, cfg.order_seed, measurement_fields(cfg))
    assert [(k.trial_key, k.planned.identity["arch"], k.gpu_type, k.seed, k.order_index) for k in keyed] == \
        [(t.trial_key, t.arch_hash, t.gpu_type, t.seed, t.order_index) for t in today.trials]
    archs = {a.arch_hash: (a.params, a.flops) for a in today.archs}
    assert all((k.planned.params, k.planned.flops) == archs[k.planned.identity["arch"]] for k in keyed)


# -- running ----------------------------------------------------------------------------------
def settings(rate_hz: float = 20.0, min_window_samples: int = 3) -> Any:
    from jobs.settings import TrialSettings

    return TrialSettings.from_recorded({
        "device": "cpu", "network": TINY_NET,
        "protocol": {"warmup_s": 0, "idle_s": 0.3, "cooldown_s": 0.1, "heartbeat_s": 5},
        "meter": {"kind": "simulated", "rate_hz": rate_hz, "min_window_samples": min_window_samples,
                  "carbontracker": False, "rapl": False},
    })


def run_all(planned: list[Any], s: Any) -> list[Any]:
    from jobs.meters.simulated import SimulatedMeter
    from jobs.workloads.runner import run_workload_trial

    w = workload("layers")
    meter = SimulatedMeter(rate_hz=s.meter.rate_hz)
    meter.start()
    try:
        hardware = meter.hardware()
        return [run_workload_trial(w, WorkloadTrial(f"k{i}", 1, 0, p.spec), s, meter, "cpu", "w1", hardware,
                                   campaign="layers") for i, p in enumerate(planned)]
    finally:
        meter.stop()


def test_a_tiny_configuration_runs_on_the_cpu_and_gives_its_records() -> None:
    s = settings()
    planned = plan([{"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}],
                   [{"cell": CELL}])
    outs = run_all(planned, s)
    layer, model = sorted(outs, key=lambda o: len(o.records["layer_measurement"]))
    assert layer.result.status == "done" and model.result.status == "done", (layer.result.error, model.result.error)
    (row,) = layer.records["layer_measurement"]
    assert row["scope"] == "layer" and row["layer_type"] == "conv2d" and row["model_name"] is None
    assert (row["in_channels"], row["in_h"], row["out_channels"], row["out_h"]) == (3, 8, 4, 8)
    rows = model.records["layer_measurement"]
    scopes = [r["scope"] for r in rows]
    assert scopes.count("model") == 1 and scopes.count("layer") >= 5  # stem conv, bn, relu, cell convs, ...
    assert {r["layer_type"] for r in rows} >= {"model", "conv2d", "batchnorm2d", "linear"}
    assert sorted(r["position"] for r in rows) == list(range(1, len(rows) + 1))
    target_s = 1.25 * s.meter.min_window_samples / s.meter.rate_hz
    for r in rows + [row]:
        assert r["passes"] >= 3 and r["wall_time_s"] >= target_s * 0.99
        assert r["energy_per_pass_j"] > 0 and r["time_per_pass_s"] > 0 and r["mean_power_w"] > 0
        assert r["energy_method"] == "simulated" and r["valid"], r
        assert r["flops"] > 0 or r["layer_type"] not in ("conv2d", "linear")
        assert r["memory_method"] == "tensor_bytes" and r["memory_mb"] > 0
    # the trace carries the windows' positions as its epoch column, phase eval (forward only)
    trace = model.result.trace
    tagged = {e for p, e in zip(trace["phase"], trace["epoch"], strict=True) if p == "eval"}
    assert tagged == set(range(1, len(rows) + 1))
    assert model.result.energy_j == pytest.approx(sum(r["energy_j"] for r in rows), rel=1e-9)
    assert model.result.power_source == "simulated" and model.result.dataset == "random input"
    whole = next(r for r in rows if r["scope"] == "model")
    assert whole["params"] == sum(r["params"] for r in rows if r["scope"] == "layer")


def test_a_trial_that_cannot_run_is_a_failed_result_not_an_exception() -> None:
    planned = plan([{"type": "relu"}])
    spec = {**planned[0].spec, "layer": {"type": "conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 99}}
    out = run_all([type(planned[0])(spec=spec, identity=spec, label="x")], settings())[0]
    assert out.result.status == "failed" and "kernel_size=99" in (out.result.error or "")
    assert out.records == {}


def test_describe_model_gives_layer_rows_before_a_model_runs() -> None:
    from jobs.workloads.layers import describe_model

    rows = describe_model({"torchvision": "resnet18"}, 16, 300)
    convs = [r for r in rows if r["layer_type"] == "conv2d"]
    assert len(convs) == 20 and rows[0]["layer_name"] == "conv1" and rows[0]["in_h"] == 300
    assert rows[0]["batch_size"] == 16 and rows[0]["out_h"] == 150
    assert sum(r["params"] for r in rows) == 11_689_512
    relu = next(r for r in rows if r["layer_name"] == "layer1.0.relu")
    assert relu["calls"] == 2  # one module called twice in a block


# -- storage ----------------------------------------------------------------------------------
def migrated_engine(tmp_path: Path, url: str) -> Any:
    """An engine on ``url`` upgraded to the head; its Alembic config and the revision below 0007."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from db.engine import make_engine
    from db.migrate import alembic_config

    engine = make_engine(url)
    cfg = alembic_config(engine)
    command.upgrade(cfg, "head")
    below = ScriptDirectory.from_config(cfg).get_revision("0007").down_revision
    return engine, cfg, str(below)


def test_revision_0007_adds_the_layer_table_and_goes_down_again(tmp_path: Path) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from db.schema import Base

    engine, cfg, before = migrated_engine(tmp_path, f"sqlite:///{tmp_path / 'm.db'}")
    insp = inspect(engine)
    assert "layer_measurement" in insp.get_table_names()
    trial = {c["name"]: c for c in insp.get_columns("trial")}
    assert trial["arch_hash"]["nullable"] and not trial["workload"]["nullable"] and trial["spec_json"]["nullable"]
    assert set(insp.get_view_names()) >= {"run_summary", "trial_summary"}
    assert {u["name"] for u in insp.get_unique_constraints("trial")} >= {"uq_trial_campaign_key"}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # the layer table agrees with db/layers.py; of the trial table, only the columns db/schema.py does not
    # have yet differ (other tables are other changes' business)
    def table(d: Any) -> str:
        from sqlalchemy import Table

        item = d[0] if isinstance(d, list) else d
        for x in item[1:]:
            if isinstance(x, Table):
                return str(x.name)
            if isinstance(getattr(x, "table", None), Table):
                return str(x.table.name)
        return str(item[2]) if len(item) > 2 else ""

    assert not [d for d in diff if table(d) == "layer_measurement"]
    mine = [d for d in diff if table(d) == "trial" and (isinstance(d, list) or d[0].endswith("_column"))]
    names = {(d[0], d[3].name) for d in mine if isinstance(d, tuple)}
    modified = [(m[0][0], m[0][3]) for m in mine if isinstance(m, list)]
    assert names == set() and modified == []
    command.downgrade(cfg, before)
    insp = inspect(engine)
    assert "layer_measurement" not in insp.get_table_names()
    assert "workload" not in {c["name"] for c in insp.get_columns("trial")}
    assert set(insp.get_view_names()) >= {"run_summary", "trial_summary"}


def test_rows_are_stored_read_back_and_analysed(tmp_path: Path) -> None:
    from analysis.layers import analyze_layers
    from db.ingest import ingest
    from db.layers import layer_rows, store_layer_rows

    engine, _, _ = migrated_engine(tmp_path, f"sqlite:///{tmp_path / 'l.db'}")
    cells = [CELL, {"matrix": [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
                    "ops": ["input", "conv3x3-bn-relu", "maxpool3x3", "output"]}]
    planned = plan([], [{"cell": c} for c in cells])
    outs = run_all(planned, settings(rate_hz=40.0))
    with engine.begin() as conn:
        cid = conn.execute(text("INSERT INTO campaign (name, sweep, created_at, root, code_revision, config_json) "
                                "VALUES ('layers', 'layers_smoke', CURRENT_TIMESTAMP, '/tmp', 'x', '{}')")).lastrowid
        for i, (p, o) in enumerate(zip(planned, outs, strict=True)):
            conn.execute(text(
                "INSERT INTO trial (campaign_id, trial_key, arch_hash, epochs, gpu_type, seed, order_index, params, "
                "flops, state, attempts, workload, spec_json) VALUES (:c, :k, NULL, 0, 'cpu', 0, :i, :p, :f, "
                "'running', 1, 'layers', :s)"), dict(c=cid, k=o.result.trial_key, i=i, p=p.params, f=p.flops,
                                                     s=json.dumps(p.spec)))
    for o in outs:
        assert ingest(engine, o.result)
        n = store_layer_rows(engine, "layers", o.result.trial_key, 1, o.records["layer_measurement"])
        assert n == len(o.records["layer_measurement"])
        # stored again (a result file ingested twice): replaced, not doubled
        store_layer_rows(engine, "layers", o.result.trial_key, 1, o.records["layer_measurement"])
    # the summary views hold a layer campaign's runs (view version 3): one row per run and per spec
    with engine.connect() as conn:
        summary = conn.execute(text("SELECT workload, arch_hash, spec_json, energy_j, power_kind FROM run_summary "
                                    "WHERE campaign = 'layers' ORDER BY run_id")).all()
        trials = conn.execute(text("SELECT workload, spec_json, runs FROM trial_summary WHERE campaign = 'layers' "
                                   "ORDER BY spec_json")).all()
    assert [(w, a) for w, a, *_ in summary] == [("layers", None)] * len(outs)
    assert sorted((json.loads(s) for _, _, s, _, _ in summary), key=json.dumps) == sorted((p.spec for p in planned), key=json.dumps)
    assert all(e is not None and e > 0 and k == "simulated" for *_, e, k in summary)
    assert len(trials) == len(planned) and {(w, n) for w, _, n in trials} == {("layers", 1)}
    rows = layer_rows(engine, int(cid))
    assert len(rows) == sum(len(o.records["layer_measurement"]) for o in outs)
    assert {r["power_source"] for r in rows} == {"simulated"} and all(r["status"] == "done" for r in rows)
    page = analyze_layers(engine, "layers", tmp_path / "report")
    text_ = page.read_text()
    assert "RMSPE" in text_ and "additivity" in text_ and "simulated" in text_
    assert (tmp_path / "report" / "layer_predictor.pkl").is_file()


# -- through the CLI, once the workload is wired into campaign/ (phase 2) -----------------------
def wired() -> bool:
    import dataclasses

    from campaign.config import CampaignConfig

    return "workload" in {f.name for f in dataclasses.fields(CampaignConfig)}


@pytest.mark.slow
@pytest.mark.skipif(not wired(), reason="the layer workload is not wired into campaign/ yet (config, plan, worker)")
def test_the_smoke_layer_campaign_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    from campaign.cli import main

    ov = [f"root={tmp_path}", f"db.url=sqlite:///{tmp_path / 'layers.db'}"]
    assert main(["plan", "+sweep=layers_smoke", *ov]) == 0
    assert main(["launch", "+sweep=layers_smoke", "name=layers", *ov]) == 0
    capsys.readouterr()
    assert main(["status", "layers", *ov]) == 0
    shown = capsys.readouterr().out
    assert "layers workload" in shown and "18/18 trials done" in shown, shown
    assert main(["status", "layers", "--json", *ov]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["campaign"]["workload"] == "layers" and doc["totals"]["attempts"] == {"done": 18}
    assert doc["totals"]["simulated_energy_j"] > 0 and doc["totals"]["measured_energy_j"] == 0
    con = sqlite3.connect(tmp_path / "layers.db")
    n_trials = con.execute("SELECT count(*) FROM trial WHERE workload = 'layers' AND state = 'done'").fetchone()[0]
    n_rows = con.execute("SELECT count(*) FROM layer_measurement").fetchone()[0]
    assert n_trials == 18 and n_rows > n_trials
    assert con.execute("SELECT count(*) FROM run_summary WHERE workload = 'layers'").fetchone()[0] == 18
    assert main(["analyze", "layers", *ov]) == 0
    page = (tmp_path / "layers" / "report" / "layers.md").read_text()
    assert "RMSPE" in page and "additivity" in page and "simulated" in page
