"""The real services the integration tests stand on: the Slurm test cluster and PostgreSQL.

If these fail, the launcher and database tests that use the services cannot be trusted either.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.services import PostgresServer, SlurmCluster, wait_for_jobs


def _sbatch(cluster: SlurmCluster, workdir: Path, *args: str) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={workdir}", f"--output={workdir}/%j.out", *args],
        capture_output=True, text=True, timeout=60, env=cluster.environ(), check=True,
    ).stdout
    return out.strip().split(";")[0]


@pytest.mark.slurm
def test_cluster_declares_a_partition_per_gpu_type(slurm_cluster: SlurmCluster) -> None:
    out = subprocess.run(["sinfo", "-h", "-o", "%R %N %G"], capture_output=True, text=True, timeout=60,
                         env=slurm_cluster.environ(), check=True).stdout
    rows = {line.split()[0].rstrip("*"): line.split()[1:] for line in out.splitlines()}
    assert {"cpu", "a100", "v100"} <= set(rows)
    for gpu_type in slurm_cluster.gpu_types:
        node, gres = rows[gpu_type]
        assert node == slurm_cluster.node_for(gpu_type)
        assert gres.startswith(f"gpu:{gpu_type}:{slurm_cluster.gpus_per_type}")


@pytest.mark.slurm
def test_gpu_jobs_run_in_their_partition_with_cuda_visible_devices(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    script = 'echo "$CUDA_VISIBLE_DEVICES|$SLURM_JOB_PARTITION|$SLURMD_NODENAME"'
    ids = {t: _sbatch(slurm_cluster, tmp_path, f"--partition={t}", "--gres=gpu:1", f"--wrap={script}")
           for t in ("a100", "v100")}
    jobs = wait_for_jobs(slurm_cluster, ids.values(), timeout_s=120)
    for gpu_type, job_id in ids.items():
        job = jobs[job_id]
        assert (job.state, job.partition, job.node_list) == ("COMPLETED", gpu_type, slurm_cluster.node_for(gpu_type))
        assert f"gres/gpu:{gpu_type}=1" in job.alloc_tres
        devices, partition, node = (tmp_path / f"{job_id}.out").read_text().strip().split("|")
        assert devices != "" and partition == gpu_type and node == slurm_cluster.node_for(gpu_type)


@pytest.mark.slurm
def test_a_gpu_type_its_partition_lacks_is_refused(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        _sbatch(slurm_cluster, tmp_path, "--partition=a100", "--gres=gpu:v100:1", "--wrap=true")
    assert "configuration is not available" in refused.value.stderr


@pytest.mark.slurm
def test_submitit_array_returns_results_from_its_partition(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition="v100", slurm_gres="gpu:1", timeout_min=5,
                               cpus_per_task=1, slurm_array_parallelism=3)
    # os.getenv pickles by reference and runs in the job's environment.
    names = ["SLURM_JOB_PARTITION", "CUDA_VISIBLE_DEVICES", "SLURM_ARRAY_TASK_ID"]
    jobs = executor.map_array(os.getenv, names)
    deadline = time.monotonic() + 180
    while not all(job.done(force_check=True) for job in jobs):
        assert time.monotonic() < deadline, f"submitit jobs not done in 180s: {[j.state for j in jobs]}"
        time.sleep(0.5)
    partition, devices, task = (job.result() for job in jobs)
    assert partition == "v100" and devices not in (None, "") and task == "2"
    rows = wait_for_jobs(slurm_cluster, [jobs[0].job_id.split("_")[0]], expected=3, timeout_s=60)
    assert {(r.state, r.partition) for r in rows.values()} == {("COMPLETED", "v100")}


@pytest.mark.postgres
def test_postgres_round_trips_a_row_through_sqlalchemy_and_psycopg(pg_server: PostgresServer) -> None:
    import psycopg
    from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select

    table = Table(f"roundtrip_{uuid.uuid4().hex[:8]}", MetaData(),
                  Column("id", Integer, primary_key=True), Column("energy_j", String))
    engine = create_engine(pg_server.url)
    try:
        table.create(engine)
        with engine.begin() as con:
            con.execute(insert(table).values(id=1, energy_j="12.5"))
        with psycopg.connect(pg_server.conninfo) as con:
            assert con.execute(f"SELECT id, energy_j FROM {table.name}").fetchall() == [(1, "12.5")]
        with engine.connect() as con:
            assert con.execute(select(table.c.energy_j)).scalar_one() == "12.5"
    finally:
        table.drop(engine, checkfirst=True)
        engine.dispose()
