"""NVML power meter: the job's GPUs read through nvidia-ml-py.

``NvmlReader`` reads the GPUs once per tick and describes them; ``NvmlMeter`` is the shared
``SamplingMeter`` around it (thread, fixed schedule, phase marks, drain: ``jobs.meters.sampler``).

What one sample holds (per device, per tick): power (NVML mW -> W), the total-energy counter
(mJ -> J, relative to the meter's start), GPU and memory utilization (%), memory used (MiB),
temperature (C), SM and memory clocks (MHz) and the enforced power limit (W), plus host CPU
utilization and RSS when a ``HostReader`` is given. ``t_s`` is ``clock()`` (monotonic) minus its
value at ``start()``; ``anchor_unix_s`` is the wall-clock time taken at the same moment.

Energy. GPUs from Volta on have a total-energy counter; it is preferred, and ``energy_j`` is that
counter relative to start. Where the GPU has none (``NVMLError_NotSupported`` when probed at
start, or any other error on that first read) ``energy_j`` stays None on every sample of that
device and consumers integrate power instead (``base.energy_j`` says which it used;
``hardware()["devices"][i]["energy_method"]`` says which is available). A counter that goes
backwards (GPU reset, driver reload) is not trusted across that interval: the interval is bridged
with trapezoid-integrated power and the count continues from the new raw value, so ``energy_j``
never decreases; the event is recorded in ``read_errors()``. A counter read that fails mid-run
leaves ``energy_j`` None on that one sample; the count resumes at the next read (the counter is
cumulative, so nothing is lost in between).

Errors mid-run. A failed NVML read never stops the thread: the field is stored as None, the error
is counted (``error_counts()``) and kept (the first ``max_errors_kept`` in ``read_errors()``).
Power is the one field a sample cannot do without: a device whose power read fails emits no
sample on that tick (its energy counter is still followed). Other devices are unaffected.

Device selection (which GPUs are the job's), in order:

1. ``devices=[...]``: NVML indices, as given;
2. ``CUDA_VISIBLE_DEVICES`` (Slurm's GPU binding sets it), read as CUDA does: comma-separated,
   up to the first invalid entry; ``""`` means no GPU. A ``GPU-...`` entry is a UUID or a unique
   UUID prefix. An integer ``k`` is the k-th GPU this process can open, in NVML order: NVML
   enumerates by PCI bus id, which is CUDA's order under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (set it
   in the job's environment; a warning is logged where it is unset and several GPUs could be
   meant; CUDA's default "fastest first" agrees on nodes of identical GPUs). Without cgroup device
   constraints every GPU opens and ``k`` is the NVML index; inside a Slurm job with
   ``ConstrainDevices`` NVML lists or opens only the job's GPUs (the others refuse with
   ``NoPermission``) and ``k`` counts those, which is what Slurm's renumbered value means.
   ``MIG-...`` entries are refused: NVML reports power per physical GPU only;
3. unset: every GPU.

``Sample.device`` is always the NVML index (as ``nvidia-smi`` shows it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

from jobs.meters.accuracy import nvml_accuracy
from jobs.meters.base import MeterError, Sample
from jobs.meters.host import MIB
from jobs.meters.sampler import MeterOptions, ReadError, SamplingMeter, Tick, describe

log = logging.getLogger(__name__)

NO_GPU = "no NVIDIA GPU visible"


@dataclasses.dataclass
class _Device:
    index: int
    handle: Any
    identity: dict[str, object]
    has_counter: bool
    last_raw_mj: int | None = None
    energy_mj: float = 0.0
    last_t_s: float | None = None
    last_power_w: float | None = None
    integrated_j: float = 0.0


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# nvmlDeviceGetArchitecture's values (NVML_DEVICE_ARCH_*), by name.
_ARCHITECTURES = {2: "kepler", 3: "maxwell", 4: "pascal", 5: "volta", 6: "turing", 7: "ampere", 8: "ada",
                  9: "hopper", 10: "blackwell"}


def _architecture_name(value: object) -> str:
    return _ARCHITECTURES.get(int(value), f"unknown ({value})")  # type: ignore[call-overload]


def visible_device_selectors(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` as CUDA reads them, or None when it is unset.

    Entries are taken up to the first one CUDA would reject (a negative or malformed number);
    ``""`` gives ``[]`` (no GPU for this job).
    """
    env = os.environ if environ is None else environ
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    selectors: list[str] = []
    for entry in (e.strip() for e in raw.split(",")):
        if entry.startswith(("GPU-", "MIG-")):
            selectors.append(entry)
        elif entry.isdigit():
            selectors.append(str(int(entry)))
        else:
            break
    return selectors


def _import_nvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:
        raise MeterError(
            f"{NO_GPU}: nvidia-ml-py is not installed ({exc}); pip install nvidia-ml-py"
        ) from None
    return pynvml


def _init_error_message(nvml: Any, exc: BaseException) -> str:
    if isinstance(exc, nvml.NVMLError_LibraryNotFound):
        why = "the NVML library (libnvidia-ml.so.1) was not found, so no NVIDIA driver is installed here"
    elif isinstance(exc, nvml.NVMLError_DriverNotLoaded):
        why = "the NVIDIA kernel driver is not loaded"
    elif isinstance(exc, nvml.NVMLError_NoPermission):
        why = "this user may not open the NVIDIA devices"
    else:
        why = f"NVML could not start ({describe(exc)})"
    return f"{NO_GPU}: {why}; run on a GPU node or use meter.kind=simulated"


def nvml_available(nvml: Any = None, environ: Mapping[str, str] | None = None) -> bool:
    """True when NVML starts and sees at least one GPU, and CUDA_VISIBLE_DEVICES is not empty.

    Cheap (init, device count, shutdown); False on any NVML error or when nvidia-ml-py is missing.
    """
    if visible_device_selectors(environ) == []:
        return False
    try:
        lib = _import_nvml() if nvml is None else nvml
    except MeterError:
        return False
    try:
        lib.nvmlInit()
    except lib.NVMLError:
        return False
    try:
        return int(lib.nvmlDeviceGetCount()) > 0
    except lib.NVMLError:
        return False
    finally:
        with contextlib.suppress(lib.NVMLError):
            lib.nvmlShutdown()


class NvmlReader:
    """The NVML device reader of ``NvmlMeter`` (see the module docstring for fields, energy,
    errors and devices).

    ``nvml`` is the pynvml module or a stand-in (``FakeNvml``); by default pynvml is imported in
    ``open()``.
    """

    source = "nvml"
    opens_phases = True
    samples_at_stop = True

    def __init__(
        self,
        devices: Sequence[int] | None = None,
        nvml: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._requested = None if devices is None else [int(d) for d in devices]
        self._nvml = nvml
        self._environ = environ
        self._lib: Any = None
        self._devices: list[_Device] = []
        self._system: dict[str, object] = {}

    def open(self) -> None:
        """Open NVML and resolve the job's GPUs; MeterError (one line) where no usable NVIDIA
        GPU is visible (NVML is shut down again then)."""
        lib = self._init_library()
        try:
            self._devices = self._open_devices(lib)
            self._system = self._system_identity(lib)
        except MeterError:
            self._shutdown(lib)
            raise
        except lib.NVMLError as exc:
            self._shutdown(lib)
            raise MeterError(f"{NO_GPU}: NVML failed while listing GPUs ({describe(exc)})") from None
        self._lib = lib

    def close(self) -> None:
        """Shut NVML down (never raises for NVML's sake); the devices stay described."""
        lib, self._lib = self._lib, None
        self._shutdown(lib)

    def hardware(self) -> dict[str, object]:
        """Identity of the measured GPUs for the hardware table.

        Flat keys describe the first device (``gpu_name``, ``gpu_uuid``, ``vbios_version``,
        ``pci_bus_id``, ``power_limit_w``, ``memory_total_mb``, ``energy_method``); ``devices``
        lists every one, each with its ``architecture`` and its ``accuracy``
        (``jobs.meters.accuracy.Accuracy``: documented power accuracy, NVML's averaging window for
        that architecture, counter resolution and update period); ``driver_version`` and ``nvml_version`` are the node's. Before
        ``open()`` NVML is opened briefly to find out (MeterError without a GPU).
        """
        if self._devices:
            devices, system = self._devices, self._system
        else:
            devices, system = self._identify_once()
        rows = [dict(d.identity) for d in devices]
        first = rows[0] if rows else {}
        env = os.environ if self._environ is None else self._environ
        return {
            "source": self.source,
            "gpu_count": len(rows),
            "gpu_name": first.get("name"),
            "gpu_uuid": first.get("uuid"),
            "vbios_version": first.get("vbios_version"),
            "pci_bus_id": first.get("pci_bus_id"),
            "power_limit_w": first.get("power_limit_w"),
            "memory_total_mb": first.get("memory_total_mb"),
            "energy_method": first.get("energy_method"),
            **system,
            "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
            "devices": rows,
        }

    # -- sampling ------------------------------------------------------------------------------

    def read_samples(self, tick: Tick) -> list[Sample]:
        """Read every device once; never raises for NVML's sake."""
        lib = self._lib
        if lib is None:
            return []
        return [s for d in self._devices if (s := self._read_device(lib, d, tick))]

    def _read_device(self, lib: Any, dev: _Device, tick: Tick) -> Sample | None:
        t_s = tick.now()

        def read(field: str, fn: str, *args: Any) -> Any:
            try:
                return getattr(lib, fn)(dev.handle, *args)
            except lib.NVMLError as exc:
                tick.error(dev.index, field, describe(exc), t_s)
                return None

        power_mw = read("power", "nvmlDeviceGetPowerUsage")
        power_w = None if power_mw is None else power_mw / 1000.0
        interval_j = self._interval_j(dev, t_s, power_w)
        dev.integrated_j += interval_j
        energy_j = self._follow_counter(dev, t_s, interval_j, read, tick) if dev.has_counter else None
        if power_w is not None:
            dev.last_power_w = power_w
        dev.last_t_s = t_s
        if power_w is None:
            return None
        util = read("utilization", "nvmlDeviceGetUtilizationRates")
        mem = read("memory", "nvmlDeviceGetMemoryInfo")
        temp = read("temperature", "nvmlDeviceGetTemperature", lib.NVML_TEMPERATURE_GPU)
        sm = read("sm_clock", "nvmlDeviceGetClockInfo", lib.NVML_CLOCK_SM)
        memclk = read("mem_clock", "nvmlDeviceGetClockInfo", lib.NVML_CLOCK_MEM)
        limit_mw = read("power_limit", "nvmlDeviceGetEnforcedPowerLimit")
        return tick.sample(
            t_s,
            power_w,
            device=dev.index,
            energy_j=energy_j,
            gpu_util=None if util is None else float(util.gpu),
            mem_util=None if util is None else float(util.memory),
            mem_used_mb=None if mem is None else mem.used / MIB,
            temperature_c=None if temp is None else float(temp),
            sm_clock_mhz=None if sm is None else float(sm),
            mem_clock_mhz=None if memclk is None else float(memclk),
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
        )

    def _follow_counter(
        self, dev: _Device, t_s: float, interval_j: float, read: Callable[..., Any], tick: Tick
    ) -> float | None:
        """Advance the device's energy (J since start) from its raw counter; None if unread."""
        raw = read("energy", "nvmlDeviceGetTotalEnergyConsumption")
        if raw is None:
            return None
        raw = int(raw)
        last = dev.last_raw_mj
        if last is None:
            # First successful read. At start this is the baseline (0 J); after failed reads, the
            # time before it is covered by integrated power so that energy stays relative to start.
            dev.energy_mj = 1000.0 * dev.integrated_j
        elif raw >= last:
            dev.energy_mj += raw - last
        else:
            dev.energy_mj += 1000.0 * interval_j
            tick.error(
                dev.index,
                "energy_reset",
                f"counter went back from {last} to {raw} mJ; {interval_j:.3f} J integrated from power instead",
                t_s,
            )
        dev.last_raw_mj = raw
        return dev.energy_mj / 1000.0

    @staticmethod
    def _interval_j(dev: _Device, t_s: float, power_w: float | None) -> float:
        """Trapezoid energy since the device's previous tick (last known power where one is missing)."""
        if dev.last_t_s is None:
            return 0.0
        p0 = dev.last_power_w if dev.last_power_w is not None else power_w
        p1 = power_w if power_w is not None else p0
        if p0 is None or p1 is None:
            return 0.0
        return 0.5 * (p0 + p1) * max(0.0, t_s - dev.last_t_s)

    # -- devices -------------------------------------------------------------------------------

    def _open_devices(self, lib: Any) -> list[_Device]:
        count = int(lib.nvmlDeviceGetCount())
        if count == 0:
            raise MeterError(f"{NO_GPU}: NVML started but found no GPU")
        env = os.environ if self._environ is None else self._environ
        if self._requested is not None:
            bad = [i for i in self._requested if not 0 <= i < count]
            if bad:
                raise MeterError(f"meter devices {bad} do not exist; NVML sees indices 0..{count - 1}")
            handles = [(i, lib.nvmlDeviceGetHandleByIndex(i)) for i in self._requested]
        else:
            handles = self._visible_handles(lib, count, visible_device_selectors(env), env)
        if not handles:
            raise MeterError(
                f"{NO_GPU}: CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r} selects no GPU"
            )
        return [self._describe_device(lib, i, h) for i, h in handles]

    def _visible_handles(
        self, lib: Any, count: int, selectors: list[str] | None, env: Mapping[str, str]
    ) -> list[tuple[int, Any]]:
        openable: list[tuple[int, Any]] = []
        for i in range(count):
            try:
                openable.append((i, lib.nvmlDeviceGetHandleByIndex(i)))
            except (lib.NVMLError_NoPermission, lib.NVMLError_GpuIsLost) as exc:
                log.info("GPU %d cannot be opened (%s); not this job's", i, describe(exc))
        if selectors is None:
            return openable
        if len(openable) > 1 and env.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
            log.warning(
                "CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number these GPUs differently from NVML; "
                "set CUDA_DEVICE_ORDER=PCI_BUS_ID so the measured GPUs are the ones the job uses"
            )
        chosen: list[tuple[int, Any]] = []
        uuids: dict[int, str] | None = None
        for sel in selectors:
            if sel.startswith("MIG-"):
                raise MeterError(
                    f"CUDA_VISIBLE_DEVICES entry {sel} is a MIG instance; NVML reports power per physical "
                    "GPU only: measure the parent GPU by passing its NVML index in meter devices"
                )
            if sel.startswith("GPU-"):
                if uuids is None:
                    uuids = {i: _text(lib.nvmlDeviceGetUUID(h)) for i, h in openable}
                hits = [pair for pair in openable if uuids[pair[0]].startswith(sel)]
                if len(hits) != 1:
                    what = "matches no GPU" if not hits else "matches several GPUs"
                    raise MeterError(
                        f"CUDA_VISIBLE_DEVICES entry {sel} {what}; GPUs here: {sorted(uuids.values())}"
                    )
                chosen.append(hits[0])
            else:
                k = int(sel)
                if k >= len(openable):
                    raise MeterError(
                        f"CUDA_VISIBLE_DEVICES entry {k} is out of range: this process can open "
                        f"{len(openable)} GPU(s)"
                    )
                chosen.append(openable[k])
        return chosen

    def _describe_device(self, lib: Any, index: int, handle: Any) -> _Device:
        def get(fn: str, convert: Callable[[Any], object] = lambda v: v) -> object:
            try:
                return convert(getattr(lib, fn)(handle))
            except lib.NVMLError as exc:
                log.info("GPU %d: %s failed (%s)", index, fn, describe(exc))
                return None

        has_counter = True
        try:
            lib.nvmlDeviceGetTotalEnergyConsumption(handle)
        except lib.NVMLError_NotSupported:
            has_counter = False
        except lib.NVMLError as exc:
            has_counter = False
            log.warning(
                "GPU %d: energy counter unreadable at start (%s); integrating power", index, describe(exc)
            )
        identity: dict[str, object] = {
            "index": index,
            "name": get("nvmlDeviceGetName", _text),
            "uuid": get("nvmlDeviceGetUUID", _text),
            "vbios_version": get("nvmlDeviceGetVbiosVersion", _text),
            "pci_bus_id": get("nvmlDeviceGetPciInfo", lambda p: _text(p.busId)),
            "power_limit_w": get("nvmlDeviceGetEnforcedPowerLimit", lambda mw: mw / 1000.0),
            "memory_total_mb": get("nvmlDeviceGetMemoryInfo", lambda m: m.total / MIB),
            "energy_method": "counter" if has_counter else "integrated",
            "architecture": get("nvmlDeviceGetArchitecture", _architecture_name),
        }
        identity["accuracy"] = nvml_accuracy(
            identity["architecture"], identity["name"], has_counter  # type: ignore[arg-type]
        ).to_dict()
        return _Device(index=index, handle=handle, identity=identity, has_counter=has_counter)

    @staticmethod
    def _system_identity(lib: Any) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, fn in (
            ("driver_version", "nvmlSystemGetDriverVersion"),
            ("nvml_version", "nvmlSystemGetNVMLVersion"),
        ):
            try:
                out[key] = _text(getattr(lib, fn)())
            except lib.NVMLError:
                out[key] = None
        return out

    def _init_library(self) -> Any:
        """The NVML library (injected or pynvml), initialised; its init errors as MeterError."""
        lib = _import_nvml() if self._nvml is None else self._nvml
        try:
            lib.nvmlInit()
        except lib.NVMLError as exc:
            raise MeterError(_init_error_message(lib, exc)) from None
        return lib

    def _identify_once(self) -> tuple[list[_Device], dict[str, object]]:
        lib = self._init_library()
        try:
            return self._open_devices(lib), self._system_identity(lib)
        except lib.NVMLError as exc:
            raise MeterError(f"{NO_GPU}: NVML failed while listing GPUs ({describe(exc)})") from None
        finally:
            self._shutdown(lib)

    @staticmethod
    def _shutdown(lib: Any) -> None:
        if lib is None:
            return
        try:
            lib.nvmlShutdown()
        except lib.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", describe(exc))


class NvmlMeter(SamplingMeter[NvmlReader]):
    """PowerMeter over NVML (``NvmlReader``; see the module docstring for fields, energy, errors
    and devices).

    ``nvml`` is the pynvml module or a stand-in (``FakeNvml``); by default pynvml is imported in
    ``start()``. ``options`` are the ``SamplingMeter``'s: ``host`` (a ``HostReader``), ``clock``,
    ``wall_clock``, ``run_thread``, ``max_errors_kept``, ``join_timeout_s``. ``clock`` gives the sample times (monotonic seconds); the thread itself always
    paces itself on real time. ``run_thread=False`` takes samples only at ``start``, ``mark``,
    ``drain``, ``stop`` and ``sample_once()``, which is how tests drive it deterministically.
    A sampler thread that does not stop within ``join_timeout_s`` (a hung NVML call) is left
    alone, and NVML with it.
    """

    def __init__(
        self,
        rate_hz: float = 10.0,
        devices: Sequence[int] | None = None,
        nvml: Any = None,
        *,
        environ: Mapping[str, str] | None = None,
        **options: Unpack[MeterOptions],
    ) -> None:
        super().__init__(NvmlReader(devices, nvml, environ), rate_hz, **options)


__all__ = ["NvmlMeter", "NvmlReader", "ReadError", "nvml_available", "visible_device_selectors"]
