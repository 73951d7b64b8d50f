"""Intel RAPL package and DRAM energy from the powercap sysfs tree.

Layout read (``root`` defaults to ``/sys/class/powercap``)::

    intel-rapl:<s>/name              "package-<s>"   (one zone per CPU package/socket)
    intel-rapl:<s>/energy_uj         cumulative microjoules
    intel-rapl:<s>/max_energy_range_uj
    intel-rapl:<s>:<k>/name          "dram", "core", "uncore" (sub-zones of package s)

Only ``package-*`` and ``dram`` zones are measured (``core``/``uncore`` are inside the package
figure; ``psys`` and the ``intel-rapl-mmio`` duplicates are left out so nothing counts twice).
The counters wrap to 0 after ``max_energy_range_uj``: a reading below the previous one counts
``max_energy_range_uj - previous + reading``. That is exact as long as a counter is read at least
once per wrap (minutes at full load), which the meter's thread guarantees.

Since Linux 5.10, ``energy_uj`` is readable by root only: ``rapl_available`` is then False and
``RaplReader.start`` (``RaplMeter.start``) raises MeterError saying so.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Unpack

from jobs.meters.accuracy import rapl_accuracy
from jobs.meters.base import MeterError, Sample
from jobs.meters.sampler import MeterOptions, SamplingMeter, Tick

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/class/powercap")
_ZONE = re.compile(r"intel-rapl:(\d+)(?::(\d+))?")


@dataclasses.dataclass(frozen=True)
class RaplDomain:
    """One measured RAPL zone: ``key`` is ``package-<socket>`` or ``dram-<socket>``."""

    key: str
    kind: str  # "package" | "dram"
    socket: int
    path: Path
    max_energy_range_uj: int


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def find_rapl_domains(root: str | Path = DEFAULT_ROOT) -> list[RaplDomain]:
    """The package and DRAM zones under ``root`` (readable or not), packages first, by socket.

    A zone whose ``name`` or ``max_energy_range_uj`` cannot be read is skipped (logged).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[RaplDomain] = []
    for zone in sorted(root.iterdir()):
        m = _ZONE.fullmatch(zone.name)
        if not m:
            continue
        socket = int(m.group(1))
        try:
            name = (zone / "name").read_text().strip()
            max_uj = _read_int(zone / "max_energy_range_uj")
        except (OSError, ValueError) as exc:
            log.info("RAPL zone %s skipped: %s", zone, exc)
            continue
        if m.group(2) is None and name.startswith("package"):
            kind = "package"
        elif m.group(2) is not None and name == "dram":
            kind = "dram"
        else:
            continue
        found.append(RaplDomain(f"{kind}-{socket}", kind, socket, zone, max_uj))
    return sorted(found, key=lambda d: (d.kind != "package", d.socket))


def rapl_available(root: str | Path = DEFAULT_ROOT) -> bool:
    """True when at least one package zone's energy counter can be read."""
    for domain in find_rapl_domains(root):
        if domain.kind == "package":
            try:
                _read_int(domain.path / "energy_uj")
                return True
            except (OSError, ValueError):
                continue
    return False


@dataclasses.dataclass(frozen=True)
class RaplReading:
    """Energy per domain key in joules since ``RaplReader.start()`` (wrap-corrected); a domain
    that could not be read this time is absent from ``energy_j`` and listed in ``errors``."""

    t_s: float
    energy_j: dict[str, float]
    errors: dict[str, str]


class RaplReader:
    """Follows the RAPL counters of the package and DRAM zones, unwrapping them; the device
    reader of ``RaplMeter`` (one sample per readable domain and tick).

    A sample's ``energy_j`` is the domain's energy since start; ``power_w`` is the mean power
    since the previous reading of that domain (the reading taken at the meter's start defines
    none, so samples begin at the first tick). A domain whose counter cannot be read is reported
    (keyed by its domain key) and its sample is skipped for the tick.
    """

    source = "rapl"
    # Power is a counter difference since the last reading: a reading right after a boundary's
    # closing one spans almost no time, so the next tick opens the phase.
    opens_phases = False
    samples_at_stop = True

    def __init__(self, root: str | Path = DEFAULT_ROOT, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self._clock = clock
        self.domains: list[RaplDomain] = []
        self._last_uj: dict[str, int] = {}
        self._total_uj: dict[str, int] = {}
        self._last: dict[str, tuple[float, float]] = {}  # key -> (t_s, energy_j) of the last sample
        self._t0 = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Find the zones and take the baseline; MeterError when none can be read."""
        domains = find_rapl_domains(self.root)
        if not domains:
            raise MeterError(
                f"no RAPL package zone under {self.root}: not an Intel/AMD RAPL machine, or powercap absent"
            )
        refused: list[str] = []
        readable: list[RaplDomain] = []
        for d in domains:
            try:
                self._last_uj[d.key] = _read_int(d.path / "energy_uj")
                self._total_uj[d.key] = 0
                readable.append(d)
            except (OSError, ValueError) as exc:
                refused.append(f"{d.path / 'energy_uj'} ({exc.__class__.__name__})")
        if not any(d.kind == "package" for d in readable):
            raise MeterError(
                f"RAPL energy counters are not readable: {', '.join(refused)}; since Linux 5.10 energy_uj "
                "is root-only: ask an administrator for read access (e.g. a udev rule or chmod o+r) or run without RAPL"
            )
        if refused:
            log.warning("RAPL zones not readable, left out: %s", ", ".join(refused))
        self.domains = readable
        self._last = {}
        self._t0 = self._clock()

    def read(self) -> RaplReading:
        """Joules since start per domain; a counter below its last value has wrapped once."""
        with self._lock:
            t_s = self._clock() - self._t0
            errors: dict[str, str] = {}
            for d in self.domains:
                try:
                    raw = _read_int(d.path / "energy_uj")
                except (OSError, ValueError) as exc:
                    errors[d.key] = f"{exc.__class__.__name__}: {exc}"
                    continue
                last = self._last_uj[d.key]
                self._total_uj[d.key] += raw - last if raw >= last else d.max_energy_range_uj - last + raw
                self._last_uj[d.key] = raw
            energy = {k: v / 1e6 for k, v in self._total_uj.items() if k not in errors}
            return RaplReading(t_s=t_s, energy_j=energy, errors=errors)

    # -- the meter's device reader ---------------------------------------------------------------

    def open(self) -> None:
        """``start()``: find the zones and take the baseline."""
        self.start()

    def read_samples(self, tick: Tick) -> list[Sample]:
        """One sample per domain read with time passed since its last one (none at the first
        reading, which sets where power is measured from)."""
        reading = self.read()
        t_s = tick.now()
        taken: list[Sample] = []
        for device, d in enumerate(self.domains):
            if d.key in reading.errors:
                tick.error(device, "energy", reading.errors[d.key], t_s, key=d.key)
                continue
            energy = reading.energy_j[d.key]
            last = self._last.get(d.key)
            if last is not None and t_s - last[0] <= 0:
                continue
            self._last[d.key] = (t_s, energy)
            if last is not None:
                power_w = (energy - last[1]) / (t_s - last[0])
                taken.append(tick.sample(t_s, power_w, device=device, energy_j=energy))
        return taken

    def close(self) -> None:
        """Nothing to release (the counters are files read on each tick)."""

    def hardware(self) -> dict[str, object]:
        """The measured domains; ``devices[i]`` describes ``Sample.device == i``. Known only once
        ``start()`` has left out the zones it cannot read (MeterError before)."""
        domains = self.domains
        if not domains:
            raise MeterError("RaplMeter.hardware() describes the sampled domains: call start() first")
        return {
            "source": self.source,
            "rapl_root": str(self.root),
            "devices": [
                {
                    "index": i,
                    "key": d.key,
                    "kind": d.kind,
                    "socket": d.socket,
                    "max_energy_range_uj": d.max_energy_range_uj,
                    "accuracy": rapl_accuracy().to_dict(),
                }
                for i, d in enumerate(domains)
            ],
        }


class RaplMeter(SamplingMeter[RaplReader]):
    """PowerMeter over RAPL (``RaplReader``): one ``device`` per domain (``hardware()['devices']``
    maps them); read errors are counted in ``error_counts()`` per domain key. ``options`` are the
    ``SamplingMeter``'s (``clock``, ``wall_clock``, ``run_thread``, ...).

    ``mark`` takes a closing sample at the boundary while running, and no opening one: RAPL power
    is a counter difference over the interval since the last reading, and a reading right after
    the closing one spans almost no time (the next tick opens the phase).
    """

    def __init__(
        self, rate_hz: float = 10.0, root: str | Path = DEFAULT_ROOT, **options: Unpack[MeterOptions]
    ) -> None:
        super().__init__(RaplReader(root), rate_hz, **options)


__all__ = [
    "DEFAULT_ROOT",
    "RaplDomain",
    "RaplMeter",
    "RaplReader",
    "RaplReading",
    "find_rapl_domains",
    "rapl_available",
]
