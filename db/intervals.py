"""Intervals for predictions: a figure with its low and high end, and the 95 % prediction interval
of one more observation (Student t), written out so that the ground floor needs no scipy."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

# Two-sided 95 % Student-t quantiles by degrees of freedom (1..30); beyond 30 the Cornish-Fisher
# expansion around the normal's 1.96 (within 1e-4 of the exact quantile).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclasses.dataclass(frozen=True)
class Range:
    """A figure with its interval (low <= mid <= high)."""

    low: float = 0.0
    mid: float = 0.0
    high: float = 0.0

    def __add__(self, other: Range) -> Range:
        return Range(self.low + other.low, self.mid + other.mid, self.high + other.high)

    def __mul__(self, k: float) -> Range:
        return Range(self.low * k, self.mid * k, self.high * k)


def t95(dof: int) -> float:
    """The two-sided 95 % Student-t quantile with ``dof`` degrees of freedom (>= 1)."""
    if dof <= len(_T95):
        return _T95[dof - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def prediction_interval(values: Sequence[float]) -> Range:
    """Mean and the 95 % prediction interval of one more value (Student-t, n >= 2), never below 0;
    one value gives no spread."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return Range(mean, mean, mean)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * sd * math.sqrt(1 + 1 / n)
    return Range(max(0.0, mean - half), mean, mean + half)
