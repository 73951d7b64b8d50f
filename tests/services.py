"""Real services for integration tests: a Slurm cluster and a PostgreSQL server on this machine.

Plain functions over the scripts in `slurm/` and `db/postgres/`, for `tests/conftest.py` to wrap in
fixtures. A start function returns the running service, or a string saying why this machine
cannot run it (a reason to skip); it raises `ServiceError` when the machine could run it but
the start failed, so that a broken setup fails loudly instead of skipping.

Environment:
- `CAMPAIGN_TEST_SLURM_STATE`: the STATE_DIR of a cluster started beforehand (by CI, with
  `slurm/start-cluster.sh`); it is used as is and never stopped here.
- `CAMPAIGN_TEST_PG_URL`: the URL of a PostgreSQL server started beforehand; likewise.
- `CAMPAIGN_TEST_STATE`: the folder under which services started here keep their state
  (default `/tmp/campaign-test-services`; it must be reachable by the users `munge` and
  `postgres`, which pytest's private `tmp_path` is not).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SLURM_START = REPO_ROOT / "slurm" / "start-cluster.sh"
SLURM_STOP = REPO_ROOT / "slurm" / "stop-cluster.sh"
PG_START = REPO_ROOT / "db" / "postgres" / "start.sh"
PG_STOP = REPO_ROOT / "db" / "postgres" / "stop.sh"

SLURM_STATE_ENV = "CAMPAIGN_TEST_SLURM_STATE"
PG_URL_ENV = "CAMPAIGN_TEST_PG_URL"
STATE_ROOT_ENV = "CAMPAIGN_TEST_STATE"
DEFAULT_STATE_ROOT = Path("/tmp/campaign-test-services")

# sacct states after which a job does not change any more (a requeued job goes back to PENDING).
TERMINAL_JOB_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT",
})


class ServiceError(RuntimeError):
    """A service that this machine can run did not start or stop; the message holds its log."""


def default_state_dir(service: str) -> Path:
    """Where a service started by these helpers keeps its state: `$CAMPAIGN_TEST_STATE/<service>`."""
    return Path(os.environ.get(STATE_ROOT_ENV) or DEFAULT_STATE_ROOT) / service


def _run_script(script: Path, state_dir: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run a start/stop script; raise ServiceError with its stderr when it fails or hangs."""
    try:
        proc = subprocess.run(
            ["bash", str(script), str(state_dir)], capture_output=True, text=True, timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise ServiceError(f"{script.relative_to(REPO_ROOT)} {state_dir} ran over {timeout_s:.0f}s:\n{err[-3000:]}") from exc
    if proc.returncode != 0:
        raise ServiceError(
            f"{script.relative_to(REPO_ROOT)} {state_dir} failed with exit code {proc.returncode}:\n"
            f"{proc.stderr[-3000:]}"
        )
    return proc


def _exports(text: str) -> dict[str, str]:
    """The `export NAME=VALUE` lines of a script's output (values without spaces or quotes)."""
    return dict(re.findall(r"^export ([A-Za-z_][A-Za-z0-9_]*)=(\S*)$", text, flags=re.MULTILINE))


# ---------------------------------------------------------------------------------------------- Slurm


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster from slurm/start-cluster.sh.

    `env` holds what Slurm's commands (and submitit, which calls them) need in their environment:
    put it into `os.environ` (monkeypatch.setenv) or pass `environ()` to subprocesses. Jobs inherit
    the submitting environment. `owned` is True when this process started the cluster: only then
    does `stop_slurm` stop it.
    """

    state_dir: Path
    env: Mapping[str, str]
    gpu_types: tuple[str, ...]
    gpus_per_type: int
    owned: bool

    @property
    def partitions(self) -> list[str]:
        """The default partition `cpu` (all nodes) and one partition per GPU type."""
        return ["cpu", *self.gpu_types]

    def node_for(self, gpu_type: str) -> str:
        """The node that holds the GPUs of one type (the only node of that type's partition)."""
        return f"gpu-{gpu_type}"

    def environ(self) -> dict[str, str]:
        """This process's environment plus the cluster's, for subprocess calls."""
        return {**os.environ, **self.env}


def slurm_unavailable_reason() -> str | None:
    """Why this machine cannot start the test cluster, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the Slurm test cluster needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return f"the Slurm test cluster needs root (slurmd runs as root); or start it with sudo and set {SLURM_STATE_ENV}"
    missing = [c for c in ("slurmctld", "slurmd", "slurmdbd", "sbatch", "munged", "mariadbd") if not shutil.which(c)]
    if missing and not shutil.which("apt-get"):
        return f"Slurm is not installed ({', '.join(missing)} missing) and there is no apt-get to install it"
    return None


def _read_cluster(state_dir: Path, env: Mapping[str, str], owned: bool) -> SlurmCluster:
    hardware = (state_dir / "hardware").read_text()
    types = re.search(r'^GPU_TYPES="([^"]*)"', hardware, flags=re.MULTILINE)
    per_type = re.search(r"^GPUS_PER_TYPE=(\d+)", hardware, flags=re.MULTILINE)
    if not types or not per_type:
        raise ServiceError(f"{state_dir / 'hardware'} lacks GPU_TYPES or GPUS_PER_TYPE:\n{hardware}")
    return SlurmCluster(state_dir, dict(env), tuple(types.group(1).split()), int(per_type.group(1)), owned)


def start_slurm(state_dir: Path | None = None, timeout_s: float = 900) -> SlurmCluster | str:
    """Start (or reuse) the test cluster; return it, or a reason to skip when it cannot run here.

    With `CAMPAIGN_TEST_SLURM_STATE` set, the cluster in that folder is used and nothing starts.
    Otherwise slurm/start-cluster.sh runs on `state_dir` (default `default_state_dir("slurm")`),
    installing Debian's packages first if needed (hence the long timeout); a cluster already up
    there is reused and left running.
    """
    if existing := os.environ.get(SLURM_STATE_ENV):
        env_file = Path(existing) / "env"
        if not env_file.is_file():
            raise ServiceError(
                f"{SLURM_STATE_ENV}={existing} but {env_file} does not exist: start that cluster with "
                f"slurm/start-cluster.sh {existing}, or unset {SLURM_STATE_ENV}"
            )
        return _read_cluster(Path(existing), _exports(env_file.read_text()), owned=False)
    if reason := slurm_unavailable_reason():
        return reason
    state_dir = state_dir or default_state_dir("slurm")
    proc = _run_script(SLURM_START, state_dir, timeout_s)
    env = _exports(proc.stdout)
    if "SLURM_CONF" not in env:
        raise ServiceError(f"slurm/start-cluster.sh printed no SLURM_CONF:\n{proc.stdout}\n{proc.stderr[-2000:]}")
    return _read_cluster(Path(state_dir), env, owned="already up" not in proc.stderr)


def stop_slurm(cluster: SlurmCluster, timeout_s: float = 180, force: bool = False) -> None:
    """Stop the cluster if this process started it (see `SlurmCluster.owned`), or whenever `force`;
    keep its state folder (`start_slurm(cluster.state_dir)` brings it back)."""
    if cluster.owned or force:
        _run_script(SLURM_STOP, cluster.state_dir, timeout_s)


@dataclass(frozen=True)
class SacctJob:
    """One job (or array task) as accounting reports it; `alloc_tres` as `gres/gpu:a100=1,...`."""

    job_id: str
    state: str
    partition: str
    node_list: str
    exit_code: str
    alloc_tres: str

    @property
    def done(self) -> bool:
        """Finished and fully recorded: accounting shows a finished job's state about a second
        before its partition, so a row without a partition is not final yet."""
        return self.state in TERMINAL_JOB_STATES and self.partition != ""


def sacct_jobs(cluster: SlurmCluster, job_ids: Iterable[str]) -> dict[str, SacctJob]:
    """Accounting rows (allocations only, no steps) of jobs, keyed by job id (`12` or `12_3`).

    An array's id gives one row per task. Jobs that accounting has not recorded yet are missing:
    slurmctld reports to slurmdbd asynchronously, so poll (`wait_for_jobs`) rather than read once.
    """
    ids = ",".join(job_ids)
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", ids, "-o", "JobID,State,Partition,NodeList,ExitCode,AllocTRES"],
        capture_output=True, text=True, timeout=60, env=cluster.environ(), check=True,
    ).stdout
    jobs = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        job_id, state, partition, nodes, exit_code, tres = line.split("|")
        # "CANCELLED by 0" -> "CANCELLED"
        jobs[job_id] = SacctJob(job_id, state.split()[0], partition, nodes, exit_code, tres)
    return jobs


def wait_for_jobs(
    cluster: SlurmCluster, job_ids: Iterable[str], expected: int | None = None, timeout_s: float = 120,
) -> dict[str, SacctJob]:
    """Poll accounting until every job (at least `expected` rows, e.g. the tasks of an array) is done.

    Raises TimeoutError naming the jobs still running, with squeue's view of them.
    """
    ids = list(job_ids)
    need = len(ids) if expected is None else expected
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = sacct_jobs(cluster, ids)
        if len(jobs) >= need and all(j.done for j in jobs.values()):
            return jobs
        if time.monotonic() > deadline:
            queue = subprocess.run(["squeue", "-a", "-l"], capture_output=True, text=True, timeout=60,
                                   env=cluster.environ()).stdout
            pending = {k: v.state for k, v in jobs.items() if not v.done}
            raise TimeoutError(
                f"jobs {ids} not done after {timeout_s:.0f}s (expected {need} accounting rows, got "
                f"{len(jobs)}; not done: {pending}); squeue:\n{queue}"
            )
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    """A running server from db/postgres/start.sh.

    `url` is the SQLAlchemy URL (`postgresql+psycopg://...`, password included: do not log it).
    `owned` is True when this process started it: only then does `stop_postgres` stop it. After
    `stop_postgres`, `start_postgres(server.state_dir)` brings the same data back, on the same
    port when it is still free (check the new URL).
    """

    url: str
    state_dir: Path | None
    owned: bool

    @property
    def conninfo(self) -> str:
        """The URL for psycopg itself (`postgresql://...`)."""
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)


def postgres_unavailable_reason() -> str | None:
    """Why this machine cannot start the test server, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the PostgreSQL test server script needs Linux, not {sys.platform}"
    installed = any(Path("/usr/lib/postgresql").glob("*/bin/initdb")) or shutil.which("initdb")
    if not installed:
        if os.geteuid() != 0:
            return "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
        if not shutil.which("apt-get"):
            return "PostgreSQL is not installed and there is no apt-get to install it"
    return None


def start_postgres(state_dir: Path | None = None, timeout_s: float = 600) -> PostgresServer | str:
    """Start (or reuse) a throwaway server; return it, or a reason to skip when it cannot run here.

    With `CAMPAIGN_TEST_PG_URL` set, that server is used and nothing starts. Otherwise
    db/postgres/start.sh runs on `state_dir` (default `default_state_dir("postgres")`); a server
    already up there is reused and left running.
    """
    if existing := os.environ.get(PG_URL_ENV):
        return PostgresServer(existing, None, owned=False)
    if reason := postgres_unavailable_reason():
        return reason
    state_dir = state_dir or default_state_dir("postgres")
    proc = _run_script(PG_START, state_dir, timeout_s)
    lines = proc.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("postgresql+psycopg://"):
        raise ServiceError(f"db/postgres/start.sh printed no URL as its last line:\n{proc.stderr[-2000:]}")
    return PostgresServer(lines[-1], Path(state_dir), owned="already up" not in proc.stderr)


def stop_postgres(server: PostgresServer, timeout_s: float = 120, force: bool = False) -> None:
    """Stop the server if this process started it, or whenever `force` (a test that takes the
    database away on purpose); keep its data."""
    if server.state_dir is not None and (server.owned or force):
        _run_script(PG_STOP, server.state_dir, timeout_s)
