"""Records shared by every layer: trial and run states, the protocol's phases, the trace sample's
columns, and the typed result of one run that travels from a worker to the database.

They live on the ground floor (``db/`` imports nothing of ours), so the worker, the meters, the
store, the launchers and the analysis all speak of the same things. States and phases are
``StrEnum`` members: stored as their string values (the schema does not change) and equal to
those strings wherever a plain string is compared.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any

from db.errors import CampaignError


class TrialState(enum.StrEnum):
    """Where a trial stands. ``done`` is final: nothing moves a done trial back."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStatus(enum.StrEnum):
    """Where one attempt (run) of a trial stands."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STALE = "stale"  # its worker stopped sending heartbeats; the trial went back to pending
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # finished after another attempt had finished the trial: kept, never a result


# Run statuses that are final: ingestion never rewrites such a run.
FINAL_RUN_STATUSES = frozenset({RunStatus.DONE, RunStatus.SUPERSEDED})
# The trial state an ingested run leaves its trial in.
TRIAL_STATE_OF_RUN = {RunStatus.DONE: TrialState.DONE, RunStatus.FAILED: TrialState.FAILED,
                      RunStatus.CANCELLED: TrialState.CANCELLED}


class Phase(enum.StrEnum):
    """What the device was doing when a sample was taken (every sample carries one)."""

    WARMUP = "warmup"  # the worker's warm-up load, once before its first trial
    SETUP = "setup"  # a trial's one-off work before it can train (network, optimizer, data to the device)
    IDLE = "idle"  # the idle baseline before each trial, after its setup: nothing else runs in it
    TRAIN = "train"
    EVAL = "eval"
    COOLDOWN = "cooldown"  # the pause after each trial


PHASES: tuple[str, ...] = tuple(p.value for p in Phase)
TRAINING_PHASES: tuple[str, ...] = (Phase.TRAIN.value, Phase.EVAL.value)  # a run's energy and duration are theirs

# The columns of one trace sample, in the order of the ``trace_sample`` table (db/schema.py).
SAMPLE_COLUMNS: tuple[str, ...] = (
    "device", "t_s", "phase", "epoch", "power_w", "energy_j", "gpu_util", "mem_util", "mem_used_mb",
    "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "power_limit_w", "cpu_util", "rss_mb",
)  # fmt: skip


# The grid's carbon intensity where none is configured: the world average that Carbontracker 2.4
# falls back to (IEA, 2024). One definition for the meters' default and the analysis' fallback.
WORLD_AVERAGE_G_PER_KWH = 445.0
J_PER_KWH = 3.6e6  # joules per kilowatt-hour


class ResultFormatError(CampaignError):
    """A result file that is not a run result this code can read (its message names the file's
    problem: an unknown format version, a missing or mistyped field)."""


@dataclasses.dataclass(frozen=True)
class EpochRecord:
    """Figures of one epoch of a run (1-based)."""

    epoch: int
    duration_s: float
    energy_j: float
    mean_power_w: float | None
    train_loss: float
    train_accuracy: float
    valid_accuracy: float
    energy_above_idle_j: float | None = None  # energy_j - the trial's idle power x duration_s
    uncertainty_j: float | None = None  # stated uncertainty of energy_j (basis: the run's error_basis)


@dataclasses.dataclass(frozen=True)
class PhaseRecord:
    """Energy of one phase of a run, all devices of the job summed."""

    phase: str
    duration_s: float
    energy_j: float
    samples: int
    mean_power_w: float | None
    energy_above_idle_j: float | None = None  # energy_j - the trial's idle power x duration_s
    uncertainty_j: float | None = None  # stated uncertainty of energy_j
    method: str | None = None  # how energy_j was obtained (see RunResult.energy_method)
    valid: bool = True  # the window meets the validity rule (enough samples at a high enough rate)


FORMAT_VERSION = 4
# Format 1 (the result files of the first version) held the same fields as an untyped mapping;
# format 2 writes ``status`` as a RunStatus value and the epochs and phases as typed records;
# format 3 adds the energy above idle, the method and uncertainty of every figure, the validity
# flags and the setup phase; format 4 adds a workload's own rows (``records``). All read into the
# same RunResult (absent fields are None or empty).
READABLE_FORMATS = (1, 2, 3, 4)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Everything one attempt of a trial produced, as the worker writes it to its result file and
    the database ingests it. Identified by (campaign, trial_key, attempt)."""

    campaign: str
    trial_key: str
    attempt: int
    status: RunStatus
    started_at: str  # ISO 8601, UTC
    host: str
    worker_id: str
    ended_at: str | None = None
    error: str | None = None
    traceback: str | None = None
    power_source: str | None = None  # "nvml", "simulated", ...
    # How energy_j was obtained: nvml_counter | nvml_power_integration | simulated | ... (formats 1-2:
    # "counter" or "integrated").
    energy_method: str | None = None
    dataset: str | None = None
    device: str | None = None
    hardware: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scheduler_job: str | None = None
    scheduler_partition: str | None = None
    trace_anchor_unix_s: float | None = None
    energy_j: float | None = None  # the training phases' energy (train + eval)
    energy_above_idle_j: float | None = None  # energy_j - idle_power_w x duration of train + eval
    energy_uncertainty_j: float | None = None  # stated uncertainty of energy_j, in joules
    error_basis: str | None = None  # what the uncertainty is made of (device accuracy, integration bound, ...)
    counter_energy_j: float | None = None  # train + eval energy from the device counter, where it has one
    integrated_energy_j: float | None = None  # train + eval energy from the sampled power
    energy_disagreement: float | None = None  # |counter - integrated| / counter, where both exist
    flags: tuple[str, ...] = ()  # what is wrong with the measurement, e.g. "short_window:idle", "disagreement"
    start_temperature_c: float | None = None  # GPU temperature when the trial started
    duration_s: float | None = None
    idle_power_w: float | None = None
    cpu_energy_j: float | None = None  # RAPL package, training phases
    dram_energy_j: float | None = None  # RAPL DRAM, training phases
    valid_accuracy: float | None = None
    test_accuracy: float | None = None
    train_images_per_s: float | None = None
    train_images: int | None = None
    epochs: tuple[EpochRecord, ...] = ()
    phases: tuple[PhaseRecord, ...] = ()
    trace: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)  # SAMPLE_COLUMNS -> values
    carbontracker: Mapping[str, Any] | None = None  # jobs.meters.carbon.CarbonRecord.to_dict() + log_dir
    # A workload's own rows by table name (the layer workload: {"layer_measurement": [...]}); plain values.
    records: Mapping[str, Sequence[Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
    result_path: str | None = None
    format: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready plain data (the result file's content)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["format"] = FORMAT_VERSION
        out["status"] = self.status.value
        out["epochs"] = [dataclasses.asdict(e) for e in self.epochs]
        out["phases"] = [dataclasses.asdict(p) for p in self.phases]
        out["hardware"] = dict(self.hardware)
        out["flags"] = list(self.flags)
        out["trace"] = {k: _json_column(v) for k, v in self.trace.items()}
        out["carbontracker"] = None if self.carbontracker is None else dict(self.carbontracker)
        out["records"] = {k: [dict(r) for r in v] for k, v in self.records.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        """Read a result file's content, of any readable format version; ResultFormatError names
        what is wrong with one that is not."""
        if not isinstance(data, Mapping):
            raise ResultFormatError(f"a run result is a JSON object, not {type(data).__name__}")
        version = data.get("format", 1)
        if version not in READABLE_FORMATS:
            raise ResultFormatError(
                f"run result format {version!r} is not readable by this version of campaign "
                f"(readable: {', '.join(map(str, READABLE_FORMATS))}); upgrade campaign to ingest it"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        missing = sorted(n for n in ("campaign", "trial_key", "attempt", "status", "started_at", "host", "worker_id")
                         if values.get(n) is None)
        if missing:
            raise ResultFormatError(f"run result of trial {data.get('trial_key', '?')} lacks {', '.join(missing)}")
        try:
            values["status"] = RunStatus(values["status"])
            values["attempt"] = int(values["attempt"])
            values["epochs"] = tuple(_record(EpochRecord, e) for e in values.get("epochs") or ())
            values["phases"] = tuple(_record(PhaseRecord, p) for p in values.get("phases") or ())
        except (TypeError, ValueError) as exc:
            raise ResultFormatError(f"run result of trial {data.get('trial_key', '?')}: {exc}") from exc
        values["hardware"] = dict(values.get("hardware") or {})
        values["flags"] = tuple(values.get("flags") or ())
        values["trace"] = dict(values.get("trace") or {})
        values["records"] = {str(k): [dict(r) for r in v] for k, v in dict(values.get("records") or {}).items()}
        values["format"] = FORMAT_VERSION
        return cls(**values)


def _json_column(values: Sequence[Any]) -> list[Any]:
    """A trace column as a list of plain values (a numpy array's ``tolist``)."""
    tolist = getattr(values, "tolist", None)
    return tolist() if callable(tolist) else list(values)


def _record(kind: type[Any], data: Any) -> Any:
    if isinstance(data, kind):
        return data
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in dict(data).items() if k in names})
