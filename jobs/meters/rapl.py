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
``RaplReader.start`` raises MeterError saying so.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from jobs.meters.base import MeterError, Sample, check_phase

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
    """Follows the RAPL counters of the package and DRAM zones, unwrapping them."""

    def __init__(self, root: str | Path = DEFAULT_ROOT, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self._clock = clock
        self.domains: list[RaplDomain] = []
        self._last_uj: dict[str, int] = {}
        self._total_uj: dict[str, int] = {}
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


class RaplMeter:
    """PowerMeter over RAPL: one ``device`` per domain (``hardware()['devices']`` maps them).

    A sample's ``energy_j`` is the domain's energy since start; ``power_w`` is the mean power
    since the previous reading of that domain (the first reading after start defines none, so
    samples begin at the first tick). Read errors are counted in ``error_counts()`` and that
    domain's sample is skipped for the tick.
    """

    source = "rapl"

    def __init__(
        self,
        rate_hz: float = 10.0,
        root: str | Path = DEFAULT_ROOT,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        run_thread: bool = True,
    ) -> None:
        if not rate_hz > 0:
            raise MeterError(f"meter.rate_hz={rate_hz} must be > 0")
        self.rate_hz = float(rate_hz)
        self.reader = RaplReader(root, clock=clock)
        self._wall_clock = wall_clock
        self._run_thread = run_thread
        self.anchor_unix_s = 0.0
        self._phase = "idle"
        self._epoch: int | None = None
        self._samples: list[Sample] = []
        self._last: dict[str, tuple[float, float]] = {}  # key -> (t_s, energy_j)
        self._errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False

    def start(self) -> None:
        """Take the baseline and start the thread (MeterError where RAPL is unreadable)."""
        if self._running:
            raise MeterError("this RAPL meter is already running")
        self.reader.start()
        self.anchor_unix_s = self._wall_clock()
        self._last = {d.key: (0.0, 0.0) for d in self.reader.domains}
        self._running = True
        if self._run_thread:
            self._thread = threading.Thread(target=self._run, name="rapl-meter", daemon=True)
            self._thread.start()

    def sample_once(self) -> list[Sample]:
        """Read every domain now and keep the samples (also returned)."""
        with self._read_lock:
            reading = self.reader.read()
            with self._lock:
                phase, epoch = self._phase, self._epoch
            taken: list[Sample] = []
            for device, d in enumerate(self.reader.domains):
                if d.key in reading.errors:
                    self._errors[d.key] += 1
                    if self._errors[d.key] == 1:
                        log.warning("RAPL %s unreadable: %s; sampling goes on", d.key, reading.errors[d.key])
                    continue
                energy = reading.energy_j[d.key]
                t_prev, e_prev = self._last[d.key]
                dt = reading.t_s - t_prev
                if dt <= 0:
                    continue
                self._last[d.key] = (reading.t_s, energy)
                taken.append(
                    Sample(reading.t_s, phase, epoch, (energy - e_prev) / dt, device=device, energy_j=energy)
                )
            with self._lock:
                self._samples.extend(taken)
            return taken

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        while not self._stop_event.wait(period):
            try:
                self.sample_once()
            except Exception as exc:  # never let one bad tick end the trace
                self._errors["sampler"] += 1
                log.warning("RAPL tick failed: %s", exc)

    def mark(self, phase: str, epoch: int | None = None) -> None:
        """Tag what follows; while running, a closing sample is taken at the boundary. There is no
        opening one: RAPL power is a counter difference over the interval since the last reading,
        and a reading right after the closing one spans almost no time (the next tick opens the
        phase)."""
        check_phase(phase)
        if self._running:
            self.sample_once()
        with self._lock:
            self._phase, self._epoch = phase, epoch

    def drain(self) -> list[Sample]:
        """Samples since the previous drain, oldest first (a closing sample first while running)."""
        if self._running:
            self.sample_once()
        with self._lock:
            out, self._samples = self._samples, []
        return out

    def stop(self) -> None:
        """Stop the thread after a closing sample (idempotent)."""
        if not self._running:
            return
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.sample_once()
        self._running = False

    def error_counts(self) -> dict[str, int]:
        """Read failures per domain key."""
        return dict(self._errors)

    def hardware(self) -> dict[str, object]:
        """The measured domains; ``devices[i]`` describes ``Sample.device == i``. Known only once
        ``start()`` has left out the zones it cannot read (MeterError before)."""
        domains = self.reader.domains
        if not domains:
            raise MeterError("RaplMeter.hardware() describes the sampled domains: call start() first")
        return {
            "source": self.source,
            "rapl_root": str(self.reader.root),
            "devices": [
                {
                    "index": i,
                    "key": d.key,
                    "kind": d.kind,
                    "socket": d.socket,
                    "max_energy_range_uj": d.max_energy_range_uj,
                }
                for i, d in enumerate(domains)
            ],
        }


__all__ = [
    "DEFAULT_ROOT",
    "RaplDomain",
    "RaplMeter",
    "RaplReader",
    "RaplReading",
    "find_rapl_domains",
    "rapl_available",
]
