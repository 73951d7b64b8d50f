"""The memory a job may use (``jobs.limits``): cgroup v1 and v2 limits read from files laid out as
the kernel lays them out (in a folder the test writes: this machine has one setup only), Slurm's
allocation from its variables, and what the worker records."""

from __future__ import annotations

from pathlib import Path

from jobs.limits import GIB, cgroup_limit_bytes, memory_limit_gb, slurm_limit_bytes


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_takes_the_smallest_limit_from_the_job_up(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "0::/system.slice/slurmstepd.scope/job_42/step_0\n")
    _write(tmp_path, "sys/fs/cgroup/system.slice/slurmstepd.scope/job_42/step_0/memory.max", "max\n")
    _write(tmp_path, "sys/fs/cgroup/system.slice/slurmstepd.scope/job_42/memory.max", f"{16 * 2**30}\n")
    _write(tmp_path, "sys/fs/cgroup/system.slice/memory.max", f"{64 * 2**30}\n")
    assert cgroup_limit_bytes(tmp_path) == 16 * 2**30
    assert memory_limit_gb({}, tmp_path) == 16.0


def test_cgroup_v1_ignores_its_no_limit_value(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/process_api/abc\n0::/\n")
    _write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    assert cgroup_limit_bytes(tmp_path) is None
    _write(tmp_path, "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes", f"{3 * 2**29}\n")
    assert cgroup_limit_bytes(tmp_path) == 3 * 2**29 and memory_limit_gb({}, tmp_path) == 1.5


def test_slurms_allocation_and_the_smaller_of_both(tmp_path: Path) -> None:
    assert slurm_limit_bytes({}) is None
    assert slurm_limit_bytes({"SLURM_MEM_PER_NODE": "8192"}) == 8 * 2**30
    assert slurm_limit_bytes({"SLURM_MEM_PER_CPU": "2000", "SLURM_CPUS_ON_NODE": "4"}) == 8000 * 2**20
    assert slurm_limit_bytes({"SLURM_MEM_PER_NODE": "0", "SLURM_MEM_PER_CPU": "junk"}) is None
    _write(tmp_path, "proc/self/cgroup", "0::/job\n")
    _write(tmp_path, "sys/fs/cgroup/job/memory.max", f"{int(32 * GIB)}\n")
    assert memory_limit_gb({"SLURM_MEM_PER_NODE": "8192"}, tmp_path) == 8.0
    assert memory_limit_gb({}, tmp_path / "nothing-here") is None  # no /proc, no Slurm: no limit


def test_the_worker_records_the_limit_with_the_host() -> None:
    from jobs.worker import host_description

    described = host_description()
    assert described["memory_limit_gb"] == memory_limit_gb()
    assert described["ram_gb"] > 0
