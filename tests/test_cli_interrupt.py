"""Ctrl-C (SIGINT to the process group) and SIGTERM during a real launch (real subprocess, real
SQLite): the running attempt is cancelled with its reason, its trial back to pending, the
launch exits at once with one line naming the resume command, and resume then runs exactly the
trials that are not done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.helpers import TINY, rows, rows_when_ready, wait_until

# The idle baseline keeps the first trial running long enough to be interrupted in the middle.
SLOW = [*TINY, "protocol.idle_s=5", "protocol.heartbeat_s=1"]


def _start(*args: str) -> subprocess.Popen[str]:
    """The CLI in its own process group, as a shell runs a foreground job."""
    return subprocess.Popen([sys.executable, "-m", "campaign.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _interrupt_while_running(tmp_path: Path, name: str, sig: signal.Signals) -> tuple[str, subprocess.Popen[str],
                                                                                    str, str]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    proc = _start("launch", *SLOW, f"name={name}", f"root={tmp_path}", f"db.url={url}")
    try:
        wait_until("a running attempt",
                   lambda: proc.poll() is not None or rows_when_ready(url, "select id from run where status = 'running'"),
                   timeout_s=180, poll_s=0.1)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return url, proc, out, err


def _campaign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "campaign.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigint_cancels_the_running_attempt_and_resume_runs_exactly_the_rest(tmp_path: Path) -> None:
    url, proc, out, err = _interrupt_while_running(tmp_path, "int", signal.SIGINT)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "interrupted by SIGINT" in lines[0] and "campaign resume int" in lines[0]
    assert f"db.url={url}" in lines[0] and f"root={tmp_path}" in lines[0]
    got = rows(url, "select r.status, r.error, t.state from run r join trial t on t.id = r.trial_id")
    assert [(s, t) for s, _, t in got] == [("cancelled", "pending")], got
    assert "interrupted by SIGINT" in got[0][1]
    assert rows(url, "select state, count(*) from trial group by state") == [("pending", 2)]

    status = _campaign("status", "int", f"root={tmp_path}", f"db.url={url}", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["totals"]["attempts"] == {"cancelled": 1} and doc["totals"]["pending"] == 2
    text = _campaign("status", "int", f"root={tmp_path}", f"db.url={url}")
    assert "1 cancelled" in text.stdout

    resumed = _campaign("resume", "int", f"root={tmp_path}", f"db.url={url}")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    per_trial = rows(url, "select t.trial_key, sum(r.status = 'done'), sum(r.status = 'cancelled'), count(r.id) "
                          "from trial t left join run r on r.trial_id = t.id group by t.trial_key")
    assert sorted((done, cancelled, n) for _, done, cancelled, n in per_trial) == [(1, 0, 1), (1, 1, 2)], per_trial
    assert rows(url, "select state, count(*) from trial group by state") == [("done", 2)]


@pytest.mark.slow
def test_sigterm_cancels_too_and_exits_143(tmp_path: Path) -> None:
    url, proc, out, err = _interrupt_while_running(tmp_path, "term", signal.SIGTERM)
    assert proc.returncode == 143, err
    assert "Traceback" not in out + err and "interrupted by SIGTERM" in err and "campaign resume term" in err
    assert rows(url, "select r.status, t.state from run r join trial t on t.id = r.trial_id") == [
        ("cancelled", "pending")]


@pytest.mark.slow
def test_a_launch_killed_outright_is_seen_by_resume_at_once(tmp_path: Path) -> None:
    """``kill -9`` (or the OOM killer) leaves no word in the database: the attempt still says
    running, with a fresh heartbeat. A resume on the same machine sees that its worker process has
    ended and runs the trial again at once, not after the stale limit (600 s here)."""
    url, proc, _, _ = _interrupt_while_running(tmp_path, "kill", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert rows(url, "select r.status, t.state from run r join trial t on t.id = r.trial_id") == [
        ("running", "running")]
    resumed = _campaign("resume", "kill", f"root={tmp_path}", f"db.url={url}", "launcher.stale_after_s=600")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "1 ended with their job or process" in resumed.stdout + resumed.stderr, resumed.stdout
    got = rows(url, "select r.status, r.error from run r where r.attempt = 1 and r.status != 'done'")
    assert len(got) == 1 and got[0][0] == "stale", got
    assert f"its worker process (pid {proc.pid} on " in got[0][1] and "has ended" in got[0][1], got
    per_trial = rows(url, "select sum(r.status = 'done'), count(r.id) from trial t join run r on r.trial_id = t.id "
                          "group by t.id")
    assert sorted(per_trial) == [(1, 1), (1, 2)], per_trial
    assert rows(url, "select state, count(*) from trial group by state") == [("done", 2)]


def test_plan_interrupted_says_nothing_about_resume(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from campaign import cli

    def interrupted(*_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_plan", interrupted)
    assert cli.main(["plan", "+sweep=smoke"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "campaign: interrupted by SIGINT"


@pytest.mark.slow
def test_a_layer_campaign_interrupted_then_resumed_measures_each_configuration_once(tmp_path: Path) -> None:
    """The layer workload goes through the same launch, interrupt and resume path as training."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    where = [f"root={tmp_path}", f"db.url={url}"]
    small = ["+sweep=layers_smoke", "layers.batch_sizes=[2]", "layers.models=[]", "protocol.warmup_s=0",
             "protocol.idle_s=3", "protocol.cooldown_s=0", "protocol.heartbeat_s=1"]
    proc = _start("launch", *small, "name=lay", *where)
    try:
        wait_until("a running attempt",
                   lambda: proc.poll() is not None or rows_when_ready(url, "select id from run where status = 'running'"),
                   timeout_s=180, poll_s=0.1)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and "campaign resume lay" in err, err
    assert rows(url, "select count(*) from run where status = 'cancelled'") == [(1,)]
    resumed = _campaign("resume", "lay", *where)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert rows(url, "select state, count(*) from trial group by state") == [("done", 6)]
    per_trial = rows(url, "select count(*) from run r where r.status = 'done' group by r.trial_id")
    assert {n for (n,) in per_trial} == {1} and len(per_trial) == 6
    # one layer row per done run (each trial is one layer spec), none from the cancelled attempt
    assert rows(url, "select count(*) from layer_measurement m join run r on r.id = m.run_id "
                     "where r.status = 'done'") == [(6,)]
    assert rows(url, "select count(*) from layer_measurement m join run r on r.id = m.run_id "
                     "where r.status != 'done'") == [(0,)]
