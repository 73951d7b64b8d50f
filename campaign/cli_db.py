"""``campaign export`` and ``campaign query``: the results database for analyses elsewhere.

    campaign export NAME --format parquet|csv [--out DIR] [--traces] [overrides...]
    campaign query NAME "SELECT ... WHERE campaign = :campaign" [--max-rows N] [overrides...]

Both take Hydra overrides (``root=DIR``, ``db.url=URL``) like every command, in any order with
the options. ``query`` runs on a read-only connection: the database refuses a write.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from campaign.config import compose, db_url
from campaign.session import campaign_paths

DEFAULT_MAX_ROWS = 100
FORMATS = ("parquet", "csv")  # db.export.FORMATS, repeated so that `campaign --help` imports no SQLAlchemy


def _add(subparsers: Any, name: str, fn: Any, help_: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_, description=help_)
    p.add_argument("name", help="campaign name")
    p.set_defaults(fn=fn)
    return p


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. root=DIR db.url=URL")


def register(subparsers: Any) -> None:
    """Add ``export`` and ``query`` to the ``campaign`` command's subparsers."""
    export = _add(subparsers, "export", cmd_export,
                  "write a campaign's runs, trials, epochs and phases (and traces) as Parquet or CSV files")
    _overrides(export)
    export.add_argument("--format", choices=FORMATS, default="parquet", help="file format (default parquet)")
    export.add_argument("--out", type=Path, default=None, help="output folder (default ROOT/NAME/export/)")
    export.add_argument("--traces", action="store_true", help="also write every trace sample (large)")
    query = _add(subparsers, "query", cmd_query,
                 "run one read-only SQL statement and print its rows; :campaign is bound to NAME")
    query.add_argument("sql", help='e.g. "SELECT * FROM run_summary WHERE campaign = :campaign"')
    _overrides(query)
    query.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS,
                       help=f"print at most N rows (default {DEFAULT_MAX_ROWS}; 0: all)")


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    from db.engine import make_engine, redact
    from db.export import export_campaign, open_campaign
    from db.migrate import ensure_schema
    from db.query import database_errors, missing_views, read_only_engine

    cfg = compose(args.overrides)
    url = db_url(cfg)
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


def _cell(value: Any) -> str:
    if value is None:
        return "[dim]NULL[/]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("[", "\\[")


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
        console.print("the statement returned no rows")
        return 0
    table = Table()
    for col in result.columns:
        table.add_column(col, overflow="fold")
    for row in result.rows:
        table.add_row(*map(_cell, row))
    console.print(table)
    more = f"; more exist (--max-rows {args.max_rows}; 0 prints all)" if result.truncated else ""
    console.print(f"{len(result.rows)} row{'s' if len(result.rows) != 1 else ''}{more}")
    return 0
