"""A fake NVML library object: pynvml's names, units and errors, driven by synthetic curves.

``FakeNvml`` stands where the ``pynvml`` module would (``NvmlMeter(nvml=FakeNvml(...))``) and
reproduces the behaviours of the real library that the meter has to survive:

- every call before ``nvmlInit`` (or after the matching ``nvmlShutdown``) raises
  ``NVMLError_Uninitialized``; ``nvmlInit`` raises ``NVMLError_LibraryNotFound`` when configured
  with no library (a machine without the driver) and ``NVMLError_DriverNotLoaded`` when the
  library is there but the kernel driver is not;
- units as NVML reports them: power and power limits in mW (int), the total-energy counter in
  mJ (int, counted since "driver load", so it starts at a large offset, not at 0), memory in
  bytes, clocks in MHz, temperature in degrees C, utilization in percent;
- GPUs older than Volta have no energy counter: ``nvmlDeviceGetTotalEnergyConsumption`` raises
  ``NVMLError_NotSupported`` for them;
- errors injected mid-run (``fail``), e.g. a transient ``NVMLError_Unknown`` on one device, or
  ``NVMLError_GpuIsLost`` until cleared;
- energy counter resets (``reset_energy_counter``), as after a GPU reset or driver reload;
- a counter that disagrees with the power readings (``FakeGpu.energy_scale``).

The exceptions and constants are pynvml's own (``fake.NVMLError_NotSupported is
pynvml.NVMLError_NotSupported``), so an adapter's ``except nvml.NVMLError`` paths are the real
ones. Power follows a callable of time (seconds since the fake was created, on the given clock),
so a test knows the exact integral; ``trace_curve`` turns a recorded trace into such a callable
for replays and demos.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

Curve = Callable[[float], float]  # seconds since the fake's origin -> value
Value = float | Curve


def _at(value: Value, t_s: float) -> float:
    return float(value(t_s)) if callable(value) else float(value)


class FakeClock:
    """A monotonic clock that moves only when told to (share it between fake and meter)."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now_s = start_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, dt_s: float) -> None:
        """Move the clock forward by ``dt_s`` seconds (>= 0)."""
        if dt_s < 0:
            raise ValueError(f"a monotonic clock cannot go back (dt_s={dt_s})")
        with self._lock:
            self._now_s += dt_s


def trace_curve(t_s: Sequence[float], power_w: Sequence[float]) -> Curve:
    """A power curve that linearly interpolates a recorded trace (held flat outside it)."""
    if len(t_s) != len(power_w) or not t_s:
        raise ValueError("trace_curve needs equally long, non-empty t_s and power_w")
    ts, ps = list(t_s), list(power_w)

    def curve(t: float) -> float:
        i = bisect.bisect_right(ts, t)
        if i == 0:
            return ps[0]
        if i == len(ts):
            return ps[-1]
        frac = (t - ts[i - 1]) / (ts[i] - ts[i - 1])
        return ps[i - 1] + frac * (ps[i] - ps[i - 1])

    return curve


@dataclasses.dataclass
class FakeGpu:
    """One simulated GPU. Values are constants or callables of time (s since the fake's origin)."""

    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-5d3e1a2b-0000-4000-8000-000000000000"
    power_w: Value = 60.0
    has_energy_counter: bool = True  # False: a pre-Volta GPU (NotSupported)
    energy_offset_mj: int = 8_123_456_789  # counter value at the fake's origin ("since driver load")
    power_limit_w: float = 400.0
    memory_total_mib: int = 40_960
    memory_used_mib: Value = 1_024.0
    gpu_util_pct: Value = 0.0
    mem_util_pct: Value = 0.0
    temperature_c: Value = 35.0
    sm_clock_mhz: Value = 1_410.0
    mem_clock_mhz: Value = 1_215.0
    pci_bus_id: str = "00000000:07:00.0"
    vbios_version: str = "92.00.45.00.06"
    architecture: int = 7  # NVML_DEVICE_ARCH_AMPERE
    energy_scale: float = 1.0  # the counter counts this times the power curve's integral (a miscalibration)


@dataclasses.dataclass
class _Failure:
    function: str
    code: int
    device: int | None
    remaining: int | None  # None: until cleared


class _Handle:
    """Opaque device handle, as NVML's are."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<fake nvmlDevice {self.index}>"


class _GpuState:
    def __init__(self, gpu: FakeGpu, t_s: float) -> None:
        self.gpu = gpu
        self.energy_mj = float(gpu.energy_offset_mj)
        self.t_s = t_s


class FakeNvml:
    """A stand-in for the ``pynvml`` module (see the module docstring for what it reproduces).

    ``calls`` counts the calls by function name, so tests can check what an adapter asked for.
    """

    def __init__(
        self,
        gpus: Sequence[FakeGpu] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        library_present: bool = True,
        driver_loaded: bool = True,
        driver_version: str = "550.54.15",
        nvml_version: str = "12.550.54.15",
        energy_step_s: float = 0.01,
    ) -> None:
        import pynvml  # the real exception classes and constants; importing it loads no library

        for name in dir(pynvml):
            if name.startswith(("NVMLError", "NVML_")):
                setattr(self, name, getattr(pynvml, name))
        self._pynvml = pynvml
        self._clock = clock
        self._origin_s = clock()
        self.library_present = library_present
        self.driver_loaded = driver_loaded
        self.driver_version = driver_version
        self.nvml_version = nvml_version
        self.energy_step_s = energy_step_s
        self._lock = threading.RLock()
        self._refcount = 0
        self._failures: list[_Failure] = []
        self.calls: Counter[str] = Counter()
        configured = [FakeGpu()] if gpus is None else list(gpus)
        self._gpus = [_GpuState(g, 0.0) for g in configured]

    # -- control (not part of NVML) -----------------------------------------------------------

    def now_s(self) -> float:
        """Seconds since the fake's origin: the argument its curves are evaluated at."""
        return self._clock() - self._origin_s

    def fail(
        self, function: str, code: int | None = None, device: int | None = None, times: int | None = 1
    ) -> None:
        """Make the next ``times`` calls of ``function`` (on ``device``, or on any) raise
        ``NVMLError(code)`` (default ``NVML_ERROR_UNKNOWN``); ``times=None`` until ``clear_failures``."""
        if not hasattr(self, function):
            raise AttributeError(f"FakeNvml has no function {function!r}")
        err = self._pynvml.NVML_ERROR_UNKNOWN if code is None else code
        with self._lock:
            self._failures.append(_Failure(function, err, device, times))

    def clear_failures(self) -> None:
        """Forget every injected failure."""
        with self._lock:
            self._failures.clear()

    def reset_energy_counter(self, device: int) -> None:
        """Restart ``device``'s energy counter at 0 now (as after a GPU reset or driver reload)."""
        with self._lock:
            state = self._gpus[device]
            self._advance_energy(state)
            state.energy_mj = 0.0

    def true_energy_mj(self, device: int) -> float:
        """The exact counter value now (float), whatever the configured errors."""
        with self._lock:
            state = self._gpus[device]
            self._advance_energy(state)
            return state.energy_mj

    # -- internals -----------------------------------------------------------------------------

    def _error(self, code: int) -> Exception:
        return self._pynvml.NVMLError(code)

    def _enter(self, function: str, handle: Any = None, index: int | None = None) -> _GpuState | None:
        """Count the call, check init, injected failures and the handle; return the GPU state.

        ``index`` names the device of calls that take an index instead of a handle."""
        self.calls[function] += 1
        if self._refcount <= 0:
            raise self._error(self._pynvml.NVML_ERROR_UNINITIALIZED)
        state = None
        if handle is not None:
            if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self._gpus):
                raise self._error(self._pynvml.NVML_ERROR_INVALID_ARGUMENT)
            index = handle.index
            state = self._gpus[index]
        for failure in self._failures:
            if failure.function == function and failure.device in (None, index):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                raise self._error(failure.code)
        return state

    def _advance_energy(self, state: _GpuState) -> None:
        """Integrate the power curve (composite Simpson, in mJ) from the last update to now."""
        t1 = self.now_s()
        t0 = state.t_s
        if t1 <= t0:
            return
        n = max(2, 2 * math.ceil((t1 - t0) / (2 * self.energy_step_s)))
        h = (t1 - t0) / n
        curve = state.gpu.power_w
        total = _at(curve, t0) + _at(curve, t1)
        for i in range(1, n):
            total += (4 if i % 2 else 2) * _at(curve, t0 + i * h)
        state.energy_mj += 1000.0 * state.gpu.energy_scale * total * h / 3.0
        state.t_s = t1

    # -- NVML ------------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        with self._lock:
            self.calls["nvmlInit"] += 1
            if not self.library_present:
                raise self._error(self._pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
            if not self.driver_loaded:
                raise self._error(self._pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
            self._refcount += 1

    def nvmlInitWithFlags(self, flags: int) -> None:
        self.nvmlInit()

    def nvmlShutdown(self) -> None:
        with self._lock:
            self._enter("nvmlShutdown")
            self._refcount -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        with self._lock:
            self._enter("nvmlSystemGetDriverVersion")
            return self.driver_version

    def nvmlSystemGetNVMLVersion(self) -> str:
        with self._lock:
            self._enter("nvmlSystemGetNVMLVersion")
            return self.nvml_version

    def nvmlDeviceGetCount(self) -> int:
        with self._lock:
            self._enter("nvmlDeviceGetCount")
            return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        with self._lock:
            self._enter("nvmlDeviceGetHandleByIndex", index=index)
            if not 0 <= index < len(self._gpus):
                raise self._error(self._pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> _Handle:
        with self._lock:
            self._enter("nvmlDeviceGetHandleByUUID")
            for i, state in enumerate(self._gpus):
                if state.gpu.uuid == uuid:
                    return _Handle(i)
            raise self._error(self._pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetIndex(self, handle: _Handle) -> int:
        with self._lock:
            self._enter("nvmlDeviceGetIndex", handle)
            return handle.index

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        with self._lock:
            return self._enter("nvmlDeviceGetName", handle).gpu.name  # type: ignore[union-attr]

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        with self._lock:
            return self._enter("nvmlDeviceGetUUID", handle).gpu.uuid  # type: ignore[union-attr]

    def nvmlDeviceGetVbiosVersion(self, handle: _Handle) -> str:
        with self._lock:
            return self._enter("nvmlDeviceGetVbiosVersion", handle).gpu.vbios_version  # type: ignore[union-attr]

    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> types.SimpleNamespace:
        with self._lock:
            gpu = self._enter("nvmlDeviceGetPciInfo", handle).gpu  # type: ignore[union-attr]
            return types.SimpleNamespace(busId=gpu.pci_bus_id, busIdLegacy=gpu.pci_bus_id[4:])

    def nvmlDeviceGetArchitecture(self, handle: _Handle) -> int:
        with self._lock:
            return self._enter("nvmlDeviceGetArchitecture", handle).gpu.architecture  # type: ignore[union-attr]

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        with self._lock:
            state = self._enter("nvmlDeviceGetPowerUsage", handle)
            return round(1000.0 * _at(state.gpu.power_w, self.now_s()))  # type: ignore[union-attr]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        with self._lock:
            state = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
            assert state is not None
            if not state.gpu.has_energy_counter:
                raise self._error(self._pynvml.NVML_ERROR_NOT_SUPPORTED)
            self._advance_energy(state)
            return int(state.energy_mj)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        with self._lock:
            state = self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
            return round(1000.0 * state.gpu.power_limit_w)  # type: ignore[union-attr]

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        with self._lock:
            state = self._enter("nvmlDeviceGetPowerManagementLimit", handle)
            return round(1000.0 * state.gpu.power_limit_w)  # type: ignore[union-attr]

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> types.SimpleNamespace:
        with self._lock:
            gpu = self._enter("nvmlDeviceGetUtilizationRates", handle).gpu  # type: ignore[union-attr]
            t = self.now_s()
            return types.SimpleNamespace(
                gpu=round(_at(gpu.gpu_util_pct, t)), memory=round(_at(gpu.mem_util_pct, t))
            )

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> types.SimpleNamespace:
        with self._lock:
            gpu = self._enter("nvmlDeviceGetMemoryInfo", handle).gpu  # type: ignore[union-attr]
            total = gpu.memory_total_mib * 2**20
            used = round(_at(gpu.memory_used_mib, self.now_s()) * 2**20)
            return types.SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        with self._lock:
            gpu = self._enter("nvmlDeviceGetTemperature", handle).gpu  # type: ignore[union-attr]
            if sensor != self._pynvml.NVML_TEMPERATURE_GPU:
                raise self._error(self._pynvml.NVML_ERROR_INVALID_ARGUMENT)
            return round(_at(gpu.temperature_c, self.now_s()))

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        with self._lock:
            gpu = self._enter("nvmlDeviceGetClockInfo", handle).gpu  # type: ignore[union-attr]
            if clock_type == self._pynvml.NVML_CLOCK_SM:
                return round(_at(gpu.sm_clock_mhz, self.now_s()))
            if clock_type == self._pynvml.NVML_CLOCK_MEM:
                return round(_at(gpu.mem_clock_mhz, self.now_s()))
            raise self._error(self._pynvml.NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        with self._lock:
            self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
            return []

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Handle) -> list[Any]:
        with self._lock:
            self._enter("nvmlDeviceGetGraphicsRunningProcesses", handle)
            return []


__all__ = ["FakeClock", "FakeGpu", "FakeNvml", "trace_curve"]
