"""The workload-agnostic frame of one trial: setup, the idle baseline, the workload's measured
phases, the cool-down, the trace's summary and the run's result, for any ``Workload``.

It is the worker's ``run_trial`` with the training-specific parts behind the port (the worker
keeps its own for NAS-Bench-101 training, with Carbontracker, until the two are merged).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import socket
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from db.records import PhaseRecord, RunResult, RunStatus
from jobs import protocol
from jobs.meters.accuracy import accuracies
from jobs.meters.base import SAMPLE_FIELDS, PowerMeter, Sample
from jobs.workloads.base import TrialContext, Workload, WorkloadTrial

log = logging.getLogger(__name__)
progress = logging.getLogger("campaign.progress")

SETTLE_PERIODS = 2  # as the worker: sampling periods left alone before the idle window opens


@dataclasses.dataclass(frozen=True)
class TrialOutput:
    """A trial's result (as the worker writes and ingests it) and its workload's rows by table."""

    result: RunResult
    records: Mapping[str, list[dict[str, Any]]]


def _columns(samples: Sequence[Sample]) -> dict[str, list[Any]]:
    return {f: [getattr(s, f) for s in samples] for f in SAMPLE_FIELDS}


def _temperature(latest: Sequence[Sample]) -> float | None:
    temps = [s.temperature_c for s in latest if s.temperature_c is not None]
    return max(temps) if temps else None


def run_workload_trial(
    workload: Workload,
    trial: WorkloadTrial,
    settings: Any,
    meter: PowerMeter,
    device: str,
    worker_id: str,
    hardware: dict[str, Any],
    abandoned: Callable[[], bool] = lambda: False,
    data: Any = None,
    campaign: str = "",
) -> TrialOutput:
    """One trial of ``workload`` under the protocol on a started ``meter``. Never raises for a
    failing trial: the failure is the result (status failed, error text, no records)."""
    from jobs.meters.base import Phase

    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    label = trial.trial_key[:8]

    def mark(phase: str, index: int | None = None) -> None:
        meter.mark(phase, index)
        progress.info("trial %s: %s%s", label, phase, "" if index is None else f" window {index}")

    ctx = TrialContext(trial=trial, settings=settings, device=device, mark=mark, abandoned=abandoned, data=data)
    status, error, trace_text, outcome = RunStatus.FAILED, None, None, None
    start_temperature = _temperature(meter.latest())
    mark(Phase.SETUP, None)
    carried = [s for s in meter.drain() if s.phase in (Phase.WARMUP, Phase.SETUP)]
    try:
        prepared = workload.prepare(ctx)
        protocol.pause(SETTLE_PERIODS / settings.meter.rate_hz)
        mark(Phase.IDLE, None)
        protocol.pause(settings.protocol.idle_s)
        outcome = workload.execute(prepared, ctx)
        status = RunStatus.DONE
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        trace_text = traceback.format_exc()
        log.error("trial %s failed: %s", trial.trial_key, error)
    mark(Phase.COOLDOWN, None)
    samples = carried + meter.drain()
    protocol.cool_down(
        settings.protocol.cooldown_s, settings.protocol.cooldown_until_temp_c,
        protocol.summarise(samples)["idle_temperature_c"] if settings.protocol.cooldown_until_temp_c else None,
        meter.latest, poll_s=min(1.0, 1.0 / settings.meter.rate_hz * 2))  # fmt: skip
    samples += meter.drain()
    summary = protocol.summarise(samples, accuracies(hardware, meter.source),
                                 protocol.WindowRule(settings.meter.min_window_samples, settings.meter.min_rate_hz),
                                 settings.meter.max_disagreement)  # fmt: skip
    figures: dict[str, Any] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    if outcome is not None:
        figures = workload.figures(summary, outcome, ctx)
        records = workload.records(summary, outcome, ctx, samples)
    result = RunResult(
        campaign=campaign, trial_key=trial.trial_key, attempt=trial.attempt, status=status, error=error,
        traceback=trace_text, started_at=started.isoformat(), ended_at=dt.datetime.now(dt.UTC).isoformat(),
        host=socket.gethostname(), worker_id=worker_id, power_source=meter.source, device=device,
        hardware=hardware, trace_anchor_unix_s=meter.anchor_unix_s, energy_method=summary["method"],
        idle_power_w=summary["idle_power_w"],
        phases=tuple(PhaseRecord(phase=k, **v) for k, v in summary["phases"].items()),
        flags=tuple(summary["flags"]), start_temperature_c=start_temperature, trace=_columns(samples),
        **figures,
    )  # fmt: skip
    took = time.monotonic() - t0
    if status == RunStatus.DONE:
        progress.info("trial %s: done in %.0f s, %.1f J", label, took, result.energy_j or 0.0)
    else:
        progress.info("trial %s: failed: %s", label, error)
    return TrialOutput(result, records)
