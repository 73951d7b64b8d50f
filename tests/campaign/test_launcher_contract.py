"""One contract for every registered launcher (``campaign.launchers.LAUNCHERS``): the same small
campaign on SQLite, checked, submitted, waited for and cancelled through the ``Launcher`` port.

The local launcher always runs; Slurm needs the test cluster (the ``slurm_cluster`` fixture) and
Ray a running cluster (``CAMPAIGN_TEST_RAY_ADDRESS``, as tests/run.sh starts one); each is
skipped with the reason otherwise."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from campaign.config import compose, gpu_types
from campaign.launchers import LAUNCHERS, make_launcher
from campaign.launchers.base import Launcher, Submitted, worker_specs
from campaign.plan import make_plan, resolve_architectures
from db.engine import make_engine
from db.errors import ConfigError
from db.paths import CampaignPaths
from db.store import ResultStore
from jobs.worker import WorkerSpec
from tests.cluster.helpers import TINY as CLUSTER_TINY

# Two tiny trials (two cells, one seed, one epoch), no pauses: the orchestration is under test.
TINY = [*CLUSTER_TINY, "meter.carbontracker=false"]
SLOW = ["protocol.idle_s=120"]  # a trial that cannot end before it is cancelled


@dataclasses.dataclass(frozen=True)
class Case:
    """One launcher under test: its overrides, a GPU type it can schedule and one it cannot."""

    name: str
    overrides: tuple[str, ...]
    schedulable: str
    impossible: str


def _local(request: pytest.FixtureRequest) -> Case:
    import torch

    # "GPU on this machine" is what the local launcher checks: make sure it sees none
    request.getfixturevalue("monkeypatch").setattr(torch.cuda, "is_available", lambda: False)
    return Case("local", ("launcher=local", "device=cpu"), "cpu", "a100")


def _slurm(request: pytest.FixtureRequest) -> Case:
    cluster = request.getfixturevalue("slurm_cluster")  # skips where the test cluster cannot run
    lacking = next(g for g in gpu_types() if g not in cluster.partitions)
    return Case("slurm", ("launcher=slurm", "launcher.cpus_per_task=1", "launcher.mem_gb=1"),
                cluster.gpu_types[0], lacking)


def _ray(request: pytest.FixtureRequest) -> Case:
    address = os.environ.get("CAMPAIGN_TEST_RAY_ADDRESS")
    if not address:
        pytest.skip("no Ray cluster: CAMPAIGN_TEST_RAY_ADDRESS is not set (tests/run.sh starts one)")
    # tests/run.sh declares gpu_a100 and gpu_v100 on its CPU-only head node
    return Case("ray", ("launcher=ray", f"launcher.address={address}", "launcher.gpus_per_task=0",
                        "launcher.cpus_per_task=1"), "a100", "rtx3060")


CASES: dict[str, Callable[[pytest.FixtureRequest], Case]] = {"local": _local, "slurm": _slurm, "ray": _ray}
MARKS = {"slurm": pytest.mark.slurm, "ray": pytest.mark.ray}


def test_every_registered_launcher_is_under_contract() -> None:
    assert set(LAUNCHERS) == set(CASES)


@pytest.fixture(params=[pytest.param(n, marks=[MARKS[n]] if n in MARKS else []) for n in sorted(LAUNCHERS)])
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param](request)


@dataclasses.dataclass
class Campaign:
    launcher: Launcher
    store: ResultStore
    campaign_id: int
    specs: dict[str, list[WorkerSpec]]

    def states(self) -> dict[str, int]:
        """Trials by state."""
        out: dict[str, int] = {}
        for row in self.store.status_rows(self.campaign_id):
            for state in ("pending", "running", "done", "failed", "cancelled"):
                out[state] = out.get(state, 0) + row[state]
        return {k: v for k, v in out.items() if v}


@pytest.fixture
def make_campaign(case: Case, tmp_path: Path) -> Iterator[Callable[..., Campaign]]:
    """Record the tiny campaign on ``case.schedulable`` in a SQLite file (as ``campaign launch``
    does, without running it) and build its launcher and worker specs."""
    stores: list[ResultStore] = []

    def build(*overrides: str) -> Campaign:
        name = f"contract-{case.name}-{len(stores)}"
        cfg = compose([*TINY, *case.overrides, f"root={tmp_path}", f"gpus=[{case.schedulable}]", *overrides])
        cfg = dataclasses.replace(cfg, name=name)
        paths = CampaignPaths.of(tmp_path, name)
        plan = make_plan(cfg, resolve_architectures(cfg))
        url = f"sqlite:///{tmp_path / 'contract.db'}"
        store = ResultStore(make_engine(url))
        stores.append(store)
        campaign_id = store.create_campaign(name, cfg.sweep, str(paths.root), "test", cfg.to_dict(), plan.archs,
                                            plan.trials)
        launcher = make_launcher(cfg, paths)
        # two pull workers (each claims the next pending trial until none is left)
        specs = worker_specs(cfg, gpu_types(), paths, url, {case.schedulable: 2}, {case.schedulable: 1},
                             max_failures=1, time_limited=launcher.time_limited)
        return Campaign(launcher, store, campaign_id, specs)

    yield build
    for store in stores:
        store.engine.dispose()


def test_preflight_passes_a_schedulable_gpu_type_and_refuses_an_impossible_one_in_one_line(
    case: Case, make_campaign: Callable[..., Campaign]
) -> None:
    launcher = make_campaign().launcher
    assert launcher.name == case.name
    launcher.preflight([case.schedulable])
    with pytest.raises(ConfigError) as refused:
        launcher.preflight([case.schedulable, case.impossible])
    message = str(refused.value)
    assert case.impossible in message and "\n" not in message.strip(), message


def test_submit_and_wait_run_every_trial_to_done(make_campaign: Callable[..., Campaign]) -> None:
    c = make_campaign()
    n_tasks = sum(len(v) for v in c.specs.values())
    assert n_tasks == 2
    submitted = c.launcher.submit(c.specs)
    assert isinstance(submitted, Submitted) and submitted.launcher == c.launcher.name
    assert {g: len(ids) for g, ids in submitted.jobs.items()} == {g: len(s) for g, s in c.specs.items()}
    summaries = c.launcher.wait(submitted)
    assert len(summaries) == n_tasks
    # the two trials are pulled by whichever worker comes first: each exactly once
    assert sum(s.done for s in summaries) == 2 and sum(s.failed for s in summaries) == 0
    assert all(s.stopped_reason == "no pending trials left" for s in summaries)
    assert {s.worker_id for s in summaries} == {s.worker_id for v in c.specs.values() for s in v}
    assert c.states() == {"done": 2}
    assert c.launcher.active(submitted) == {}


def test_cancel_stops_the_submitted_tasks(case: Case, make_campaign: Callable[..., Campaign]) -> None:
    c = make_campaign(*SLOW)
    submitted = c.launcher.submit(c.specs)
    assert c.launcher.active(submitted) == {case.schedulable: 2}  # queued (or just started)
    c.launcher.cancel(submitted)
    assert c.launcher.wait(submitted) == []  # returns: nothing left to wait for, no summaries
    assert c.launcher.active(submitted) == {}
    states = c.states()
    assert "done" not in states
    if case.name == "local":  # cancelled before wait: nothing ran at all
        assert states == {"pending": 2}
