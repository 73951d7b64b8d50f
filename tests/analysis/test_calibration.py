"""The calibration table: a recorded pre-launch estimate against the runs measured afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.calibration import calibration, markdown, overall_inside
from campaign.config import compose
from db import budget
from db.engine import make_engine
from db.read import CampaignReader
from tests.db.conftest import fill_smoke, smoke_energy_j

KWH = 3.6e6


def test_calibration_of_a_recorded_estimate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cfg = compose(["+sweep=smoke", f"root={tmp_path}", f"db.url={url}"])
    fill_smoke(url, cfg, name="cal")
    engine = make_engine(url)
    cid = CampaignReader(engine).campaign("cal").id
    assert markdown(calibration(engine, cid))[0].startswith("No pre-launch estimate")
    # per trial at 1 epoch: 15 J of idle and cool-down + E = 100 + 10 seed + arch term (0..9) J
    budget.record_estimate(engine, cid, "launch", [
        dict(gpu_type="cpu", epochs=1, trials=4, source="measured", energy_kwh_low=110 / KWH,
             energy_kwh_high=140 / KWH, gpu_hours_low=0.0, gpu_hours_high=1.0),
        dict(gpu_type="cpu", epochs=2, trials=4, source="rough bound (TDP)", energy_kwh_low=1 / KWH,
             energy_kwh_high=2 / KWH, gpu_hours_low=0.0, gpu_hours_high=1.0)])
    budget.record_estimate(engine, cid, "resume", [  # a later estimate is not what is calibrated
        dict(gpu_type="cpu", epochs=1, trials=1, source="x", energy_kwh_low=0.0, energy_kwh_high=0.0,
             gpu_hours_low=0.0, gpu_hours_high=0.0)])
    rows = {r.epochs: r for r in calibration(engine, cid)}
    one, two = rows[1], rows[2]
    archs = sorted({h for (h,) in engine.connect().exec_driver_sql("SELECT arch_hash FROM trial").all()})
    measured = [15.0 + smoke_energy_j(a, 1, s) for a in archs for s in (0, 1)]
    assert one.runs == 4 and one.source == "measured"
    assert one.measured_kwh_mean == pytest.approx(sum(measured) / 4 / KWH)
    assert one.inside == sum(1 for m in measured if 110 <= m <= 140) / 4
    assert one.ratio == pytest.approx(sum(measured) / 4 / 125)
    assert two.inside == 0.0 and two.hours_inside == 1.0
    assert overall_inside(list(rows.values())) == pytest.approx(one.inside / 2)
    table = "\n".join(markdown(list(rows.values())))
    assert "| cpu | 1 | measured | 4 |" in table and "rough bound (TDP)" in table
    engine.dispose()
