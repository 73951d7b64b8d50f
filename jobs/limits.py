"""The memory a job may use on its node: what Green Algorithms' memory term should count for a run
(the memory allocated to the job), not the node's whole memory, which a job on a shared node does
not have.

Read, smallest first: the cgroup limits of this process (v2 ``memory.max``, v1
``memory.limit_in_bytes``, from its own cgroup up to the hierarchy's root: a parent's limit holds
too) and Slurm's allocation (``SLURM_MEM_PER_NODE``, or ``SLURM_MEM_PER_CPU`` x
``SLURM_CPUS_ON_NODE``, in MB). None when nothing limits the job (a workstation).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

GIB = 2.0**30
# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number (or near it)
_UNLIMITED = 2**60


def _cgroup_paths(root: Path) -> Iterator[tuple[str, str]]:
    """(version, path) of this process's memory cgroups from ``/proc/self/cgroup``."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            yield "v2", path
        elif "memory" in controllers.split(","):
            yield "v1", path


def _limits_up(base: Path, path: str, name: str) -> Iterator[int]:
    """The numeric limits in file ``name`` from cgroup ``path`` under ``base`` up to ``base``."""
    here = base / path.strip("/")
    while True:
        try:
            text = (here / name).read_text().strip()
        except OSError:
            text = ""
        if text.isdigit() and int(text) < _UNLIMITED:
            yield int(text)
        if here == base or base not in here.parents:
            return
        here = here.parent


def cgroup_limit_bytes(root: Path = Path("/")) -> int | None:
    """The smallest memory limit of this process's cgroups (bytes), None when none is set."""
    found: list[int] = []
    for version, path in _cgroup_paths(root):
        if version == "v2":
            found.extend(_limits_up(root / "sys/fs/cgroup", path, "memory.max"))
        else:
            found.extend(_limits_up(root / "sys/fs/cgroup/memory", path, "memory.limit_in_bytes"))
    return min(found) if found else None


def slurm_limit_bytes(environ: Mapping[str, str]) -> int | None:
    """Slurm's memory allocation of the job on this node (bytes), None outside Slurm or without one."""
    def mb(key: str) -> int | None:
        value = environ.get(key, "").strip().upper().removesuffix("M")
        return int(value) if value.isdigit() and int(value) > 0 else None

    per_node = mb("SLURM_MEM_PER_NODE")
    if per_node is not None:
        return per_node * 2**20
    per_cpu, cpus = mb("SLURM_MEM_PER_CPU"), mb("SLURM_CPUS_ON_NODE")
    return per_cpu * cpus * 2**20 if per_cpu is not None and cpus is not None else None


def memory_limit_gb(environ: Mapping[str, str] | None = None, root: Path = Path("/")) -> float | None:
    """The memory this job may use (GiB, two decimals), None when nothing limits it."""
    limits = [x for x in (cgroup_limit_bytes(root), slurm_limit_bytes(os.environ if environ is None else environ))
              if x is not None]
    return round(min(limits) / GIB, 2) if limits else None
