"""The whole results schema in one file (SQLAlchemy 2, declarative).

Units are in column names: ``_s`` seconds, ``_j`` joules, ``_w`` watts, ``_mb`` mebibytes,
``_mhz``, ``_c`` degrees Celsius; utilisations are percent (0-100). Times are UTC.
Versioned by Alembic (``db/migrations``); a change here needs a new revision there.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.records import PHASES, RunStatus, TrialState
from db.views import TRACE_QUANTA, TRACE_SLOTS, trace_point_column, view_metadata

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# A trace residual (db.traces): a whole number of quanta; INTEGER affinity on SQLite (stored in one
# to eight bytes, infinities kept as REAL), double precision on PostgreSQL.
Residual = Float().with_variant(BigInteger(), "sqlite")

# The stored strings of the states (db.records defines them; the column comments list them).
TRIAL_STATES: tuple[str, ...] = tuple(s.value for s in TrialState)
# superseded: finished after another attempt had already finished the trial (kept, never a result)
RUN_STATUSES: tuple[str, ...] = tuple(s.value for s in RunStatus)
# The protocol's phases as the phase columns' comments list them.
PHASE_NAMES = " | ".join(PHASES)
# Exactly once: at most one run of a trial is 'done' (its result); the database enforces it with a
# partial unique index, so no race between workers, resumes and late results can store a second.
ONE_DONE_RUN = "uq_run_one_done_per_trial"
ONE_DONE_WHERE = f"status = '{RunStatus.DONE.value}'"


class Base(DeclarativeBase):
    pass


class Campaign(Base):
    """One planned sweep: its resolved configuration and the code that ran it."""

    __tablename__ = "campaign"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="campaign id")
    name: Mapped[str] = mapped_column(String(200), unique=True, comment="campaign name, unique per database")
    sweep: Mapped[str] = mapped_column(String(100), comment="sweep config the campaign was planned from")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), comment="UTC")
    root: Mapped[str] = mapped_column(Text, comment="campaigns root folder at planning time")
    code_revision: Mapped[str] = mapped_column(String(80), comment="git revision of the code (+dirty)")
    config_json: Mapped[str] = mapped_column(Text, comment="fully resolved Hydra config, JSON")


class Architecture(Base):
    """A pruned NAS-Bench-101 cell, keyed by NAS-Bench-101's graph hash."""

    __tablename__ = "architecture"
    arch_hash: Mapped[str] = mapped_column(String(64), primary_key=True, comment="NAS-Bench-101 graph hash")
    matrix_json: Mapped[str] = mapped_column(Text, comment="pruned adjacency matrix, JSON list of lists")
    ops_json: Mapped[str] = mapped_column(Text, comment="pruned op list, JSON")
    num_vertices: Mapped[int] = mapped_column(
        Integer, comment="vertices of the pruned cell (input and output included)"
    )
    num_edges: Mapped[int] = mapped_column(Integer, comment="edges of the pruned cell")


class Trial(Base):
    """One (architecture, epoch budget, GPU type, seed) of a campaign; runs are its attempts."""

    __tablename__ = "trial"
    __table_args__ = (
        UniqueConstraint("campaign_id", "trial_key", name="uq_trial_campaign_key"),
        Index("ix_trial_campaign_state", "campaign_id", "state"),
        # a pull worker's claim: the next pending trial of its GPU type in run order (revision 0006)
        Index("ix_trial_claim", "campaign_id", "gpu_type", "state", "order_index"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="trial id")
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaign.id", ondelete="CASCADE"), comment="campaign of the trial"
    )
    trial_key: Mapped[str] = mapped_column(
        String(64), comment="hash of the fields that change the measurement"
    )
    arch_hash: Mapped[str | None] = mapped_column(
        ForeignKey("architecture.arch_hash"), comment="architecture trained"
    )
    workload: Mapped[str] = mapped_column(
        String(50), default="nasbench101", server_default="nasbench101",
        comment="what the trial runs: nasbench101 (training a cell) | layers (forward passes of layers and models)",
    )
    spec_json: Mapped[str | None] = mapped_column(
        Text, comment="the trial's spec as its workload planned it, JSON; null for trials planned before revision 0007"
    )
    epochs: Mapped[int] = mapped_column(Integer, comment="epoch budget")
    gpu_type: Mapped[str] = mapped_column(
        String(50), comment="GPU type to run on, a name from conf/gpu/ (cpu for none)"
    )
    seed: Mapped[int] = mapped_column(Integer, comment="training seed (0 .. seeds-1)")
    order_index: Mapped[int] = mapped_column(Integer, comment="position in the seeded random run order")
    params: Mapped[int] = mapped_column(BigInteger, comment="trainable parameters of the network")
    flops: Mapped[int] = mapped_column(BigInteger, comment="forward FLOPs per image")
    state: Mapped[str] = mapped_column(String(16), default=TrialState.PENDING.value, comment="|".join(TRIAL_STATES))
    attempts: Mapped[int] = mapped_column(Integer, default=0, comment="runs started so far")
    worker_id: Mapped[str | None] = mapped_column(String(200), comment="worker holding the claim")
    updated_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), comment="UTC time of the last state change"
    )


class Hardware(Base):
    """A node and its measured devices, as the meters described them."""

    __tablename__ = "hardware"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="hardware id")
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True, comment="hash of the description")
    host: Mapped[str] = mapped_column(String(200), comment="node host name")
    cpu_model: Mapped[str | None] = mapped_column(String(200), comment="CPU model name")
    cpu_count: Mapped[int | None] = mapped_column(Integer, comment="logical CPUs visible to the job")
    ram_gb: Mapped[float | None] = mapped_column(Float, comment="host memory, GiB")
    gpu_name: Mapped[str | None] = mapped_column(
        String(200), comment="device name as the meter reports it (simulated: says so)"
    )
    gpu_count: Mapped[int | None] = mapped_column(Integer, comment="GPUs measured (0 without a GPU)")
    details_json: Mapped[str] = mapped_column(
        Text, comment="full description from the meters (UUIDs, driver, ...)"
    )


class Run(Base):
    """One attempt at a trial. Only runs with status 'done' are results, and a trial has at most one
    (a unique index on trial_id where status = 'done'): an attempt that finishes after another one
    finished the trial is kept as 'superseded'."""

    __tablename__ = "run"
    __table_args__ = (
        UniqueConstraint("trial_id", "attempt", name="uq_run_trial_attempt"),
        Index(ONE_DONE_RUN, "trial_id", unique=True,
              sqlite_where=text(ONE_DONE_WHERE), postgresql_where=text(ONE_DONE_WHERE)),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="run id")
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("trial.id", ondelete="CASCADE"), index=True, comment="trial this run attempts"
    )
    attempt: Mapped[int] = mapped_column(Integer, comment="1 for the first run of a trial")
    status: Mapped[str] = mapped_column(String(16), comment="|".join(RUN_STATUSES))
    started_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), comment="UTC time the run was claimed"
    )
    ended_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), comment="UTC time the run finished"
    )
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), comment="UTC time of the worker's last sign of life"
    )
    host: Mapped[str] = mapped_column(String(200), comment="hostname of the machine that ran the attempt")
    pid: Mapped[int | None] = mapped_column(Integer, comment="process id of the worker on that host")
    worker_id: Mapped[str] = mapped_column(String(200), comment="worker that ran it (stable across requeues)")
    scheduler_job: Mapped[str | None] = mapped_column(
        String(100), comment="Slurm job id (array: JOBID_TASK) or Ray task; null when local"
    )
    scheduler_partition: Mapped[str | None] = mapped_column(String(100), comment="Slurm partition / Ray node")
    process: Mapped[str | None] = mapped_column(
        String(200), comment="HOST/BOOT/PIDNS/PID/START of the worker process that claimed the attempt "
                             "(db.process); null before revision 0010")
    power_source: Mapped[str | None] = mapped_column(String(20), comment="nvml | simulated | ...")
    energy_method: Mapped[str | None] = mapped_column(
        String(50),
        comment="how energy_j was obtained: nvml_counter | nvml_power_integration | rapl_counter | simulated | "
        "... (runs stored before these names: counter | integrated)",
    )
    dataset: Mapped[str | None] = mapped_column(String(50), comment="cifar10 | synthetic")
    device: Mapped[str | None] = mapped_column(String(50), comment="torch device the job trained on")
    hardware_id: Mapped[int | None] = mapped_column(
        ForeignKey("hardware.id"), comment="node and devices measured"
    )
    error: Mapped[str | None] = mapped_column(Text, comment="why a failed run failed (exception: message)")
    duration_s: Mapped[float | None] = mapped_column(Float, comment="training + evaluation wall time")
    energy_j: Mapped[float | None] = mapped_column(Float, comment="energy of train + eval phases")
    energy_above_idle_j: Mapped[float | None] = mapped_column(
        Float, comment="energy_j - idle_power_w x duration_s: the dynamic energy of train + eval (J)"
    )
    energy_uncertainty_j: Mapped[float | None] = mapped_column(
        Float, comment="stated uncertainty of energy_j (J), made of what error_basis says"
    )
    error_basis: Mapped[str | None] = mapped_column(
        Text, comment="what the uncertainty is made of (device accuracy, counter resolution, integration bound)"
    )
    counter_energy_j: Mapped[float | None] = mapped_column(
        Float, comment="train + eval energy from the device's energy counter (J); null without one"
    )
    integrated_energy_j: Mapped[float | None] = mapped_column(
        Float, comment="train + eval energy from the sampled power, integrated (J)"
    )
    energy_disagreement: Mapped[float | None] = mapped_column(
        Float, comment="|counter_energy_j - integrated_energy_j| / counter_energy_j, a fraction; null unless both"
    )
    flags: Mapped[str | None] = mapped_column(
        Text, comment="what is wrong with the measurement, comma-separated (e.g. short_window:idle); null when none"
    )
    start_temperature_c: Mapped[float | None] = mapped_column(
        Float, comment="GPU temperature when the trial started, degrees Celsius"
    )
    idle_power_w: Mapped[float | None] = mapped_column(Float, comment="mean power in the idle baseline")
    cpu_energy_j: Mapped[float | None] = mapped_column(
        Float, comment="RAPL package energy over train + eval (J); null where RAPL is not readable"
    )
    dram_energy_j: Mapped[float | None] = mapped_column(
        Float, comment="RAPL DRAM energy over train + eval (J); null where RAPL is not readable"
    )
    valid_accuracy: Mapped[float | None] = mapped_column(Float, comment="after the last epoch, 0-1")
    test_accuracy: Mapped[float | None] = mapped_column(Float, comment="after the last epoch, 0-1")
    train_images_per_s: Mapped[float | None] = mapped_column(
        Float, comment="training throughput, images per second"
    )
    train_images: Mapped[int | None] = mapped_column(
        Integer, comment="training images per epoch (40000 for CIFAR-10)"
    )
    trace_anchor_unix_s: Mapped[float | None] = mapped_column(
        Float, comment="wall-clock time at trace t_s == 0"
    )
    result_path: Mapped[str | None] = mapped_column(Text, comment="result file in the campaign folder")


class Epoch(Base):
    """Per-epoch figures of a run (epoch is 1-based)."""

    __tablename__ = "epoch"
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_epoch_run_epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="epoch row id")
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), comment="run of this epoch")
    epoch: Mapped[int] = mapped_column(Integer, comment="1-based epoch number")
    duration_s: Mapped[float] = mapped_column(Float, comment="train + validation of this epoch")
    energy_j: Mapped[float] = mapped_column(Float, comment="energy of this epoch's train + eval samples")
    mean_power_w: Mapped[float | None] = mapped_column(Float, comment="mean power over this epoch's samples")
    energy_above_idle_j: Mapped[float | None] = mapped_column(
        Float, comment="energy_j - the run's idle_power_w x duration_s (J)"
    )
    uncertainty_j: Mapped[float | None] = mapped_column(
        Float, comment="stated uncertainty of energy_j (J; basis: run.error_basis)"
    )
    train_loss: Mapped[float] = mapped_column(Float, comment="mean training cross-entropy loss of the epoch")
    train_accuracy: Mapped[float] = mapped_column(Float, comment="0-1")
    valid_accuracy: Mapped[float] = mapped_column(Float, comment="0-1")


class RunPhase(Base):
    """Pre-aggregated energy per phase of a run, written at ingestion."""

    __tablename__ = "run_phase"
    __table_args__ = (UniqueConstraint("run_id", "phase", name="uq_run_phase"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="phase row id")
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), comment="run of this phase")
    phase: Mapped[str] = mapped_column(String(16), comment=PHASE_NAMES)
    duration_s: Mapped[float] = mapped_column(Float, comment="time spent in the phase")
    energy_j: Mapped[float] = mapped_column(Float, comment="energy of the phase, all devices of the job")
    mean_power_w: Mapped[float | None] = mapped_column(Float, comment="mean power over the phase's samples")
    samples: Mapped[int] = mapped_column(Integer, comment="trace samples in the phase")
    energy_above_idle_j: Mapped[float | None] = mapped_column(
        Float, comment="energy_j - the run's idle_power_w x duration_s (J)"
    )
    uncertainty_j: Mapped[float | None] = mapped_column(Float, comment="stated uncertainty of energy_j (J)")
    method: Mapped[str | None] = mapped_column(
        String(50), comment="how energy_j was obtained (as run.energy_method)"
    )
    valid: Mapped[bool | None] = mapped_column(
        Boolean, comment="the window meets the validity rule (enough samples at a high enough rate); "
        "false: flagged, never silently averaged"
    )


class TraceSeries(Base):
    """Consecutive trace samples of one run and device with one phase and epoch (at most
    ``db.views.TRACE_SERIES_MAX``): their keys once, and per measured column the base (and, for
    time and the energy counter, the step per sample) that its points' residuals are added to.
    The series' samples have the ids ``first_id .. first_id + n - 1`` (``first_id`` even: a series
    starts a ``trace_point`` row); deleting a series deletes their rows (a trigger). Written by ``db.ingest`` (``db.traces``), read through the
    ``trace_sample`` view."""

    __tablename__ = "trace_series"
    __table_args__ = (Index("ix_trace_series_run", "run_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, comment="series id, in write order")
    run_id: Mapped[int] = mapped_column(
        ForeignKey("run.id", ondelete="CASCADE"), comment="run the samples belong to"
    )
    source: Mapped[str] = mapped_column(String(20), comment="nvml | simulated | ... (as the run)")
    device: Mapped[int] = mapped_column(Integer, comment="device index within the job")
    phase: Mapped[str] = mapped_column(String(16), comment=PHASE_NAMES)
    epoch: Mapped[int | None] = mapped_column(Integer, comment="1-based training epoch, NULL outside an epoch")
    n: Mapped[int] = mapped_column(Integer, comment="samples in the series")
    first_id: Mapped[int] = mapped_column(
        BigInteger, comment="sample id of the series' first sample (even: it starts a trace_point row)")
    t_s_base: Mapped[float] = mapped_column(Float, comment="t_s base, 0.1 ms")
    t_s_step: Mapped[float] = mapped_column(Float, comment="t_s step per sample, 0.1 ms")
    power_w_base: Mapped[float | None] = mapped_column(Float, comment="power_w base, mW")
    energy_j_base: Mapped[float | None] = mapped_column(Float, comment="energy_j base, mJ")
    energy_j_step: Mapped[float | None] = mapped_column(Float, comment="energy_j step per sample, mJ")
    gpu_util_base: Mapped[float | None] = mapped_column(Float, comment="gpu_util base, 0.1 %")
    mem_util_base: Mapped[float | None] = mapped_column(Float, comment="mem_util base, 0.1 %")
    mem_used_mb_base: Mapped[float | None] = mapped_column(Float, comment="mem_used_mb base, KiB")
    temperature_c_base: Mapped[float | None] = mapped_column(Float, comment="temperature_c base, 0.1 degree C")
    sm_clock_mhz_base: Mapped[float | None] = mapped_column(Float, comment="sm_clock_mhz base, MHz")
    mem_clock_mhz_base: Mapped[float | None] = mapped_column(Float, comment="mem_clock_mhz base, MHz")
    power_limit_w_base: Mapped[float | None] = mapped_column(Float, comment="power_limit_w base, mW")
    cpu_util_base: Mapped[float | None] = mapped_column(Float, comment="cpu_util base, 0.1 %")
    rss_mb_base: Mapped[float | None] = mapped_column(Float, comment="rss_mb base, KiB")


_UNITS = {"t_s": "0.1 ms", "power_w": "mW", "energy_j": "mJ", "gpu_util": "0.1 %", "mem_util": "0.1 %",
          "mem_used_mb": "KiB", "temperature_c": "0.1 degree C", "sm_clock_mhz": "MHz", "mem_clock_mhz": "MHz",
          "power_limit_w": "mW", "cpu_util": "0.1 %", "rss_mb": "KiB"}


class TracePoint(Base):
    """Two consecutive trace samples (``db.views.TRACE_SLOTS``): samples ``2 x id`` (slot 0) and
    ``2 x id + 1`` (slot 1), each measured value a residual in whole quanta of its column (0.1 ms,
    1 mW, 1 mJ, 0.1 %, 1 KiB, 0.1 degree C, 1 MHz; ``db.views.TRACE_QUANTA``) from its series' base
    (and step x position): small numbers, which SQLite stores in one to three bytes (a residual of
    0 in none). NULL where the sample has no value; a slot whose time is NULL holds no sample. No
    key to its series: the series whose samples ``first_id .. first_id + n - 1`` include it holds it."""

    __table__ = Table(
        "trace_point", Base.metadata,
        Column("id", BigId, primary_key=True, autoincrement=False,
               comment="row id; its samples are 2 x id and 2 x id + 1"),
        *(Column(trace_point_column(name, slot), Residual, nullable=True,
                 comment=f"{name} of sample 2 x id + {slot}: residual, {_UNITS[name]}")
          for slot in range(TRACE_SLOTS) for name, _, _ in TRACE_QUANTA),
    )


class ViewBase(DeclarativeBase):
    """Classes mapped onto views (their tables live in ``db.views.view_metadata``, never created by
    Alembic as tables)."""

    metadata = view_metadata


class TraceSample(ViewBase):
    """One meter reading: a view over ``trace_series`` and ``trace_point`` (revision 0009) with the
    columns the table had before, in plain SQL that every client runs. Values are stored to their
    quantum (``db.views.TRACE_QUANTA``: 0.1 ms, 1 mW, 1 mJ, 0.1 %, 1 KiB, 0.1 degree C, 1 MHz):
    a reading that is a whole number of quanta (NVML's are) reads back exactly, any other is
    rounded to the nearest quantum. Written through ``db.ingest``; a filter on run_id, device,
    phase or epoch reads only the series it selects."""

    __tablename__ = "trace_sample"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True,
                                    comment="sample id (trace_point.id), in write order")
    run_id: Mapped[int] = mapped_column(Integer, comment="run the sample belongs to (run.id)")
    source: Mapped[str] = mapped_column(String(20), comment="nvml | simulated | ... (as the run)")
    device: Mapped[int] = mapped_column(Integer, comment="device index within the job")
    t_s: Mapped[float] = mapped_column(Float, comment="monotonic seconds since the meter's wall-clock anchor")
    phase: Mapped[str] = mapped_column(String(16), comment=PHASE_NAMES)
    epoch: Mapped[int | None] = mapped_column(
        Integer, comment="1-based training epoch, NULL outside an epoch"
    )
    power_w: Mapped[float] = mapped_column(Float, comment="power draw of the device")
    energy_j: Mapped[float | None] = mapped_column(Float, comment="device energy counter since meter start")
    gpu_util: Mapped[float | None] = mapped_column(
        Float, comment="GPU utilization, percent 0-100 (simulated: the process CPU load)"
    )
    mem_util: Mapped[float | None] = mapped_column(
        Float, comment="GPU memory bandwidth utilization, percent 0-100"
    )
    mem_used_mb: Mapped[float | None] = mapped_column(Float, comment="GPU memory in use, MiB")
    temperature_c: Mapped[float | None] = mapped_column(Float, comment="GPU temperature, degrees Celsius")
    sm_clock_mhz: Mapped[float | None] = mapped_column(Float, comment="streaming multiprocessor clock")
    mem_clock_mhz: Mapped[float | None] = mapped_column(Float, comment="memory clock")
    power_limit_w: Mapped[float | None] = mapped_column(Float, comment="enforced power limit of the device")
    cpu_util: Mapped[float | None] = mapped_column(
        Float, comment="host CPU utilization, percent 0-100 (all logical CPUs)"
    )
    rss_mb: Mapped[float | None] = mapped_column(
        Float, comment="resident memory of the training process, MiB"
    )


class CarbontrackerRun(Base):
    """What Carbontracker measured alongside a run (it runs beside the project's own meters).

    Carbontracker multiplies energy by a PUE; ``energy_kwh_reported`` is its figure and
    ``energy_j_raw`` the same divided by ``pue``, comparable with the run's own energy."""

    __tablename__ = "carbontracker_run"
    run_id: Mapped[int] = mapped_column(
        ForeignKey("run.id", ondelete="CASCADE"), primary_key=True, comment="the run it measured"
    )
    status: Mapped[str] = mapped_column(String(20), comment="ok | no_components | failed | not_started")
    components: Mapped[str] = mapped_column(
        String(100), comment="components measured, comma-separated (gpu, cpu)"
    )
    missing_components: Mapped[str] = mapped_column(String(100), comment="requested but not present here")
    epochs: Mapped[int] = mapped_column(Integer, comment="epochs Carbontracker logged")
    duration_s: Mapped[float | None] = mapped_column(Float, comment="sum of logged epoch durations")
    pue: Mapped[float | None] = mapped_column(Float, comment="PUE factor Carbontracker applied")
    energy_kwh_reported: Mapped[float | None] = mapped_column(
        Float, comment="actual energy as reported (PUE included)"
    )
    energy_j_raw: Mapped[float | None] = mapped_column(Float, comment="actual energy without PUE (J)")
    co2eq_g: Mapped[float | None] = mapped_column(Float, comment="actual CO2eq as reported (g)")
    predicted_energy_kwh_reported: Mapped[float | None] = mapped_column(
        Float, comment="Carbontracker's prediction for the whole budget (PUE included)"
    )
    predicted_co2eq_g: Mapped[float | None] = mapped_column(
        Float, comment="predicted CO2eq for the whole budget (g)"
    )
    intensity_g_per_kwh: Mapped[float | None] = mapped_column(
        Float, comment="carbon intensity used (gCO2eq/kWh)"
    )
    intensity_source: Mapped[str | None] = mapped_column(Text, comment="where the intensity came from")
    log_dir: Mapped[str | None] = mapped_column(
        Text, comment="folder of its log files in the campaign folder"
    )
    messages: Mapped[str | None] = mapped_column(Text, comment="notes and errors, one per line")


class CarbontrackerEpoch(Base):
    """Carbontracker's per-epoch log: average power per component and duration; energies raw (no PUE)."""

    __tablename__ = "carbontracker_epoch"
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_carbontracker_epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="row id")
    run_id: Mapped[int] = mapped_column(
        ForeignKey("run.id", ondelete="CASCADE"), comment="the run it measured"
    )
    epoch: Mapped[int] = mapped_column(Integer, comment="1-based")
    duration_s: Mapped[float | None] = mapped_column(
        Float, comment="epoch duration as logged (10 ms resolution)"
    )
    gpu_power_w: Mapped[float | None] = mapped_column(
        Float, comment="average GPU power over the epoch, all its GPUs"
    )
    cpu_power_w: Mapped[float | None] = mapped_column(Float, comment="average CPU power (RAPL or TDP table)")
    dram_power_w: Mapped[float | None] = mapped_column(Float, comment="average DRAM power (RAPL)")
    gpu_energy_j: Mapped[float | None] = mapped_column(
        Float, comment="GPU energy of the epoch, raw, without PUE"
    )
    cpu_energy_j: Mapped[float | None] = mapped_column(
        Float, comment="CPU energy of the epoch, raw, without PUE"
    )
    dram_energy_j: Mapped[float | None] = mapped_column(
        Float, comment="DRAM energy of the epoch, raw, without PUE"
    )


class LayerMeasurement(Base):
    """One measured window of a layer-workload run (``jobs/workloads/layers.py``): a whole model, one
    of its layers alone, or a layer spec, at the run's batch and input size; written and read by
    ``db/layers.py``."""

    __tablename__ = "layer_measurement"
    __table_args__ = (UniqueConstraint("run_id", "position", name="uq_layer_measurement_run_position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="row id")
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True,
                                        comment="run the window belongs to")
    position: Mapped[int] = mapped_column(Integer, comment="1-based window in the run; the trace's epoch column")
    scope: Mapped[str] = mapped_column(String(16), comment="model (a whole forward pass) | layer (one layer alone)")
    model_name: Mapped[str | None] = mapped_column(
        String(200), comment="torchvision name or cell:<hash>; null for a layer spec measured on its own")
    layer_name: Mapped[str | None] = mapped_column(String(300), comment="module path in the model; null otherwise")
    layer_type: Mapped[str] = mapped_column(String(50), comment="conv2d | linear | maxpool2d | ... | model")
    calls: Mapped[int] = mapped_column(Integer, comment="calls of this layer with this input in one model pass")
    batch_size: Mapped[int] = mapped_column(Integer, comment="inputs per pass")
    input_size: Mapped[int | None] = mapped_column(
        Integer, comment="the model's (or spec's) square input size in pixels; null for a linear spec")
    backward: Mapped[bool] = mapped_column(Boolean, comment="forward and backward passes (else forward only)")
    in_channels: Mapped[int | None] = mapped_column(Integer, comment="channels (or features) of the layer's input")
    in_h: Mapped[int | None] = mapped_column(Integer, comment="input height, pixels")
    in_w: Mapped[int | None] = mapped_column(Integer, comment="input width, pixels")
    out_channels: Mapped[int | None] = mapped_column(Integer, comment="channels (or features) of the output")
    out_h: Mapped[int | None] = mapped_column(Integer, comment="output height, pixels")
    out_w: Mapped[int | None] = mapped_column(Integer, comment="output width, pixels")
    kernel_size: Mapped[int | None] = mapped_column(Integer, comment="kernel (or pooling) size")
    stride: Mapped[int | None] = mapped_column(Integer, comment="stride")
    padding: Mapped[int | None] = mapped_column(Integer, comment="padding, pixels per side")
    groups: Mapped[int | None] = mapped_column(Integer, comment="convolution groups")
    in_features: Mapped[int | None] = mapped_column(Integer, comment="linear: input features")
    out_features: Mapped[int | None] = mapped_column(Integer, comment="linear: output features")
    flops: Mapped[int] = mapped_column(BigInteger, comment="FLOPs of one forward pass over the batch (2 per MAC)")
    params: Mapped[int] = mapped_column(BigInteger, comment="trainable parameters")
    passes: Mapped[int] = mapped_column(Integer, comment="passes run in the window")
    wall_time_s: Mapped[float] = mapped_column(Float, comment="wall time of the passes (device synchronised)")
    time_per_pass_s: Mapped[float] = mapped_column(Float, comment="wall_time_s / passes")
    window_s: Mapped[float | None] = mapped_column(Float, comment="the window's duration on the trace's clock")
    energy_j: Mapped[float | None] = mapped_column(Float, comment="energy of the window (J), by energy_method")
    energy_per_pass_j: Mapped[float | None] = mapped_column(Float, comment="energy_j / passes")
    energy_above_idle_per_pass_j: Mapped[float | None] = mapped_column(
        Float, comment="(energy_j - the run's idle power x window_s) / passes")
    uncertainty_per_pass_j: Mapped[float | None] = mapped_column(
        Float, comment="stated uncertainty of energy_per_pass_j (basis: run.error_basis)")
    mean_power_w: Mapped[float | None] = mapped_column(Float, comment="energy_j / window_s")
    energy_method: Mapped[str | None] = mapped_column(String(50), comment="how energy_j was obtained")
    samples: Mapped[int] = mapped_column(Integer, comment="trace samples in the window (the clock's device)")
    valid: Mapped[bool] = mapped_column(Boolean, comment="the window meets the validity rule")
    memory_mb: Mapped[float | None] = mapped_column(Float, comment="memory of one pass, MiB (see memory_method)")
    memory_method: Mapped[str | None] = mapped_column(
        String(30), comment="cuda_max_allocated (measured) | tensor_bytes (parameters + input + output, counted)")
    spec_json: Mapped[str | None] = mapped_column(Text, comment="the layer or model spec, JSON")


class Submission(Base):
    """One submission of worker tasks for one GPU type of a campaign."""

    __tablename__ = "submission"
    __table_args__ = (UniqueConstraint("campaign_id", "gpu_type", "seq", name="uq_submission_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, comment="submission id")
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"), index=True, comment="campaign.id")
    gpu_type: Mapped[str] = mapped_column(String(50), comment="GPU type the workers run on")
    seq: Mapped[int] = mapped_column(Integer, comment="1, 2, ... per campaign and GPU type (unique)")
    launcher: Mapped[str] = mapped_column(String(20), comment="local | slurm | ray")
    submitted_by: Mapped[str] = mapped_column(String(20), comment="launch | resume | worker | follow")
    job_ids: Mapped[str] = mapped_column(
        Text, comment="JSON list of the scheduler's ids: Slurm array job ids, Ray task ids (ray:HEX), local ids")
    array_sizes: Mapped[str] = mapped_column(Text, comment="JSON list: tasks per Slurm array (one entry per job id)")
    workers: Mapped[int] = mapped_column(Integer, comment="worker tasks submitted (0 while being submitted)")
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), comment="UTC")


class CampaignBudget(Base):
    """A campaign's budget: its limits and, once it stopped the campaign, when and why."""

    __tablename__ = "campaign_budget"
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True, comment="campaign the budget limits"
    )
    max_kwh: Mapped[float | None] = mapped_column(Float, comment="energy limit, kWh (all phases of all runs)")
    max_gpu_hours: Mapped[float | None] = mapped_column(Float, comment="GPU-hours limit (all phases of all runs)")
    max_co2_kg: Mapped[float | None] = mapped_column(Float, comment="CO2eq limit, kg")
    carbon_intensity_g_per_kwh: Mapped[float] = mapped_column(Float, comment="grid intensity the CO2eq uses, g/kWh")
    pue: Mapped[float] = mapped_column(Float, comment="power usage effectiveness the CO2eq uses")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), comment="UTC time the limits were set")
    stopped_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), comment="UTC time the budget stopped the campaign (null: not stopped)"
    )
    stopped_reason: Mapped[str | None] = mapped_column(Text, comment="the limit and the figures that stopped it")


class EstimateGroup(Base):
    """The estimate made before a launch or resume, per GPU type x epoch budget, per trial."""

    __tablename__ = "estimate_group"
    __table_args__ = (Index("ix_estimate_group_campaign", "campaign_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, comment="row id")
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaign.id", ondelete="CASCADE"), comment="campaign estimated"
    )
    made_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), comment="UTC time of the estimate")
    purpose: Mapped[str] = mapped_column(String(16), comment="launch | resume")
    gpu_type: Mapped[str] = mapped_column(String(50), comment="GPU type")
    epochs: Mapped[int] = mapped_column(Integer, comment="epoch budget")
    trials: Mapped[int] = mapped_column(Integer, comment="trials the estimate covered")
    source: Mapped[str] = mapped_column(String(100), comment="measured | measured (per-epoch) | surrogate | "
                                                             "rough bound (TDP) | mixed: ...")
    energy_kwh_low: Mapped[float] = mapped_column(Float, comment="per trial, all phases but the warm-up, kWh")
    energy_kwh_high: Mapped[float] = mapped_column(Float, comment="per trial, all phases but the warm-up, kWh")
    gpu_hours_low: Mapped[float] = mapped_column(Float, comment="per trial, hours")
    gpu_hours_high: Mapped[float] = mapped_column(Float, comment="per trial, hours")
