"""The worker loop on real SQLite files: results written before ingestion, failures recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from campaign.config import compose
from campaign.plan import make_plan, resolve_architectures
from db.engine import make_engine
from db.store import ResultStore
from jobs import train as train_module
from jobs.worker import WorkerSpec, run_worker


def _campaign(tmp_path: Path, *overrides: str) -> tuple[ResultStore, str, Any]:
    cfg = compose(["+sweep=smoke", f"root={tmp_path}", "protocol.warmup_s=0", "protocol.idle_s=0",
                   "protocol.cooldown_s=0", "epochs=[1]", "seeds=1", "dataset.n_train=256", "dataset.n_valid=64",
                   "dataset.n_test=64", *overrides])
    plan = make_plan(cfg, resolve_architectures(cfg))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = ResultStore(make_engine(url))
    store.create_campaign("w", "smoke", str(tmp_path), "rev", cfg.to_dict(), plan.archs, plan.trials)
    return store, url, cfg


def test_results_are_written_then_ingested(tmp_path: Path) -> None:
    store, url, _ = _campaign(tmp_path)
    summary = run_worker(WorkerSpec(db_url=url, campaign="w", gpu_type="cpu", root=str(tmp_path)), store=store)
    assert (summary.done, summary.failed) == (2, 0)
    files = sorted((tmp_path / "w" / "runs").glob("*/attempt-1.json"))
    assert len(files) == 2
    stored = {r["trial_key"]: r for r in store.runs(store.campaign("w").id)}
    for f in files:
        result = json.loads(f.read_text())
        assert result["status"] == "done"
        assert stored[result["trial_key"]]["energy_j"] == pytest.approx(result["energy_j"])


def test_a_worker_with_its_own_engine_gives_it_back(tmp_path: Path) -> None:
    """Without a store passed in, the worker makes its engine and disposes of it: no checkpoint
    thread outlives it (a Ray process runs many workers) and every result is in the main file."""
    import threading

    store, url, _ = _campaign(tmp_path)
    store.engine.dispose()
    summary = run_worker(WorkerSpec(db_url=url, campaign="w", gpu_type="cpu", root=str(tmp_path)))
    assert (summary.done, summary.failed) == (2, 0)
    db = tmp_path / "w.db"
    assert not [t for t in threading.enumerate() if t.name == f"wal-checkpoint:{db}"]
    assert not Path(f"{db}-wal").exists()  # the last connection folded the log into the file
    assert len(store.runs(store.campaign("w").id)) == 2
    store.engine.dispose()


def test_a_failing_trial_is_recorded_and_the_worker_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, url, _ = _campaign(tmp_path)
    real_train = train_module.run_training
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise train_module.TrainingDiverged("loss is nan at step 3")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_module, "run_training", flaky)
    summary = run_worker(WorkerSpec(db_url=url, campaign="w", gpu_type="cpu", root=str(tmp_path)), store=store)
    assert (summary.done, summary.failed) == (1, 1)
    runs = store.runs(store.campaign("w").id, status=None)
    failed = [r for r in runs if r["status"] == "failed"]
    assert len(failed) == 1 and "loss is nan" in failed[0]["error"]
    assert failed[0]["energy_j"] is None  # a failed attempt is never a result


def test_max_failures_stops_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, url, _ = _campaign(tmp_path, "seeds=2")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(train_module, "run_training", broken)
    summary = run_worker(WorkerSpec(db_url=url, campaign="w", gpu_type="cpu", root=str(tmp_path), max_failures=2),
                         store=store)
    assert summary.failed == 2 and "2 trials failed in a row" in summary.stopped_reason
    rows = store.status_rows(store.campaign("w").id)
    assert sum(r["pending"] for r in rows) == 2  # the rest is left for resume


class _Tracker:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def epoch_start(self) -> None:
        self.calls.append("start")

    def epoch_end(self) -> None:
        self.calls.append("end")


class _Meter:
    def __init__(self) -> None:
        self.marks: list[tuple[str, int | None]] = []

    def mark(self, phase: str, epoch: int | None = None) -> None:
        self.marks.append((phase, epoch))


def test_one_mark_tags_every_meter_and_spans_carbontracker_epochs_over_train_and_eval() -> None:
    from jobs.worker import _marker

    a, b, tracker = _Meter(), _Meter(), _Tracker()
    mark = _marker([a, b], tracker)  # type: ignore[list-item]
    for tag in [("idle", None), ("train", 1), ("eval", 1), ("train", 2), ("eval", 2), ("eval", None),
                ("cooldown", None)]:
        mark(*tag)
    assert a.marks == b.marks and len(a.marks) == 7
    assert tracker.calls == ["start", "end", "start", "end"]
    # a trial that dies inside epoch 1: the cool-down closes Carbontracker's open epoch
    tracker2 = _Tracker()
    mark2 = _marker([_Meter()], tracker2)  # type: ignore[list-item]
    mark2("train", 1)
    mark2("cooldown", None)
    assert tracker2.calls == ["start", "end"]


def test_rapl_energy_is_split_into_package_and_dram_over_train_and_eval() -> None:
    from jobs.meters.base import Sample
    from jobs.worker import rapl_energy_j

    domains = [{"index": 0, "kind": "package"}, {"index": 1, "kind": "dram"}]
    samples = []
    for dev, per_s in ((0, 10.0), (1, 2.0)):
        for t, phase in enumerate(["idle", "train", "train", "train", "eval", "cooldown"]):
            samples.append(Sample(t_s=float(t), phase=phase, epoch=1, power_w=per_s, device=dev,
                                  energy_j=per_s * t))
    got = rapl_energy_j(samples, domains)
    # counter segments: train t=1..3 (2 s), eval one sample (0 s)
    assert got == {"package": pytest.approx(20.0), "dram": pytest.approx(4.0)}
    assert rapl_energy_j([], domains) == {"package": None, "dram": None}


def test_the_heartbeat_goes_on_through_a_cool_down_longer_than_the_stale_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume that looks during a long cool-down finds the trial alive, not stale: heartbeats
    come from their own thread, not from the training loop."""
    from campaign.resume import decide
    from jobs import protocol

    cooldown_s, stale_after_s = 2.5, 1.0
    store, url, _ = _campaign(tmp_path, "seeds=1", "protocol.heartbeat_s=0.2", f"protocol.cooldown_s={cooldown_s}",
                              "architectures.specs=[{matrix: [[0,1],[0,0]], ops: [input, output]}]")
    real_pause = protocol.pause
    seen = []

    def pause(duration_s: float) -> None:
        real_pause(duration_s)  # the protocol's own wait, longer than the stale limit
        if duration_s == cooldown_s:  # still inside the trial: ask what a resume would decide now
            seen.append(decide(store.trial_states(store.campaign("w").id), store.now(), stale_after_s))

    monkeypatch.setattr(protocol, "pause", pause)
    summary = run_worker(WorkerSpec(db_url=url, campaign="w", gpu_type="cpu", root=str(tmp_path)), store=store)
    assert (summary.done, summary.failed) == (1, 0)
    [actions] = seen
    assert len(actions.still_running) == 1 and actions.mark_stale == [] and actions.to_run == 0


def test_a_wrong_campaign_name_fails_at_once_not_after_the_database_patience(tmp_path: Path) -> None:
    """Only an unreachable database is waited out; a campaign that does not exist is not."""
    import time

    from db.store import CampaignNotFound

    store, url, _ = _campaign(tmp_path)
    started = time.monotonic()
    with pytest.raises(CampaignNotFound, match="'nope'"):
        run_worker(WorkerSpec(db_url=url, campaign="nope", gpu_type="cpu", root=str(tmp_path), db_patience_s=600),
                   store=store)
    assert time.monotonic() - started < 60


def test_setup_precedes_an_idle_window_of_the_configured_length(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Building the network and moving the data are the setup phase, before idle; the idle window
    then lasts protocol.idle_s (mark to mark) and every energy figure says how it was obtained."""
    import logging

    store, url, _ = _campaign(tmp_path, "protocol.idle_s=1", "meter.kind=simulated")
    with caplog.at_level(logging.INFO, logger="campaign.progress"):
        summary = run_worker(WorkerSpec(db_url=url, campaign="w", gpu_type="cpu", root=str(tmp_path)), store=store)
    assert (summary.done, summary.failed) == (2, 0)
    results = sorted((json.loads(f.read_text()) for f in (tmp_path / "w" / "runs").glob("*/attempt-1.json")),
                     key=lambda r: r["started_at"])
    idle_powers = []
    for r in results:
        phases = r["trace"]["phase"]
        assert phases.index("setup") < phases.index("idle") < phases.index("train")
        assert set(phases[: phases.index("setup")]) <= {"warmup"}  # nothing before the setup but the warm-up
        by_phase = {p["phase"]: p for p in r["phases"]}
        assert by_phase["idle"]["duration_s"] == pytest.approx(1.0, rel=0.10)
        assert by_phase["setup"]["duration_s"] > 0
        idle_powers.append(by_phase["idle"]["mean_power_w"])
        assert "simulated" in r["energy_method"] and by_phase["train"]["method"] == "simulated"
        assert r["energy_uncertainty_j"] > 0 and "simulated" in r["error_basis"]
        assert r["energy_above_idle_j"] == pytest.approx(r["energy_j"] - r["idle_power_w"] * (
            by_phase["train"]["duration_s"] + by_phase["eval"]["duration_s"]))
        assert "short_window:idle" in r["flags"] and by_phase["idle"]["valid"] is False  # 1 s at 10 Hz
        assert all(e["uncertainty_j"] > 0 and e["energy_above_idle_j"] is not None for e in r["epochs"])
        assert r["start_temperature_c"] is None  # the simulated device has no thermometer
    assert idle_powers[0] == pytest.approx(idle_powers[1], rel=0.15)  # the first trial's idle is as clean
    said = [rec.getMessage() for rec in caplog.records if rec.name == "campaign.progress"]
    key = results[0]["trial_key"][:8]
    assert [m for m in said if m.startswith(f"trial {key}")][:4] == [
        f"trial {key}: setup", f"trial {key}: idle", f"trial {key}: train epoch 1/1", f"trial {key}: eval epoch 1/1"]
    assert any(m.startswith(f"trial {key}: done in ") and m.endswith(" J") for m in said)
