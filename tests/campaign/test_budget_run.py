"""A budget kept while the campaign runs: a campaign stopped by its budget (simulated meter, tiny
budget launched with on_exceed=warn), then resumed with a larger one, finishing every trial
exactly once; and the calibration of the pre-launch estimate, where a second smoke campaign with
other seeds lands inside the estimate made from the first."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _campaign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "campaign.cli", *args], capture_output=True, text=True, timeout=600)


def test_stopped_by_budget_then_resumed_with_a_larger_one(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    where = [f"root={tmp_path}", f"db.url=sqlite:///{db}"]
    out = _campaign("launch", "+sweep=smoke", "name=b", "budget.max_kwh=1e-9", "budget.on_exceed=warn", *where)
    assert out.returncode == 3, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "warning:" in text and "stopped by budget" in text and "budget.max_kwh=1e-09 kWh" in text
    assert "Traceback" not in text
    status = _campaign("status", "b", "--json", *where)
    doc = json.loads(status.stdout)
    assert doc["budget"]["stopped"] and "budget.max_kwh" in doc["budget"]["stopped_reason"]
    assert doc["totals"]["pending"] > 0 and doc["budget"]["limits"]["max_kwh"] == 1e-9
    plain = _campaign("status", "b", *where)
    assert "stopped by budget" in plain.stdout
    # a resume without a larger budget does not submit anything
    again = _campaign("resume", "b", *where)
    assert again.returncode == 3 and "stopped by budget" in again.stdout + again.stderr
    resumed = _campaign("resume", "b", "budget.max_kwh=1000", *where)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with sqlite3.connect(db) as conn:
        states = conn.execute("SELECT state, COUNT(*) FROM trial GROUP BY state").fetchall()
        per_trial = conn.execute("SELECT t.id, COUNT(r.id) FROM trial t LEFT JOIN run r ON r.trial_id = t.id "
                                 "AND r.status = 'done' GROUP BY t.id").fetchall()
        stopped = conn.execute("SELECT stopped_at, max_kwh FROM campaign_budget").fetchall()
    assert states == [("done", 8)]
    assert {n for _, n in per_trial} == {1}  # every trial exactly once
    assert stopped == [(None, 1000.0)]
    doc = json.loads(_campaign("status", "b", "--json", *where).stdout)
    assert not doc["budget"]["stopped"] and doc["budget"]["remaining_trials"] == 0


def test_calibration_second_campaign_inside_the_first_ones_estimate(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    where = [f"root={tmp_path}", f"db.url=sqlite:///{db}"]
    first = _campaign("launch", "+sweep=smoke", "name=one", *where)
    assert first.returncode == 0, first.stdout + first.stderr
    second = _campaign("launch", "+sweep=smoke", "name=two", "first_seed=2", *where)
    assert second.returncode == 0, second.stdout + second.stderr
    with sqlite3.connect(db) as conn:
        sources = {s for (s,) in conn.execute(
            "SELECT e.source FROM estimate_group e JOIN campaign c ON c.id = e.campaign_id WHERE c.name = 'two'")}
        seeds = {s for (s,) in conn.execute(
            "SELECT DISTINCT t.seed FROM trial t JOIN campaign c ON c.id = t.campaign_id WHERE c.name = 'two'")}
    assert sources == {"measured"} and seeds == {2, 3}
    analyzed = _campaign("analyze", "two", *where)
    assert analyzed.returncode == 0, analyzed.stdout + analyzed.stderr
    report = (tmp_path / "two" / "report" / "report.md").read_text()
    assert "Calibration of the pre-launch estimate" in report
    # a 95 % prediction interval: of 8 runs, 6 or more inside (all 8 only about two times in three)
    inside = re.search(r"(\d+) % of the done runs lie inside their pre-launch interval", report)
    assert inside is not None and int(inside.group(1)) >= 75, report
