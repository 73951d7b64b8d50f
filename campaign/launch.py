"""The launch path, in one direction: compose (done by the caller), plan, check, record, hand over
to the launcher, follow. ``resume`` takes the same path from a recorded campaign: it stores the
result files that never reached the database, decides what to run again, and hands that over.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import shlex
import signal
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

from campaign.config import CampaignConfig, LauncherConfig, db_url, gpu_types
from campaign.launchers.base import close_ended, live_total, workers_needed
from campaign.session import campaign_paths, open_store, override_keys, redacted_url
from db.paths import CampaignPaths

if TYPE_CHECKING:
    from campaign.launchers.base import Launcher, Submitted
    from campaign.plan import Plan
    from db.store import ResultStore
    from jobs.worker import WorkerSpec, WorkerSummary


@dataclasses.dataclass(frozen=True)
class Handover:
    """How the command line asked to run: follow to the end, the failure limit of a worker, and
    how much to say (``quiet``: only errors and the final summary; ``display``: the follow
    display, ``live``/``lines``/``quiet``, chosen from the terminal when None)."""

    follow: bool = False
    max_failures: int | None = None
    quiet: bool = False
    display: str | None = None
    dry_run: bool = False  # plan, estimate and print; record and run nothing

    def note(self, console: Console, text: str) -> None:
        """Print a line that is not the final summary (left out with ``-q``)."""
        if not self.quiet:
            console.print(text)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a command; ``hint`` says what was done and what continues, where
    anything does (the command line prints it on one line)."""

    def __init__(self, signum: int = signal.SIGINT, hint: str | None = None) -> None:
        super().__init__(signum)
        self.signum = int(signum)
        self.hint = hint

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them

    @staticmethod
    def of(exc: BaseException, hint: str | None) -> Interrupted:
        """``exc`` (an Interrupted, or a plain KeyboardInterrupt: SIGINT) with ``hint``."""
        return Interrupted(getattr(exc, "signum", signal.SIGINT), hint)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM ignored while inside (a second Ctrl-C must not cut a clean-up short);
    a no-op outside the main thread."""
    saved: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for held, handler in saved.items():
            signal.signal(held, handler)


def where(cfg: CampaignConfig) -> str:
    """``root=... db.url=...`` for the hints a command prints (the password left out)."""
    return f"root={shlex.quote(str(cfg.root))} db.url={shlex.quote(redacted_url(cfg))}"


def resume_hint(cfg: CampaignConfig, name: str) -> str:
    return f"continue with: campaign resume {shlex.quote(name)} {where(cfg)}"


def plan(cfg: CampaignConfig) -> Plan:
    """The campaign's architectures and trials (pure; ConfigError on a bad cell)."""
    from campaign.plan import plan_campaign

    return plan_campaign(cfg)


def launch(cfg: CampaignConfig, console: Console, how: Handover) -> int:
    """Plan, estimate (and keep the budget), check (data, launcher), record the campaign and its
    trials, hand them over. ``how.dry_run``: plan, estimate and print only."""
    from campaign.checks import check_before_record
    from campaign.estimate import campaign_estimate, check_budget, print_estimate, recordable
    from campaign.launchers import make_launcher
    from campaign.revision import code_revision
    from jobs.data import check_dataset

    the_plan = plan(cfg)
    estimate = campaign_estimate(cfg, the_plan)
    if how.dry_run or not how.quiet:
        print_estimate(console, estimate)
    warning = check_budget(cfg, estimate)  # BudgetExceeded (one line) before anything is recorded
    if warning:
        console.print(warning, markup=False)
    if how.dry_run:
        pending: dict[str, int] = {}
        for t in the_plan.trials:
            pending[t.gpu_type] = pending.get(t.gpu_type, 0) + 1
        print_submission(console, cfg, planned_submission(cfg, pending), pending, estimate)
        console.print(f"dry run: {len(the_plan.trials)} trials planned and estimated; nothing recorded or submitted")
        return 0
    name = cfg.name or f"{cfg.sweep}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
    cfg = dataclasses.replace(cfg, name=name)
    paths = CampaignPaths.of(cfg.root, name)
    if cfg.workload == "nasbench101":  # only training reads a data set
        check_dataset(cfg.dataset)
    launcher = make_launcher(cfg, paths)
    launcher.preflight(list(cfg.gpus))
    check_before_record(cfg, paths)  # root, meter, database, folder marker: before the store is opened
    try:
        store = open_store(cfg)
        campaign_id = store.create_campaign(name, cfg.sweep, str(paths.root), code_revision(), cfg.to_dict(),
                                            the_plan.archs, the_plan.trials)
    except KeyboardInterrupt as exc:  # recorded whole or not at all (one transaction)
        raise Interrupted.of(exc, f"if `campaign status {name} {where(cfg)}` shows it, {resume_hint(cfg, name)}") \
            from None
    how.note(console, f"campaign [bold]{name}[/]: {len(the_plan.trials)} trials recorded in {redacted_url(cfg)}")
    keep_budget(store, campaign_id, cfg, recordable(estimate), "launch")
    pending = store.pending_counts(campaign_id)
    workers = workers_needed(pending, {}, cfg.launcher.max_workers, one_each=launcher.in_process)
    return hand_over(cfg, launcher, store, campaign_id, paths, workers, len(the_plan.trials), how, console, "launch")


def planned_submission(cfg: CampaignConfig, pending: Mapping[str, int]) -> dict[str, list[int]]:
    """Per GPU type, the worker tasks a launch would submit: Slurm's arrays (``plan_arrays``, with
    ``launcher.max_array_size``, else the cluster's MaxArraySize where reachable, else 1001), one
    pool of Ray tasks, or one local worker."""
    from campaign.launchers.slurm import max_array_size, plan_arrays

    name = str(cfg.launcher.name)
    if name == "slurm":
        return plan_arrays(pending, cfg.launcher.max_workers, max_array_size(cfg.launcher))
    workers = workers_needed(pending, {}, cfg.launcher.max_workers, one_each=name == "local")
    return {g: [n] for g, n in workers.items()}


def print_submission(console: Console, cfg: CampaignConfig, arrays: Mapping[str, list[int]],
                     pending: Mapping[str, int], estimate: Any) -> None:
    """What a launch would submit per GPU type, beside the estimate's hours."""
    from rich.table import Table

    gpu_h: dict[str, list[float]] = {}
    wall_h: dict[str, list[float]] = {}
    for line in getattr(estimate, "lines", []):
        for into, value in ((gpu_h, line.gpu_hours), (wall_h, line.wall_hours)):
            lo_hi = into.setdefault(line.gpu_type, [0.0, 0.0])
            lo_hi[0] += value.low
            lo_hi[1] += value.high
    kind = {"slurm": "Slurm arrays (tasks each)", "ray": "Ray tasks", "local": "local workers"}[str(cfg.launcher.name)]
    table = Table(title=f"would submit ({cfg.launcher.name}; launcher.max_workers={cfg.launcher.max_workers})")
    for col in ("GPU type", "trials", kind, "tasks", "GPU-hours (est.)", "wall hours (est.)"):
        table.add_column(col, justify="left" if col == "GPU type" else "right")
    for g, sizes in arrays.items():
        span = {k: ("-" if g not in d else f"{d[g][0]:.3g}" if d[g][0] == d[g][1] else f"{d[g][0]:.3g}-{d[g][1]:.3g}")
                for k, d in (("gpu", gpu_h), ("wall", wall_h))}
        table.add_row(g, f"{pending.get(g, 0):,}", " + ".join(map(str, sizes)) or "-", str(sum(sizes)),
                      span["gpu"], span["wall"])
    console.print(table)


def submit_workers(cfg: CampaignConfig, launcher: Launcher, store: ResultStore, campaign_id: int,
                   paths: CampaignPaths, workers: Mapping[str, int], max_failures: int, by: str,
                   max_seq: int | None = None) -> tuple[Submitted, dict[str, list[WorkerSpec]]]:
    """Submit ``workers[g]`` pull workers per GPU type and record each GPU type's submission
    (``db.submissions``: numbered first, filled with the scheduler's ids after). ``max_seq``: only
    while the GPU type has had fewer submissions (an automatic resubmission's limit)."""
    from campaign.launchers.base import Submitted, worker_specs

    seqs: dict[str, int] = {}
    for g, n in workers.items():
        if n <= 0:
            continue
        seq = store.reserve_submission(campaign_id, g, launcher.name, by, max_seq=max_seq)
        if seq is not None:
            seqs[g] = seq
    if not seqs:
        return Submitted(launcher.name, {}), {}
    specs = worker_specs(cfg, gpu_types(), paths, db_url(cfg), {g: workers[g] for g in seqs}, seqs, max_failures,
                         time_limited=launcher.time_limited)
    try:
        submitted = launcher.submit(specs)
    except BaseException:
        for g, seq in seqs.items():
            store.drop_submission(campaign_id, g, seq)
        raise
    for g, seq in seqs.items():
        arrays = submitted.arrays.get(g, [])
        store.fill_submission(campaign_id, g, seq, [a for a, _ in arrays], [n for _, n in arrays], len(specs[g]))
    return submitted, specs


def hand_over(cfg: CampaignConfig, launcher: Launcher, store: ResultStore, campaign_id: int, paths: CampaignPaths,
              workers: dict[str, int], total: int, how: Handover, console: Console, by: str) -> int:
    """Submit the pull workers; follow them when asked (or when the launcher must be), then, while
    trials stay pending with no live worker for them, submit again (``resubmit_until_done``).
    An interrupt (SIGINT, SIGTERM) while following stops this launch's work (``interrupt``)."""
    from campaign.launchers.follow import Display, follow

    max_failures = how.max_failures or cfg.max_failures
    name = paths.name
    try:
        submitted, specs = submit_workers(cfg, launcher, store, campaign_id, paths, workers, max_failures, by)
    except KeyboardInterrupt as exc:
        raise Interrupted.of(exc, f"its trials are recorded and pending; {resume_hint(cfg, name)}") from None
    if not launcher.in_process:
        for gpu_type, ids in submitted.jobs.items():
            arrays = submitted.arrays.get(gpu_type, [])
            how.note(console, f"{gpu_type}: {len(ids)} worker task(s) on {submitted.launcher}"
                     + (f" in {len(arrays)} array(s) " + " + ".join(str(n) for _, n in arrays)
                        if submitted.launcher == "slurm" else "")
                     + f": {', '.join(a for a, _ in arrays)}")
    if not (how.follow or cfg.launcher.wait or launcher.must_follow):
        console.print(f"submitted; follow with: campaign status {name} {where(cfg)}"
                      f"  (resume after a crash: campaign resume {name} {where(cfg)})")
        return 0
    display = Display(how.display) if how.display else Display.choose(how.quiet, console.file)
    current: dict[str, Any] = {"submitted": submitted, "specs": specs}
    try:
        rows, summaries = follow(store, campaign_id, total,
                                 lambda: resubmit_until_done(cfg, launcher, store, campaign_id, paths, max_failures,
                                                             current), console, display=display)
    except KeyboardInterrupt as exc:
        raise interrupt(exc, cfg, launcher, current["submitted"], store, campaign_id, current["specs"]) from None
    done = sum(r["done"] for r in rows)
    failed = sum(s.failed for s in summaries)
    console.print(f"{done} trials of the campaign done ({failed} failed in this launch)")
    for s in summaries:
        if s.stopped_reason != "no pending trials left":
            console.print(f"[red]worker {s.worker_id} stopped: {s.stopped_reason}[/]")
    stopped = budget_stop(store, campaign_id)
    if stopped is not None:
        console.print(f"{stopped}; {resume_hint(cfg, name)} with a larger budget (e.g. budget.max_kwh=...)",
                      markup=False)
        return BUDGET_STOPPED
    console.print(f"next: campaign status {name} {where(cfg)}  |  campaign analyze {name} {where(cfg)}")
    return 0 if failed == 0 else 1


BUDGET_STOPPED = 3  # the exit status of a launch or resume its budget stopped


def keep_budget(store: ResultStore, campaign_id: int, cfg: CampaignConfig, groups: Sequence[Mapping[str, Any]],
                purpose: str) -> None:
    """Record the estimate made before this launch or resume (per GPU type x epoch budget, per
    trial) and the campaign's budget limits, if it has any (setting them lifts a budget stop)."""
    from db import budget

    budget.record_estimate(store.engine, campaign_id, purpose, groups)
    b = cfg.budget
    limits = budget.Limits(b.max_kwh, b.max_gpu_hours, b.max_co2_kg, cfg.meter.carbon_intensity_g_per_kwh,
                           cfg.estimate.pue)
    if limits.any:
        budget.set_limits(store.engine, campaign_id, limits)


def budget_stop(store: ResultStore, campaign_id: int) -> str | None:
    """Why the budget stopped the campaign (None: it did not)."""
    from db import budget

    state = budget.limits_of(store.engine, campaign_id)
    return None if state is None or state.stopped_at is None else str(state.stopped_reason)


def resubmit_until_done(cfg: CampaignConfig, launcher: Launcher, store: ResultStore, campaign_id: int,
                        paths: CampaignPaths, max_failures: int, current: dict[str, Any]) -> list[WorkerSummary]:
    """Wait for the submitted workers, then for every worker the scheduler still holds (workers
    resubmit themselves on Slurm); while trials stay pending and no live worker is left for them,
    submit the workers still needed, up to ``launcher.max_submissions`` per GPU type."""
    import time

    summaries: list[WorkerSummary] = []
    delay = 1.0
    while True:
        summaries += launcher.wait(current["submitted"])
        live = launcher.live_workers(store.submissions(campaign_id))
        if live is None or any(live_total(live).values()):  # workers submitted by workers, or no answer
            time.sleep(delay)  # polling the scheduler, not synchronisation
            delay = min(2 * delay, 15.0)
            current["submitted"] = dataclasses.replace(current["submitted"], jobs={}, handles={}, arrays={})
            continue
        delay = 1.0
        close_dead_attempts(store, campaign_id, launcher)  # killed tasks' attempts: their trials pending again
        if budget_stop(store, campaign_id) is not None:  # the budget stopped it: a resume with a larger one goes on
            return summaries
        pending = store.pending_counts(campaign_id)
        workers = workers_needed(pending, {}, cfg.launcher.max_workers, one_each=launcher.in_process)
        if not workers:
            return summaries
        submitted, specs = submit_workers(cfg, launcher, store, campaign_id, paths, workers, max_failures, "follow",
                                          max_seq=cfg.launcher.max_submissions)
        if not specs:  # launcher.max_submissions reached for every GPU type still pending
            return summaries
        current["submitted"], current["specs"] = submitted, specs


def interrupt(exc: BaseException, cfg: CampaignConfig, launcher: Launcher, submitted: Submitted,
              store: ResultStore, campaign_id: int, specs: Mapping[str, Sequence[WorkerSpec]]) -> Interrupted:
    """Stop what this launch started after SIGINT or SIGTERM, and say how to go on.

    Where the work lives only as long as this process (local, Ray): the launcher drops its
    queued tasks and stops its running ones, and this launch's running attempts are marked
    ``cancelled`` with the reason, their trials back to pending (a worker still running sees that
    at its next heartbeat and abandons the attempt). Slurm tasks run on without this process:
    only the following stops."""
    stop = Interrupted.of(exc, None)
    name = cfg.name or ""
    if not launcher.must_follow:
        stop.hint = (f"stopped following; the {submitted.launcher} tasks run on "
                     f"(stop them: campaign cancel {shlex.quote(name)} {where(cfg)})")
        return stop
    with signals_held():
        launcher.cancel(submitted)
        worker_ids = [s.worker_id for group in specs.values() for s in group]
        cancelled = len(store.cancel_runs(campaign_id, worker_ids=worker_ids,
                                          reason=f"interrupted by {stop.signal_name}"))
    stop.hint = (f"{cancelled} running attempt(s) cancelled, their trials back to pending; "
                 f"{resume_hint(cfg, name)}")
    return stop


def resume_launcher(recorded: LauncherConfig, composed: LauncherConfig, keys: set[str]) -> LauncherConfig:
    """The launcher a resume runs with: the recorded one unless ``launcher=NAME`` names another;
    ``launcher.KEY=...`` (``launcher.KEY.SUB=...`` too) overrides that key of the recorded one."""
    if "launcher" in keys:
        return composed
    changed = {k.split(".")[1] for k in keys if k.startswith("launcher.")}
    return dataclasses.replace(recorded, **{k: getattr(composed, k) for k in changed})


# The groups of a trial's settings whose accepted overrides a resume carries to its workers (what
# changes a trial's identity is refused first, by campaign.checks.check_resume_overrides).
_WORKER_GROUPS = ("meter", "dataset", "protocol")


def with_settings_overrides(recorded: CampaignConfig, composed: CampaignConfig, keys: set[str]) -> CampaignConfig:
    """``recorded`` with the worker settings the command line overrides (``meter=simulated``,
    ``meter.kind=...``, ``dataset.root=...``, ``protocol.heartbeat_s=...``) taken from ``composed``."""
    out = copy.deepcopy(recorded)
    for key in sorted(keys):
        group, _, field = key.partition(".")
        if group not in _WORKER_GROUPS:
            continue
        if not field:  # a whole group chosen (meter=simulated)
            setattr(out, group, copy.deepcopy(getattr(composed, group)))
        else:
            top = field.split(".")[0]
            setattr(getattr(out, group), top, copy.deepcopy(getattr(getattr(composed, group), top)))
    return dataclasses.replace(out)  # checked again as a whole (heartbeat against the stale limit)


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
    from campaign.checks import check_before_record, check_resume_overrides
    from campaign.launchers import make_launcher
    from campaign.resume import apply, decide

    store = open_store(cfg)
    info = store.campaign(name)
    paths = campaign_paths(overrides, cfg, info)
    recorded = recorded_config(info.config)
    keys = override_keys(overrides)
    check_resume_overrides(recorded, cfg, keys)
    budget_keys = {k for k in keys if k.split(".")[0] in ("budget", "estimate")}
    run_cfg = dataclasses.replace(
        with_settings_overrides(recorded, cfg, keys),
        launcher=resume_launcher(recorded.launcher, cfg.launcher, keys), db=cfg.db, root=str(paths.root),
        name=info.name, budget=cfg.budget if budget_keys else recorded.budget,
        estimate=cfg.estimate if budget_keys else recorded.estimate)
    launcher = make_launcher(run_cfg, paths)
    launcher.preflight(list(run_cfg.gpus))
    check_before_record(run_cfg, paths)
    stored = ingest_files(store, paths)
    if stored:
        how.note(console, f"stored {stored} result file(s) that had not reached the database")
    # the scheduler (and this machine's processes) first: attempts whose job or worker process has
    # ended are reopened now, not after the stale limit
    dead = close_dead_attempts(store, info.id, launcher)
    live = launcher.live_workers(store.submissions(info.id))
    stale = run_cfg.launcher.stale_after_s if stale_after_s is None else stale_after_s
    now = store.now()
    rows = store.trial_states(info.id)
    actions = apply(store, info.id, decide(rows, now, stale), now, stale)
    pending = store.pending_counts(info.id)
    workers = workers_needed(pending, live_total(live), run_cfg.launcher.max_workers, one_each=launcher.in_process)
    live_text = ("the scheduler does not answer (live workers unknown)" if live is None else
                 f"{sum(c['queued'] for c in live.values())} queued and {sum(c['running'] for c in live.values())} "
                 "running worker(s)")
    how.note(console, f"campaign {info.name}: {actions.done} done, {len(actions.still_running)} still running, "
                      f"{dead} ended with their job or process, {len(actions.mark_stale)} stale, "
                      f"{len(actions.reopen)} failed/cancelled reopened; {actions.to_run} trial(s) to run; "
                      f"{live_text}; {sum(workers.values())} worker(s) to submit")
    if budget_keys:  # a new budget: recorded, a budget stop lifted; checked against what remains
        keep_budget(store, info.id, run_cfg, [], "resume")
    if workers and budget_stop(store, info.id) is None:
        from db.budget import over_budget

        over_budget(store.engine, info.id)  # measured so far + predicted for what remains, against the limits
    stopped = budget_stop(store, info.id)
    if stopped is not None:
        console.print(f"{stopped}; nothing submitted: campaign resume {info.name} {where(run_cfg)} "
                      "budget.max_kwh=... (or budget.max_gpu_hours / budget.max_co2_kg) with a larger limit",
                      markup=False)
        return BUDGET_STOPPED
    if not workers and not (how.follow and any(live_total(live).values())):
        return 0  # with --wait and live workers: follow them (and resubmit when they are gone)
    return hand_over(run_cfg, launcher, store, info.id, paths, workers, len(rows), how, console, "resume")


def close_dead_attempts(store: ResultStore, campaign_id: int, launcher: Launcher) -> int:
    """Running attempts whose scheduler job has ended (killed, cancelled, node failed), or whose
    worker process on this machine has ended: closed as stale with the scheduler's word (or the
    process's), their trials back to pending. Returns how many."""
    return close_ended(store, campaign_id, launcher.name, launcher.ended_jobs)

