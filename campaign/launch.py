"""The launch path, in one direction: compose (done by the caller), plan, check, record, hand over
to the launcher, follow. ``resume`` takes the same path from a recorded campaign: it stores the
result files that never reached the database, decides what to run again, and hands that over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from campaign.config import CampaignConfig, LauncherConfig, db_url, gpu_types
from campaign.session import campaign_paths, open_store, override_keys, redacted_url
from db.paths import CampaignPaths

if TYPE_CHECKING:
    from campaign.launchers.base import Launcher
    from campaign.plan import Plan
    from db.store import ResultStore


@dataclasses.dataclass(frozen=True)
class Handover:
    """How the command line asked to run: follow to the end, and the failure limit of a worker."""

    follow: bool = False
    max_failures: int | None = None


def plan(cfg: CampaignConfig) -> Plan:
    """The campaign's architectures and trials (pure; ConfigError on a bad cell)."""
    from campaign.plan import make_plan, resolve_architectures

    return make_plan(cfg, resolve_architectures(cfg))


def launch(cfg: CampaignConfig, console: Console, how: Handover) -> int:
    """Plan, check (data, launcher), record the campaign and its trials, hand them over."""
    from campaign.launchers import make_launcher
    from campaign.revision import code_revision
    from jobs.data import check_dataset

    the_plan = plan(cfg)
    name = cfg.name or f"{cfg.sweep}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    cfg = dataclasses.replace(cfg, name=name)
    paths = CampaignPaths.of(cfg.root, name)
    check_dataset(cfg.dataset)
    launcher = make_launcher(cfg, paths)
    launcher.preflight(list(cfg.gpus))
    store = open_store(cfg)
    campaign_id = store.create_campaign(name, cfg.sweep, str(paths.root), code_revision(), cfg.to_dict(),
                                        the_plan.archs, the_plan.trials)
    console.print(f"campaign [bold]{name}[/]: {len(the_plan.trials)} trials recorded in {redacted_url(cfg)}")
    submit: dict[str, list[str]] = {}
    for t in the_plan.trials:
        submit.setdefault(t.gpu_type, []).append(t.trial_key)
    epochs_of = {t.trial_key: t.epochs for t in the_plan.trials}
    return hand_over(cfg, launcher, store, campaign_id, paths, submit, epochs_of, how, console)


def hand_over(cfg: CampaignConfig, launcher: Launcher, store: ResultStore, campaign_id: int, paths: CampaignPaths,
              submit: dict[str, list[str]], epochs_of: dict[str, int], how: Handover, console: Console) -> int:
    """Give the trials to the launcher; follow them when asked (or when the launcher must be)."""
    from campaign.launchers.base import worker_specs
    from campaign.launchers.follow import follow

    max_failures = how.max_failures or cfg.max_failures
    total = sum(len(v) for v in submit.values())
    specs = worker_specs(cfg, gpu_types(), paths, db_url(cfg), submit, epochs_of, max_failures)
    submitted = launcher.submit(specs)
    name, root = paths.name, cfg.root
    if not launcher.in_process:
        for gpu_type, ids in submitted.jobs.items():
            console.print(f"{gpu_type}: {len(ids)} worker task(s) on {submitted.launcher}: {', '.join(map(str, ids))}")
    if not (how.follow or cfg.launcher.wait or launcher.must_follow):
        console.print(f"submitted; follow with: campaign status {name} root={root}"
                      f"  (resume after a crash: campaign resume {name})")
        return 0
    rows, summaries = follow(store, campaign_id, total, lambda: launcher.wait(submitted), console)
    done = sum(r["done"] for r in rows)
    failed = sum(s.failed for s in summaries)
    console.print(f"{done} trials of the campaign done ({failed} failed in this launch)")
    for s in summaries:
        if s.stopped_reason != "no pending trials left":
            console.print(f"[red]worker {s.worker_id} stopped: {s.stopped_reason}[/]")
    console.print(f"next: campaign status {name} root={root}  |  campaign analyze {name} root={root}")
    return 0 if failed == 0 else 1


def resume_launcher(recorded: LauncherConfig, composed: LauncherConfig, keys: set[str]) -> LauncherConfig:
    """The launcher a resume runs with: the recorded one unless ``launcher=NAME`` names another;
    ``launcher.KEY=...`` (``launcher.KEY.SUB=...`` too) overrides that key of the recorded one."""
    if "launcher" in keys:
        return composed
    changed = {k.split(".")[1] for k in keys if k.startswith("launcher.")}
    return dataclasses.replace(recorded, **{k: getattr(composed, k) for k in changed})


def recorded_config(config: dict[str, Any]) -> CampaignConfig:
    """A campaign's recorded configuration, typed. Its analysis settings are not read: a resume
    does not analyse, and ``campaign analyze`` takes them from its own command line."""
    return CampaignConfig.from_dict({k: v for k, v in config.items() if k != "analysis"})


def ingest_files(store: ResultStore, paths: CampaignPaths) -> int:
    """Store every result file of the campaign not yet in the database (idempotent)."""
    from jobs.results import iter_results

    return sum(bool(store.ingest(result)) for _, result in iter_results(paths))


def resume(name: str, cfg: CampaignConfig, overrides: Sequence[str], console: Console, how: Handover,
           stale_after_s: float | None = None) -> int:
    """Run again exactly what is not done: never started, failed, cancelled, stale (never a done trial)."""
    from campaign.launchers import make_launcher
    from campaign.resume import apply, decide

    store = open_store(cfg)
    info = store.campaign(name)
    paths = campaign_paths(overrides, cfg, info)
    recorded = recorded_config(info.config)
    run_cfg = dataclasses.replace(
        recorded, launcher=resume_launcher(recorded.launcher, cfg.launcher, override_keys(overrides)),
        db=cfg.db, root=str(paths.root), name=info.name)
    launcher = make_launcher(run_cfg, paths)
    launcher.preflight(list(run_cfg.gpus))
    stored = ingest_files(store, paths)
    if stored:
        console.print(f"stored {stored} result file(s) that had not reached the database")
    stale = run_cfg.launcher.stale_after_s if stale_after_s is None else stale_after_s
    now = store.now()
    rows = store.trial_states(info.id)
    actions = apply(store, info.id, decide(rows, now, stale), now, stale)
    console.print(f"campaign {info.name}: {actions.done} done, {len(actions.still_running)} still running, "
                  f"{len(actions.mark_stale)} stale, {len(actions.reopen)} failed/cancelled reopened; "
                  f"{actions.to_run} trial(s) to run")
    if actions.to_run == 0:
        return 0
    epochs_of = {r["trial_key"]: r["epochs"] for r in rows}
    return hand_over(run_cfg, launcher, store, info.id, paths, actions.submit, epochs_of, how, console)

