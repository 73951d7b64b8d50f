"""The worker: what runs on a node. It holds one device, warms it up once, then claims and runs
trials one by one under the measurement protocol, writing each result file before ingesting it.

The same code runs in-process (local launcher), in a Slurm task (submitit) and in a Ray task.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import platform
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from db.budget import over_budget
from db.engine import is_connectivity_error, make_engine
from db.ingest import PreparedResult
from db.paths import CampaignPaths
from db.records import Phase, PhaseRecord, RunResult, RunStatus
from db.store import ClaimedTrial, ResultStore
from jobs import protocol
from jobs.heartbeat import Heartbeat
from jobs.meters import make_meter
from jobs.meters.accuracy import accuracies, rapl_accuracy
from jobs.meters.base import SAMPLE_FIELDS, PowerMeter, Sample
from jobs.results import write_atomic
from jobs.settings import Device, MeterConfig, TrialSettings
from jobs.workloads.training import training_figures

log = logging.getLogger(__name__)
# One line per phase change and per finished trial, for the terminal (see _progress).
progress = logging.getLogger("campaign.progress")


# Sampling periods the device is left alone at the end of setup, before the idle window opens.
SETTLE_PERIODS = 2
# How often at most the training loop tells the terminal's display which batch it is at.
BATCH_RECORD_EVERY_S = 0.5


class TrialAbandoned(RuntimeError):
    """The database no longer lists this attempt as running (declared stale or cancelled)."""


@dataclasses.dataclass
class WorkerSpec:
    """What a worker needs to know; small and picklable (sent to Slurm and Ray as is)."""

    db_url: str
    campaign: str
    gpu_type: str
    root: str
    keys: Sequence[str] | None = None  # only these trials; None: any pending one (an emptied list: stop)
    worker_id: str = ""
    max_failures: int = 3
    db_patience_s: float = 600.0  # how long to wait for an unreachable database
    # The trial settings of this launch as plain data (a resume may change the meter or the data
    # folder, never what identifies a trial); None: the campaign's recorded ones.
    settings: Mapping[str, Any] | None = None
    # The allocation's wall-time limit (Slurm); the deadline is SLURM_JOB_END_TIME where the
    # scheduler sets it, else the worker's start plus this. None: no deadline (Ray, local).
    time_limit_s: float | None = None
    deadline: float | None = None  # the allocation's end (Unix seconds) where the launcher knows it
    deadline_margin_s: float = 10.0  # kept free before the deadline (writing, storing, exiting)
    # Configured seconds of one trial per epoch budget, used until the database has measurements.
    estimate_s: Mapping[int, float] | None = None
    submission: int = 0  # the submission (seq, per GPU type) this worker belongs to


@dataclasses.dataclass
class WorkerSummary:
    worker_id: str
    done: int = 0
    failed: int = 0
    stopped_reason: str = "no pending trials left"
    out_of_time: bool = False  # stopped because the next trial would not finish before the deadline
    budget_stopped: bool = False  # stopped because the campaign's budget would be passed (db.budget)


# Done runs of a GPU type and budget needed before their measured wall times replace the
# configured estimate, and the quantile of them taken (a high one: a trial cut off is lost work).
MIN_MEASURED = 3
ESTIMATE_QUANTILE = 0.9
ESTIMATE_REFRESH = 10  # trials between two reads of the measured durations
DEADLINE_SHARE = 0.5  # kept free before the deadline besides the fixed margin, as a share of the next trial's estimate


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation; ``values`` not empty)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def trial_estimate(epochs: int, measured: Mapping[int, Sequence[float]],
                   configured: Mapping[int, float] | None) -> float | None:
    """Seconds a trial of ``epochs`` is expected to take on this GPU type: a high quantile of the
    measured wall times of done runs of that budget (at least ``MIN_MEASURED`` of them), else
    the configured estimate; None when neither is known."""
    got = measured.get(epochs) or []
    if len(got) >= MIN_MEASURED:
        return quantile(got, ESTIMATE_QUANTILE)
    if configured and epochs in configured:
        return float(configured[epochs])
    return None


def fits_before(deadline: float | None, now: float, estimate_s: float | None, margin_s: float) -> bool:
    """Whether a trial estimated at ``estimate_s`` seconds, started ``now``, ends ``margin_s``
    before ``deadline`` (Unix seconds). No deadline, or no estimate: it fits."""
    if deadline is None or estimate_s is None:
        return True
    return now + estimate_s + margin_s <= deadline


def worker_deadline(time_limit_s: float | None, started: float, env: Mapping[str, str],
                    known_end: float | None = None) -> float | None:
    """When the allocation ends (Unix seconds): ``known_end`` where the launcher asked the
    scheduler, else ``SLURM_JOB_END_TIME`` where the scheduler sets it, else ``started`` plus the
    time limit; None without a limit."""
    if known_end is not None:
        return float(known_end)
    end = env.get("SLURM_JOB_END_TIME", "")
    if end.isdigit() and int(end) > 0:
        return float(end)
    return None if not time_limit_s else started + float(time_limit_s)


def resolve_device(device: str) -> str:
    """``auto`` is CUDA where torch sees a GPU, else the CPU."""
    if device != Device.auto:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def host_description() -> dict[str, Any]:
    """The node's identity for the hardware table, with the memory the job may use (its cgroup or
    Slurm limit, ``jobs.limits``; None: unlimited)."""
    import psutil

    from jobs.limits import memory_limit_gb

    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 2),
        "memory_limit_gb": memory_limit_gb(),
    }


def _carbontracker(meter_cfg: MeterConfig, epochs: int, log_dir: Path | None) -> Any:
    """Carbontracker for one trial, started, or None when switched off."""
    if not meter_cfg.carbontracker or log_dir is None:
        return None
    from jobs.meters.carbon import CarbonTrackerRun

    tracker = CarbonTrackerRun(epochs, log_dir, intensity_g_per_kwh=meter_cfg.carbon_intensity_g_per_kwh,
                               intensity_source=meter_cfg.carbon_intensity_source)
    tracker.start()
    return tracker


def _progress(label: str, epochs: int) -> Callable[[str, int | None], None]:
    """Logs each phase change of a trial for the terminal (``campaign.progress``, INFO)."""

    def say(phase: str, epoch: int | None) -> None:
        where = f" epoch {epoch}/{epochs}" if epoch is not None else ""
        progress.info("trial %s: %s%s", label, phase, where)

    return say


def _marker(meters: Sequence[PowerMeter], tracker: Any,
            progress: Callable[[str, int | None], None] | None = None) -> Callable[[str, int | None], None]:
    """One ``mark`` for the training loop: tags every meter's samples, opens and closes
    Carbontracker's epochs (an epoch spans its training and its validation) and tells
    ``progress``. ``tracker`` is Carbontracker's run, None, or a callable giving one of them (it
    starts during the setup, after the first mark)."""
    open_epoch = [False]

    def mark(phase: str, epoch: int | None = None) -> None:
        for m in meters:
            m.mark(phase, epoch)
        if progress is not None:
            progress(str(phase), epoch)
        run = tracker() if callable(tracker) else tracker
        if run is None:
            return
        if phase == Phase.TRAIN or (phase in (Phase.EVAL, Phase.COOLDOWN) and epoch is None):
            if open_epoch[0]:
                run.epoch_end()
                open_epoch[0] = False
            if phase == Phase.TRAIN:
                run.epoch_start()
                open_epoch[0] = True

    return mark


def scheduler_identity() -> dict[str, str | None]:
    """Where this attempt runs in the scheduler's terms (Slurm job and partition, Ray node)."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        job = env["SLURM_JOB_ID"]
        if env.get("SLURM_ARRAY_JOB_ID"):
            job = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
        return {"scheduler_job": job, "scheduler_partition": env.get("SLURM_JOB_PARTITION")}
    ray = sys.modules.get("ray")  # only a Ray task has it imported; never import it here
    try:
        if ray is not None and ray.is_initialized():
            ctx = ray.get_runtime_context()
            return {"scheduler_job": f"ray:{ctx.get_task_id()}", "scheduler_partition": f"ray:{ctx.get_node_id()[:12]}"}
    except Exception:  # not under Ray
        pass
    return {"scheduler_job": None, "scheduler_partition": None}


def _columns(samples: Sequence[Sample]) -> dict[str, list[Any]]:
    return {f: [getattr(s, f) for s in samples] for f in SAMPLE_FIELDS}


def _retry(what: str, fn: Callable[[], Any], patience_s: float) -> Any:
    """Call ``fn`` until it succeeds, backing off up to ``patience_s`` while the database cannot
    be reached (an outage); any other error (a wrong campaign name, a schema error) at once."""
    deadline = time.monotonic() + patience_s
    delay = 1.0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_connectivity_error(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.0f s", what, exc, delay)
            time.sleep(delay)  # back-off while the database is away, not synchronisation
            delay = min(delay * 2, 30.0)


def run_worker(spec: WorkerSpec, store: ResultStore | None = None) -> WorkerSummary:
    """Run pending trials of ``spec.campaign`` for ``spec.gpu_type`` (only ``spec.keys`` if given)
    until none are left or the worker fails ``max_failures`` trials in a row.

    A worker restarted under the same id (requeue) first closes its interrupted attempt as
    failed. Results that could not be stored are kept as files and stored when the database
    answers again."""
    if store is None:  # the worker's own engine, given back when it ends (a Ray process runs many)
        engine = make_engine(spec.db_url)
        try:
            return run_worker(spec, ResultStore(engine))
        finally:
            engine.dispose()  # closes the connections and finishes the pending WAL checkpoint
    worker_id = spec.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    patience_s = spec.db_patience_s
    paths = CampaignPaths.of(spec.root, spec.campaign)
    info = _retry("reading the campaign", lambda: store.campaign(spec.campaign), patience_s)
    recovered = _retry("recovering", lambda: store.recover_worker(
        worker_id, "interrupted: the worker was preempted or hit its time limit; trial re-run from its start"),
        patience_s)
    if recovered:
        log.warning("worker %s restarted: %d interrupted trial(s) will run again", worker_id, len(recovered))
    settings = TrialSettings.from_recorded(spec.settings if spec.settings is not None else info.config)
    device = resolve_device(settings.device)
    summary = WorkerSummary(worker_id)

    from jobs.data import load_dataset

    # Only training reads a data set; another workload's trials make their own inputs.
    data = load_dataset(settings.dataset) if info.config.get("workload", "nasbench101") == "nasbench101" else None
    meter = make_meter(settings.meter.kind, rate_hz=settings.meter.rate_hz)
    rapl = _rapl_meter(settings.meter)
    hardware = {**host_description(), **meter.hardware()}
    unstored: list[RunResult | PreparedResult] = []  # results kept in their files, to store again
    scheduler = scheduler_identity()
    deadline = worker_deadline(spec.time_limit_s, time.time(), os.environ, spec.deadline)
    measured: dict[int, list[float]] = {}
    meter.start()
    if rapl is not None:
        rapl.start()
        hardware["rapl_domains"] = rapl.hardware()["devices"]  # the readable ones: what samples number
    try:
        meter.mark(Phase.WARMUP)
        protocol.warm_up(settings.protocol.warmup_s, device)
        failures_in_row = 0
        while True:
            unstored = [later for r in unstored if (later := _store_result(store, r)) is not None]
            if deadline is not None and summary.done + summary.failed > 0:  # the first trial always runs
                epochs = _retry("reading the next trial", lambda: store.next_pending_epochs(info.id, spec.gpu_type),
                                patience_s)
                if epochs is None:
                    break
                if (summary.done + summary.failed) % ESTIMATE_REFRESH == 1 or epochs not in measured:
                    measured = _retry("reading trial durations",
                                      lambda: store.trial_walltimes(info.id, spec.gpu_type), patience_s)
                estimate = trial_estimate(epochs, measured, spec.estimate_s)
                now = time.time()
                # the margin grows with the trial: a loaded node runs trials slower than measured
                margin = spec.deadline_margin_s + DEADLINE_SHARE * (estimate or 0.0)
                if not fits_before(deadline, now, estimate, margin):
                    summary.out_of_time = True
                    summary.stopped_reason = (f"out of time: the next trial ({epochs} epochs, about {estimate:.0f} s) "
                                              f"would not end before the allocation does (in {deadline - now:.0f} s)")
                    break
            over = _retry("checking the budget", lambda: over_budget(store.engine, info.id), patience_s)
            if over is not None:  # measured so far + predicted for what remains passes a limit
                summary.stopped_reason = over
                summary.budget_stopped = True
                break
            trial = _retry("claiming a trial", lambda: store.claim_next(
                info.id, spec.gpu_type, worker_id, socket.gethostname(), spec.keys, **scheduler), patience_s)
            if trial is None:
                break
            path = paths.result(trial.trial_key, trial.attempt)
            # The heartbeat runs beside the whole trial (idle, training, cool-down, writing and
            # storing its result), not from the training loop: a long pause never looks stale.
            with Heartbeat(lambda t=trial: store.heartbeat(t.run_id),  # type: ignore[misc]
                           every_s=settings.protocol.heartbeat_s) as beat:
                if trial.workload == "nasbench101":
                    result = run_trial(trial, settings, data, meter, device, worker_id, hardware,
                                       abandoned=lambda b=beat: b.abandoned,  # type: ignore[misc]
                                       rapl=rapl, log_dir=paths.run_logs(trial.trial_key, trial.attempt))
                else:
                    result = _run_workload_trial(trial, settings, meter, device, worker_id, hardware,
                                                 lambda b=beat: b.abandoned)  # type: ignore[misc]
                result = dataclasses.replace(result, campaign=spec.campaign, result_path=str(path))
                write_atomic(path, result)
                if (later := _store_result(store, result)) is not None:
                    unstored.append(later)
            if result.status == RunStatus.DONE:
                summary.done += 1
                failures_in_row = 0
            else:
                summary.failed += 1
                failures_in_row += 1
                if failures_in_row >= spec.max_failures:
                    summary.stopped_reason = f"{failures_in_row} trials failed in a row (max_failures={spec.max_failures})"
                    break
        if unstored:  # the database is still away: one last patient try, then the files remain
            for r in unstored:
                _retry("storing a result", lambda r=r: store.ingest(r), patience_s)  # type: ignore[misc]
    finally:
        meter.stop()
        if rapl is not None:
            rapl.stop()
    return summary


def _run_workload_trial(trial: ClaimedTrial, settings: TrialSettings, meter: PowerMeter, device: str,
                        worker_id: str, hardware: dict[str, Any], abandoned: Callable[[], bool]) -> RunResult:
    """A trial of a workload other than training, through its port; its rows travel in the result."""
    from jobs.workloads import workload
    from jobs.workloads.base import WorkloadTrial
    from jobs.workloads.runner import run_workload_trial

    out = run_workload_trial(workload(trial.workload),
                             WorkloadTrial(trial.trial_key, trial.attempt, trial.seed, trial.spec or {}, trial.epochs),
                             settings, meter, device, worker_id, hardware, abandoned=abandoned)
    return dataclasses.replace(out.result, records=dict(out.records))


def _rapl_meter(meter_cfg: MeterConfig) -> Any:
    """A RAPL meter beside the power meter where the node's counters are readable, else None."""
    if not meter_cfg.rapl:
        return None
    from jobs.meters.rapl import RaplMeter, rapl_available

    return RaplMeter(rate_hz=meter_cfg.rate_hz) if rapl_available() else None


def rapl_energy_j(samples: Sequence[Sample], domains: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """CPU package and DRAM energy over the train and eval phases, from RAPL samples."""
    kinds = {int(d["index"]): str(d["kind"]) for d in domains}
    out: dict[str, float | None] = {"package": None, "dram": None}
    for kind in out:
        mine = [s for s in samples if kinds.get(s.device) == kind]
        if mine:
            out[kind] = protocol.training_energy_j(protocol.summarise(mine, {d.device: rapl_accuracy() for d in mine})["phases"])
    return out


def _store_result(store: ResultStore, result: RunResult | PreparedResult) -> RunResult | PreparedResult | None:
    """Store a result: None once stored, else what to try again later (prepared where it could
    be: the trace is encoded once, on this node and outside the database's lock, not per try)."""
    try:
        result = store.prepare(result)
        store.ingest(result)
        return None
    except Exception as exc:  # the file is safe; ingestion is retried later
        raw = result.result if isinstance(result, PreparedResult) else result
        log.warning("could not store %s (kept in %s): %s", raw.trial_key, raw.result_path, exc)
        return result


class WorkerTask:
    """The callable sent to Slurm (submitit) and Ray: runs a worker.

    On preemption or a time limit submitit calls ``checkpoint``; the same task (same worker
    id) is requeued and goes on claiming pending trials."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec

    def __call__(self) -> WorkerSummary:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        return run_worker(self.spec)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(WorkerTask(self.spec))


def run_trial(
    trial: ClaimedTrial,
    settings: TrialSettings,
    data: Any,
    meter: PowerMeter,
    device: str,
    worker_id: str,
    hardware: dict[str, Any],
    abandoned: Callable[[], bool] = lambda: False,
    rapl: Any = None,
    log_dir: Path | None = None,
) -> RunResult:
    """One trial under the protocol: setup, idle baseline, training with tagged phases, cool-down.

    Setup (the network, the optimizer, the data on the device, Carbontracker's start, one-off
    costs) is its own phase before the idle window, so the idle window holds nothing but
    ``protocol.idle_s`` of idle. Never raises for a failing trial: the failure is the result
    (status failed, error text). ``abandoned`` says when the database no longer lists the attempt
    as running (the heartbeat beside the trial found it declared stale or cancelled): training
    stops at its next step."""
    from jobs import train as train_module
    from jobs.cell import CellSpec

    started, t0 = dt.datetime.now(dt.UTC), time.monotonic()
    label = trial.trial_key[:8]

    steps = [0, 0.0]  # optimizer steps so far, when the last batch record was given

    def on_step() -> None:
        if abandoned():
            raise TrialAbandoned("attempt abandoned: the database declared it stale or cancelled")
        steps[0] += 1
        now = time.monotonic()
        if now - steps[1] >= BATCH_RECORD_EVERY_S:  # the terminal's bar; never a plain line
            steps[1] = now
            per_epoch = prepared.steps_per_epoch
            progress.debug("trial %s: batch", label, extra={"batch": ((steps[0] - 1) % per_epoch + 1, per_epoch)})

    status, error, trace_text = RunStatus.FAILED, None, None
    outcome = None
    meters = [meter] if rapl is None else [meter, rapl]
    tracker = None
    mark = _marker(meters, lambda: tracker, progress=_progress(label, trial.epochs))
    # Samples taken between trials (result writing, ingestion) belong to no trial; the worker's
    # warm-up, which precedes its first trial, is kept with that trial's trace.
    start_temperature = _temperature(meter.latest())
    mark(Phase.SETUP, None)
    carried = [s for s in meter.drain() if s.phase in (Phase.WARMUP, Phase.SETUP)]
    rapl_carried = [] if rapl is None else [s for s in rapl.drain() if s.phase == Phase.SETUP]
    try:
        tracker = _carbontracker(settings.meter, trial.epochs, log_dir)
        prepared = train_module.prepare_training(
            CellSpec.create(trial.matrix, trial.ops), settings.network, settings.recipe, data,
            epochs=trial.epochs, seed=trial.seed, device=device)  # fmt: skip
        # Setup ends settled: a meter's reading is its device's average over the interval before
        # it, so the reading that closes setup must not carry setup's load into the idle window.
        protocol.pause(SETTLE_PERIODS / settings.meter.rate_hz)
        mark(Phase.IDLE, None)
        protocol.pause(settings.protocol.idle_s)  # nothing else runs in this process meanwhile
        outcome = train_module.run_training(prepared, mark=mark, on_step=on_step)
        status = RunStatus.DONE
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        trace_text = traceback.format_exc()
        log.error("trial %s failed: %s", trial.trial_key, error)
    mark(Phase.COOLDOWN, None)
    carbontracker = None
    if tracker is not None:
        carbontracker = {**tracker.stop().to_dict(), "log_dir": str(log_dir)}
    samples = carried + meter.drain()
    protocol.cool_down(
        settings.protocol.cooldown_s, settings.protocol.cooldown_until_temp_c,
        protocol.summarise(samples)["idle_temperature_c"] if settings.protocol.cooldown_until_temp_c else None,
        meter.latest, poll_s=min(1.0, 1.0 / settings.meter.rate_hz * 2))  # fmt: skip
    samples += meter.drain()
    rapl_j: dict[str, float | None] = {"package": None, "dram": None}
    if rapl is not None:
        rapl_j = rapl_energy_j(rapl_carried + rapl.drain(), hardware.get("rapl_domains", []))
    summary = protocol.summarise(samples, accuracies(hardware, meter.source),
                                 protocol.WindowRule(settings.meter.min_window_samples, settings.meter.min_rate_hz),
                                 settings.meter.max_disagreement)  # fmt: skip
    where = scheduler_identity()
    figures: dict[str, Any] = {}
    if outcome is not None:
        figures = training_figures(summary, outcome, train_images=int(len(data.y_train)))
    result = RunResult(
        campaign="", trial_key=trial.trial_key, attempt=trial.attempt, status=status, error=error,
        traceback=trace_text, started_at=started.isoformat(), ended_at=dt.datetime.now(dt.UTC).isoformat(),
        host=socket.gethostname(), worker_id=worker_id, power_source=meter.source, dataset=data.name,
        device=device, hardware=hardware, trace_anchor_unix_s=meter.anchor_unix_s,
        energy_method=summary["method"], idle_power_w=summary["idle_power_w"],
        cpu_energy_j=rapl_j["package"], dram_energy_j=rapl_j["dram"], carbontracker=carbontracker,
        phases=tuple(PhaseRecord(phase=k, **v) for k, v in summary["phases"].items()),
        flags=tuple(summary["flags"]), start_temperature_c=start_temperature,
        trace=_columns(samples), scheduler_job=where["scheduler_job"],
        scheduler_partition=where["scheduler_partition"], **figures,
    )  # fmt: skip
    took = time.monotonic() - t0
    if status == RunStatus.DONE:
        progress.info("trial %s: done in %.0f s, %.1f J", label, took, result.energy_j or 0.0)
    else:
        progress.info("trial %s: failed: %s", label, error)
    return result


def _temperature(latest: Sequence[Sample]) -> float | None:
    """The hottest device's temperature in the meter's latest samples; None without a thermometer."""
    temps = [s.temperature_c for s in latest if s.temperature_c is not None]
    return max(temps) if temps else None
