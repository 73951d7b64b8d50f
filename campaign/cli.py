"""``campaign``: plan, launch, watch and analyse energy measurement campaigns.

Every command takes Hydra overrides (``key=value``, ``+sweep=NAME``); bad input is refused
with one line naming the value and what is allowed, before anything runs or is recorded.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from campaign import cli_db
from campaign.config import CampaignConfig, compose
from campaign.session import campaign_paths, open_reader, open_store, redacted_url
from db.errors import CampaignError

if TYPE_CHECKING:
    from campaign.plan import Plan


def _print_plan(console: Console, cfg: CampaignConfig, plan: Plan) -> None:
    counts = plan.counts()
    table = Table(title=f"plan for sweep {cfg.sweep}")
    table.add_column("GPU type")
    for e in cfg.epochs:
        table.add_column(f"{e} epochs", justify="right")
    table.add_column("total", justify="right")
    for g in cfg.gpus:
        row = [counts.get((g, e), 0) for e in cfg.epochs]
        table.add_row(g, *map(str, row), str(sum(row)))
    console.print(table)
    archs = Table(title="architectures")
    for col in ("hash", "vertices", "edges", "params", "MFLOPs"):
        archs.add_column(col, justify="right" if col != "hash" else "left")
    for a in plan.archs[:20]:
        archs.add_row(a.arch_hash, str(a.num_vertices), str(a.num_edges), f"{a.params:,}", f"{a.flops / 1e6:,.1f}")
    console.print(archs)
    if len(plan.archs) > 20:
        console.print(f"... and {len(plan.archs) - 20} more architectures")
    console.print(
        f"{len(plan.archs)} architectures x {len(cfg.epochs)} epoch budgets x {len(cfg.gpus)} GPU types "
        f"x {cfg.seeds} seeds = {len(plan.trials):,} trials"
    )


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from campaign.launch import plan

    cfg = compose(args.overrides)
    _print_plan(console, cfg, plan(cfg))
    return 0


def _handover(args: argparse.Namespace) -> Any:
    from campaign.launch import Handover

    return Handover(follow=args.wait, max_failures=args.max_failures)


def cmd_launch(args: argparse.Namespace, console: Console) -> int:
    from campaign.launch import launch

    return launch(compose(args.overrides), console, _handover(args))


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from campaign.launch import resume

    return resume(args.name, compose(args.overrides), args.overrides, console, _handover(args), args.stale_after)


def cmd_ingest(args: argparse.Namespace, console: Console) -> int:
    from campaign.launch import ingest_files

    cfg = compose(args.overrides)
    store = open_store(cfg)
    info = store.campaign(args.name)
    stored = ingest_files(store, campaign_paths(args.overrides, cfg, info))
    console.print(f"stored {stored} new result file(s) of {info.name}")
    return 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    cfg = compose(args.overrides)
    reader = open_reader(cfg)
    info = reader.campaign(args.name)
    rows = reader.status_rows(info.id)
    table = Table(title=f"campaign {info.name} (sweep {info.sweep}, created {info.created_at:%Y-%m-%d %H:%M})")
    for col in ("GPU type", "epochs", "pending", "running", "done", "failed", "energy (kJ)", "power source"):
        table.add_column(col, justify="left" if col in ("GPU type", "power source") else "right")
    for r in rows:
        table.add_row(r["gpu_type"], str(r["epochs"]), str(r["pending"]), str(r["running"]), str(r["done"]),
                      str(r["failed"] + r["cancelled"]), f"{r['energy_j'] / 1e3:.2f}", r["power_source"] or "-")
    console.print(table)
    done = sum(r["done"] for r in rows)
    total = sum(r[s] for r in rows for s in ("pending", "running", "done", "failed", "cancelled"))
    console.print(f"{done}/{total} trials done; {sum(r['energy_j'] for r in rows) / 3.6e3:.3f} Wh measured so far")
    return 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    cfg = compose(args.overrides)
    rows = open_reader(cfg).list_campaigns()
    table = Table(title=f"campaigns in {redacted_url(cfg)}")
    for col in ("name", "sweep", "created (UTC)", "trials", "done", "failed", "pending"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["sweep"], f"{r['created_at']:%Y-%m-%d %H:%M}", str(r["trials"]), str(r["done"]),
                      str(r["failed"]), str(r["pending"]))
    console.print(table)
    return 0


def cmd_analyze(args: argparse.Namespace, console: Console) -> int:
    from analysis.report import write_report
    from campaign.config import gpu_types

    cfg = compose(args.overrides)
    reader = open_reader(cfg)
    info = reader.campaign(args.name)
    out = campaign_paths(args.overrides, cfg, info).report
    files = write_report(reader, info, out, cfg.analysis, {n: g.to_dict() for n, g in gpu_types().items()})
    for model in files.models:
        console.print(f"surrogate model: {model}")
    console.print(f"report written: {files.page} and {files.html.name} ({len(files.figures)} figures, "
                  f"{len(files.tables)} tables in {files.folder / 'tables'}) in {files.seconds:.0f} s")
    return 0


def cmd_db(args: argparse.Namespace, console: Console) -> int:
    from campaign.config import db_url
    from db.engine import make_engine
    from db.migrate import current_revision, upgrade

    cfg = compose(args.overrides)
    engine = make_engine(db_url(cfg))
    upgrade(engine)
    console.print(f"database {redacted_url(cfg)} is at revision {current_revision(engine)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign",
        description="Energy measurement campaigns for deep-learning training. "
        "Every command accepts Hydra overrides such as root=DIR db.url=URL +sweep=NAME.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str, with_name: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if with_name:
            p.add_argument("name", help="campaign name")
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +sweep=smoke seeds=5 root=DIR")
        p.set_defaults(fn=fn)
        return p

    add("plan", cmd_plan, "print the plan of a sweep (trials per GPU type and epoch budget); runs nothing")
    launch = add("launch", cmd_launch, "plan, record and run a sweep (campaign launch +sweep=smoke)")
    resume = add("resume", cmd_resume, "run again what is not done: never started, failed, stale, cancelled",
                 with_name=True)
    for p in (launch, resume):
        p.add_argument("--max-failures", type=int, default=None, help="stop a worker after N failed trials in a row")
        p.add_argument("--wait", action="store_true", help="follow the campaign with a live progress display")
    resume.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                        help="a running trial without heartbeat this long is stale (default launcher.stale_after_s)")
    add("ingest", cmd_ingest, "store result files that did not reach the database", with_name=True)
    add("status", cmd_status, "trials by state and energy so far, per GPU type x epoch budget", with_name=True)
    add("list", cmd_list, "list the campaigns in a database")
    add("analyze", cmd_analyze, "write the report folder ROOT/NAME/report/", with_name=True)
    cli_db.register(sub)
    db = sub.add_parser("db", help="database maintenance", description="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = dbsub.add_parser("upgrade", help="create or migrate the schema to the newest revision")
    up.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. db.url=URL")
    up.set_defaults(fn=cmd_db)
    return parser


OVERRIDE = re.compile(r"^[+~]{0,2}[A-Za-z_][\w.\-/@]*=")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse options and positionals; Hydra overrides (``key=value``, ``+key=value``) may stand
    anywhere, before or after options, as Hydra users type them."""
    overrides = [a for a in argv if OVERRIDE.match(a)]
    rest = [a for a in argv if not OVERRIDE.match(a)]
    args = build_parser().parse_args(rest)
    args.overrides = [*getattr(args, "overrides", []), *overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Piped output (logs, CI, scripts) gets whole lines and unsqueezed tables.
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    try:
        return int(args.fn(args, console))
    except KeyboardInterrupt:
        print("campaign: interrupted; `campaign resume` continues where this stopped", file=sys.stderr)
        return 130
    except CampaignError as exc:
        print(f"campaign: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
