"""The campaign report: statistics, surrogate, estimators, Pareto front and carbon in one folder.

Two layers, so statisticians can use the first without the second:

- `analyze(runs, epochs, ...) -> Report` computes every section from plain DataFrames (one row
  per finished run; one row per epoch of those runs) and holds the results as DataFrames
  (``report.tables``), notes saying what each number rests on (``report.notes``) and the fitted
  objects (surrogates, Pareto fronts). No files are touched.
- `Report.write(folder)` draws the PNG figures, writes every table as CSV and Markdown
  (``tables/``), the surrogate model files, and one page as Markdown and HTML.

`write_report(reader, info, out, settings, gpu_specs)` is the CLI's thin shell: it reads the
campaign through a database reader (``analysis.read.read_campaign``), calls `analyze` and writes.

Honesty: simulated and measured power are never pooled unless ``allow_mixed_sources`` is set
(`AnalysisError` otherwise) or one kind is selected (``power_source``, the others counted as left
out); every figure and the page name the power source, and a simulated run's method says
simulated; the page shows the total energy and the energy above idle side by side with their
stated uncertainty (error bars on the energy figures), the share of runs per energy method,
says so beside any total that sums several methods, and names every flagged measurement (it
stays in the figures); ``energy`` picks the energy the sections compare; a factor with one
level, or groups too small for a test, are reported as not testable instead of a p-value; the
surrogate refuses a held-out split on too few architectures and says so.

The modules: ``parts`` (figures to draw, files written), ``sections`` (one function per
section), ``render`` (the page as Markdown and HTML), ``model`` (the `Report`), ``pipeline``
(`analyze`, `write_report`). The ``analysis`` configuration's schema is ``analysis.settings``
(light, for the CLI to import without this pipeline); its names are re-exported here.
"""

from __future__ import annotations

from analysis.read import example_runs
from analysis.report.model import Report
from analysis.report.parts import SECTIONS, FigureSpec, ReportFiles
from analysis.report.pipeline import analyze, with_recorded_intensity, write_report
from analysis.report.sections import check_sources, gpu_specs_for, prepare_runs
from analysis.settings import (
    AnalysisError,
    AnalysisSettings,
    CarbonSettings,
    EnergyTarget,
    GreenAlgorithmsSettings,
    ParetoSettings,
    PowerKind,
    SplitBy,
    SurrogateSettings,
)

__all__ = [
    "SECTIONS",
    "AnalysisError",
    "AnalysisSettings",
    "CarbonSettings",
    "EnergyTarget",
    "FigureSpec",
    "GreenAlgorithmsSettings",
    "ParetoSettings",
    "PowerKind",
    "Report",
    "ReportFiles",
    "SplitBy",
    "SurrogateSettings",
    "analyze",
    "check_sources",
    "example_runs",
    "gpu_specs_for",
    "prepare_runs",
    "with_recorded_intensity",
    "write_report",
]
