"""The measurement protocol's pieces that are not training: warm-up load, timed pauses, and
turning a tagged trace into per-phase and per-epoch energy."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from jobs.meters.base import Sample, energy_j


def warm_up(duration_s: float, device: str, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Run a compute-bound dummy load (square matmuls) on ``device`` for ``duration_s``.

    Returns the number of iterations done. The point is to bring the device to its steady
    thermal and clock state before the first measured trial."""
    if duration_s <= 0:
        return 0
    import torch

    n = 2048 if device.startswith("cuda") else 256
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    deadline = time.monotonic() + duration_s
    iterations = 0
    while time.monotonic() < deadline and not should_stop():
        a = torch.tanh(a @ b)
        iterations += 1
        if device.startswith("cuda") and iterations % 50 == 0:
            torch.cuda.synchronize()
    return iterations


def pause(duration_s: float) -> None:
    """An idle or cool-down window of the protocol (the device is left idle on purpose)."""
    if duration_s > 0:
        time.sleep(duration_s)


def _segments(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Contiguous runs of samples with the same (device, phase, epoch), per device in time order."""
    out: list[list[Sample]] = []
    by_device: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_device[s.device].append(s)
    for dev_samples in by_device.values():
        for _, group in itertools.groupby(dev_samples, key=lambda s: (s.phase, s.epoch)):
            out.append(list(group))
    return out


TRAINING_PHASES = ("train", "eval")  # a run's energy, duration and per-epoch energy are theirs


def training_energy_j(phases: dict[str, dict[str, Any]]) -> float:
    """Energy of the training phases in ``summarise(...)["phases"]``: a run's ``energy_j``."""
    return sum(phases[p]["energy_j"] for p in TRAINING_PHASES if p in phases)


def summarise(samples: Sequence[Sample]) -> dict[str, Any]:
    """Per-phase and per-epoch energy from a tagged trace (all devices summed).

    Returns ``{"phases": {phase: {...}}, "epochs": {epoch: energy_j}, "method": str}`` where
    ``method`` is "counter" when every segment's energy came from a device counter."""
    phases: dict[str, dict[str, Any]] = {}
    epochs: dict[int, float] = defaultdict(float)
    methods = set()
    clock_device = min((s.device for s in samples), default=0)  # time is counted on one device
    for seg in _segments(samples):
        joules, method = energy_j(seg)
        methods.add(method)
        span = seg[-1].t_s - seg[0].t_s if len(seg) > 1 else 0.0
        p = phases.setdefault(seg[0].phase, {"duration_s": 0.0, "energy_j": 0.0, "samples": 0})
        if seg[0].device == clock_device:
            p["duration_s"] += span
        p["energy_j"] += joules
        p["samples"] += len(seg)
        if seg[0].epoch is not None and seg[0].phase in TRAINING_PHASES:
            epochs[seg[0].epoch] += joules
    for p in phases.values():
        p["mean_power_w"] = p["energy_j"] / p["duration_s"] if p["duration_s"] > 0 else None
    return {"phases": phases, "epochs": dict(epochs), "method": "counter" if methods == {"counter"} else "integrated"}
