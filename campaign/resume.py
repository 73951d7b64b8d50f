"""Resume as a pure decision: which trials to run again, from plain rows and the database's clock.

``decide`` never touches the database; ``apply`` carries its actions out as compare-and-set
updates, so two resumes at once cannot reopen or claim a trial twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass
class Actions:
    """What a resume does. ``submit`` lists trial keys by GPU type, in run order."""

    mark_stale: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (run_id, trial_id)
    reopen: list[int] = dataclasses.field(default_factory=list)  # failed / cancelled trial ids
    submit: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    submit_ids: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # their trial ids, same order
    still_running: list[str] = dataclasses.field(default_factory=list)
    done: int = 0

    @property
    def to_run(self) -> int:
        return sum(len(v) for v in self.submit.values())


def decide(trials: Sequence[dict[str, Any]], now: dt.datetime, stale_after_s: float) -> Actions:
    """Every trial that is not done and not alive gets submitted again; a finished one never.

    ``trials`` are rows of ``ResultStore.trial_states``: trial_id, trial_key, gpu_type, state,
    run_id, run_status, heartbeat_at. A running trial is alive while its latest run is running
    and its heartbeat is younger than ``stale_after_s`` by the database's clock ``now``.
    """
    out = Actions()
    cutoff = now - dt.timedelta(seconds=stale_after_s)
    submit, submit_ids, still_running = out.submit, out.submit_ids, out.still_running
    done = 0
    for t in trials:
        state, key = t["state"], t["trial_key"]
        if state == "done":
            done += 1
            continue
        tid = int(t["trial_id"])
        if state == "running":
            running = t["run_status"] == "running"
            if running and t["heartbeat_at"] is not None and t["heartbeat_at"] >= cutoff:
                still_running.append(key)
                continue
            if running and t["run_id"] is not None:
                out.mark_stale.append((t["run_id"], tid))
        elif state in ("failed", "cancelled"):
            out.reopen.append(tid)
        elif state != "pending":
            raise ValueError(f"unknown trial state {state!r} for trial {key}")
        gpu = t["gpu_type"]
        keys = submit.get(gpu)
        if keys is None:
            keys = submit[gpu] = []
            submit_ids[gpu] = []
        keys.append(key)
        submit_ids[gpu].append(tid)
    out.done = done
    return out


def apply(store: Any, campaign_id: int, actions: Actions, now: dt.datetime, stale_after_s: float) -> Actions:
    """Carry the actions out (compare-and-set) and return what is actually pending to submit: a
    trial another process claimed (or finished) meanwhile is left out."""
    cutoff = now - dt.timedelta(seconds=stale_after_s)
    for run_id, trial_id in actions.mark_stale:
        store.mark_stale(run_id, trial_id, cutoff)
    store.reopen(actions.reopen)
    pending = store.pending_ids(campaign_id)
    submit: dict[str, list[str]] = {}
    submit_ids: dict[str, list[int]] = {}
    for gpu, keys in actions.submit.items():
        ids = actions.submit_ids.get(gpu)
        if ids is None or len(ids) != len(keys):
            raise ValueError(f"resume actions for {gpu}: {len(keys)} trial keys but no matching trial ids")
        kept = [(k, i) for k, i in zip(keys, ids, strict=True) if i in pending]
        if kept:
            submit[gpu], submit_ids[gpu] = [k for k, _ in kept], [i for _, i in kept]
    return dataclasses.replace(actions, submit=submit, submit_ids=submit_ids)
