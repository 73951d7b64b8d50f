"""Workloads: what a trial runs, behind one port (``jobs.workloads.base.Workload``).

``WORKLOADS`` maps the name stored with each trial (``trial.workload``) to its implementation.
"""

from __future__ import annotations

from db.errors import ConfigError
from jobs.workloads.base import Workload


def workload(name: str) -> Workload:
    """The workload called ``name``; ConfigError (one line) names the known ones."""
    from jobs.workloads.layers import LayerWorkload
    from jobs.workloads.training import TrainingWorkload

    known: dict[str, Workload] = {"nasbench101": TrainingWorkload(), "layers": LayerWorkload()}
    if name not in known:
        raise ConfigError(f"workload={name!r} is not allowed (allowed: {', '.join(known)})")
    return known[name]


WORKLOAD_NAMES = ("nasbench101", "layers")

__all__ = ["WORKLOAD_NAMES", "Workload", "workload"]
