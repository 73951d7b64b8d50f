"""The schema page (``docs/schema.md``), generated from the models and the view definitions.

    python -m db.docs docs/schema.md      # rewrite the page; without a path it goes to stdout

Every column's meaning is its ``comment=`` in ``db/schema.py`` / ``db/views.py``, its unit
comes from its name (``_s``, ``_j``, ``_w``, ...) or the view's declared unit, and its keys
from the constraints. The example queries below are run by ``tests/db/test_docs.py`` against
SQLite and PostgreSQL, so they cannot silently rot.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Column, Table, UniqueConstraint
from sqlalchemy.dialects import postgresql

from db.records import TRAINING_PHASES
from db.schema import Base, TraceSample
from db.views import MEASURED_SOURCES, PHASES, VIEW_TABLES

# name suffix -> unit, longest suffixes first
UNIT_SUFFIXES = (
    ("_unix_s", "s since 1970-01-01 UTC"), ("images_per_s", "images/s"), ("_per_image_j", "J/image"),
    ("_kwh", "kWh"), ("_mhz", "MHz"), ("_mb", "MiB"), ("_gb", "GiB"), ("_at", "UTC time"),
    ("_util", "% (0-100)"), ("accuracy", "fraction 0-1"), ("_s", "s"), ("_j", "J"), ("_w", "W"), ("_c", "°C"),
)


@dataclasses.dataclass(frozen=True)
class Example:
    title: str
    question: str
    sql: str


EXAMPLES = (
    Example(
        "Median energy per image by architecture and GPU type",
        "Which cells cost the least energy per training image on each GPU type? (Medians over seeds "
        "and epoch budgets; simulated and measured power kept apart. On PostgreSQL "
        "`percentile_cont(0.5) WITHIN GROUP (ORDER BY energy_per_image_j)` gives the same median.)",
        """WITH ranked AS (
  SELECT arch_hash, gpu_type, power_kind, energy_per_image_j,
         ROW_NUMBER() OVER (PARTITION BY arch_hash, gpu_type, power_kind ORDER BY energy_per_image_j) AS k,
         COUNT(*) OVER (PARTITION BY arch_hash, gpu_type, power_kind) AS n
  FROM run_summary
  WHERE campaign = :campaign AND energy_per_image_j IS NOT NULL
)
SELECT arch_hash, gpu_type, power_kind, MAX(n) AS runs,
       AVG(energy_per_image_j) AS median_energy_per_image_j
FROM ranked
WHERE k IN ((n + 1) / 2, (n + 2) / 2)
GROUP BY arch_hash, gpu_type, power_kind
ORDER BY gpu_type, power_kind, median_energy_per_image_j""",
    ),
    Example(
        "Power vs utilization",
        "How does the device's power draw follow its utilization while training and evaluating? "
        "Trace samples binned by 10 % of GPU utilization (for simulated power, utilization is the "
        "process's CPU load).",
        """SELECT s.gpu_type, s.power_kind,
       CAST(FLOOR(ts.gpu_util / 10) * 10 AS INTEGER) AS gpu_util_from,
       COUNT(*) AS samples,
       AVG(ts.power_w) AS mean_power_w,
       MIN(ts.power_w) AS min_power_w,
       MAX(ts.power_w) AS max_power_w
FROM trace_sample ts
JOIN run_summary s ON s.run_id = ts.run_id
WHERE s.campaign = :campaign AND ts.phase IN ('train', 'eval') AND ts.gpu_util IS NOT NULL
GROUP BY s.gpu_type, s.power_kind, CAST(FLOOR(ts.gpu_util / 10) * 10 AS INTEGER)
ORDER BY s.gpu_type, s.power_kind, gpu_util_from""",
    ),
    Example(
        "Energy by epoch budget",
        "How does a trial's energy grow with its epoch budget, and what accuracy does it buy?",
        """SELECT epochs, gpu_type, power_kind, COUNT(*) AS runs,
       AVG(energy_j) AS mean_energy_j,
       SUM(energy_kwh) AS total_energy_kwh,
       AVG(energy_per_image_j) AS mean_energy_per_image_j,
       AVG(test_accuracy) AS mean_test_accuracy
FROM run_summary
WHERE campaign = :campaign
GROUP BY epochs, gpu_type, power_kind
ORDER BY gpu_type, power_kind, epochs""",
    ),
    Example(
        "Energy of each epoch during training",
        "Does an epoch late in training cost the same as an early one?",
        """SELECT s.epochs, e.epoch, COUNT(*) AS runs,
       AVG(e.energy_j) AS mean_epoch_energy_j,
       AVG(e.mean_power_w) AS mean_power_w,
       AVG(e.valid_accuracy) AS mean_valid_accuracy
FROM epoch e
JOIN run_summary s ON s.run_id = e.run_id
WHERE s.campaign = :campaign
GROUP BY s.epochs, e.epoch
ORDER BY s.epochs, e.epoch""",
    ),
    Example(
        "Energy and accuracy per trial, aggregated over seeds",
        "The energy/accuracy trade-off of each architecture and budget, with its spread over seeds.",
        """SELECT arch_hash, epochs, gpu_type, power_kind, runs,
       median_energy_j, sd_energy_j, mean_test_accuracy, sd_test_accuracy
FROM trial_summary
WHERE campaign = :campaign
ORDER BY gpu_type, power_kind, epochs, median_energy_j""",
    ),
)


def unit_of(column: Column[Any]) -> str:
    """A column's unit: declared (views) or read from its name's suffix; '' when it has none."""
    if column.info.get("unit"):
        return str(column.info["unit"])
    for suffix, unit in UNIT_SUFFIXES:
        if column.name.endswith(suffix):
            return unit
    return ""


def type_of(column: Column[Any]) -> str:
    """The column's PostgreSQL type, lower case (SQLite stores the same values by affinity)."""
    return column.type.compile(dialect=postgresql.dialect()).lower()


def keys_of(table: Table, column: Column[Any]) -> str:
    """Primary key, references, uniqueness and indexes the column takes part in."""
    keys = []
    if column.primary_key:
        keys.append("PK")
    for fk in column.foreign_keys:
        keys.append(f"→ {fk.target_fullname}")
    if column.unique:
        keys.append("unique")
    for c in table.constraints:
        if isinstance(c, UniqueConstraint) and column.name in c.columns and len(c.columns) > 1:
            keys.append("unique (" + ", ".join(c.columns.keys()) + ")")
    for ix in sorted(table.indexes, key=lambda i: str(i.name)):
        if column.name in ix.columns:
            names = ", ".join(ix.columns.keys())
            keys.append(f"indexed ({names})" if len(ix.columns) > 1 else "indexed")
    return ", ".join(keys)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_md(table: Table, with_keys: bool) -> list[str]:
    head = ["column", "type", "unit", *(["key"] if with_keys else []), "meaning"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in table.columns:
        cells = [f"`{c.name}`", type_of(c), unit_of(c), *([keys_of(table, c)] if with_keys else []), c.comment or ""]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return lines


def _doc(model: Any) -> str:
    return " ".join((model.__doc__ or "").split())


def render() -> str:
    """The whole schema page, Markdown."""
    measured = ", ".join(f"`{s}`" for s in MEASURED_SOURCES)
    out = [
        "# The results database",
        "",
        "<!-- Generated by `python -m db.docs docs/schema.md` from db/schema.py and db/views.py; do not edit. -->",
        "",
        "Everything a campaign measured is in one SQL database: a SQLite file (`ROOT/campaign.db`, the",
        "default) or PostgreSQL (`db.url=postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB`). Start from the",
        "views `run_summary` (one row per finished run) and `trial_summary` (runs aggregated over seeds);",
        "the tables below them hold every epoch, phase and power sample.",
        "",
        "## Reading it",
        "",
        "- `campaign query NAME \"SELECT ...\"` runs one statement on a read-only connection and prints its",
        "  rows (`--format table|csv|json`); the statement sees the whole database (every campaign in it), and",
        "  `:campaign` is bound to NAME. A write, ATTACH or DETACH is refused.",
        "- `campaign export NAME --format parquet|csv [--out DIR] [--traces]` writes `runs`, `trials`,",
        "  `epochs`, `phases` (and `traces`) files and `campaign.json` (the resolved config) to",
        "  `ROOT/NAME/export/`.",
        "- Python: `analysis.load.load_runs(url, name)` returns the same tables as pandas DataFrames.",
        "- Elsewhere: `psql -v campaign=\"'NAME'\" ...` or SQLite's `.parameter set :campaign 'NAME'` bind",
        "  `:campaign` in the example queries below; pandas:",
        "  `pd.read_sql(sqlalchemy.text(sql), engine, params={\"campaign\": \"NAME\"})`.",
        "",
        "Both commands take the usual overrides (`root=DIR`, `db.url=URL`). An older database gets the",
        "views with `campaign db upgrade` (Alembic migrations in `db/migrations/`).",
        "",
        "## Conventions",
        "",
        "- Units are in column names: `_s` seconds, `_j` joules, `_kwh` kilowatt-hours, `_w` watts,",
        "  `_mb` MiB, `_gb` GiB, `_mhz` MHz, `_c` degrees Celsius, `_at` a UTC timestamp; accuracies are",
        "  fractions 0-1, utilizations percent 0-100.",
        "- A run is one attempt at a trial; only runs with `status = 'done'` are results, and only they",
        "  appear in the views. **Exactly once:** a trial has at most one done run, enforced by the",
        "  database (a unique index on `run (trial_id)` where `status = 'done'`). An attempt that finishes",
        "  after another one finished the trial (one declared stale whose worker lived on) is kept as",
        "  `superseded`, never counted; so `run_summary` has one row per finished trial.",
        f"- A run's `energy_j` covers its training and evaluation phases ({', '.join(TRAINING_PHASES)}); the",
        f"  measurement protocol's other phases ({', '.join(p for p in PHASES if p not in TRAINING_PHASES)})"
        " are in `run_phase` and in the",
        "  `*_energy_j` columns of `run_summary`. `setup` is a trial's one-off work before its idle window",
        "  (building the network, moving data to the device), so that the idle window holds only idle.",
        "- Energy above idle: `energy_above_idle_j = energy_j - idle_power_w x duration_s`, with the idle",
        "  power of the same trial's idle window (per phase and per epoch alike). Each energy figure says",
        "  how it was obtained (`energy_method`, `run_phase.method`) and how sure it is",
        "  (`energy_uncertainty_j` and `error_basis`); `flags` names what is wrong with a",
        "  measurement (a window with too few samples, a counter and integrated power that disagree).",
        "- Energy per image: `energy_per_image_j = energy_j / (epochs x train_images)`, with",
        "  `train_images` the training images per epoch (40 000 for CIFAR-10's NAS-Bench-101 split).",
        f"- **Simulated power is not a measurement.** `power_kind` is `measured` for a hardware meter ({measured}),",
        "  `simulated` for anything else (the simulated meter follows the training load on machines",
        "  without a GPU). Filter on `power_kind = 'measured'`; never pool the two.",
        "",
        "## How the tables relate",
        "",
        "```",
        "campaign 1──n trial n──1 architecture",
        "               1",
        "               │",
        "               n",
        "              run n──1 hardware",
        "               1",
        "       ┌───────┼──────────┐",
        "       n       n          n",
        "     epoch  run_phase  trace_series ─ trace_point (read as the view trace_sample)",
        "```",
        "",
        "## Views",
        "",
    ]
    about = {
        "run_summary": "One row per finished run (`run.status = 'done'`), with its trial, architecture, "
        "hardware, energy per phase and energy per image.",
        "trial_summary": "`run_summary` aggregated over seeds: one row per campaign, architecture, epoch "
        "budget, GPU type and power source. Medians and standard deviations are over the runs of the row.",
    }
    for name, view in VIEW_TABLES.items():
        out += [f"### `{name}`", "", about[name], "", *_table_md(view, with_keys=False), ""]
    # trace_sample is a view over series and points (revision 0009): its rows and columns are those
    # of the table it replaced, in plain SQL that any client runs.
    out += ["### `trace_sample`", "",
            "One row per meter reading: a view over `trace_series` and `trace_point`, in plain SQL (joins,",
            "arithmetic and `UNION ALL`), so the `sqlite3` shell, DB Browser, pandas or psql read it as",
            "they read a table. A run's samples are stored as series (one device, phase and epoch, at most",
            "4096 samples) whose rows hold each value's base, and points (two samples a row) holding small",
            "residuals in whole quanta: about 32 bytes a sample at 10 Hz on SQLite. **Each value is",
            "stored to its quantum**: `t_s` 0.1 ms, `power_w` and `power_limit_w` 1 mW, `energy_j` 1 mJ,",
            "utilizations 0.1 %, `mem_used_mb` and `rss_mb` 1 KiB, `temperature_c` 0.1 degree C, clocks",
            "1 MHz. Readings in NVML's own units (mW, mJ, whole percent, MHz, MiB) read back bit for bit;",
            "any other value is rounded to its nearest quantum. The per-phase figures in `run_phase` and",
            "the run's energy are computed by the worker from the readings as taken, before storage, and",
            "each attempt's result file (`ROOT/NAME/runs/KEY/attempt-N.json`) keeps them as taken. A",
            "filter on `run_id`, `device`, `phase` or `epoch` reads only the series it selects. `id` is",
            "unique and in write order, not consecutive; without `ORDER BY` the rows come in no",
            "particular order (order by `id`, or by `device, t_s`).",
            "", *_table_md(cast(Table, TraceSample.__table__), with_keys=False), ""]
    out += ["## Tables", ""]
    for table in Base.metadata.sorted_tables:
        model = next(m.class_ for m in Base.registry.mappers if m.local_table is table)
        out += [f"### `{table.name}`", "", _doc(model), "", *_table_md(table, with_keys=True), ""]
    out += ["## Example queries", "",
            "Each runs as is through `campaign query NAME \"...\"` (`:campaign` is bound to NAME), on",
            "SQLite and on PostgreSQL.", ""]
    for ex in EXAMPLES:
        out += [f"### {ex.title}", "", ex.question, "", "```sql", ex.sql, "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    page = render()
    if args:
        Path(args[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(args[0]).write_text(page)
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
