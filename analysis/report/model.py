"""The report object: every section of a campaign's analysis as DataFrames, notes and fitted
objects (filled by ``analysis.report.sections``), and its writing to a folder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.figures import source_label
from analysis.report.parts import FigureSpec, ReportFiles, slug
from analysis.report.render import csv_ready, md_table, page, render_html, render_markdown
from analysis.settings import AnalysisSettings
from analysis.stats import power_kind


@dataclass
class Report:
    """Every section of a campaign's analysis as DataFrames, notes and fitted objects."""

    title: str
    settings: AnalysisSettings
    power_sources: dict[str, int]
    runs: pd.DataFrame = field(repr=False)
    epochs: pd.DataFrame = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    notes: dict[str, list[str]] = field(default_factory=dict)
    figures: list[FigureSpec] = field(default_factory=list, repr=False)
    factor_text: dict[str, str] = field(default_factory=dict)
    dunn: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    surrogates: dict[str, Any] = field(default_factory=dict, repr=False)  # gpu_type -> SurrogateFit
    pareto: dict[str, dict[Any, Any]] = field(default_factory=dict, repr=False)  # gpu -> budget -> ParetoResult
    timings_s: dict[str, float] = field(default_factory=dict)
    #: Finished runs left out by ``analysis.power_source``, by power kind.
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return any(power_kind(s) == "simulated" for s in self.power_sources)

    @property
    def source_label(self) -> str:
        return source_label(self.power_sources)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def markdown(self, model_files: Sequence[Path] = ()) -> str:
        """The page as Markdown (figures referenced by file name)."""
        return render_markdown(page(self, model_files))

    def write(self, out: str | Path) -> ReportFiles:
        """Draw the figures, write tables (CSV + Markdown), surrogate models and the page."""
        from analysis.surrogate import save_model

        t0 = time.perf_counter()
        out = Path(out)
        (out / "tables").mkdir(parents=True, exist_ok=True)
        tables = []
        for name, df in self.tables.items():
            csv = out / "tables" / f"{name}.csv"
            csv_ready(df).to_csv(csv, index=False)
            (out / "tables" / f"{name}.md").write_text(md_table(df) + "\n")
            tables.append(csv)
        figures = []
        for fig in self.figures:
            t = time.perf_counter()
            figures.append(fig.draw(out / fig.name))
            self.timings_s[f"figure {fig.name}"] = time.perf_counter() - t
        models = [save_model(fit.model, out / f"surrogate_{slug(gpu)}.pt") for gpu, fit in self.surrogates.items()]
        self.timings_s["writing"] = time.perf_counter() - t0
        blocks = page(self, models)
        page_md = out / "report.md"
        page_md.write_text(render_markdown(blocks))
        page_html = out / "report.html"
        page_html.write_text(render_html(self.title, blocks))
        return ReportFiles(out, page_md, page_html, tables, figures, models, time.perf_counter() - t0)
