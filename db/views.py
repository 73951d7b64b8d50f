"""The analysis views ``run_summary`` and ``trial_summary``: their SQL, per dialect, and their columns.

The SQL is portable (window functions, ``sqrt`` and ``floor``: SQLite >= 3.35 with its math
functions, as Python's is; PostgreSQL >= 12) except where the campaign's JSON config is read.
Each view's columns are also declared here as a SQLAlchemy ``Table`` (in its own ``MetaData``,
so Alembic never takes a view for a table): the documentation is generated from them, readers
``select()`` from them with typed results, and a test checks them against the database.

Versioning: a migration creates a fixed version of a view (``0002`` creates version 1, ``0005``
version 2). To change a view, add ``run_summary_v3`` here, point ``CURRENT`` at it and write a
migration that drops the old version and creates the new one; never change what a version a
migration uses produces (each version passes its own frozen phases and aggregates). A
migration that rebuilds a table a view reads (SQLite's batch mode copies tables) must drop the
views first (``drop_views_sql``) and create them again afterwards.

``trace_sample`` (revision 0009) is a view too, over ``trace_series`` and ``trace_point``
(``trace_sample_sql``, ``trace_view_sql``), in plain SQL that any client runs; a migration that
rebuilds either table drops it first (``drop_trace_view_sql``) and creates it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, MetaData, String, Table

# PHASES: the meters' phases, whose energy and duration are columns of run_summary.
from db.records import PHASES

VIEW_NAMES = ("run_summary", "trial_summary")  # trial_summary reads run_summary: drop it first
# The phases each version of run_summary was created with, frozen: a migration uses that version, so
# a phase added to db.records.Phase needs a new version (a test keeps the current one equal to it).
PHASES_V1 = ("warmup", "idle", "train", "eval", "cooldown")
PHASES_V2 = ("warmup", "setup", "idle", "train", "eval", "cooldown")
MEASURED_SOURCES = ("nvml", "rapl")  # power sources that read a hardware meter of the run's device

view_metadata = MetaData()


def _col(name: str, type_: Any, comment: str, unit: str | None = None) -> Column[Any]:
    return Column(name, type_, comment=comment, info={"unit": unit} if unit else {})


run_summary = Table(
    "run_summary",
    view_metadata,
    _col("campaign", String, "campaign name"),
    _col("campaign_id", Integer, "campaign.id"),
    _col("run_id", Integer, "run.id (one row per run with status 'done')"),
    _col("trial_id", Integer, "trial.id"),
    _col("trial_key", String, "hash of the fields that change the measurement"),
    _col("attempt", Integer, "1 for the first run of a trial"),
    _col("workload", String, "what the trial measures: nasbench101 (a cell trained for epochs) | layers (a layer "
         "or model's inference windows; arch_hash, num_vertices and num_edges NULL unless it is a cell)"),
    _col("spec_json", String, "the workload's own spec of the trial, JSON (a layer or model: type, sizes, batch); "
         "NULL for a NAS-Bench-101 cell"),
    _col("arch_hash", String, "NAS-Bench-101 graph hash of the architecture"),
    _col("num_vertices", Integer, "vertices of the pruned cell"),
    _col("num_edges", Integer, "edges of the pruned cell"),
    _col("params", BigInteger, "trainable parameters of the network", "count"),
    _col("flops", BigInteger, "forward FLOPs per image", "FLOP"),
    _col("epochs", Integer, "epoch budget of the trial", "epochs"),
    _col("gpu_type", String, "GPU type the trial was planned for (conf/gpu/)"),
    _col("seed", Integer, "training seed"),
    _col("host", String, "node the run ran on"),
    _col("gpu_name", String, "device name as the meter reported it (hardware.gpu_name)"),
    _col("device", String, "torch device the job trained on"),
    _col("dataset", String, "cifar10 | synthetic"),
    _col("power_source", String, "meter that produced the power readings: nvml | rapl | simulated | unknown"),
    _col("power_kind", String,
         "measured (a hardware meter: nvml, rapl) | simulated (not a measurement) | unknown; "
         "never pool measured and simulated runs"),
    _col("energy_method", String,
         "how energy_j was obtained: nvml_counter | nvml_power_integration | rapl_counter | simulated | ... "
         "(runs stored before these names: counter | integrated)"),
    _col("started_at", DateTime(timezone=True), "UTC"),
    _col("ended_at", DateTime(timezone=True), "UTC"),
    _col("duration_s", Float, "training + evaluation wall time", "s"),
    _col("energy_j", Float, "energy of the train + eval phases", "J"),
    _col("energy_kwh", Float, "energy_j in kilowatt-hours", "kWh"),
    _col("mean_power_w", Float, "energy_j / duration_s", "W"),
    _col("idle_power_w", Float, "mean power in the idle baseline before training", "W"),
    _col("energy_above_idle_j", Float,
         "energy_j - idle_power_w x duration_s, the dynamic energy of train + eval, with the idle power of the "
         "run's own idle window: as the worker stored it, else (runs stored before it did) computed here from "
         "energy_j, idle_power_w and duration_s", "J"),
    _col("energy_above_idle_kwh", Float, "energy_above_idle_j in kilowatt-hours", "kWh"),
    _col("energy_uncertainty_j", Float, "stated uncertainty of energy_j (NULL for runs stored before it was)", "J"),
    _col("error_basis", String, "what the uncertainty is made of (device accuracy, counter resolution, "
         "integration bound)"),
    _col("counter_energy_j", Float, "train + eval energy from the device's energy counter (NULL without one)", "J"),
    _col("integrated_energy_j", Float, "train + eval energy from the sampled power, integrated", "J"),
    _col("energy_disagreement", Float, "|counter_energy_j - integrated_energy_j| / counter_energy_j (NULL unless both)",
         "fraction"),
    _col("flags", String, "what is wrong with the measurement, comma-separated (e.g. short_window:idle); "
         "NULL when nothing is"),
    _col("start_temperature_c", Float, "GPU temperature when the trial started", "°C"),
    *(_col(f"{p}_energy_j", Float, f"energy of the {p} phase (NULL when the run has none)", "J") for p in PHASES),
    *(_col(f"{p}_duration_s", Float, f"duration of the {p} phase", "s") for p in PHASES),
    *(_col(f"{p}_energy_above_idle_j", Float,
           f"energy of the {p} phase above the run's idle power (stored, else computed as {p}_energy_j - "
           f"idle_power_w x {p}_duration_s)", "J") for p in PHASES),
    _col("train_images", Integer,
         "training images per epoch: the run's own count, else the campaign config's dataset.n_train",
         "images"),
    _col("energy_per_image_j", Float, "energy_j / (epochs x train_images): train + eval energy per training image",
         "J/image"),
    _col("energy_above_idle_per_image_j", Float, "energy_above_idle_j / (epochs x train_images)", "J/image"),
    _col("train_energy_per_image_j", Float, "train_energy_j / (epochs x train_images)", "J/image"),
    _col("train_images_per_s", Float, "training throughput", "images/s"),
    _col("valid_accuracy", Float, "validation accuracy after the last epoch", "0-1"),
    _col("test_accuracy", Float, "test accuracy after the last epoch", "0-1"),
)

# trial_summary: one row per (campaign, workload, architecture, epoch budget, GPU type, power
# source); frozen per version (version 3 adds the workload)
_TRIAL_KEYS_V1 = ("campaign", "campaign_id", "arch_hash", "num_vertices", "num_edges", "params", "flops", "epochs",
                  "gpu_type", "power_source", "power_kind")
_TRIAL_KEYS_V3 = ("campaign", "campaign_id", "workload", "spec_json", *_TRIAL_KEYS_V1[2:])
_TRIAL_KEYS = _TRIAL_KEYS_V3
# (run_summary column, unit) aggregated as mean and sample standard deviation over seeds; frozen
# per version of trial_summary
_MEAN_SD_V1 = (("energy_j", "J"), ("energy_per_image_j", "J/image"), ("duration_s", "s"),
               ("valid_accuracy", "0-1"), ("test_accuracy", "0-1"))
_MEAN_SD_V2 = (*_MEAN_SD_V1, ("energy_above_idle_j", "J"), ("energy_above_idle_per_image_j", "J/image"))
# (run_summary column, trial_summary column, unit) aggregated as a mean only
_MEAN_ONLY_V1 = (("energy_kwh", "mean_energy_kwh", "kWh"), ("train_energy_j", "mean_train_energy_j", "J"),
                 ("eval_energy_j", "mean_eval_energy_j", "J"), ("mean_power_w", "mean_power_w", "W"),
                 ("train_images_per_s", "mean_train_images_per_s", "images/s"))
_MEAN_ONLY_V2 = (*_MEAN_ONLY_V1, ("energy_uncertainty_j", "mean_energy_uncertainty_j", "J"))
# the current version's
_MEAN_SD, _MEAN_ONLY = _MEAN_SD_V2, _MEAN_ONLY_V2

trial_summary = Table(
    "trial_summary",
    view_metadata,
    *(_col(c.name, c.type, c.comment or "", c.info.get("unit")) for c in run_summary.columns if c.name in _TRIAL_KEYS),
    _col("runs", Integer, "finished runs aggregated in this row", "count"),
    _col("seeds", Integer, "distinct seeds among them", "count"),
    *(col for name, unit in _MEAN_SD for col in (
        _col(f"mean_{name}", Float, f"mean of run_summary.{name} over the runs", unit),
        _col(f"sd_{name}", Float, f"sample standard deviation of run_summary.{name} (NULL for one run)", unit),
    )),
    _col("median_energy_j", Float, "median of run_summary.energy_j", "J"),
    _col("min_energy_j", Float, "smallest run_summary.energy_j", "J"),
    _col("max_energy_j", Float, "largest run_summary.energy_j", "J"),
    _col("median_energy_per_image_j", Float, "median of run_summary.energy_per_image_j", "J/image"),
    *(_col(out, Float, f"mean of run_summary.{name} over the runs", unit) for name, out, unit in _MEAN_ONLY),
)

VIEW_TABLES = {"run_summary": run_summary, "trial_summary": trial_summary}


def _n_train_from_config(dialect: str) -> str:
    """SQL for the campaign config's ``dataset.n_train`` (c is the campaign table)."""
    if dialect == "postgresql":
        return "CAST(CAST(c.config_json AS json) -> 'dataset' ->> 'n_train' AS integer)"
    if dialect == "sqlite":
        return "CAST(json_extract(c.config_json, '$.dataset.n_train') AS INTEGER)"
    raise ValueError(f"no view SQL for the {dialect!r} dialect (supported: sqlite, postgresql)")


def _run_summary(dialect: str, phases: tuple[str, ...], v2: bool, v3: bool = False) -> str:
    """``SELECT`` of run_summary over ``phases``; ``v2`` adds version 2's columns (energy above
    idle, uncertainty, method checks, flags) to version 1's, which it leaves as they were; ``v3``
    the workload, and the runs of trials that train no cell (their architecture columns NULL)."""
    measured = ", ".join(f"'{s}'" for s in MEASURED_SOURCES)
    n_images = f"COALESCE(r.train_images, {_n_train_from_config(dialect)})"
    aggregated = [("energy_j", "energy_j"), ("duration_s", "duration_s")]
    selected = [f"p.{p}_{what}" for what in ("energy_j", "duration_s") for p in phases]
    above_idle = after_idle = per_image = ""
    if v2:
        # a phase's energy above idle: stored by the worker, else from the run's idle power
        aggregated.append(("energy_above_idle_j", "stored_above_idle_j"))
        selected += [f"COALESCE(p.{p}_stored_above_idle_j, p.{p}_energy_j - r.idle_power_w * p.{p}_duration_s) "
                     f"AS {p}_energy_above_idle_j" for p in phases]
        above_idle = "COALESCE(r.energy_above_idle_j, r.energy_j - r.idle_power_w * r.duration_s)"
        after_idle = f"""
  {above_idle} AS energy_above_idle_j,
  {above_idle} / 3600000.0 AS energy_above_idle_kwh,
  r.energy_uncertainty_j,
  r.error_basis,
  r.counter_energy_j,
  r.integrated_energy_j,
  r.energy_disagreement,
  NULLIF(r.flags, '') AS flags,
  r.start_temperature_c,"""
        per_image = f"\n  {above_idle} / NULLIF(t.epochs * {n_images}, 0) AS energy_above_idle_per_image_j,"
    phase_cols = ",\n    ".join(
        f"SUM(CASE WHEN phase = '{p}' THEN {column} END) AS {p}_{alias}"
        for column, alias in aggregated for p in phases
    )
    phase_select = ",\n  ".join(selected)
    workload = "\n  t.workload,\n  t.spec_json," if v3 else ""
    return f"""SELECT
  c.name AS campaign,
  c.id AS campaign_id,
  r.id AS run_id,
  t.id AS trial_id,
  t.trial_key,
  r.attempt,{workload}
  t.arch_hash,
  a.num_vertices,
  a.num_edges,
  t.params,
  t.flops,
  t.epochs,
  t.gpu_type,
  t.seed,
  r.host,
  h.gpu_name,
  r.device,
  r.dataset,
  COALESCE(r.power_source, 'unknown') AS power_source,
  CASE WHEN r.power_source IN ({measured}) THEN 'measured'
       WHEN r.power_source IS NULL THEN 'unknown'
       ELSE 'simulated' END AS power_kind,
  r.energy_method,
  r.started_at,
  r.ended_at,
  r.duration_s,
  r.energy_j,
  r.energy_j / 3600000.0 AS energy_kwh,
  CASE WHEN r.duration_s > 0 THEN r.energy_j / r.duration_s END AS mean_power_w,
  r.idle_power_w,{after_idle}
  {phase_select},
  {n_images} AS train_images,
  r.energy_j / NULLIF(t.epochs * {n_images}, 0) AS energy_per_image_j,{per_image}
  p.train_energy_j / NULLIF(t.epochs * {n_images}, 0) AS train_energy_per_image_j,
  r.train_images_per_s,
  r.valid_accuracy,
  r.test_accuracy
FROM run r
JOIN trial t ON t.id = r.trial_id
JOIN campaign c ON c.id = t.campaign_id
{"LEFT JOIN" if v3 else "JOIN"} architecture a ON a.arch_hash = t.arch_hash
LEFT JOIN hardware h ON h.id = r.hardware_id
LEFT JOIN (
  SELECT run_id,
    {phase_cols}
  FROM run_phase
  GROUP BY run_id
) p ON p.run_id = r.id
WHERE r.status = 'done'"""


def run_summary_v1(dialect: str) -> str:
    """``SELECT`` of run_summary, version 1: one row per run with status 'done'."""
    return _run_summary(dialect, PHASES_V1, v2=False)


def run_summary_v2(dialect: str) -> str:
    """``SELECT`` of run_summary, version 2: version 1 with the setup phase, the energy above idle
    (run, per image, per phase), the uncertainty and its basis, counter and integrated energies,
    their disagreement, the flags and the start temperature. One row per run with status 'done',
    and so (the unique index on run) one per finished trial."""
    return _run_summary(dialect, PHASES_V2, v2=True)


def run_summary_v3(dialect: str) -> str:
    """``SELECT`` of run_summary, version 3: version 2 with the trial's workload, and the done runs
    of every workload (a layer campaign's too; a trial that trains no cell has NULL architecture
    columns)."""
    return _run_summary(dialect, PHASES_V2, v2=True, v3=True)


def _trial_summary(dialect: str, mean_sd: tuple[tuple[str, str], ...],
                   mean_only: tuple[tuple[str, str, str], ...], trial_keys: tuple[str, ...] = _TRIAL_KEYS_V1) -> str:
    """``SELECT`` of trial_summary: run_summary aggregated over seeds.

    Medians by rank within the group (the mean of the one or two middle values); standard
    deviations from deviations to the group mean (two passes, never negative under rounding).
    """
    _n_train_from_config(dialect)  # the same dialect check as run_summary
    keys = ", ".join(trial_keys)
    group = f"PARTITION BY {keys}"
    means = [name for name, _ in mean_sd]
    window_means = ",\n    ".join(f"AVG({m}) OVER ({group}) AS g_{m}" for m in means)
    aggregates = []
    for m in means:
        aggregates.append(f"AVG({m}) AS mean_{m}")
        aggregates.append(
            f"CASE WHEN COUNT({m}) > 1 THEN sqrt(SUM(({m} - g_{m}) * ({m} - g_{m})) / (COUNT({m}) - 1)) END AS sd_{m}"
        )
    middle = "energy_rank IN ((energy_n + 1) / 2, (energy_n + 2) / 2)"
    aggregates += [
        f"AVG(CASE WHEN {middle} THEN energy_j END) AS median_energy_j",
        "MIN(energy_j) AS min_energy_j",
        "MAX(energy_j) AS max_energy_j",
        f"AVG(CASE WHEN {middle} THEN energy_per_image_j END) AS median_energy_per_image_j",
    ]
    aggregates += [f"AVG({name}) AS {out}" for name, out, _ in mean_only]
    body = ",\n  ".join(aggregates)
    return f"""WITH ranked AS (
  SELECT s.*,
    {window_means},
    ROW_NUMBER() OVER ({group} ORDER BY CASE WHEN energy_j IS NULL THEN 1 ELSE 0 END, energy_j) AS energy_rank,
    COUNT(energy_j) OVER ({group}) AS energy_n
  FROM run_summary s
)
SELECT
  {keys},
  COUNT(*) AS runs,
  COUNT(DISTINCT seed) AS seeds,
  {body}
FROM ranked
GROUP BY {keys}"""


def trial_summary_v1(dialect: str) -> str:
    """``SELECT`` of trial_summary, version 1: run_summary aggregated over seeds."""
    return _trial_summary(dialect, _MEAN_SD_V1, _MEAN_ONLY_V1)


def trial_summary_v2(dialect: str) -> str:
    """``SELECT`` of trial_summary, version 2: version 1 with the mean and standard deviation of the
    energy above idle (per run and per image) and the mean stated uncertainty."""
    return _trial_summary(dialect, _MEAN_SD_V2, _MEAN_ONLY_V2)


def trial_summary_v3(dialect: str) -> str:
    """``SELECT`` of trial_summary, version 3: version 2 over run_summary version 3, grouped by the
    workload and its spec too (a layer campaign's rows are its layer and model specs)."""
    return _trial_summary(dialect, _MEAN_SD_V2, _MEAN_ONLY_V2, _TRIAL_KEYS_V3)


# The version of each view a fresh database ends up with (the newest migration's).
CURRENT: dict[str, Callable[[str], str]] = {"run_summary": run_summary_v3, "trial_summary": trial_summary_v3}


def create_views_sql(dialect: str, versions: Mapping[str, Callable[[str], str]] | None = None) -> list[str]:
    """``CREATE VIEW`` statements, in dependency order, for ``versions`` (default ``CURRENT``)."""
    chosen = versions or CURRENT
    return [f"CREATE VIEW {name} AS\n{chosen[name](dialect)}" for name in VIEW_NAMES]


def create_views(execute: Callable[[str], Any], bind: Any, versions: Mapping[str, Callable[[str], str]]) -> None:
    """Create the views of ``versions`` through ``execute`` (a migration's ``op.execute``) on the
    connection ``bind``, then, where the database keeps comments, comment their columns."""
    from sqlalchemy import inspect

    for statement in create_views_sql(bind.dialect.name, versions):
        execute(statement)
    if bind.dialect.supports_comments:
        inspector = inspect(bind)
        existing = {name: {c["name"] for c in inspector.get_columns(name)} for name in VIEW_NAMES}
        for statement in comment_views_sql(bind.dialect.name, existing):
            execute(statement)


def drop_views_sql() -> list[str]:
    """``DROP VIEW`` statements, dependents first."""
    return [f"DROP VIEW IF EXISTS {name}" for name in reversed(VIEW_NAMES)]


def comment_views_sql(dialect: str, existing: dict[str, set[str]]) -> list[str]:
    """PostgreSQL ``COMMENT ON`` statements for the views and those of their columns that exist
    (``existing``: view name -> column names in the database); nothing for SQLite."""
    if dialect != "postgresql":
        return []

    def lit(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    out = []
    about = {"run_summary": "one row per finished run", "trial_summary": "run_summary aggregated over seeds"}
    for name, table in VIEW_TABLES.items():
        if name not in existing:
            continue
        out.append(f"COMMENT ON VIEW {name} IS {lit(about[name] + '; see docs/schema.md')}")
        for c in table.columns:
            if c.name in existing[name]:
                unit = c.info.get("unit")
                text = f"{c.comment} [{unit}]" if unit else (c.comment or "")
                out.append(f"COMMENT ON COLUMN {name}.{c.name} IS {lit(text)}")
    return out


# -- trace_sample: a view over series and points (revision 0009, db/traces.py) ----------------------

TRACE_VIEW = "trace_sample"
# Samples per series at most (a longer run of one device, phase and epoch is cut).
TRACE_SERIES_MAX = 4096
# The measured columns of a sample, in trace_sample's column order, each with its quantum (stored
# values are whole multiples of 1 / SCALE of the column's unit) and whether its series also keep a
# per-sample step (columns that grow steadily: time and the energy counter).
TRACE_QUANTA: tuple[tuple[str, int, bool], ...] = (
    ("t_s", 10_000, True),  # 0.1 ms
    ("power_w", 1_000, False),  # 1 mW (NVML's unit)
    ("energy_j", 1_000, True),  # 1 mJ (NVML's unit)
    ("gpu_util", 10, False),  # 0.1 % (psutil's rounding; NVML gives whole percent)
    ("mem_util", 10, False),
    ("mem_used_mb", 1_024, False),  # 1 KiB
    ("temperature_c", 10, False),  # 0.1 degree C (NVML gives whole degrees)
    ("sm_clock_mhz", 1, False),  # 1 MHz (NVML's unit)
    ("mem_clock_mhz", 1, False),
    ("power_limit_w", 1_000, False),  # 1 mW (NVML's unit)
    ("cpu_util", 10, False),  # 0.1 % (psutil's rounding)
    ("rss_mb", 1_024, False),  # 1 KiB
)
TRACE_MEASURED = tuple(c for c, _, _ in TRACE_QUANTA)
# Samples per trace_point row: SQLite's cost of a row is a fixed part plus a part per value, so
# two samples a row store and insert faster (measured about 15 %) and take fewer bytes.
TRACE_SLOTS = 2
_TRACE_ORDER = ("id", "run_id", "source", "device", "t_s", "phase", "epoch", *TRACE_MEASURED[1:])


def trace_point_column(name: str, slot: int) -> str:
    """The ``trace_point`` column of a measured sample column in a slot (its residual, in quanta)."""
    return f"{name}_q{slot}"


def trace_point_columns() -> tuple[str, ...]:
    """Every ``trace_point`` column but the id, slot by slot."""
    return tuple(trace_point_column(c, k) for k in range(TRACE_SLOTS) for c in TRACE_MEASURED)


def _trace_value_sql(name: str, scale: int, stepped: bool, slot: int) -> str:
    step = f" + s.{name}_step * ({TRACE_SLOTS} * p.id + {slot} - s.first_id)" if stepped else ""
    # Every stored number is a whole number of quanta; the division is the only rounding, so a
    # value that was a whole number of quanta reads back bit for bit.
    return f"(s.{name}_base{step} + p.{trace_point_column(name, slot)}) / {scale}.0"


def _trace_slot_sql(slot: int) -> str:
    cols = {"id": f"{TRACE_SLOTS} * p.id + {slot}", "run_id": "s.run_id", "source": "s.source", "device": "s.device",
            "phase": "s.phase", "epoch": "s.epoch",
            **{c: _trace_value_sql(c, scale, stepped, slot) for c, scale, stepped in TRACE_QUANTA}}
    select = ",\n       ".join(f"{cols[c]} AS {c}" for c in _TRACE_ORDER)
    return (f"SELECT {select}\nFROM trace_series s\n"
            f"JOIN trace_point p ON p.id BETWEEN s.first_id / {TRACE_SLOTS} AND (s.first_id + s.n - 1) / {TRACE_SLOTS}\n"
            f"WHERE p.{trace_point_column('t_s', slot)} IS NOT NULL")


def trace_sample_sql(dialect: str) -> str:
    """The SELECT of the ``trace_sample`` view: one row per sample with the columns of the table it
    replaced, in plain SQL (joins, arithmetic and UNION ALL; no function of the project). A
    ``trace_point`` row holds samples ``2 x id`` and ``2 x id + 1`` (``TRACE_SLOTS``), a slot
    without a time holds none; a series holds the samples ``first_id .. first_id + n - 1``, and
    each measured value is ``(base + step x position + residual) / scale``. Without ORDER BY the
    rows come slot by slot; order by ``id`` (write order) or by ``device, t_s``."""
    return "\nUNION ALL\n".join(_trace_slot_sql(k) for k in range(TRACE_SLOTS))


def trace_view_sql(dialect: str) -> list[str]:
    """``CREATE`` statements of the ``trace_sample`` view and of what keeps plain SQL on it working:
    deleting a series deletes its points (a trigger); a DELETE on the view empties the slots it
    names; on SQLite an INSERT of one sample stores it as a series of one."""
    out = [f"CREATE VIEW {TRACE_VIEW} AS\n{trace_sample_sql(dialect)}"]
    points = (f"DELETE FROM trace_point WHERE id BETWEEN OLD.first_id / {TRACE_SLOTS} "
              f"AND (OLD.first_id + OLD.n - 1) / {TRACE_SLOTS}")
    empty = "; ".join(
        f"UPDATE trace_point SET {', '.join(trace_point_column(c, k) + ' = NULL' for c in TRACE_MEASURED)} "
        f"WHERE id = OLD.id / {TRACE_SLOTS} AND OLD.id % {TRACE_SLOTS} = {k}" for k in range(TRACE_SLOTS))
    if dialect == "postgresql":
        out.append("CREATE FUNCTION trace_series_points_delete() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN {points}; RETURN OLD; END $$")
        out.append("CREATE TRIGGER trace_series_delete AFTER DELETE ON trace_series FOR EACH ROW "
                   "EXECUTE FUNCTION trace_series_points_delete()")
        out.append("CREATE FUNCTION trace_sample_points_empty() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN {empty}; RETURN OLD; END $$")
        out.append(f"CREATE TRIGGER trace_sample_delete INSTEAD OF DELETE ON {TRACE_VIEW} FOR EACH ROW "
                   "EXECUTE FUNCTION trace_sample_points_empty()")
        return out
    out.append(f"CREATE TRIGGER trace_series_delete AFTER DELETE ON trace_series BEGIN {points}; END")
    out.append(f"CREATE TRIGGER trace_sample_delete INSTEAD OF DELETE ON {TRACE_VIEW} BEGIN {empty}; END")
    bases = ", ".join(f"{c}_base" for c in TRACE_MEASURED)
    steps = ", ".join(f"{c}_step" for c, _, stepped in TRACE_QUANTA if stepped)
    zeros = ", ".join("0" for _ in TRACE_MEASURED)
    step_zeros = ", ".join("0" for _, _, stepped in TRACE_QUANTA if stepped)
    qs = ", ".join(trace_point_column(c, 0) for c in TRACE_MEASURED)
    values = ", ".join(f"ROUND(NEW.{c} * {scale})" for c, scale, _ in TRACE_QUANTA)
    row = "(SELECT COALESCE(MAX(id), 0) + 1 FROM trace_point)"
    out.append(f"CREATE TRIGGER trace_sample_insert INSTEAD OF INSERT ON {TRACE_VIEW} BEGIN "
               f"INSERT INTO trace_series (run_id, source, device, phase, epoch, n, first_id, {bases}, {steps}) "
               f"VALUES (NEW.run_id, NEW.source, NEW.device, NEW.phase, NEW.epoch, 1, {TRACE_SLOTS} * {row}, "
               f"{zeros}, {step_zeros}); "
               f"INSERT INTO trace_point (id, {qs}) VALUES ({row}, {values}); END")
    return out


def drop_trace_view_sql(dialect: str) -> list[str]:
    """``DROP`` statements of the view and the series trigger (the view's triggers go with it)."""
    if dialect == "postgresql":
        return [f"DROP VIEW IF EXISTS {TRACE_VIEW} CASCADE",
                "DROP TRIGGER IF EXISTS trace_series_delete ON trace_series",
                "DROP FUNCTION IF EXISTS trace_series_points_delete()",
                "DROP FUNCTION IF EXISTS trace_sample_points_empty()"]
    return [f"DROP VIEW IF EXISTS {TRACE_VIEW}", "DROP TRIGGER IF EXISTS trace_series_delete"]
