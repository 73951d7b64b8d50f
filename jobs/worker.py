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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from db.engine import make_engine
from db.store import ClaimedTrial, ResultStore
from jobs import protocol
from jobs.meters import make_meter
from jobs.meters.base import SAMPLE_FIELDS, PowerMeter, Sample
from jobs.results import result_path, write_atomic

log = logging.getLogger(__name__)


class TrialAbandoned(RuntimeError):
    """The database no longer lists this attempt as running (declared stale or cancelled)."""


class WorkerEvents(Protocol):
    def trial_started(self, trial: ClaimedTrial) -> None: ...

    def trial_finished(self, trial: ClaimedTrial, status: str, energy_j: float | None) -> None: ...


@dataclasses.dataclass
class WorkerSpec:
    """What a worker needs to know; small and picklable (sent to Slurm and Ray as is)."""

    db_url: str
    campaign: str
    gpu_type: str
    root: str
    keys: Sequence[str] | None = None  # only these trials (a chunk); None: any pending one
    worker_id: str = ""
    max_failures: int = 3
    db_patience_s: float = 600.0  # how long to wait for an unreachable database


@dataclasses.dataclass
class WorkerSummary:
    worker_id: str
    done: int = 0
    failed: int = 0
    stopped_reason: str = "no pending trials left"


def resolve_device(device: str) -> str:
    """``auto`` is CUDA where torch sees a GPU, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def host_description() -> dict[str, Any]:
    """The node's identity for the hardware table."""
    import psutil

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
    }


def _carbontracker(meter_cfg: dict[str, Any], epochs: int, log_dir: Path | None) -> Any:
    """Carbontracker for one trial, started, or None when switched off."""
    if not meter_cfg.get("carbontracker") or log_dir is None:
        return None
    from jobs.meters.carbon import WORLD_AVERAGE_G_PER_KWH, CarbonTrackerRun

    tracker = CarbonTrackerRun(
        epochs, log_dir,
        intensity_g_per_kwh=float(meter_cfg.get("carbon_intensity_g_per_kwh", WORLD_AVERAGE_G_PER_KWH)),
        intensity_source=str(meter_cfg.get("carbon_intensity_source", "configured")),
    )
    tracker.start()
    return tracker


def _marker(meters: Sequence[PowerMeter], tracker: Any) -> Callable[[str, int | None], None]:
    """One ``mark`` for the training loop: tags every meter's samples, and opens and closes
    Carbontracker's epochs (an epoch spans its training and its validation)."""
    open_epoch = [False]

    def mark(phase: str, epoch: int | None = None) -> None:
        for m in meters:
            m.mark(phase, epoch)
        if tracker is None:
            return
        if phase == "train" or (phase in ("eval", "cooldown") and epoch is None):
            if open_epoch[0]:
                tracker.epoch_end()
                open_epoch[0] = False
            if phase == "train":
                tracker.epoch_start()
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
    """Call ``fn`` until it succeeds, backing off up to ``patience_s`` (a database outage)."""
    deadline = time.monotonic() + patience_s
    delay = 1.0
    while True:
        try:
            return fn()
        except Exception as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.0f s", what, exc, delay)
            time.sleep(delay)  # back-off while the database is away, not synchronisation
            delay = min(delay * 2, 30.0)


def run_worker(spec: WorkerSpec, events: WorkerEvents | None = None, store: ResultStore | None = None) -> WorkerSummary:
    """Run pending trials of ``spec.campaign`` for ``spec.gpu_type`` (only ``spec.keys`` if given)
    until none are left or the worker fails ``max_failures`` trials in a row.

    A worker restarted under the same id (requeue) first closes its interrupted attempt as
    failed. Results that could not be stored are kept as files and stored when the database
    answers again."""
    if store is None:  # the worker's own engine, given back when it ends (a Ray process runs many)
        engine = make_engine(spec.db_url)
        try:
            return run_worker(spec, events, ResultStore(engine))
        finally:
            engine.dispose()  # closes the connections and finishes the pending WAL checkpoint
    worker_id = spec.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    patience_s = spec.db_patience_s
    info = _retry("reading the campaign", lambda: store.campaign(spec.campaign), patience_s)
    recovered = _retry("recovering", lambda: store.recover_worker(
        worker_id, "interrupted: the worker was preempted or hit its time limit; trial re-run from its start"),
        patience_s)
    if recovered:
        log.warning("worker %s restarted: %d interrupted trial(s) will run again", worker_id, len(recovered))
    cfg = info.config
    device = resolve_device(cfg["device"])
    summary = WorkerSummary(worker_id)

    from jobs.data import DatasetConfig, load_dataset

    data = load_dataset(DatasetConfig(**cfg["dataset"]))
    meter = make_meter(cfg["meter"]["kind"], rate_hz=cfg["meter"]["rate_hz"])
    rapl = _rapl_meter(cfg["meter"])
    hardware = {**host_description(), **meter.hardware()}
    unstored: list[dict[str, Any]] = []
    scheduler = scheduler_identity()
    meter.start()
    if rapl is not None:
        rapl.start()
        hardware["rapl_domains"] = rapl.hardware()["devices"]  # the readable ones: what samples number
    try:
        meter.mark("warmup")
        protocol.warm_up(cfg["protocol"]["warmup_s"], device)
        failures_in_row = 0
        while True:
            unstored = [r for r in unstored if not _store_result(store, r)]
            trial = _retry("claiming a trial", lambda: store.claim_next(
                info.id, spec.gpu_type, worker_id, socket.gethostname(), spec.keys, **scheduler), patience_s)
            if trial is None:
                break
            if events:
                events.trial_started(trial)
            path = result_path(spec.root, spec.campaign, trial.trial_key, trial.attempt)
            result = run_trial(trial, cfg, data, meter, device, worker_id, hardware,
                               heartbeat=lambda t=trial: store.heartbeat(t.run_id),  # type: ignore[misc]
                               rapl=rapl, log_dir=path.with_suffix(""))
            result["campaign"] = spec.campaign
            result["result_path"] = str(path)
            write_atomic(path, result)
            if not _store_result(store, result):
                unstored.append(result)
            if events:
                events.trial_finished(trial, result["status"], result.get("energy_j"))
            if result["status"] == "done":
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


def _rapl_meter(meter_cfg: dict[str, Any]) -> Any:
    """A RAPL meter beside the power meter where the node's counters are readable, else None."""
    if not meter_cfg.get("rapl", True):
        return None
    from jobs.meters.rapl import RaplMeter, rapl_available

    return RaplMeter(rate_hz=meter_cfg["rate_hz"]) if rapl_available() else None


def rapl_energy_j(samples: Sequence[Sample], domains: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """CPU package and DRAM energy over the train and eval phases, from RAPL samples."""
    kinds = {int(d["index"]): str(d["kind"]) for d in domains}
    out: dict[str, float | None] = {"package": None, "dram": None}
    for kind in out:
        mine = [s for s in samples if kinds.get(s.device) == kind]
        if mine:
            out[kind] = protocol.training_energy_j(protocol.summarise(mine)["phases"])
    return out


def _store_result(store: ResultStore, result: dict[str, Any]) -> bool:
    try:
        store.ingest(result)
        return True
    except Exception as exc:  # the file is safe; ingestion is retried later
        log.warning("could not store %s (kept in %s): %s", result["trial_key"], result["result_path"], exc)
        return False


class WorkerTask:
    """The callable sent to Slurm (submitit) and Ray: runs a worker.

    On preemption or a time limit submitit calls ``checkpoint``; the same task (same worker
    id) is requeued and continues with the trials of its chunk that are not done."""

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
    cfg: dict[str, Any],
    data: Any,
    meter: PowerMeter,
    device: str,
    worker_id: str,
    hardware: dict[str, Any],
    heartbeat: Callable[[], bool | None],
    rapl: Any = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """One trial under the protocol: idle baseline, training with tagged phases, cool-down.

    Never raises for a failing trial: the failure is the result (status failed, error text)."""
    from jobs.cell import CellSpec
    from jobs.network import NetworkConfig
    from jobs.recipe import RecipeConfig
    from jobs.train import train

    started = dt.datetime.now(dt.UTC)
    beat_every = float(cfg["protocol"]["heartbeat_s"])
    last_beat = [time.monotonic()]

    def on_step() -> None:
        now = time.monotonic()
        if now - last_beat[0] >= beat_every:
            last_beat[0] = now
            try:
                alive = heartbeat()
            except Exception as exc:  # a database hiccup must not kill the measurement
                log.warning("heartbeat failed: %s", exc)
                return
            if alive is False:
                raise TrialAbandoned("attempt abandoned: the database declared it stale or cancelled")

    result: dict[str, Any] = {
        "format": 1, "trial_key": trial.trial_key, "attempt": trial.attempt, "status": "failed",
        "error": None, "started_at": started.isoformat(), "host": socket.gethostname(),
        "worker_id": worker_id, "power_source": meter.source, "dataset": data.name, "device": device,
        "hardware": hardware, "trace_anchor_unix_s": meter.anchor_unix_s, "epochs": [], "phases": [],
        **scheduler_identity(),
    }
    outcome = None
    meters = [meter] if rapl is None else [meter, rapl]
    tracker = _carbontracker(cfg["meter"], trial.epochs, log_dir)
    mark = _marker(meters, tracker)
    # Samples taken between trials (result writing, ingestion) belong to no trial; the worker's
    # warm-up, which precedes its first trial, is kept with that trial's trace.
    mark("idle", None)
    carried = [s for s in meter.drain() if s.phase in ("warmup", "idle")]
    rapl_carried = [] if rapl is None else [s for s in rapl.drain() if s.phase == "idle"]
    try:
        protocol.pause(cfg["protocol"]["idle_s"])
        spec = CellSpec.create(trial.matrix, trial.ops)
        outcome = train(spec, NetworkConfig(**cfg["network"]), RecipeConfig(**cfg["recipe"]), data,
                        epochs=trial.epochs, seed=trial.seed, device=device, mark=mark, on_step=on_step)
        result["status"] = "done"
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        log.error("trial %s failed: %s", trial.trial_key, result["error"])
    mark("cooldown", None)
    if tracker is not None:
        record = tracker.stop()
        result["carbontracker"] = {**record.to_dict(), "log_dir": str(log_dir)}
    protocol.pause(cfg["protocol"]["cooldown_s"])
    samples = carried + meter.drain()
    if rapl is not None:
        result.update({f"{'cpu' if k == 'package' else k}_energy_j": v
                       for k, v in rapl_energy_j(rapl_carried + rapl.drain(),
                                                 hardware.get("rapl_domains", [])).items()})
    result["ended_at"] = dt.datetime.now(dt.UTC).isoformat()
    summary = protocol.summarise(samples)
    result["energy_method"] = summary["method"]
    result["phases"] = [{"phase": k, **v} for k, v in summary["phases"].items()]
    result["trace"] = _columns(samples)
    idle = summary["phases"].get("idle")
    result["idle_power_w"] = idle["mean_power_w"] if idle else None
    if outcome is not None:
        result["energy_j"] = protocol.training_energy_j(summary["phases"])
        result["duration_s"] = sum(e.duration_s for e in outcome.epochs)
        result["valid_accuracy"] = outcome.valid_accuracy
        result["test_accuracy"] = outcome.test_accuracy
        result["train_images_per_s"] = outcome.train_images_per_s
        result["train_images"] = int(len(data.y_train))
        result["epochs"] = [
            {"epoch": e.epoch, "duration_s": e.duration_s, "energy_j": summary["epochs"].get(e.epoch, 0.0),
             "mean_power_w": summary["epochs"].get(e.epoch, 0.0) / e.duration_s if e.duration_s > 0 else None,
             "train_loss": e.train_loss, "train_accuracy": e.train_accuracy, "valid_accuracy": e.valid_accuracy}
            for e in outcome.epochs
        ]
    return result
