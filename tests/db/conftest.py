"""Database fixtures: every database test runs on a SQLite file and on a real PostgreSQL server.

PostgreSQL comes from ``tests/services.py`` (``db/postgres/start.sh``, or the server named by
``CAMPAIGN_TEST_PG_URL``), once per session; each test gets a fresh schema on it (the URL's
``search_path``), dropped afterwards. Without PostgreSQL on this machine its cases are skipped
with the reason.

``smoke_db`` is a smoke campaign written through the project's own write path (plan of the
smoke sweep, ``claim_next``, ``ingest`` of worker-shaped results), built once per backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from campaign.config import compose
from db.engine import make_engine
from db.records import RunResult
from db.store import ResultStore

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
SMOKE_NAME = "smoke"


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    """``campaign.cli.main`` (export and query included), called in this process."""
    import campaign.cli as cli_module

    return cli_module.main


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``schema`` first on the session's search_path (kept in the URL, so that
    subprocesses and new engines land in the same schema)."""
    parsed = make_url(url)
    options = " ".join(filter(None, [parsed.query.get("options"), f"-csearch_path={schema}"]))  # type: ignore[list-item]
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_schema(pg_server) -> Iterator[Callable[[], str]]:  # type: ignore[no-untyped-def]
    """A factory of fresh, empty schemas on the session's server; all dropped at the end."""
    admin = create_engine(pg_server.url, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def new() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {name}"))
        made.append(name)
        return with_search_path(pg_server.url, name)

    yield new
    with admin.connect() as conn:
        conn.execute(text("SET lock_timeout = '10s'"))
        for name in made:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh schema on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("pg_schema")()


@pytest.fixture
def sqlite_url(db_url: str) -> str:
    """Overrides the root fixture for tests/db, so that test_store.py and test_migrations.py (which
    ask for ``sqlite_url``) run on both backends unchanged. Their cases are named [sqlite] and
    [postgresql]; new tests ask for ``db_url``."""
    return db_url


def worker_result(trial: Any, campaign: str, *, energy_j: float, status: str = "done",
                  power_source: str | None = "simulated", train_images: int | None = 2048,
                  samples_per_phase: int = 5, first: bool = False) -> dict[str, Any]:
    """A result file's content (format 1) as ``jobs.worker.run_trial`` writes it, to be read by
    ``RunResult.from_json``, with round numbers derived from ``energy_j``: phases idle (10 J), train
    (0.8 energy_j), eval (0.2 energy_j), cooldown (5 J), and warmup (100 J) when ``first``; one
    epoch row per epoch of the budget; utilization 10..90 %."""
    epochs = trial.epochs
    phases = [("idle", 1.0, 10.0), ("train", 8.0, 0.8 * energy_j), ("eval", 2.0, 0.2 * energy_j),
              ("cooldown", 1.0, 5.0)]
    if first:
        phases.insert(0, ("warmup", 2.0, 100.0))
    trace: dict[str, list[Any]] = {k: [] for k in ("t_s", "phase", "epoch", "power_w", "device", "gpu_util",
                                                   "cpu_util", "power_limit_w", "energy_j")}
    t = 0.0
    for phase, duration_s, _ in phases:
        for i in range(samples_per_phase):
            util = 10.0 + 80.0 * i / max(1, samples_per_phase - 1) if phase in ("train", "eval") else 5.0
            trace["t_s"].append(t)
            trace["phase"].append(phase)
            trace["epoch"].append(1 + i * epochs // samples_per_phase if phase == "train" else None)
            trace["power_w"].append(50.0 + 2.0 * util)
            trace["device"].append(0)
            trace["gpu_util"].append(util)
            trace["cpu_util"].append(util)
            trace["power_limit_w"].append(250.0)
            trace["energy_j"].append(None)
            t += duration_s / samples_per_phase
    done = status == "done"
    return {
        "format": 1, "campaign": campaign, "trial_key": trial.trial_key, "attempt": trial.attempt,
        "status": status, "error": None if done else "TrainingDiverged: loss is nan",
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:20+00:00",
        "host": "node1", "worker_id": "node1-1-abc", "power_source": power_source, "dataset": "synthetic",
        "device": "cpu", "energy_method": "integrated",
        "hardware": {"host": "node1", "cpu_model": "test CPU", "cpu_count": 2, "ram_gb": 8.0,
                     "gpu_name": "simulated (no GPU)", "gpu_count": 0},
        "trace_anchor_unix_s": 1767225600.0,
        "epochs": [{"epoch": e, "duration_s": 10.0 / epochs, "energy_j": energy_j / epochs,
                    "mean_power_w": energy_j / 10.0, "train_loss": 2.0 / e, "train_accuracy": 0.1 * e,
                    "valid_accuracy": 0.1 * e} for e in range(1, epochs + 1)] if done else [],
        "phases": [{"phase": p, "duration_s": d, "energy_j": j, "mean_power_w": j / d, "samples": samples_per_phase}
                   for p, d, j in phases],
        "trace": trace,
        "idle_power_w": 10.0,
        "energy_j": energy_j if done else None,
        "duration_s": 10.0 if done else None,
        "valid_accuracy": 0.1 * epochs if done else None,
        "test_accuracy": 0.1 * epochs if done else None,
        "train_images_per_s": 1000.0 if done else None,
        "train_images": train_images if done else None,
        "result_path": None,
    }


def plain_config(cfg: Any) -> dict[str, Any]:
    """A composed configuration as the plain data a campaign records (a typed one's ``to_dict()``)."""
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def plan_campaign(store: ResultStore, cfg: Any, name: str = SMOKE_NAME) -> tuple[int, list[str]]:
    """Record the campaign ``cfg`` (as ``compose`` returns it) plans (real architectures and
    trials) under ``name``; return its id and its architecture hashes, sorted."""
    from campaign.plan import make_plan, resolve_architectures

    plan = make_plan(cfg, resolve_architectures(cfg))
    plain = plain_config(cfg)
    cid = store.create_campaign(name, plain["sweep"], plain["root"], "test-rev", plain, plan.archs, plan.trials)
    return cid, sorted(a.arch_hash for a in plan.archs)


def smoke_energy_j(arch_hash: str, epochs: int, seed: int) -> float:
    """A deterministic energy per trial: grows with the budget, differs by seed and architecture."""
    return 100.0 * epochs + 10.0 * seed + int(arch_hash[:2], 16) % 10


def fill_smoke(url: str, cfg: Any, name: str = SMOKE_NAME) -> None:
    """The smoke sweep's trials all run through claim_next and ingest; the last one fails first
    and succeeds on its second attempt (so one failed run is stored)."""
    store = ResultStore(make_engine(url))
    cid, archs = plan_campaign(store, cfg, name)
    budget = max(plain_config(cfg)["epochs"])
    first = True
    while (t := store.claim_next(cid, "cpu", "w1", "node1")) is not None:
        if t.attempt == 1 and t.seed == 1 and t.epochs == budget and t.arch_hash == archs[0]:
            store.ingest(RunResult.from_json(worker_result(t, name, energy_j=0.0, status="failed")))
            from sqlalchemy import update

            from db.schema import Trial

            with store.engine.begin() as conn:  # what `campaign resume` does to a failed trial
                conn.execute(update(Trial).where(Trial.id == t.trial_id).values(state="pending"))
            continue
        energy_j = smoke_energy_j(t.arch_hash, t.epochs, t.seed)
        store.ingest(RunResult.from_json(worker_result(t, name, energy_j=energy_j, first=first)))
        first = False
    store.engine.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def smoke_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """(url, config as plain data) of a finished smoke campaign named ``smoke``; tests must not
    modify it."""
    root = tmp_path_factory.mktemp("smoke")
    cfg = compose(["+sweep=smoke", f"root={root}"])
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'campaign.db'}"
    else:
        url = request.getfixturevalue("pg_schema")()
    fill_smoke(url, cfg)
    return url, plain_config(cfg)
