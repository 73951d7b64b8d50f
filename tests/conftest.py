"""Shared fixtures: configs composed through Hydra, real SQLite files in tmp_path, and the real
services (the Slurm test cluster and PostgreSQL), each started once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.config import CampaignConfig, compose


@pytest.fixture
def smoke_cfg(tmp_path: Path) -> CampaignConfig:
    """The smoke sweep's resolved config, rooted in a temporary folder."""
    return compose(["+sweep=smoke", f"root={tmp_path / 'campaigns'}"])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture(scope="session")
def slurm_cluster():  # type: ignore[no-untyped-def]
    """The one-node Slurm test cluster (slurm/start-cluster.sh), its environment set for this
    process and the subprocesses it starts; skipped only where this machine cannot run it."""
    import os

    from tests.services import start_slurm, stop_slurm

    cluster = start_slurm()
    if isinstance(cluster, str):
        pytest.skip(cluster)
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    yield cluster
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    stop_slurm(cluster)


@pytest.fixture(scope="session")
def pg_server():  # type: ignore[no-untyped-def]
    """The session's PostgreSQL server (started here, or the one CAMPAIGN_TEST_PG_URL names)."""
    from tests.services import start_postgres, stop_postgres

    server = start_postgres()
    if isinstance(server, str):
        pytest.skip(server)
    yield server
    stop_postgres(server)
