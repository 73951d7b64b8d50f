"""From data to report: `analyze` runs every section over plain DataFrames; `write_report` reads
a campaign through a database reader (``analysis.read``), analyses it and writes the folder."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

import analysis.report.sections as sections
from analysis.estimators import GpuSpec
from analysis.read import find_campaign, read_campaign
from analysis.report.model import Report
from analysis.report.parts import ReportFiles
from analysis.settings import AnalysisError, AnalysisSettings
from db.records import WORLD_AVERAGE_G_PER_KWH

if TYPE_CHECKING:
    from db.read import CampaignInfo, CampaignReader

log = logging.getLogger(__name__)


def analyze(
    runs: pd.DataFrame,
    epochs: pd.DataFrame | None = None,
    *,
    gpu_specs: Mapping[str, Mapping[str, Any] | GpuSpec] | None = None,
    settings: AnalysisSettings | Mapping[str, Any] | None = None,
    traces: Mapping[Any, pd.DataFrame] | None = None,
    phases: pd.DataFrame | None = None,
    title: str = "campaign",
    meta: Mapping[str, Any] | None = None,
) -> Report:
    """Every section of the report from plain DataFrames; no files are written.

    ``runs``: one row per run (rows with a ``status`` other than done are dropped) with at least
    run_id, arch_hash, epochs, gpu_type, power_source, energy_j, duration_s; the sections use
    train_images, valid_accuracy, test_accuracy, params, flops, matrix and ops (the surrogate),
    gpu_util_mean where present and say what is missing otherwise. ``epochs``: run_id, epoch,
    duration_s, energy_j. ``gpu_specs``: ``conf/gpu`` entries by GPU type (the offline
    estimator and the baselines need them). ``settings``: `AnalysisSettings`, or a plain mapping
    of them (`AnalysisSettings.from_mapping`). ``traces``: run_id -> samples (t_s, phase,
    power_w) of the runs whose power trace is drawn. ``phases``: run_phase rows (run_id, phase,
    duration_s, energy_j). The energy columns of newer databases (energy_above_idle_j,
    energy_uncertainty_j, energy_method, flags, ...) are used where present and read as NULL
    otherwise (`analysis.energy`). ``settings.energy`` picks the energy the sections compare,
    ``settings.power_source`` the one kind of power analysed (the others are counted as left
    out). Raises AnalysisError for mixed power sources (unless allowed or one kind is selected),
    a selection that leaves no run, or a bad setting.
    """
    s = settings if isinstance(settings, AnalysisSettings) else AnalysisSettings.from_mapping(settings)
    if s.carbon.intensity_g_per_kwh is None:
        s = dataclasses.replace(s, carbon=dataclasses.replace(
            s.carbon, intensity_g_per_kwh=WORLD_AVERAGE_G_PER_KWH,
            intensity_source="default: world average 2024 (IEA); set analysis.carbon.intensity_g_per_kwh"))
    df, left_out = sections.select_power(sections.prepare_runs(runs, s.energy, s.images_per_epoch, s.batch_size,
                                                                 s.valid_images), s.power_source)
    sources = sections.check_sources(df, s.allow_mixed_sources)
    ep = sections.prepare_epochs(epochs, df, s.energy)
    report = Report(title=title, settings=s, power_sources=sources, runs=df, epochs=ep, meta=dict(meta or {}),
                    left_out=left_out)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("runs", lambda: sections.runs(report)),
        ("design", lambda: sections.design(report)),
        ("summary", lambda: sections.summary(report, phases)),
        ("statistics", lambda: sections.statistics(report)),
        ("surrogate", lambda: sections.surrogate(report)),
        ("estimators", lambda: sections.estimators(report, gpu_specs)),
        ("pareto", lambda: sections.pareto(report)),
        ("carbon", lambda: sections.carbon(report)),
        ("traces", lambda: sections.traces(report, traces or {})),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        if df.empty and name not in ("runs", "summary"):
            report.note(name, "n/a: no finished runs")
            continue
        step()
        report.timings_s[name] = time.perf_counter() - t0
    return report


def with_recorded_intensity(settings: AnalysisSettings, config: Mapping[str, Any]) -> AnalysisSettings:
    """``settings`` with the carbon intensity recorded in a campaign's ``config`` (the meters'
    ``meter.carbon_intensity_g_per_kwh``) where none is configured."""
    meter = config.get("meter") or {}
    recorded = meter.get("carbon_intensity_g_per_kwh")
    if settings.carbon.intensity_g_per_kwh is not None or recorded is None:
        return settings
    source = meter.get("carbon_intensity_source") or "configured"
    return dataclasses.replace(settings, carbon=dataclasses.replace(
        settings.carbon, intensity_g_per_kwh=float(recorded),
        intensity_source=f"recorded with the campaign (meter.carbon_intensity_g_per_kwh: {source})"))


def write_report(
    reader: CampaignReader,
    info: CampaignInfo | str,
    out: Path,
    settings: AnalysisSettings | None = None,
    gpu_specs: Mapping[str, Mapping[str, Any] | GpuSpec] | None = None,
) -> ReportFiles:
    """Analyse campaign ``info`` (or the campaign of that name) read through ``reader`` and write
    the report folder ``out``.

    ``settings``: the composed configuration's ``analysis`` section (default: the one recorded
    with the campaign); ``gpu_specs``: ``conf/gpu`` entries by name. Returns the files written;
    ``str()`` of the result is the Markdown page.
    """
    t0 = time.perf_counter()
    info = find_campaign(reader, info)
    if settings is None:
        settings = AnalysisSettings.from_mapping(info.config.get("analysis"))
    settings = with_recorded_intensity(settings, info.config)
    data = read_campaign(reader, info, settings.trace_examples)
    runs = data.runs
    status = runs["status"].value_counts().to_dict() if not runs.empty else {}
    trials = ", ".join(f"{v} {k}" for k, v in data.trial_states.items() if v)
    if not status.get("done"):
        raise AnalysisError(f"campaign {info.name!r} has no finished run yet (trials: {trials or 'none'}); "
                            "nothing to analyse")
    meta = {
        "sweep": info.sweep,
        "created (UTC)": f"{info.created_at:%Y-%m-%d %H:%M}",
        "code revision": info.code_revision,
        "trials": f"{sum(data.trial_states.values())} ({trials})",
        "runs": f"{len(runs)} attempts ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))})",
    }
    report = analyze(runs, data.epochs, gpu_specs=gpu_specs, settings=settings, traces=data.traces,
                     phases=data.phases, title=info.name, meta=meta)
    t1 = time.perf_counter()
    calibrate(report, reader, info)
    report.timings_s["calibration"] = time.perf_counter() - t1
    report.timings_s["reading the store"] = time.perf_counter() - t0 - sum(report.timings_s.values())
    files = report.write(out)
    files.seconds = time.perf_counter() - t0
    log.info("report %s written in %.1f s", files.page, time.perf_counter() - t0)
    return files


def calibrate(report: Report, reader: CampaignReader, info: CampaignInfo) -> None:
    """The calibration section: the campaign's pre-launch estimate against its done runs."""
    from analysis.calibration import calibration, frame, summary

    rows = calibration(reader.engine, info.id)
    if rows:
        report.tables["calibration"] = frame(rows)
    report.note("calibration", summary(rows))
