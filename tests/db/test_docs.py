"""The schema page is complete, current, and its example queries run on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.load import load_runs
from db.docs import EXAMPLES, UNIT_SUFFIXES, render, unit_of
from db.query import read_only_engine, run_query
from db.schema import Base
from db.views import VIEW_TABLES

PAGE = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
ALL_TABLES = [*Base.metadata.sorted_tables, *VIEW_TABLES.values()]


def test_the_page_is_generated_from_the_current_models() -> None:
    assert PAGE.read_text() == render(), "docs/schema.md is stale: run `python -m db.docs docs/schema.md`"


def test_every_table_and_column_is_documented_with_its_unit() -> None:
    page = render()
    for table in ALL_TABLES:
        assert f"### `{table.name}`" in page
        for c in table.columns:
            assert c.comment and c.comment.strip(), f"{table.name}.{c.name} has no comment= (its meaning)"
            assert f"| `{c.name}` |" in page
            if any(c.name.endswith(s) for s, _ in UNIT_SUFFIXES if s.startswith("_")):
                assert unit_of(c), f"{table.name}.{c.name} has a unit suffix but no unit"
    for suffix in ("energy_j", "duration_s", "power_w", "energy_kwh"):
        assert any(c.name.endswith(suffix) for c in VIEW_TABLES["run_summary"].columns)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_example_queries_run_and_answer(smoke_db, example) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    engine = read_only_engine(url)
    result = run_query(engine, url, example.sql, {"campaign": "smoke"})
    engine.dispose()
    assert result.rows, example.title
    assert all(col == col.lower() and " " not in col for col in result.columns)
    assert example.sql.strip() in PAGE.read_text()


def test_the_median_example_agrees_with_pandas(smoke_db) -> None:  # type: ignore[no-untyped-def]
    url, _ = smoke_db
    engine = read_only_engine(url)
    result = run_query(engine, url, EXAMPLES[0].sql, {"campaign": "smoke"})
    engine.dispose()
    got = {(r[0], r[1]): r[4] for r in result.rows}
    runs = load_runs(url, "smoke").runs
    want = runs.groupby(["arch_hash", "gpu_type"]).energy_per_image_j.median().to_dict()
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k]) for k in want)
