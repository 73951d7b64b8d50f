"""The typed run result (``db.records.RunResult``): its JSON round trip, result files of the first
version (format 1) read and ingested as they are, unknown formats refused in one line, and the
state enums equal to the strings the database stores."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db.engine import make_engine
from db.errors import CampaignError
from db.ingest import SAMPLE_COLUMNS as INGEST_SAMPLE_COLUMNS
from db.records import (
    FINAL_RUN_STATUSES,
    FORMAT_VERSION,
    PHASES,
    SAMPLE_COLUMNS,
    TRIAL_STATE_OF_RUN,
    EpochRecord,
    Phase,
    PhaseRecord,
    ResultFormatError,
    RunResult,
    RunStatus,
    TrialState,
)
from db.schema import RUN_STATUSES, TRIAL_STATES, Run, RunPhase, TraceSample, Trial
from db.store import ResultStore
from tests.db.conftest import plan_campaign

FORMAT1 = Path(__file__).with_name("fixtures") / "result_format1.json"


def format1() -> dict[str, Any]:
    """The fixture: a result file exactly as the first version's worker wrote it."""
    data = json.loads(FORMAT1.read_text())
    assert isinstance(data, dict)
    return data


def full_result() -> RunResult:
    """A result with every field set (carbontracker included)."""
    return RunResult(
        campaign="c", trial_key="k1", attempt=2, status=RunStatus.FAILED, started_at="2026-01-01T00:00:00+00:00",
        host="h", worker_id="w", ended_at="2026-01-01T00:01:00+00:00", error="TrainingDiverged: loss is nan",
        traceback="Traceback (most recent call last):\n  ...", power_source="simulated", energy_method="integrated",
        dataset="synthetic", device="cpu", hardware={"host": "h", "cpu_count": 2, "rapl_domains": [{"index": 0}]},
        scheduler_job="12_3", scheduler_partition="gpu", trace_anchor_unix_s=1767225600.5, energy_j=12.5,
        duration_s=2.0, idle_power_w=5.0, cpu_energy_j=3.0, dram_energy_j=0.5, valid_accuracy=0.25,
        test_accuracy=0.24, train_images_per_s=512.0, train_images=1024,
        epochs=(EpochRecord(1, 2.0, 12.5, 6.25, 2.3, 0.2, 0.25),),
        phases=(PhaseRecord("idle", 1.0, 5.0, 3, 5.0), PhaseRecord("train", 2.0, 12.5, 4, None)),
        trace={"t_s": [0.0, 0.5, 1.0], "phase": ["idle", "train", "train"], "epoch": [None, 1, 1],
               "power_w": [5.0, 6.25, 6.25], "device": [0, 0, 0]},
        carbontracker={"status": "ok", "components": ["cpu"], "actual": {"energy_j_raw": 3.5}, "epochs": [],
                       "log_dir": "/x"},
        result_path="/root/c/runs/k1/attempt-2.json",
    )  # fmt: skip


def test_a_result_survives_its_json_round_trip() -> None:
    for result in (full_result(), RunResult.from_json(format1())):
        data = result.to_json()
        assert data["format"] == FORMAT_VERSION and data["status"] == result.status.value
        back = RunResult.from_json(json.loads(json.dumps(data)))
        assert back == result
        assert type(back.status) is RunStatus and all(type(e) is EpochRecord for e in back.epochs)


def test_a_format1_file_reads_as_the_first_version_wrote_it() -> None:
    data = format1()
    assert data["format"] == 1
    # nothing the first version wrote is dropped on reading
    assert set(data) <= {f.name for f in dataclasses.fields(RunResult)}
    result = RunResult.from_json(data)
    assert (result.campaign, result.trial_key, result.attempt) == (data["campaign"], data["trial_key"], 1)
    assert result.status is RunStatus.DONE and result.format == FORMAT_VERSION
    assert result.epochs == (EpochRecord(**data["epochs"][0]),)
    assert [p.phase for p in result.phases] == [p for p in PHASES if p != Phase.SETUP]  # format 1 had no setup
    assert result.phases[3] == PhaseRecord("eval", 0.0, 0.0, 1, None)
    assert set(result.trace) == set(SAMPLE_COLUMNS) and result.trace == data["trace"]
    assert result.hardware == data["hardware"] and result.carbontracker is None
    assert (result.cpu_energy_j, result.dram_energy_j, result.scheduler_job) == (151.204, 18.77, "812345_3")
    assert result.result_path == data["result_path"] and result.traceback is None


def test_a_format1_file_is_ingested(db_url: str, smoke_cfg: Any) -> None:
    store = ResultStore(make_engine(db_url))
    cid, _ = plan_campaign(store, smoke_cfg, "fmt1")
    trial = store.claim_next(cid, "cpu", "gpu-node07-48213-5be0c1", "gpu-node07")
    assert trial is not None
    data = {**format1(), "campaign": "fmt1", "trial_key": trial.trial_key}
    assert store.ingest(RunResult.from_json(data)) is True
    with store.engine.connect() as conn:
        run = conn.execute(select(Run.__table__).where(Run.id == trial.run_id)).one()
        assert (run.status, run.energy_j, run.cpu_energy_j, run.scheduler_job) == ("done", data["energy_j"], 151.204,
                                                                                   "812345_3")
        assert conn.execute(select(Trial.state).where(Trial.id == trial.trial_id)).scalar_one() == TrialState.DONE
        assert conn.execute(select(func.count()).select_from(TraceSample)).scalar_one() == len(data["trace"]["t_s"])
        phases = dict(conn.execute(select(RunPhase.phase, RunPhase.energy_j)).all())
    assert phases == {p["phase"]: p["energy_j"] for p in data["phases"]}
    assert store.epochs([trial.run_id])[0]["train_loss"] == data["epochs"][0]["train_loss"]
    store.engine.dispose()


@pytest.mark.parametrize("version", [99, 0, "2"])
def test_an_unknown_format_is_refused_in_one_line(version: Any) -> None:
    with pytest.raises(ResultFormatError) as info:
        RunResult.from_json({**format1(), "format": version})
    message = str(info.value)
    assert "\n" not in message and repr(version) in message and "readable: 1, 2" in message
    assert isinstance(info.value, CampaignError)


def test_a_malformed_result_names_what_is_wrong() -> None:
    data = format1()
    with pytest.raises(ResultFormatError, match="lacks attempt, worker_id"):
        RunResult.from_json({k: v for k, v in data.items() if k not in ("attempt", "worker_id")})
    with pytest.raises(ResultFormatError, match="'finished' is not a valid RunStatus"):
        RunResult.from_json({**data, "status": "finished"})
    with pytest.raises(ResultFormatError, match="JSON object, not list"):
        RunResult.from_json([data])  # type: ignore[arg-type]


def test_the_enums_are_the_stored_strings() -> None:
    assert TRIAL_STATES == ("pending", "running", "done", "failed", "cancelled")
    assert RUN_STATUSES == ("running", "done", "failed", "stale", "cancelled", "superseded")
    assert tuple(TrialState) == TRIAL_STATES and tuple(RunStatus) == RUN_STATUSES
    assert all(type(s) is str for s in TRIAL_STATES + RUN_STATUSES)
    assert TrialState.DONE == "done" and RunStatus.SUPERSEDED == "superseded" and f"{RunStatus.STALE}" == "stale"
    assert PHASES == ("warmup", "setup", "idle", "train", "eval", "cooldown") == tuple(Phase)
    # the schema's comments list the stored strings, as before
    assert Trial.__table__.c.state.comment == "pending|running|done|failed|cancelled"
    assert Run.__table__.c.status.comment == "running|done|failed|stale|cancelled|superseded"
    # a plain string read from the database finds the enum-keyed tables
    assert "done" in FINAL_RUN_STATUSES and "superseded" in FINAL_RUN_STATUSES and "failed" not in FINAL_RUN_STATUSES
    assert TRIAL_STATE_OF_RUN["cancelled"] == "cancelled"  # type: ignore[index]
    assert INGEST_SAMPLE_COLUMNS is SAMPLE_COLUMNS
