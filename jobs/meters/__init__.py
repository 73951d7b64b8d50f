"""Power meters behind one port (``jobs.meters.base.PowerMeter``).

Every meter is one ``jobs.meters.sampler.SamplingMeter`` (the thread, the fixed schedule, phase
marks and drain) around a device reader: ``nvml.NvmlReader``, ``rapl.RaplReader`` or
``simulated.SimulatedReader``; ``host.HostReader`` adds host CPU utilization and RSS to every sample.
"""

from __future__ import annotations

from jobs.meters.base import MeterError, PowerMeter


def make_meter(kind: str = "auto", rate_hz: float = 10.0, seed: int = 0) -> PowerMeter:
    """Build the meter named by ``kind``: ``auto`` (NVML when a GPU is visible, else simulated),
    ``nvml`` (fails with MeterError where no GPU is visible) or ``simulated``. Either one records
    the host's CPU utilization and the process's RSS (psutil) with every sample."""
    if kind not in ("auto", "nvml", "simulated"):
        raise MeterError(f"meter.kind={kind!r} is not allowed (allowed: auto, nvml, simulated)")
    from jobs.meters.host import HostReader

    if kind in ("auto", "nvml"):
        from jobs.meters.nvml import NvmlMeter, nvml_available

        if kind == "nvml" or nvml_available():
            return NvmlMeter(rate_hz=rate_hz, host=HostReader())
    from jobs.meters.simulated import SimulatedMeter

    return SimulatedMeter(rate_hz=rate_hz, seed=seed, host=HostReader())


__all__ = ["MeterError", "PowerMeter", "make_meter"]
