"""The smoke campaign through the real CLI into a temporary SQLite file, then its records."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "campaign.cli"]


def _campaign(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("e2e")
    url = f"sqlite:///{root / 'e2e.db'}"
    proc = _campaign("launch", "+sweep=smoke", "name=e2e", f"root={root}", f"db.url={url}",
                     "protocol.warmup_s=0.5", "protocol.cooldown_s=0.2", "protocol.idle_s=0.3")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (root / "launch.out").write_text(proc.stdout + proc.stderr)
    return root, url


@pytest.mark.slow
def test_the_launch_without_a_terminal_prints_each_phase_and_finished_trial(smoke: tuple[Path, str]) -> None:
    import re

    root, url = smoke
    lines = (root / "launch.out").read_text().splitlines()
    assert not [line for line in lines if line.startswith("CarbonTracker")]
    trials: dict[str, list[str]] = {}
    for line in lines:
        m = re.fullmatch(r"\d\d:\d\d:\d\d trial (\w{8}): (.+)", line)
        if m:
            trials.setdefault(m.group(1), []).append(m.group(2))
    assert len(trials) == 8
    for said in trials.values():  # in order: setup, idle, each epoch's train and eval, cool-down, done
        words = [s.split()[0] for s in said]
        assert words[:2] == ["setup", "idle"] and words[-2:] == ["cooldown", "done"], said
        assert "train" in words and "eval" in words
        assert re.fullmatch(r"done in \d+ s, [\d.]+ J", said[-1]), said
    progress = [line for line in lines if " progress: " in line]
    assert progress[-1].endswith("8/8 trials, ETA 0 s"), progress
    assert lines[-1].startswith("next: campaign status e2e") and f"db.url={url}" in lines[-1]


@pytest.mark.slow
def test_smoke_campaign_records_runs_epochs_and_traces(smoke: tuple[Path, str]) -> None:
    root, _ = smoke
    con = sqlite3.connect(root / "e2e.db")
    runs = con.execute("select status, power_source, energy_j, test_accuracy, host from run").fetchall()
    assert len(runs) == 8  # 2 architectures x 2 epoch budgets x 2 seeds
    assert all(r[0] == "done" and r[1] == "simulated" and r[2] > 0 and 0 <= r[3] <= 1 and r[4] for r in runs)
    epochs = con.execute("select t.epochs, count(e.id) from epoch e join run r on r.id = e.run_id "
                         "join trial t on t.id = r.trial_id group by r.id").fetchall()
    assert all(budget == n for budget, n in epochs)  # one row per epoch of the budget
    assert con.execute("select min(energy_j) from epoch").fetchone()[0] > 0
    phases = {p for (p,) in con.execute("select distinct phase from trace_sample")}
    assert {"warmup", "idle", "train", "eval", "cooldown"} <= phases
    assert {s for (s,) in con.execute("select distinct source from trace_sample")} == {"simulated"}
    # a trace starts with the warm-up (first run only), the trial's setup or its idle baseline,
    # never with the gap between trials
    firsts = con.execute("select s.phase from trace_sample s join (select run_id, min(t_s) t from trace_sample "
                         "group by run_id) m on m.run_id = s.run_id and m.t = s.t_s").fetchall()
    assert {p for (p,) in firsts} <= {"warmup", "setup", "idle"}, firsts
    # every sample of a training epoch carries that epoch
    assert con.execute("select count(*) from trace_sample where phase = 'train' and epoch is null").fetchone()[0] == 0
    # results were written to the campaign folder first
    assert len(list((root / "e2e" / "runs").glob("*/attempt-1.json"))) == 8
    trials = con.execute("select state, count(*) from trial group by state").fetchall()
    assert trials == [("done", 8)]


@pytest.mark.slow
def test_status_list_and_analyze(smoke: tuple[Path, str]) -> None:
    root, url = smoke
    status = _campaign("status", "e2e", f"root={root}", f"db.url={url}")
    assert status.returncode == 0, status.stderr
    assert "cpu" in status.stdout and "8/8 trials done" in status.stdout
    listing = _campaign("list", f"root={root}", f"db.url={url}")
    assert "e2e" in listing.stdout
    analyze = _campaign("analyze", "e2e", f"root={root}", f"db.url={url}")
    assert analyze.returncode == 0, analyze.stderr
    report = root / "e2e" / "report"
    page = (report / "report.md").read_text()
    assert "Simulated power" in page and page.count("| ") > 8
    assert (report / "report.html").is_file()
    assert (report / "energy_by_architecture.png").stat().st_size > 1000
    assert (report / "power_trace.png").stat().st_size > 1000


def test_bad_input_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for bad, needle in (("gpus=[h900]", "h900"), ("epochs=[0]", "epoch budget 0"),
                        ("architectures.specs=[{matrix: [[0,1],[0,0]], ops: [input, conv9x9]}]", "conv9x9")):
        proc = _campaign("launch", "+sweep=smoke", bad, f"root={tmp_path}", f"db.url={url}")
        assert proc.returncode == 2
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_cifar_cells_stops_before_running_without_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    proc = _campaign("launch", "+sweep=cifar_cells", f"root={tmp_path}", f"db.url={url}",
                     f"dataset.root={tmp_path / 'nodata'}")
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "CIFAR-10" in line and "dataset.root" in line, line
    assert not (tmp_path / "x.db").exists()
    plan = _campaign("plan", "+sweep=cifar_cells", f"root={tmp_path}")
    assert plan.returncode == 0 and "108" in plan.stdout and "trials" in plan.stdout
