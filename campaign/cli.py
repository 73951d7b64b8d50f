"""``campaign``: plan, launch, watch and analyse energy measurement campaigns.

Every command takes Hydra overrides (``key=value``, ``+sweep=NAME``); bad input is refused
with one line naming the value and what is allowed, before anything runs or is recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from campaign import cli_bench, cli_db
from campaign.config import CampaignConfig, compose, db_url
from campaign.session import campaign_paths, open_reader, open_store, redacted_url
from db.errors import CampaignError

if TYPE_CHECKING:
    from campaign.plan import Plan
    from db.read import CampaignInfo, CampaignReader

STATES = ("pending", "running", "done", "failed", "cancelled")
#: loggers of other packages: their lines never reach the terminal (errors aside), unless -v
THIRD_PARTY = ("carbontracker", "ray", "submitit", "urllib3", "matplotlib", "PIL", "filelock", "fsspec", "alembic")


def _print_plan(console: Console, cfg: CampaignConfig, plan: Plan) -> None:
    if cfg.workload != "nasbench101":
        _print_workload_plan(console, cfg, plan)
        return
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


def _print_workload_plan(console: Console, cfg: CampaignConfig, plan: Plan) -> None:
    """A plan of a workload that trains no cell: its configurations (label, size) and trial count."""
    configs: dict[str, Any] = {}
    for t in plan.trials:
        configs.setdefault(t.label or t.trial_key[:8], t)
    table = Table(title=f"plan for sweep {cfg.sweep} (workload {cfg.workload})")
    for col in ("configuration", "params", "MFLOPs per input"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for label, t in list(configs.items())[:30]:
        table.add_row(label, f"{t.params or 0:,}", f"{(t.flops or 0) / 1e6:,.1f}")
    console.print(table)
    if len(configs) > 30:
        console.print(f"... and {len(configs) - 30} more configurations")
    console.print(f"{len(configs)} configurations x {len(cfg.gpus)} GPU types x {cfg.seeds} seeds = "
                  f"{len(plan.trials):,} trials")


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    from campaign.estimate import campaign_estimate, print_estimate
    from campaign.launch import plan

    cfg = compose(args.overrides)
    the_plan = plan(cfg)
    _print_plan(console, cfg, the_plan)
    print_estimate(console, campaign_estimate(cfg, the_plan))
    return 0


def _handover(args: argparse.Namespace) -> Any:
    from campaign.launch import Handover

    return Handover(follow=args.wait, max_failures=args.max_failures, quiet=args.quiet,
                    dry_run=getattr(args, "dry_run", False))


def cmd_launch(args: argparse.Namespace, console: Console) -> int:
    from campaign.launch import launch

    return launch(compose(args.overrides), console, _handover(args))


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from campaign.launch import resume

    return resume(args.name, compose(args.overrides), args.overrides, console, _handover(args), args.stale_after)


def cmd_ingest(args: argparse.Namespace, console: Console) -> int:
    from campaign.checks import check_folder
    from campaign.launch import ingest_files

    cfg = compose(args.overrides)
    store = open_store(cfg)
    info = store.campaign(args.name)
    paths = campaign_paths(args.overrides, cfg, info)
    check_folder(paths, db_url(cfg))  # a folder another campaign or database owns is refused
    stored = ingest_files(store, paths)
    console.print(f"stored {stored} new result file(s) of {info.name}")
    return 0


SIMULATED_SOURCES = frozenset({"simulated"})  # power sources that are not measurements


def energy_kind(sources: Iterable[str | None]) -> str | None:
    """``simulated``, ``measured`` or ``mixed`` for the power sources of some energy (None: none)."""
    kinds = {"simulated" if s in SIMULATED_SOURCES else "measured" for s in sources if s}
    return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def utc_text(value: Any) -> str:
    """A timestamp as ISO 8601 with its time zone (the database stores UTC)."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat(timespec="seconds")
    return str(value)


def worker_document(reader: CampaignReader, info: CampaignInfo) -> dict[str, Any]:
    """The campaign's worker tasks as the scheduler sees them now: per GPU type, the recorded
    submissions and workers submitted, and of them those queued and running (Slurm's squeue;
    Ray and local tasks end with the command that submitted them, so none of theirs is live
    here). ``scheduler_answered`` is false when squeue did not answer (counts then unknown)."""
    from campaign.launchers.slurm import live_workers

    subs = reader.submissions(info.id)
    live = live_workers(subs)
    per_gpu: dict[str, dict[str, Any]] = {}
    for sub in subs:
        entry = per_gpu.setdefault(sub["gpu_type"], {"submissions": 0, "workers_submitted": 0, "queued": 0,
                                                     "running": 0, "launcher": sub["launcher"]})
        entry["submissions"] += 1
        entry["workers_submitted"] += int(sub["workers"])
    for gpu_type, counts in (live or {}).items():
        if gpu_type in per_gpu:
            per_gpu[gpu_type].update(queued=counts["queued"], running=counts["running"])
    return {"scheduler_answered": live is not None, "per_gpu": dict(sorted(per_gpu.items()))}


def status_document(reader: CampaignReader, info: CampaignInfo, workers: bool = True) -> dict[str, Any]:
    """``campaign status --json``: the campaign, one row per GPU type x epoch budget (trials by
    state, energy of finished runs by power source), totals (with the attempts by run status:
    done, failed, cancelled, stale, ...), the power sources, and the worker tasks queued and
    running per GPU type (``worker_document``). Energy from a simulated source is labelled
    ``simulated``, never measured."""
    rows = reader.status_rows(info.id)
    by_source: dict[tuple[str, int], dict[str, float]] = {}
    sources: dict[str, dict[str, Any]] = {}
    attempts: dict[str, int] = {}
    for run in reader.runs(info.id, status=None):
        attempts[str(run["status"])] = attempts.get(str(run["status"]), 0) + 1
        if run["status"] != "done":
            continue
        src = run["power_source"] or "unknown"
        cell = by_source.setdefault((run["gpu_type"], run["epochs"]), {})
        cell[src] = cell.get(src, 0.0) + float(run["energy_j"] or 0.0)
        entry = sources.setdefault(src, {"source": src, "kind": energy_kind([src]), "runs": 0, "energy_j": 0.0})
        entry["runs"] += 1
        entry["energy_j"] += float(run["energy_j"] or 0.0)
    out_rows = []
    for r in rows:
        split = by_source.get((r["gpu_type"], r["epochs"]), {})
        out_rows.append({**{k: r[k] for k in ("gpu_type", "epochs", *STATES)}, "energy_j": r["energy_j"],
                         "energy_kind": energy_kind(split), "energy_j_by_source": split})
    totals: dict[str, Any] = {s: sum(r[s] for r in rows) for s in STATES}
    totals["trials"] = sum(totals[s] for s in STATES)
    totals["attempts"] = dict(sorted(attempts.items()))
    for kind in ("simulated", "measured"):
        totals[f"{kind}_energy_j"] = sum(e["energy_j"] for e in sources.values() if e["kind"] == kind)
    campaign = {"name": info.name, "sweep": info.sweep, "created_at": utc_text(info.created_at), "root": info.root,
                "code_revision": info.code_revision, "workload": info.config.get("workload", "nasbench101")}
    doc = {"campaign": campaign, "rows": out_rows, "totals": totals, "power_sources": sorted(
        sources.values(), key=lambda e: str(e["source"]))}
    doc["budget"] = budget_document(reader, info, totals["running"])
    if workers:
        doc["workers"] = worker_document(reader, info)
    return doc


def budget_document(reader: CampaignReader, info: CampaignInfo, running: int) -> dict[str, Any]:
    """Measured so far (every phase of every run, kWh and GPU-hours), predicted for the trials
    pending or running (low, mid, high: their group's done runs once there are any, else the
    pre-launch estimate), the ETA at the trials running now, and the budget: its limits and whether
    it stopped the campaign."""
    from db import budget

    f = budget.figures(reader.engine, info.id)
    state = budget.limits_of(reader.engine, info.id)

    def span(r: Any) -> dict[str, float]:
        return {"low": r.low, "mid": r.mid, "high": r.high}

    eta = span(f.predicted_gpu_hours * (1 / running)) if running and f.remaining else None
    limits = None if state is None else {k: getattr(state.limits, k) for k in ("max_kwh", "max_gpu_hours", "max_co2_kg")}
    return {"measured_kwh": f.measured_kwh, "measured_gpu_hours": f.measured_gpu_hours,
            "predicted_kwh": span(f.predicted_kwh), "predicted_gpu_hours": span(f.predicted_gpu_hours),
            "remaining_trials": f.remaining, "eta_hours": eta, "eta_workers": running if eta else None,
            "limits": limits, "stopped": bool(state and state.stopped_at),
            "stopped_at": None if state is None else state.stopped_at,
            "stopped_reason": None if state is None else state.stopped_reason,
            "sources": sorted({g.source for g in f.groups if g.remaining})}


def _energy_cell(split: dict[str, float]) -> str:
    parts = [f"{j / 1e3:.2f} {src}" for src, j in sorted(split.items())]
    return " + ".join(parts) if len(parts) > 1 else f"{sum(split.values()) / 1e3:.2f}"


def energy_summary(doc: dict[str, Any]) -> str:
    """``1.234 Wh simulated`` / ``Wh measured (nvml)`` / both, for the status line."""
    parts = [f"{e['energy_j'] / 3.6e3:.3f} Wh {e['kind']}" + (f" ({e['source']})" if e["kind"] == "measured" else "")
             for e in doc["power_sources"]]
    return " + ".join(parts) if parts else "no energy yet"


def print_status(console: Console, doc: dict[str, Any]) -> None:
    c = doc["campaign"]
    trains = c.get("workload", "nasbench101") == "nasbench101"  # other workloads have no epoch budget
    what = "" if trains else f"{c['workload']} workload, "
    table = Table(title=f"campaign {c['name']} ({what}sweep {c['sweep']}, created {c['created_at']})")
    for col in ("GPU type", "epochs", "pending", "running", "done", "failed", "cancelled", "energy (kJ)",
                "power source"):
        table.add_column(col, justify="left" if col in ("GPU type", "power source") else "right")
    for r in doc["rows"]:
        table.add_row(r["gpu_type"], str(r["epochs"]) if trains else "-", *(str(r[s]) for s in STATES),
                      _energy_cell(r["energy_j_by_source"]), ", ".join(sorted(r["energy_j_by_source"])) or "-")
    console.print(table)
    t = doc["totals"]
    others = ", ".join(f"{n} {status}" for status, n in t["attempts"].items() if status not in ("done", "running"))
    console.print(f"{t['done']}/{t['trials']} trials done; {energy_summary(doc)} so far"
                  + (f"; attempts not done: {others}" if others else ""))
    b = doc.get("budget")
    if b:
        p = b["predicted_kwh"]
        line = f"measured {b['measured_kwh']:.4g} kWh / {b['measured_gpu_hours']:.4g} GPU-hours"
        if b["remaining_trials"]:
            line += (f"; predicted for the {b['remaining_trials']} trial(s) left {p['mid']:.4g} kWh "
                     f"({p['low']:.4g}-{p['high']:.4g}), {b['predicted_gpu_hours']['mid']:.4g} GPU-hours "
                     f"({', '.join(b['sources'])})")
        if b["eta_hours"]:
            e = b["eta_hours"]
            line += f"; ETA {e['mid']:.3g} h ({e['low']:.3g}-{e['high']:.3g}) at {b['eta_workers']} running"
        if b["limits"]:
            line += "; budget " + ", ".join(f"{k}={v:g}" for k, v in b["limits"].items() if v is not None)
        console.print(line, markup=False)
        if b["stopped"]:
            console.print(f"{b['stopped_reason']} (resume with a larger budget continues)", style="red", markup=False)
    w = doc.get("workers")
    if w and w["per_gpu"]:
        live = "; ".join(f"{g}: {e['queued']} queued, {e['running']} running ({e['launcher']}, "
                         f"{e['workers_submitted']} submitted in {e['submissions']} submission(s))"
                         for g, e in w["per_gpu"].items())
        console.print(f"workers: {live}" if w["scheduler_answered"]
                      else f"workers: the scheduler does not answer (squeue); submitted: {live}")


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    cfg = compose(args.overrides)
    reader = open_reader(cfg)
    info = reader.campaign(args.name)
    if args.json:
        print(json.dumps(status_document(reader, info), indent=1, default=utc_text))
        return 0
    if not args.watch:
        print_status(console, status_document(reader, info))
        return 0
    try:
        while True:
            doc = status_document(reader, info)
            if console.is_terminal:
                console.clear()
            print_status(console, doc)
            if not doc["totals"]["pending"] + doc["totals"]["running"]:
                return 0
            threading.Event().wait(args.interval)  # the refresh interval of a display
    except KeyboardInterrupt:  # Ctrl-C ends watching, quietly
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
    if info.config.get("workload", "nasbench101") == "layers":  # the workload it was planned with
        from analysis.layers import analyze_layers

        page = analyze_layers(reader, info, out)
        console.print(f"report written: {page} (predictor: {out / 'layer_predictor.pkl'})")
        return 0
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


def _verbosity(p: argparse.ArgumentParser, default: Any) -> None:
    """-q and -v, accepted before the command and after it (``default`` SUPPRESS on a command's
    own parser, so that it does not undo a flag given before the command)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
    group.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="print only errors and the final summary")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="campaign",
        description="Energy measurement campaigns for deep-learning training. "
        "Every command accepts Hydra overrides such as root=DIR db.url=URL +sweep=NAME.",
    )
    _verbosity(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str, with_name: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _verbosity(p, argparse.SUPPRESS)
        if with_name:
            p.add_argument("name", help="campaign name")
        p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +sweep=smoke seeds=5 root=DIR")
        p.set_defaults(fn=fn)
        return p

    add("plan", cmd_plan, "print the plan of a sweep (trials per GPU type and epoch budget) and its estimate "
        "(GPU-hours, kWh, CO2eq); runs nothing")
    launch = add("launch", cmd_launch, "plan, record and run a sweep (campaign launch +sweep=smoke); Ctrl-C "
                 "cancels the running attempts (their trials back to pending) and says how to resume")
    resume = add("resume", cmd_resume, "run again what is not done: never started, failed, stale, cancelled",
                 with_name=True)
    for p in (launch, resume):
        p.add_argument("--max-failures", type=int, default=None, help="stop a worker after N failed trials in a row")
        p.add_argument("--wait", action="store_true", help="follow the campaign with a live progress display")
    launch.add_argument("--dry-run", action="store_true",
                        help="plan, estimate (GPU-hours, kWh, CO2eq) and check the budget; record and run nothing")
    resume.add_argument("--stale-after", type=float, default=None, metavar="SECONDS",
                        help="a running trial without heartbeat this long is stale (default launcher.stale_after_s)")
    add("ingest", cmd_ingest, "store result files that did not reach the database", with_name=True)
    status = add("status", cmd_status, "trials by state and energy so far (simulated energy labelled simulated), "
                 "per GPU type x epoch budget", with_name=True)
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true",
                       help="print one JSON document (campaign, rows, totals, power_sources) for scripts")
    shown.add_argument("--watch", action="store_true",
                       help="refresh until nothing is pending or running (Ctrl-C ends it)")
    status.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                        help="seconds between refreshes with --watch (default 5)")
    add("list", cmd_list, "list the campaigns in a database")
    add("analyze", cmd_analyze, "write the report folder ROOT/NAME/report/", with_name=True)
    cli_db.register(sub, lambda p: _verbosity(p, argparse.SUPPRESS))
    cli_bench.register(sub, lambda p: _verbosity(p, argparse.SUPPRESS))
    db = sub.add_parser("db", help="database maintenance", description="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = dbsub.add_parser("upgrade", help="create or migrate the schema to the newest revision")
    _verbosity(up, argparse.SUPPRESS)
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


def configure_logging(verbose: bool, quiet: bool) -> None:
    """Our warnings on stderr (debug with -v, errors only with -q); other packages' lines only
    with -v (Carbontracker's go to each trial's log folder)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    from campaign.launch import Interrupted

    raise Interrupted(signum)


def _exit_now_if_threads_linger(code: int) -> None:
    """After an interrupt: a thread that is not a daemon (a library's) must not hold the exit up."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    configure_logging(args.verbose, args.quiet)
    # Piped output (logs, CI, scripts) gets whole lines and unsqueezed tables.
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return int(args.fn(args, console))
    except KeyboardInterrupt as exc:
        from campaign.launch import Interrupted

        stop = Interrupted.of(exc, getattr(exc, "hint", None))
        print(f"campaign: interrupted by {stop.signal_name}" + (f"; {stop.hint}" if stop.hint else ""),
              file=sys.stderr, flush=True)
        if argv is None:
            _exit_now_if_threads_linger(stop.exit_code)
        return stop.exit_code
    except CampaignError as exc:
        sys.stdout.flush()  # what was printed comes first: the error is the last line
        print(f"campaign: error: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
