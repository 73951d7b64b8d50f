"""``campaign``: plan, launch, watch and analyse energy measurement campaigns.

Every command takes Hydra overrides (``key=value``, ``+sweep=NAME``); bad input is refused
with one line naming the value and what is allowed, before anything runs or is recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from campaign.cli_db import register as register_db_commands
from campaign.config import ConfigError, compose, db_url, validate

if TYPE_CHECKING:
    from campaign.plan import Plan
    from db.store import ResultStore

def _errors() -> tuple[type[BaseException], ...]:
    """Exceptions that carry a user-facing one-line message (imported lazily)."""
    from analysis.report import AnalysisError
    from db.engine import DatabaseError
    from db.store import CampaignExists, CampaignNotFound
    from jobs.cell import CellSpecError
    from jobs.data import DataError
    from jobs.meters.base import MeterError

    return (ConfigError, DatabaseError, CampaignExists, CampaignNotFound, CellSpecError, DataError, MeterError,
            AnalysisError)


def _store(cfg: dict[str, Any]) -> ResultStore:
    from db.engine import make_engine
    from db.store import ResultStore

    return ResultStore(make_engine(db_url(cfg), echo=bool(cfg["db"]["echo"])))


def _plan(cfg: dict[str, Any]) -> Plan:
    from campaign.plan import make_plan, resolve_architectures

    validate(cfg)
    return make_plan(cfg, resolve_architectures(cfg))


def _print_plan(console: Console, cfg: dict[str, Any], plan: Any) -> None:
    counts = plan.counts()
    table = Table(title=f"plan for sweep {cfg['sweep']}")
    table.add_column("GPU type")
    for e in cfg["epochs"]:
        table.add_column(f"{e} epochs", justify="right")
    table.add_column("total", justify="right")
    for g in cfg["gpus"]:
        row = [counts.get((g, e), 0) for e in cfg["epochs"]]
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
        f"{len(plan.archs)} architectures x {len(cfg['epochs'])} epoch budgets x {len(cfg['gpus'])} GPU types "
        f"x {cfg['seeds']} seeds = {len(plan.trials):,} trials"
    )


def preflight(cfg: dict[str, Any]) -> None:
    """What must hold before anything is recorded or submitted: data present, devices usable."""
    from jobs.data import DatasetConfig, check_dataset

    check_dataset(DatasetConfig(**cfg["dataset"]))
    preflight_launcher(cfg)


def preflight_launcher(cfg: dict[str, Any]) -> None:
    """The launcher can take every GPU type of the sweep (checked before anything is recorded)."""
    from campaign.config import gpu_types

    if cfg["launcher"]["name"] == "slurm":
        from campaign.launchers import slurm

        slurm.preflight(gpu_types(), list(cfg["gpus"]))
    elif cfg["launcher"]["name"] == "ray":
        from campaign.launchers import ray

        ray.preflight(cfg["launcher"], gpu_types(), list(cfg["gpus"]))
    elif cfg["launcher"]["name"] == "local":
        wants_gpu = [g for g in cfg["gpus"] if g != "cpu"]
        if wants_gpu or cfg["device"] == "cuda":
            import torch

            if not torch.cuda.is_available():
                what = f"GPU type {wants_gpu[0]!r}" if wants_gpu else "device=cuda"
                raise ConfigError(
                    f"{what} needs a GPU but none is visible here (torch.cuda.is_available() is False); "
                    "use gpus=[cpu] for a local run, or launcher=slurm / launcher=ray to run on GPU nodes"
                )


def cmd_plan(args: argparse.Namespace, console: Console) -> int:
    cfg = compose(args.overrides)
    _print_plan(console, cfg, _plan(cfg))
    return 0


def cmd_launch(args: argparse.Namespace, console: Console) -> int:
    from campaign.revision import code_revision

    cfg = compose(args.overrides)
    plan = _plan(cfg)
    preflight(cfg)
    name = cfg["name"] or f"{cfg['sweep']}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    cfg["name"] = name
    root = str(Path(cfg["root"]).expanduser().resolve())
    store = _store(cfg)
    info_id = store.create_campaign(name, cfg["sweep"], root, code_revision(), cfg, plan.archs, plan.trials)
    console.print(f"campaign [bold]{name}[/]: {len(plan.trials)} trials recorded in {_redacted(cfg)}")
    submit: dict[str, list[str]] = {}
    epochs_of: dict[str, int] = {}
    for t in plan.trials:
        submit.setdefault(t.gpu_type, []).append(t.trial_key)
        epochs_of[t.trial_key] = t.epochs
    return dispatch(cfg, store, info_id, name, root, submit, epochs_of, args, console)


def dispatch(cfg: dict[str, Any], store: Any, campaign_id: int, name: str, root: str,
             submit: dict[str, list[str]], epochs_of: dict[str, int], args: argparse.Namespace,
             console: Console) -> int:
    """Hand the trials to the configured launcher; follow them when asked (or when it must)."""
    from campaign.config import gpu_types
    from campaign.launchers import ray as ray_launcher
    from campaign.launchers import slurm as slurm_launcher
    from campaign.launchers.base import worker_specs
    from campaign.launchers.local import follow, run_local

    launcher = cfg["launcher"]
    gpus = gpu_types()
    max_failures = int(args.max_failures or cfg["max_failures"])
    total = sum(len(v) for v in submit.values())
    url = db_url(cfg)
    if launcher["name"] == "local":
        summaries = run_local(store, url, name, root, list(submit), total, max_failures, console)
        for s in summaries:
            if s.stopped_reason != "no pending trials left":
                console.print(f"[red]worker stopped: {s.stopped_reason}[/]")
        console.print(f"next: campaign status {name} root={cfg['root']}  |  campaign analyze {name} root={cfg['root']}")
        return 0 if all(s.failed == 0 for s in summaries) else 1
    specs = worker_specs(cfg, gpus, name, root, url, submit, epochs_of, max_failures)
    if launcher["name"] == "slurm":
        submitted = slurm_launcher.submit(specs, launcher, gpus, name, slurm_launcher.job_folder(launcher, root, name))
        waiter = slurm_launcher.wait
    else:
        submitted = ray_launcher.submit(specs, launcher, gpus)
        waiter = ray_launcher.wait
    for gpu_type, ids in submitted.jobs.items():
        console.print(f"{gpu_type}: {len(ids)} worker task(s) on {submitted.launcher}: {', '.join(map(str, ids))}")
    if args.wait or launcher["wait"] or launcher["name"] == "ray":
        rows = follow(store, campaign_id, total, lambda: waiter(submitted), console)
        done = sum(r["done"] for r in rows)
        console.print(f"{done} trials of the campaign done")
        return 0
    console.print(f"submitted; follow with: campaign status {name} root={cfg['root']}"
                  f"  (resume after a crash: campaign resume {name})")
    return 0


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from campaign.resume import apply, decide

    cfg = compose(args.overrides)
    store = _store(cfg)
    info = store.campaign(args.name)
    recorded = info.config
    cfg["launcher"] = resume_launcher(recorded["launcher"], cfg["launcher"], _override_keys(args))
    validate({**recorded, "launcher": cfg["launcher"]})
    preflight_launcher({**recorded, "launcher": cfg["launcher"]})
    root = campaign_root(args, cfg, info)
    run_cfg = {**recorded, "launcher": cfg["launcher"], "root": root}
    stored = ingest_files(store, root, info.name)
    if stored:
        console.print(f"stored {stored} result file(s) that had not reached the database")
    stale_after_s = float(cfg["launcher"]["stale_after_s"] if args.stale_after is None else args.stale_after)
    now = store.now()
    rows = store.trial_states(info.id)
    actions = apply(store, info.id, decide(rows, now, stale_after_s), now, stale_after_s)
    console.print(f"campaign {info.name}: {actions.done} done, {len(actions.still_running)} still running, "
                  f"{len(actions.mark_stale)} stale, {len(actions.reopen)} failed/cancelled reopened; "
                  f"{actions.to_run} trial(s) to run")
    if actions.to_run == 0:
        return 0
    epochs_of = {r["trial_key"]: r["epochs"] for r in rows}
    return dispatch({**run_cfg, "db": cfg["db"]}, store, info.id, info.name, root, actions.submit, epochs_of,
                    args, console)


def resume_launcher(recorded: dict[str, Any], composed: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """The launcher a resume runs with: the recorded one unless ``launcher=NAME`` names another;
    ``launcher.KEY=...`` (``launcher.KEY.SUB=...`` too) overrides that key of the recorded one."""
    if "launcher" in keys:
        return composed
    changed = {k.split(".")[1] for k in keys if k.startswith("launcher.")}
    return {**recorded, **{k: v for k, v in composed.items() if k in changed}}


def _override_keys(args: argparse.Namespace) -> set[str]:
    """The keys the command line's Hydra overrides set (``+``, ``++`` and ``~`` prefixes off)."""
    return {o.lstrip("+~").split("=", 1)[0] for o in args.overrides}


def _given(args: argparse.Namespace, key: str) -> bool:
    return key in _override_keys(args)


def campaign_root(args: argparse.Namespace, cfg: dict[str, Any], info: Any) -> str:
    """The campaign's folder root: ``root=`` where the command line gives one, else the root
    recorded (resolved) at launch, whatever folder the command runs from."""
    return str(Path(cfg["root"]).expanduser().resolve()) if _given(args, "root") else str(info.root)


def ingest_files(store: Any, root: str, campaign: str) -> int:
    """Store every result file of the campaign not yet in the database (idempotent)."""
    from jobs.results import iter_results

    return sum(bool(store.ingest(result)) for _, result in iter_results(root, campaign))


def cmd_ingest(args: argparse.Namespace, console: Console) -> int:
    cfg = compose(args.overrides)
    store = _store(cfg)
    info = store.campaign(args.name)
    root = campaign_root(args, cfg, info)
    console.print(f"stored {ingest_files(store, root, info.name)} new result file(s) of {info.name}")
    return 0


def _redacted(cfg: dict[str, Any]) -> str:
    from db.engine import redact

    return redact(db_url(cfg))


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    cfg = compose(args.overrides)
    store = _store(cfg)
    info = store.campaign(args.name)
    rows = store.status_rows(info.id)
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
    rows = _store(cfg).list_campaigns()
    table = Table(title=f"campaigns in {_redacted(cfg)}")
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
    store = _store(cfg)
    info = store.campaign(args.name)
    out = Path(campaign_root(args, cfg, info)) / info.name / "report"
    files = write_report(store, info, out, cfg["analysis"], gpu_types())
    for model in files.models:
        console.print(f"surrogate model: {model}")
    console.print(f"report written: {files.page} and {files.html.name} ({len(files.figures)} figures, "
                  f"{len(files.tables)} tables in {files.folder / 'tables'}) in {files.seconds:.0f} s")
    return 0


def cmd_db(args: argparse.Namespace, console: Console) -> int:
    from db.engine import make_engine
    from db.migrate import current_revision, upgrade

    cfg = compose(args.overrides)
    engine = make_engine(db_url(cfg))
    upgrade(engine)
    console.print(f"database {_redacted(cfg)} is at revision {current_revision(engine)}")
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
    register_db_commands(sub)
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
    except Exception as exc:
        if isinstance(exc, _errors()):
            print(f"campaign: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
