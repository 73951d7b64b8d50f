"""The commands for scripts and the campaign's lifecycle through the real CLI on a real SQLite
file: ``status --json`` (simulated energy never called measured, mixed sources apart),
``query --format``, ``cancel`` and ``delete``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from campaign.cli import main
from campaign.config import CampaignConfig
from db.engine import make_engine
from db.records import RunResult
from db.store import ResultStore

NAME = "life"


@pytest.fixture
def recorded(tmp_path: Path, smoke_cfg: CampaignConfig) -> tuple[ResultStore, int, list[str]]:
    """The smoke campaign recorded (8 trials): one done on a simulated source, one done on NVML,
    one running; and the overrides that find it."""
    from campaign.plan import make_plan, resolve_architectures

    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = ResultStore(make_engine(url))
    plan = make_plan(smoke_cfg, resolve_architectures(smoke_cfg))
    cid = store.create_campaign(NAME, "smoke", str(tmp_path / "campaigns"), "rev", smoke_cfg.to_dict(), plan.archs,
                                plan.trials)
    for source, joules in (("simulated", 3600.0), ("nvml", 7200.0)):
        trial = store.claim_next(cid, "cpu", "w", "h")
        assert trial is not None
        store.ingest(_result(trial, source, joules))
    assert store.claim_next(cid, "cpu", "w", "h") is not None  # left running
    return store, cid, [f"root={tmp_path / 'campaigns'}", f"db.url={url}"]


def _result(trial: Any, source: str, joules: float) -> RunResult:
    return RunResult.from_json({
        "campaign": NAME, "trial_key": trial.trial_key, "attempt": trial.attempt, "status": "done",
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:01:00+00:00",
        "host": "h", "worker_id": "w", "power_source": source, "energy_j": joules, "duration_s": 2.0,
        "epochs": [], "phases": [], "trace": {"t_s": [], "phase": [], "epoch": [], "power_w": [], "device": []},
        "hardware": {"host": "h", "gpu_name": source},
    })


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_keeps_simulated_and_measured_energy_apart(recorded: Any, capsys: Any) -> None:
    _, _, where = recorded
    code, out, _ = _run(capsys, "status", NAME, "--json", *where)
    assert code == 0
    doc = json.loads(out)
    assert doc["campaign"]["name"] == NAME and doc["campaign"]["created_at"].endswith("+00:00")
    assert doc["totals"]["trials"] == 8 and doc["totals"]["done"] == 2 and doc["totals"]["running"] == 1
    assert doc["totals"]["simulated_energy_j"] == 3600.0 and doc["totals"]["measured_energy_j"] == 7200.0
    kinds = {s["source"]: s["kind"] for s in doc["power_sources"]}
    assert kinds == {"simulated": "simulated", "nvml": "measured"}
    mixed = [r for r in doc["rows"] if r["energy_j_by_source"]]
    assert sum(sum(r["energy_j_by_source"].values()) for r in mixed) == 10800.0
    code, out, _ = _run(capsys, "status", NAME, *where)
    assert "1.000 Wh simulated" in out and "2.000 Wh measured (nvml)" in out
    assert "Wh measured so far" not in out


def test_query_prints_csv_and_json_with_time_zones(recorded: Any, capsys: Any) -> None:
    _, _, where = recorded
    code, out, _ = _run(capsys, "query", NAME, "SELECT 1 AS x", "--format", "csv", *where)
    assert code == 0 and out.splitlines()[:2] == ["x", "1"]
    sql = "SELECT trial_key, started_at FROM run_summary WHERE campaign = :campaign ORDER BY started_at"
    code, out, _ = _run(capsys, "query", NAME, sql, "--format", "json", *where)
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 2 and all(r["started_at"].endswith("+00:00") for r in rows), rows
    code, out, _ = _run(capsys, "query", NAME, sql, "--format", "csv", *where)
    lines = out.splitlines()
    assert lines[0] == "trial_key,started_at" and lines[1].endswith("+00:00")
    _, help_text, _ = _run_help(capsys, "query")
    assert "whole database" in help_text and ":campaign" in help_text


def _run_help(capsys: pytest.CaptureFixture[str], command: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), " ".join(out.split()), err


def test_cancel_marks_running_attempts_cancelled_and_their_trials_pending(recorded: Any, capsys: Any) -> None:
    store, cid, where = recorded
    code, out, err = _run(capsys, "cancel", NAME, *where)
    assert code == 0, err
    assert "1 running attempt(s) marked cancelled" in out and f"campaign resume {NAME}" in out
    runs = store.runs(cid, status=None)
    assert sorted(r["status"] for r in runs) == ["cancelled", "done", "done"]
    assert [r["error"] for r in runs if r["status"] == "cancelled"] == ["cancelled by `campaign cancel`"]
    assert sum(r["running"] for r in store.status_rows(cid)) == 0
    assert sum(r["pending"] for r in store.status_rows(cid)) == 6


def test_delete_asks_refuses_without_a_terminal_and_purges_only_its_folder(recorded: Any, capsys: Any,
                                                                            tmp_path: Path) -> None:
    store, cid, where = recorded
    folder, sibling = tmp_path / "campaigns" / NAME, tmp_path / "campaigns" / "other"
    for f in (folder / "runs", sibling):
        f.mkdir(parents=True)
        (f / "keep.json").write_text("{}")
    code, _, err = _run(capsys, "delete", NAME, "--yes", *where)
    assert code == 2 and "running" in err and "campaign cancel" in err  # a running campaign is not deleted
    assert _run(capsys, "cancel", NAME, *where)[0] == 0
    code, _, err = _run(capsys, "delete", NAME, *where)  # pytest's stdin is no terminal
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--yes" in err
    assert store.campaign(NAME).id == cid
    code, out, err = _run(capsys, "delete", NAME, "--yes", "--purge", *where)
    assert code == 0, err
    assert not folder.exists() and (sibling / "keep.json").is_file()
    code, _, err = _run(capsys, "status", NAME, *where)
    assert code == 2 and "no campaign" in err


def test_delete_keeps_the_files_without_purge(recorded: Any, capsys: Any, tmp_path: Path) -> None:
    _, _, where = recorded
    folder = tmp_path / "campaigns" / NAME
    folder.mkdir(parents=True)
    (folder / "keep.json").write_text("{}")
    assert _run(capsys, "cancel", NAME, *where)[0] == 0
    code, out, _ = _run(capsys, "delete", NAME, "--yes", *where)
    assert code == 0 and "files stay" in out and (folder / "keep.json").is_file()


@pytest.mark.parametrize("command", ["cancel", "delete", "status", "query"])
def test_help_exits_0(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_help(capsys, command)[0] == 0
