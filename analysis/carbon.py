"""Energy to CO2-equivalent, and the life-cycle model of the carbon-drivers framework (004).

A measured energy becomes facility energy through the PUE (power usage effectiveness: facility
energy / IT energy) and CO2eq through the carbon intensity of the electricity (g per kWh).

Life cycle (004): ``E_life = CT + T + I x e`` with CT the architecture search's energy (the sum of
the trainings it ran), T the final training's energy, I the energy of one inference and e the
expected number of inferences; ``CO2eq = E_life x EF`` with EF the emission factor. 004 models
training as ``T ~ E x D x I x theta`` (epochs x data-set size x inference cost x an overhead for
loss and backpropagation) and found that overhead approaching 80 % of the training's total
emissions, i.e. training costs about 1 / (1 - 0.8) = 5 times the forward passes alone.
004 counts PUE inside I; here the PUE is applied once, to the total, so give energies as measured
at the device (or pass ``pue=1``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from db.records import J_PER_KWH

J_PER_WH = 3600.0
WH_PER_KWH = 1e3
#: 004's estimate of the backpropagation overhead's share of total training emissions.
TRAINING_OVERHEAD_SHARE = 0.8


def energy_j_to_kwh(energy_j: float) -> float:
    """Joules to kilowatt-hours."""
    return energy_j / J_PER_KWH


def energy_kwh_to_j(energy_kwh: float) -> float:
    """Kilowatt-hours to joules."""
    return energy_kwh * J_PER_KWH


def co2eq_g(energy_kwh: float, intensity_g_per_kwh: float, pue: float = 1.0) -> float:
    """CO2eq (g) of ``energy_kwh`` measured at the device: ``energy x PUE x intensity``.

    Raises ValueError for a negative energy or intensity or a PUE below 1.
    """
    if energy_kwh < 0 or intensity_g_per_kwh < 0:
        raise ValueError(
            f"energy ({energy_kwh} kWh) and carbon intensity ({intensity_g_per_kwh} g/kWh) must be >= 0"
        )
    if pue < 1.0:
        raise ValueError(f"PUE is facility energy / IT energy and cannot be below 1, got {pue}")
    return energy_kwh * pue * intensity_g_per_kwh


def co2eq_g_from_j(energy_j: float, intensity_g_per_kwh: float, pue: float = 1.0) -> float:
    """CO2eq (g) of ``energy_j`` measured at the device (see `co2eq_g`)."""
    return co2eq_g(energy_j_to_kwh(energy_j), intensity_g_per_kwh, pue)


def co2eq_g_array(
    energy_j: Sequence[float] | np.ndarray,
    intensity_g_per_kwh: float | Sequence[float] | np.ndarray,
    pue: float | Sequence[float] | np.ndarray = 1.0,
) -> np.ndarray:
    """Element-wise CO2eq (g) of many energies (J), with one or per-run intensities and PUEs.

    NaN energies or intensities give NaN; a negative value or a PUE below 1 raises ValueError.
    """
    e = np.asarray(energy_j, dtype=np.float64)
    ci = np.asarray(intensity_g_per_kwh, dtype=np.float64)
    p = np.asarray(pue, dtype=np.float64)
    if np.any(e < 0) or np.any(ci < 0):
        raise ValueError("energies and carbon intensities must be >= 0")
    if np.any(p < 1.0):
        raise ValueError(f"PUE cannot be below 1, got {p[p < 1.0].tolist()}")
    return e / J_PER_KWH * p * ci


def search_energy_kwh(trainings_kwh: Iterable[float]) -> float:
    """004's CT: the energy of an architecture search, the sum of the trainings it ran (kWh)."""
    return float(sum(trainings_kwh))


def training_energy_kwh(
    epochs: float,
    n_samples: float,
    inference_kwh_per_sample: float,
    overhead_share: float = TRAINING_OVERHEAD_SHARE,
) -> float:
    """004's T = E x D x I x theta (kWh) with theta = 1 / (1 - overhead_share).

    ``overhead_share`` is the backpropagation overhead's share of the training total (004: about
    0.8, so theta is about 5).
    """
    if not 0 <= overhead_share < 1:
        raise ValueError(f"overhead_share is a fraction of the total in [0, 1), got {overhead_share}")
    return epochs * n_samples * inference_kwh_per_sample / (1.0 - overhead_share)


def life_cycle_energy_kwh(
    search_kwh: float, training_kwh: float, inference_kwh_per_call: float, inference_calls: float
) -> float:
    """004's E_life = CT + T + I x e (kWh)."""
    return search_kwh + training_kwh + inference_kwh_per_call * inference_calls


@dataclass(frozen=True)
class LifeCycle:
    """A life-cycle breakdown: energy per phase (kWh) and CO2eq (g)."""

    search_kwh: float
    training_kwh: float
    inference_kwh: float
    intensity_g_per_kwh: float
    pue: float

    @property
    def total_kwh(self) -> float:
        """E_life in kWh, at the device."""
        return self.search_kwh + self.training_kwh + self.inference_kwh

    @property
    def co2eq_g(self) -> float:
        """E_life x PUE x intensity, grams."""
        return co2eq_g(self.total_kwh, self.intensity_g_per_kwh, self.pue)

    def shares(self) -> dict[str, float]:
        """Each phase's share of E_life (NaN-free: all zero when E_life is 0)."""
        total = self.total_kwh
        parts = {"search": self.search_kwh, "training": self.training_kwh, "inference": self.inference_kwh}
        return {k: (v / total if total > 0 else 0.0) for k, v in parts.items()}


def life_cycle(
    search_kwh: float,
    training_kwh: float,
    inference_kwh_per_call: float,
    inference_calls: float,
    intensity_g_per_kwh: float,
    pue: float = 1.0,
) -> LifeCycle:
    """The life-cycle energy and CO2eq of one chosen architecture (004: E_life, then x EF)."""
    for name, v in (
        ("search_kwh", search_kwh),
        ("training_kwh", training_kwh),
        ("inference_kwh_per_call", inference_kwh_per_call),
        ("inference_calls", inference_calls),
    ):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    return LifeCycle(
        search_kwh=search_kwh,
        training_kwh=training_kwh,
        inference_kwh=inference_kwh_per_call * inference_calls,
        intensity_g_per_kwh=intensity_g_per_kwh,
        pue=pue,
    )
