"""The database's campaigns as a whole: ``export`` and ``query`` for analyses elsewhere, and the
lifecycle commands ``cancel`` and ``delete``.

    campaign export NAME --format parquet|csv [--out DIR] [--traces] [overrides...]
    campaign query NAME "SELECT ... WHERE campaign = :campaign" [--format table|csv|json] [--max-rows N]
    campaign cancel NAME [overrides...]
    campaign delete NAME [--yes] [--purge] [overrides...]

All take Hydra overrides (``root=DIR``, ``db.url=URL``) like every command, in any order with
the options. ``query`` runs on a read-only connection: the database refuses a write.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from campaign.config import compose, db_url
from campaign.session import campaign_paths, open_store, redacted_url
from db.errors import CampaignError

DEFAULT_MAX_ROWS = 100
FORMATS = ("parquet", "csv")  # db.export.FORMATS, repeated so that `campaign --help` imports no SQLAlchemy


QUERY_FORMATS = ("table", "csv", "json")
QUERY_HELP = ("run one read-only SQL statement and print its rows. The statement sees the whole database "
              "(every campaign in it, not only NAME); :campaign is bound to NAME, so filter with "
              "WHERE campaign = :campaign (run_summary, trial_summary) to read the named campaign only")


def _add(subparsers: Any, name: str, fn: Any, help_: str, common: Callable[[argparse.ArgumentParser], None]
         ) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_.split(". ")[0], description=help_)
    common(p)
    p.add_argument("name", help="campaign name")
    p.set_defaults(fn=fn)
    return p


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. root=DIR db.url=URL")


def register(subparsers: Any, common: Callable[[argparse.ArgumentParser], None] = lambda p: None) -> None:
    """Add ``export``, ``query``, ``cancel`` and ``delete`` to the ``campaign`` command's
    subparsers (``common`` adds the options every command takes)."""
    export = _add(subparsers, "export", cmd_export,
                  "write a campaign's runs, trials, epochs and phases (and traces) as Parquet or CSV files", common)
    _overrides(export)
    export.add_argument("--format", choices=FORMATS, default="parquet", help="file format (default parquet)")
    export.add_argument("--out", type=Path, default=None, help="output folder (default ROOT/NAME/export/)")
    export.add_argument("--traces", action="store_true", help="also write every trace sample (large)")
    query = _add(subparsers, "query", cmd_query, QUERY_HELP, common)
    query.add_argument("sql", help='e.g. "SELECT * FROM run_summary WHERE campaign = :campaign"')
    _overrides(query)
    query.add_argument("--format", choices=QUERY_FORMATS, default="table",
                       help="table (default), csv (a header line, then one line per row) or json (a list of objects)")
    query.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                       help=f"print at most N rows (default {DEFAULT_MAX_ROWS}; 0: all)")
    cancel = _add(subparsers, "cancel", cmd_cancel,
                  "stop a campaign's work: scancel every recorded Slurm submission, mark its running attempts cancelled "
                  "and put their trials back to pending (campaign resume NAME continues)", common)
    _overrides(cancel)
    delete = _add(subparsers, "delete", cmd_delete,
                  "delete a campaign's records from the database (asks first; its result files under "
                  "ROOT/NAME/ stay unless --purge)", common)
    _overrides(delete)
    delete.add_argument("--yes", action="store_true", help="do not ask (needed where there is no terminal to ask on)")
    delete.add_argument("--purge", action="store_true", help="also remove the campaign's folder ROOT/NAME/ (only it)")


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from campaign.session import check_export_folder
    from db.engine import make_engine, redact
    from db.export import export_campaign, open_campaign
    from db.migrate import ensure_schema
    from db.query import database_errors, missing_views, read_only_engine

    cfg = compose(args.overrides)
    url = db_url(cfg)
    if args.out:
        check_export_folder(args.out)
    with database_errors(url, "opening the database"):
        if missing_views(read_only_engine(url)):  # an older schema: export upgrades it (it records nothing else)
            ensure_schema(make_engine(url))
    engine, info = open_campaign(url, args.name)
    out = args.out or campaign_paths(args.overrides, cfg, info).export
    with database_errors(url, f"exporting campaign {info.name!r}"):
        files = export_campaign(engine, info, Path(out), args.format, traces=args.traces)
    console.print(f"campaign {info.name} from {redact(url)} exported to {out}")
    table = Table()
    table.add_column("file")
    table.add_column("rows", justify="right")
    for f in files:
        table.add_row(f.path.name, "" if f.rows is None else f"{f.rows:,}")
    console.print(table)
    return 0


TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?$")


def plain(value: Any) -> Any:
    """A value for csv and json: timestamps as ISO 8601 with their time zone (the database stores
    UTC; SQLite hands them back as text without one)."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, str) and TIMESTAMP.match(value):
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]NULL[/]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(plain(value)).replace("[", "\\[")


def write_rows(fmt: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], console: Console) -> None:
    """Rows as csv (header, then rows), json (a list of objects) or a table."""
    if fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        out.writerows([["" if v is None else plain(v) for v in row] for row in rows])
    elif fmt == "json":
        json.dump([{c: plain(v) for c, v in zip(columns, row, strict=True)} for row in rows], sys.stdout,
                  indent=1, default=str)
        sys.stdout.write("\n")
    else:
        table = Table()
        for col in columns:
            table.add_column(col, overflow="fold", min_width=min(len(col), 12))
        for row in rows:
            table.add_row(*map(_cell, row))
        console.print(table)
    sys.stdout.flush()


def cmd_query(args: argparse.Namespace, console: Console) -> int:
    from db.query import run_query
    from db.read import CampaignReader

    cfg = compose(args.overrides)
    url = db_url(cfg)
    reader = CampaignReader.open(url)
    reader.campaign(args.name)  # CampaignNotFound names the known ones
    engine = reader.engine
    max_rows = args.max_rows if args.max_rows > 0 else None
    result = run_query(engine, url, args.sql, {"campaign": args.name}, max_rows=max_rows)
    if not result.columns:
        if args.format == "table":
            console.print("the statement returned no rows")
        return 0
    write_rows(args.format, list(result.columns), result.rows, console)
    more = f"; more exist (--max-rows {args.max_rows}; 0 prints all)" if result.truncated else ""
    if args.format == "table":
        console.print(f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}{more}")
    elif more:
        print(f"campaign: {len(result.rows)} rows printed{more}", file=sys.stderr)
    return 0


def _running_jobs(store: Any, campaign_id: int) -> set[str]:
    """Scheduler job ids of the campaign's running attempts (as their workers recorded them)."""
    return {str(r["scheduler_job"]) for r in store.runs(campaign_id, status="running") if r.get("scheduler_job")}


def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    from campaign.launch import recorded_config, where
    from campaign.launchers.slurm import recorded_jobs, scancel

    cfg = compose(args.overrides)
    store = open_store(cfg)
    info = store.campaign(args.name)
    paths = campaign_paths(args.overrides, cfg, info)
    launcher = recorded_config(info.config).launcher
    jobs = _running_jobs(store, info.id)
    said = []
    recorded = {str(j) for sub in store.submissions(info.id) if sub["launcher"] == "slurm" for j in sub["job_ids"]}
    if str(launcher.name) == "slurm" or recorded or any(not j.startswith("ray:") for j in jobs):
        said.append(scancel(recorded | recorded_jobs(paths, launcher) | {j for j in jobs if not j.startswith("ray:")}))
    if str(launcher.name) == "ray":
        said.append("Ray tasks end with the launch that started them (Ctrl-C there stops them)")
    n = len(store.cancel_runs(info.id, reason="cancelled by `campaign cancel`"))
    said.append(f"{n} running attempt(s) marked cancelled, their trials back to pending "
                "(a worker still running gives its attempt up at its next heartbeat)")
    console.print(f"campaign {info.name}: " + "; ".join(said))
    console.print(f"next: campaign resume {info.name} {where(cfg)}")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise CampaignError(f"{question.rstrip('?')} needs confirmation, and there is no terminal to ask on; "
                            "add --yes to delete without asking")
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def cmd_delete(args: argparse.Namespace, console: Console) -> int:
    cfg = compose(args.overrides)
    store = open_store(cfg)
    info = store.campaign(args.name)
    folder = campaign_paths(args.overrides, cfg, info).folder
    rows = store.status_rows(info.id)
    running = sum(r["running"] for r in rows)
    if running:
        raise CampaignError(f"campaign {info.name!r} has {running} running trial(s); stop them first "
                            f"(campaign cancel {info.name}), then delete it")
    trials = sum(r[s] for r in rows for s in ("pending", "running", "done", "failed", "cancelled"))
    files = f" and its folder {folder}" if args.purge else f" (its files in {folder} stay)"
    question = f"delete campaign {info.name!r} ({trials} trials) from {redacted_url(cfg)}{files}?"
    if not args.yes and not _confirm(question):
        console.print("nothing deleted")
        return 1
    store.delete_campaign(info.name)
    said = f"campaign {info.name} deleted from {redacted_url(cfg)}"
    if args.purge and folder.is_dir():
        if folder.name != info.name or folder.is_symlink():
            raise CampaignError(f"{folder} is not the campaign's own folder ROOT/{info.name}/; left as it is")
        shutil.rmtree(folder)
        said += f"; {folder} removed"
    elif not args.purge:
        said += f"; its files stay in {folder} (--purge removes them)"
    console.print(said)
    return 0
