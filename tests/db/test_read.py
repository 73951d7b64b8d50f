"""``CampaignReader.open``: a read-only reader that never migrates nor writes, and refuses a
database whose schema is missing or older in one line; the exceptions' common base."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.engine import DatabaseError, make_engine
from db.errors import CampaignError
from db.migrate import current_revision, head_revision, upgrade
from db.read import CampaignNotFound, CampaignReader, SchemaNotCurrent, open_reader
from db.store import ResultStore


def _tables(path: Path) -> list[str]:
    con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master")]
    finally:
        con.close()


def test_an_empty_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(SchemaNotCurrent) as info:
        CampaignReader.open(f"sqlite:///{path}")
    message = str(info.value)
    assert "\n" not in message and "no campaign schema" in message and "campaign db upgrade" in message
    assert isinstance(info.value, CampaignError)
    assert path.stat().st_size == 0 and _tables(path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]  # no journal, no WAL: never opened writable


def test_a_missing_file_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(DatabaseError, match="no SQLite database at") as info:
        open_reader(f"sqlite:///{path}")
    assert "\n" not in str(info.value) and not path.exists()


def test_an_older_schema_is_refused_and_not_migrated(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine, "0002")
    with pytest.raises(SchemaNotCurrent) as info:
        CampaignReader.open(db_url)
    message = str(info.value)
    assert "\n" not in message and "0002" in message and head_revision() in message
    assert "campaign db upgrade" in message
    assert current_revision(engine) == "0002"
    engine.dispose()


def test_a_current_database_reads_like_the_store_and_refuses_writes(smoke_db) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    reader = CampaignReader.open(url)
    store = ResultStore(make_engine(url), upgrade=False)
    info = reader.campaign("smoke")
    assert info == store.campaign("smoke")
    assert reader.list_campaigns() == store.list_campaigns()
    assert reader.status_rows(info.id) == store.status_rows(info.id)
    runs = reader.runs(info.id, status=None)
    assert runs == store.runs(info.id, status=None) and {r["status"] for r in runs} == {"done", "failed"}
    run_ids = [r["run_id"] for r in runs]
    assert reader.phases(run_ids) == store.phases(run_ids) and reader.epochs(run_ids) == store.epochs(run_ids)
    assert reader.trace(run_ids[0]) == store.trace(run_ids[0])
    assert reader.train_utilization(run_ids) == store.train_utilization(run_ids)
    with pytest.raises(CampaignNotFound, match="known: smoke"):
        reader.campaign("nope")
    with pytest.raises(DBAPIError), reader.engine.begin() as conn:
        conn.execute(text("DELETE FROM trace_sample"))
    assert reader.trace(run_ids[0]) == store.trace(run_ids[0])
    reader.engine.dispose()
    store.engine.dispose()


def test_user_facing_errors_share_one_base() -> None:
    from db import store
    from db.read import CampaignInfo
    from db.trials import CampaignExists, ClaimedTrial

    assert issubclass(CampaignNotFound, CampaignError) and issubclass(CampaignNotFound, LookupError)
    assert issubclass(CampaignExists, CampaignError) and issubclass(CampaignExists, RuntimeError)
    assert issubclass(DatabaseError, CampaignError) and issubclass(DatabaseError, RuntimeError)
    assert issubclass(SchemaNotCurrent, DatabaseError)
    # the store's old names are the same objects
    assert (store.CampaignNotFound, store.CampaignExists, store.CampaignInfo, store.ClaimedTrial) == (
        CampaignNotFound, CampaignExists, CampaignInfo, ClaimedTrial)


def test_a_file_that_is_not_a_database_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are notes, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(DatabaseError) as info:
        CampaignReader.open(f"sqlite:///{path}")
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "not a SQLite database" in message
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_reader_error_is_one_line_and_still_tells_an_outage(smoke_db) -> None:  # type: ignore[no-untyped-def]
    from db.engine import is_connectivity_error

    url, _ = smoke_db
    reader = CampaignReader.open(url)
    info = reader.campaign("smoke")
    reader.engine.dispose()

    def refuse(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        from sqlalchemy.exc import OperationalError

        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly\nmore"))

    reader.engine.connect = refuse  # type: ignore[method-assign]
    with pytest.raises(DatabaseError) as err:
        reader.status_rows(info.id)
    assert str(err.value).count("\n") == 0 and "server closed the connection" in str(err.value)
    assert is_connectivity_error(err.value)  # judged by its cause: a worker still waits it out


def test_run_hardware_gives_each_runs_power_limit_and_job_memory(db_url: str, smoke_cfg) -> None:  # type: ignore[no-untyped-def]
    """Per run: the mean enforced power limit of its training samples, and the memory its job could
    use as the worker recorded it (None where it recorded no limit: never the node's RAM)."""
    from db.engine import make_engine
    from db.records import RunResult
    from db.store import ResultStore
    from tests.db.conftest import plan_campaign, worker_result

    store = ResultStore(make_engine(db_url))
    cid, _ = plan_campaign(store, smoke_cfg, "hw")
    limited, unlimited = (store.claim_next(cid, "cpu", "w", "node1") for _ in range(2))
    assert limited is not None and unlimited is not None
    one = worker_result(limited, "hw", energy_j=5.0)
    one["hardware"] = {**one["hardware"], "memory_limit_gb": 12.5}
    one["trace"]["power_limit_w"] = [300.0 if p == "train" else 250.0 for p in one["trace"]["phase"]]
    store.ingest(RunResult.from_json(one))
    store.ingest(RunResult.from_json(worker_result(unlimited, "hw", energy_j=5.0)))
    got = store.run_hardware([limited.run_id, unlimited.run_id, 10**6])
    assert got == {limited.run_id: {"power_limit_w": 300.0, "job_memory_gb": 12.5},
                   unlimited.run_id: {"power_limit_w": 250.0, "job_memory_gb": None},
                   10**6: {"power_limit_w": None, "job_memory_gb": None}}
    store.engine.dispose()
