"""Carbontracker's records (as the worker's result file holds them) into their two tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert

from db.schema import CarbontrackerEpoch, CarbontrackerRun


def insert_carbontracker(conn: Connection, run_id: int, record: Mapping[str, Any] | None) -> None:
    """Write the run's Carbontracker rows from ``record`` (``CarbonRecord.to_dict()`` plus
    ``log_dir``); nothing when the run had no Carbontracker. The run has none yet: ingestion
    deletes a rewritten run's child rows first."""
    if not record:
        return
    actual = record.get("actual") or {}
    predicted = record.get("predicted") or {}
    conn.execute(
        insert(CarbontrackerRun).values(
            run_id=run_id,
            status=record["status"],
            components=",".join(record.get("components") or []),
            missing_components=",".join(record.get("missing_components") or []),
            epochs=len(record.get("epochs") or []),
            duration_s=record.get("duration_s"),
            pue=record.get("pue"),
            energy_kwh_reported=actual.get("energy_kwh_reported"),
            energy_j_raw=actual.get("energy_j_raw"),
            co2eq_g=actual.get("co2eq_g"),
            predicted_energy_kwh_reported=predicted.get("energy_kwh_reported"),
            predicted_co2eq_g=predicted.get("co2eq_g"),
            intensity_g_per_kwh=record.get("intensity_g_per_kwh"),
            intensity_source=record.get("intensity_source"),
            log_dir=record.get("log_dir"),
            messages="\n".join(record.get("messages") or []) or None,
        )
    )
    epochs = [
        {k: e.get(k) for k in ("epoch", "duration_s", "gpu_power_w", "cpu_power_w", "dram_power_w",
                                "gpu_energy_j", "cpu_energy_j", "dram_energy_j")} | {"run_id": run_id}
        for e in record.get("epochs") or []
    ]
    if epochs:
        conn.execute(insert(CarbontrackerEpoch), epochs)
