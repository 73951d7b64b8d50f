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


def _campaign(tmp_path: Path, *overrides: str) -> tuple[ResultStore, str, dict[str, Any]]:
    cfg = compose(["+sweep=smoke", f"root={tmp_path}", "protocol.warmup_s=0", "protocol.idle_s=0",
                   "protocol.cooldown_s=0", "epochs=[1]", "seeds=1", "dataset.n_train=256", "dataset.n_valid=64",
                   "dataset.n_test=64", *overrides])
    plan = make_plan(cfg, resolve_architectures(cfg))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = ResultStore(make_engine(url))
    store.create_campaign("w", "smoke", str(tmp_path), "rev", cfg, plan.archs, plan.trials)
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


def test_a_failing_trial_is_recorded_and_the_worker_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, url, _ = _campaign(tmp_path)
    real_train = train_module.train
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise train_module.TrainingDiverged("loss is nan at step 3")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_module, "train", flaky)
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

    monkeypatch.setattr(train_module, "train", broken)
    summary = run_worker(WorkerSpec(db_url=url, campaign="w", gpu_type="cpu", root=str(tmp_path), max_failures=2),
                         store=store)
    assert summary.failed == 2 and "2 trials failed in a row" in summary.stopped_reason
    rows = store.status_rows(store.campaign("w").id)
    assert sum(r["pending"] for r in rows) == 2  # the rest is left for resume
