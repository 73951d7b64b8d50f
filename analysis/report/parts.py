"""The pieces a report is made of, shared by its sections, its page and its files: the figures
to draw, the files written, and the names that tie a section's figures to the page."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The report's sections, in page order (a figure's or a note's ``section``).
SECTIONS = ("design", "summary", "statistics", "surrogate", "estimators", "pareto", "carbon", "traces", "runs")
#: How the page names the default factors.
FACTOR_NAMES = {"arch_hash": "architecture", "gpu_type": "GPU type", "epochs": "epoch budget"}


@dataclass
class FigureSpec:
    """A figure the report draws when written: file name, caption and the function that draws it."""

    name: str
    caption: str
    draw: Callable[[Path], Path] = field(repr=False)
    section: str = ""


@dataclass
class ReportFiles:
    """What `Report.write` wrote. ``str()`` is the Markdown page's path."""

    folder: Path
    page: Path
    html: Path
    tables: list[Path]
    figures: list[Path]
    models: list[Path]
    seconds: float  # wall time of the writing (of reading, analysing and writing from write_report)

    def __str__(self) -> str:
        return str(self.page)


def factor_name(factor: str) -> str:
    """A factor as the page names it (FACTOR_NAMES, else the column's name)."""
    return FACTOR_NAMES.get(factor, factor)


def factor_figure(name: str) -> str:
    """The file name of a factor's box plot (``name`` as `factor_name` gives it)."""
    return f"energy_by_{slug(name)}.png"


def slug(text: Any) -> str:
    """``text`` as a lower-case file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_").lower() or "x"
