"""Resume's decision, exhaustively over the states a trial can be in."""

from __future__ import annotations

import datetime as dt

import pytest

from campaign.config import CampaignConfig
from campaign.resume import decide

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _t(key: str, state: str, run_status: str | None = None, beat_age_s: float | None = None, gpu: str = "a100"):  # type: ignore[no-untyped-def]
    return {"trial_id": hash(key) % 1000, "trial_key": key, "gpu_type": gpu, "state": state,
            "run_id": None if run_status is None else hash(key) % 1000 + 1, "run_status": run_status,
            "heartbeat_at": None if beat_age_s is None else NOW - dt.timedelta(seconds=beat_age_s)}


def test_each_state() -> None:
    trials = [
        _t("never", "pending"),
        _t("done", "done", "done", 5000),
        _t("alive", "running", "running", 10),
        _t("stale", "running", "running", 700),
        _t("failed", "failed", "failed", 5000),
        _t("cancelled", "cancelled", "cancelled", 5000),
        _t("v100-never", "pending", gpu="v100"),
    ]
    a = decide(trials, NOW, stale_after_s=600)
    assert a.submit == {"a100": ["never", "stale", "failed", "cancelled"], "v100": ["v100-never"]}
    assert a.still_running == ["alive"]
    assert a.done == 1
    assert [tid for _, tid in a.mark_stale] == [trials[3]["trial_id"]]
    assert sorted(a.reopen) == sorted([trials[4]["trial_id"], trials[5]["trial_id"]])


def test_a_finished_trial_is_never_submitted() -> None:
    trials = [_t(f"k{i}", "done", "done", 1e6) for i in range(5)]
    for stale in (0, 1, 1e9):
        a = decide(trials, NOW, stale_after_s=stale)
        assert a.to_run == 0 and a.done == 5


def test_staleness_boundary() -> None:
    assert decide([_t("x", "running", "running", 600)], NOW, 600).still_running == ["x"]
    assert decide([_t("x", "running", "running", 600.001)], NOW, 600).submit == {"a100": ["x"]}


def test_unknown_state_is_an_error() -> None:
    with pytest.raises(ValueError, match="'exploded'"):
        decide([_t("x", "exploded")], NOW, 600)


def test_resume_keeps_the_recorded_launcher_and_applies_launcher_overrides() -> None:
    import dataclasses

    from campaign.config import LauncherConfig
    from campaign.launch import resume_launcher

    recorded = LauncherConfig(name="ray", timeout_min=240, local_resources={"gpu_a100": 1}, wait=True)
    composed = LauncherConfig(name="local", timeout_min=60, local_resources={"gpu_a100": 2}, wait=False)
    assert resume_launcher(recorded, composed, {"seeds"}) == recorded
    assert resume_launcher(recorded, composed, {"launcher.timeout_min"}) == dataclasses.replace(recorded, timeout_min=60)
    # a nested key overrides its top-level launcher key (it was dropped before)
    assert resume_launcher(recorded, composed, {"launcher.local_resources.gpu_a100"}) == dataclasses.replace(
        recorded, local_resources={"gpu_a100": 2})
    assert resume_launcher(recorded, composed, {"launcher"}) == composed


def test_the_campaign_root_is_the_recorded_one_unless_given(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import types

    from campaign.session import campaign_paths

    info = types.SimpleNamespace(root=str(tmp_path / "recorded"), name="c")
    monkeypatch.chdir(tmp_path)
    cfg = types.SimpleNamespace(root="./campaigns")
    assert str(campaign_paths(["seeds=2"], cfg, info).root) == str(tmp_path / "recorded")  # type: ignore[arg-type]
    given = ["++root=./campaigns"]
    assert str(campaign_paths(given, cfg, info).root) == str(tmp_path / "campaigns")  # type: ignore[arg-type]


def test_apply_submits_only_what_is_still_pending(smoke_cfg: CampaignConfig, sqlite_url: str) -> None:
    """Between the decision and its application a worker claims a trial: it is not submitted
    again; a failed trial is reopened and submitted; keys and ids stay aligned."""
    from campaign.plan import make_plan, resolve_architectures
    from campaign.resume import apply
    from db.engine import make_engine
    from db.store import ResultStore

    store = ResultStore(make_engine(sqlite_url))
    try:
        plan = make_plan(smoke_cfg, resolve_architectures(smoke_cfg))
        cid = store.create_campaign("r", "smoke", "/tmp", "rev", {}, plan.archs, plan.trials)
        failed = store.claim_next(cid, "cpu", "w0", "h")
        assert failed is not None
        from sqlalchemy import update

        from db.schema import Trial

        with store.engine.begin() as conn:
            conn.execute(update(Trial).where(Trial.id == failed.trial_id).values(state="failed"))
        now = store.now()
        actions = decide(store.trial_states(cid), now, 600)
        assert actions.reopen == [failed.trial_id]
        taken = store.claim_next(cid, "cpu", "w1", "h")  # meanwhile
        assert taken is not None and taken.trial_id != failed.trial_id
        out = apply(store, cid, actions, now, 600)
        keys, ids = out.submit["cpu"], out.submit_ids["cpu"]
        assert taken.trial_key not in keys and failed.trial_key in keys
        assert len(keys) == len(plan.trials) - 1
        by_id = {r["trial_id"]: r["trial_key"] for r in store.trial_states(cid)}
        assert [by_id[i] for i in ids] == keys
    finally:
        store.engine.dispose()
