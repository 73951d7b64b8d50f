"""Carbontracker alongside a trial, made safe for batch jobs, and its logs parsed into records.

Carbontracker (2.4.x) can hurt the job it measures; this adapter closes each way it can:

- ``os._exit(70)`` from its monitoring thread when a requested component is missing (``gpu``
  on a CPU node) or a component fails: the adapter requests only components that are present
  (GPU via ``nvml_available``; its CPU component always exists, RAPL or a TDP table) and always
  passes ``ignore_errors=True``, under which its failures stop monitoring instead;
- blocking network calls: its constructor geolocates the node by IP (5 s timeout) and its
  intensity fetchers call ``requests.get`` without a timeout. The adapter gives it no API keys
  (so no fetcher exists) and replaces the geolocation, while constructing it, with a configured
  carbon intensity (``intensity_g_per_kwh``, recorded with ``intensity_source``);
- ``sys.exit`` and exceptions escaping its calls, and a stop that waits on its thread: every
  call runs in a helper thread with a deadline (``call_timeout_s``); on an error or a timeout the
  tracker is abandoned, the record says why, and the trial goes on;
- console output: while it is constructed its loggers' console handlers are swapped for a file
  in ``log_dir`` (``<prefix>_console.log``) and none of them propagates, so not one of its lines
  reaches the terminal (its own log files stay).

Records are parsed from its log files (kept in ``log_dir``), not from its own parser, which
misreads the epoch count of an interrupted run. Its energy figures include a PUE factor (1.58 in
2.4.x, read from the log): ``energy_kwh_reported`` is its figure, ``energy_j_raw`` is that
divided by the PUE, comparable with NVML's. Per-epoch energy is the logged average power per
device times the logged epoch duration (10 ms resolution), raw.

Which GPUs it measures is Carbontracker's choice, not the job's: integer ``CUDA_VISIBLE_DEVICES``
entries as NVML indices, and every GPU of the node when the variable is unset or holds UUIDs.
Prefer ``NvmlMeter`` figures for the job's GPU energy; Carbontracker's are kept for comparison
with the literature that reports them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from db.records import J_PER_KWH, WORLD_AVERAGE_G_PER_KWH
from jobs.meters.base import MeterError

log = logging.getLogger(__name__)

KNOWN_COMPONENTS = ("gpu", "cpu")

_construct_lock = threading.Lock()  # the geolocation patch is process-wide while it lasts


@dataclasses.dataclass
class CarbonEpoch:
    """One epoch as Carbontracker logged it; energies are raw (no PUE), None where unmeasured."""

    epoch: int
    duration_s: float | None
    gpu_power_w: float | None = None
    cpu_power_w: float | None = None
    dram_power_w: float | None = None
    gpu_energy_j: float | None = None
    cpu_energy_j: float | None = None
    dram_energy_j: float | None = None

    @property
    def energy_j(self) -> float | None:
        """Raw energy of all measured components (None if none was measured)."""
        parts = [e for e in (self.gpu_energy_j, self.cpu_energy_j, self.dram_energy_j) if e is not None]
        return sum(parts) if parts else None


@dataclasses.dataclass
class CarbonTotals:
    """A consumption block of Carbontracker's output (actual or predicted).

    ``epochs`` is the count it printed (wrong for interrupted runs; count ``CarbonRecord.epochs``
    instead); ``duration_s`` is rounded to whole seconds by Carbontracker.
    """

    epochs: int | None
    duration_s: float | None
    energy_kwh_reported: float
    energy_j_raw: float
    co2eq_g: float


@dataclasses.dataclass
class CarbonRecord:
    """What a Carbontracker run measured, or why it measured nothing.

    ``status``: ``ok`` (epochs measured), ``no_components`` (none of the requested components
    exists here, or Carbontracker found none; the trial ran unmeasured), ``failed`` (it errored or
    timed out; ``messages`` says how), ``not_started``.
    """

    status: str
    requested_components: list[str]
    components: list[str]
    missing_components: list[str]
    devices: dict[str, list[str]]
    epochs: list[CarbonEpoch]
    actual: CarbonTotals | None
    predicted: CarbonTotals | None
    pue: float | None
    intensity_g_per_kwh: float | None
    intensity_source: str
    interrupted: bool
    log_files: list[str]
    messages: list[str]

    @property
    def duration_s(self) -> float:
        """Sum of the logged epoch durations."""
        return sum(e.duration_s or 0.0 for e in self.epochs)

    def total_j(self, component: str) -> float | None:
        """Raw energy of ``gpu``, ``cpu`` or ``dram`` over the logged epochs (None if never measured)."""
        values = [getattr(e, f"{component}_energy_j") for e in self.epochs]
        present = [v for v in values if v is not None]
        return sum(present) if present else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what the adapter writes next to the logs)."""
        out = dataclasses.asdict(self)
        out["duration_s"] = self.duration_s
        out["total_energy_j"] = {c: self.total_j(c) for c in ("gpu", "cpu", "dram")}
        return out


# -- parsing -------------------------------------------------------------------------------------

_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:,\d+)? - (.*)$")
_PUE = re.compile(r"PUE coefficient of ([0-9.]+)")
_FOUND = re.compile(r"The following components were found: (.*)$")
_COMPONENT = re.compile(r"(GPU|CPU) with device\(s\) (.*?)\.(?=\s+(?:GPU|CPU) with device\(s\)|\s*$)")
_EPOCH = re.compile(r"^Epoch (\d+):$")
_DURATION = re.compile(r"^Duration: (-?)(\d+):(\d+):([0-9.]+)$")
_POWER = re.compile(r"^Average power usage \(W\) for (\w+): (.*)$")
_INTENSITY = re.compile(r"Average carbon intensity during training was ([0-9.]+) gCO2eq/kWh")
_BLOCK = re.compile(
    r"(Actual|Predicted) consumption(?: for (\d+) epoch\(s\))?:\s*\n"
    r"\s*Time:\s*(-?\d+):(\d+):([0-9.]+)\s*\n"
    r"\s*Energy:\s*([0-9.eE+-]+) kWh\s*\n"
    r"\s*CO2eq:\s*([0-9.eE+-]+) g"
)


def _powers(text: str) -> list[float | None]:
    """Carbontracker prints a float, ``None``, ``nan`` or a numpy array (``[1.5 2. ]``)."""
    text = text.strip()
    items = [t for t in re.split(r"[\s,]+", text.strip("[]")) if t] if text.startswith("[") else [text]
    out: list[float | None] = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            value = float("nan")
        out.append(None if value != value else value)
    return out


def _std_messages(text: str) -> list[str]:
    return [m.group(1) for line in text.splitlines() if (m := _LINE.match(line))]


def parse_std_log(text: str) -> dict[str, Any]:
    """Parse Carbontracker's main log: PUE, components and devices, epochs, intensity."""
    pue = None
    devices: dict[str, list[str]] = {}
    epochs: list[CarbonEpoch] = []
    intensity = None
    interrupted = False
    for msg in _std_messages(text):
        if (m := _PUE.search(msg)) and pue is None:
            pue = float(m.group(1))
        elif m := _FOUND.match(msg):
            for comp in _COMPONENT.finditer(m.group(1)):
                devices[comp.group(1).lower()] = [d.strip() for d in comp.group(2).split(", ")]
        elif m := _EPOCH.match(msg):
            epochs.append(CarbonEpoch(epoch=int(m.group(1)), duration_s=None))
        elif (m := _DURATION.match(msg)) and epochs:
            sign = -1.0 if m.group(1) else 1.0
            epochs[-1].duration_s = sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4)))
        elif (m := _POWER.match(msg)) and epochs:
            _set_power(epochs[-1], m.group(1).lower(), _powers(m.group(2)), devices)
        elif m := _INTENSITY.search(msg):
            intensity = float(m.group(1))
        elif msg.startswith("Training was interrupted"):
            interrupted = True
    return {
        "pue": pue,
        "devices": devices,
        "epochs": epochs,
        "intensity": intensity,
        "interrupted": interrupted,
    }


def _set_power(
    epoch: CarbonEpoch, component: str, powers: list[float | None], devices: dict[str, list[str]]
) -> None:
    """Sum device powers into the epoch's component fields; DRAM devices (``dram:N``, from RAPL)
    are split off the CPU component."""
    names = devices.get(component, [])
    groups: dict[str, list[float]] = {}
    for i, p in enumerate(powers):
        if p is None:
            continue
        name = names[i] if i < len(names) and len(names) == len(powers) else component
        group = "dram" if component == "cpu" and name.startswith("dram") else component
        groups.setdefault(group, []).append(p)
    for group, values in groups.items():
        if group not in ("gpu", "cpu", "dram"):
            continue
        power = sum(values)
        setattr(epoch, f"{group}_power_w", power)
        if epoch.duration_s is not None:
            setattr(epoch, f"{group}_energy_j", power * epoch.duration_s)


def parse_output_log(text: str, pue: float | None) -> tuple[CarbonTotals | None, CarbonTotals | None]:
    """The actual and predicted consumption blocks (first of each), raw energy = reported / PUE."""
    found: dict[str, CarbonTotals] = {}
    for m in _BLOCK.finditer(text):
        kind = m.group(1).lower()
        if kind in found:
            continue
        energy_kwh = float(m.group(6))
        duration = int(m.group(3)) * 3600 + int(m.group(4)) * 60 + float(m.group(5))
        found[kind] = CarbonTotals(
            epochs=None if m.group(2) is None else int(m.group(2)),
            duration_s=-duration if m.group(3).startswith("-") else duration,
            energy_kwh_reported=energy_kwh,
            energy_j_raw=energy_kwh * J_PER_KWH / (pue or 1.0),
            co2eq_g=float(m.group(7)),
        )
    return found.get("actual"), found.get("predicted")


def parse_logs(std_log: str | Path, output_log: str | Path) -> dict[str, Any]:
    """Parse one run's pair of log files into the pieces of a ``CarbonRecord``."""
    std = parse_std_log(Path(std_log).read_text(errors="replace"))
    out_path = Path(output_log)
    out_text = out_path.read_text(errors="replace") if out_path.exists() else ""
    std["actual"], std["predicted"] = parse_output_log(out_text, std["pue"])
    return std


# -- the adapter -----------------------------------------------------------------------------------


def _present_components(requested: Sequence[str], nvml: Any) -> tuple[list[str], list[str]]:
    from jobs.meters.nvml import nvml_available

    present: list[str] = []
    missing: list[str] = []
    for comp in requested:
        ok = nvml_available(nvml) if comp == "gpu" else True
        (present if ok else missing).append(comp)
    return present, missing


def _call_with_deadline(fn: Callable[[], Any], timeout_s: float) -> tuple[bool, str | None]:
    """Run ``fn`` in a daemon thread; (finished, error text). SystemExit is caught there too."""
    outcome: dict[str, str | None] = {"error": None}

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - sys.exit(70) from Carbontracker lands here
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=target, name="carbontracker-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, f"no answer within {timeout_s} s"
    return True, outcome["error"]


class CarbonTrackerRun:
    """Carbontracker over one trial: ``start()``, ``epoch_start()``/``epoch_end()`` from the
    training loop, ``stop() -> CarbonRecord``. Never raises once constructed, never blocks longer
    than ``call_timeout_s`` per call, and never lets Carbontracker end the process.

    ``epochs`` is the trial's epoch budget; logs go to ``log_dir`` under a unique prefix, with
    the parsed record beside them (``<prefix>_record.json``). ``nvml`` replaces pynvml in the GPU
    presence check (tests).
    """

    def __init__(
        self,
        epochs: int,
        log_dir: str | Path,
        *,
        components: Sequence[str] = KNOWN_COMPONENTS,
        intensity_g_per_kwh: float = WORLD_AVERAGE_G_PER_KWH,
        intensity_source: str = "configured: world average 2024 (IEA, as in Carbontracker 2.4)",
        update_interval_s: float = 1.0,
        epochs_before_pred: int = 1,
        call_timeout_s: float = 30.0,
        log_prefix: str | None = None,
        nvml: Any = None,
    ) -> None:
        unknown = [c for c in components if c not in KNOWN_COMPONENTS]
        if unknown or not components:
            raise MeterError(
                f"carbontracker components {list(components)} invalid: choose from {KNOWN_COMPONENTS}"
            )
        if epochs < 1:
            raise MeterError(f"carbontracker needs the trial's epoch budget >= 1, got {epochs}")
        if not intensity_g_per_kwh >= 0:
            raise MeterError(f"intensity_g_per_kwh={intensity_g_per_kwh} must be >= 0")
        self.epochs = epochs
        self.log_dir = Path(log_dir)
        self.requested = list(components)
        self.intensity_g_per_kwh = float(intensity_g_per_kwh)
        self.intensity_source = intensity_source
        self.update_interval_s = update_interval_s
        self.epochs_before_pred = min(epochs_before_pred, epochs)
        self.call_timeout_s = call_timeout_s
        self.log_prefix = log_prefix or f"ct-{uuid.uuid4().hex[:12]}"
        self._nvml = nvml
        self._tracker: Any = None
        self._ct_logger: Any = None
        self._present: list[str] = []
        self._missing: list[str] = []
        self._messages: list[str] = []
        self._status = "not_started"
        self._dead = False
        self._record: CarbonRecord | None = None
        self._paths: tuple[Path | None, Path | None, list[str]] = (None, None, [])

    def start(self) -> None:
        """Construct the tracker for the components present here (none present: record it)."""
        self._present, self._missing = _present_components(self.requested, self._nvml)
        for comp in self._missing:
            self._note(f"component {comp!r} requested but not present on this node; not measured")
        self._warn_unreadable_rapl()
        if not self._present:
            self._status, self._dead = "no_components", True
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._status = "ok"
        finished, error = _call_with_deadline(self._construct, self.call_timeout_s)
        if not finished or error or self._tracker is None or getattr(self._tracker, "deleted", False):
            self._fail(f"Carbontracker did not start: {error or 'it stopped itself (see its logs)'}")

    def _construct(self) -> None:
        from unittest import mock

        from carbontracker import loggerutil

        # Imported and constructed with its logger set-up redirected: importing the tracker makes
        # a module-level logger of its own (CPU detection), which would print otherwise.
        with (
            _construct_lock,
            mock.patch.object(loggerutil.Logger, "_setup", self._setup_to_files(loggerutil.Logger._setup)),
        ):
            from carbontracker.emissions.intensity.fetcher import IntensityFetch
            from carbontracker.emissions.intensity.intensity import IntensityService
            from carbontracker.tracker import CarbonTracker

            configured = IntensityFetch(
                carbon_intensity=self.intensity_g_per_kwh,
                address=self.intensity_source,
                country="configured",
                is_fetched=False,
                is_localized=True,
            )
            with (
                mock.patch.object(IntensityService, "_fetch_geo_location", lambda _self: None),
                mock.patch.object(IntensityService, "_get_default_carbon_intensity", lambda _self: configured),
            ):
                tracker = CarbonTracker(
                    epochs=self.epochs,
                    epochs_before_pred=self.epochs_before_pred,
                    monitor_epochs=-1,
                    update_interval=self.update_interval_s,
                    interpretable=False,
                    stop_and_confirm=False,
                    ignore_errors=True,
                    components=",".join(self._present),
                    devices_by_pid=False,
                    log_dir=str(self.log_dir),
                    log_file_prefix=self.log_prefix,
                    verbose=0,
                    api_keys=None,
                )
        self._tracker = tracker
        self._ct_logger = getattr(tracker, "logger", None)
        self._quiet_console()

    def _setup_to_files(self, setup: Callable[..., Any]) -> Callable[..., Any]:
        """Carbontracker's logger set-up, its console handlers replaced by a file in ``log_dir``:
        what it would print (detected CPU, TDP fallback, intensity warnings) goes to the trial's
        log folder, never to the terminal."""
        console = self.log_dir / f"{self.log_prefix}_console.log"

        def setup_to_files(logger: Any, *args: Any, **kwargs: Any) -> Any:
            loggers = setup(logger, *args, **kwargs)
            for lg in loggers:
                lg.propagate = False
                for h in list(lg.handlers):
                    if type(h) is logging.StreamHandler:
                        to_file = logging.FileHandler(console, delay=True)
                        to_file.setLevel(h.level)
                        to_file.setFormatter(h.formatter)
                        for f in h.filters:
                            to_file.addFilter(f)
                        lg.removeHandler(h)
                        lg.addHandler(to_file)
            return loggers

        return setup_to_files

    def epoch_start(self) -> None:
        """Tell Carbontracker an epoch begins (no-op once it is gone)."""
        self._call("epoch_start")

    def epoch_end(self) -> None:
        """Tell Carbontracker the epoch ended (it logs the epoch; after the last it reports)."""
        self._call("epoch_end")

    def stop(self) -> CarbonRecord:
        """Finish (reporting an early stop if epochs remain), close its logs, parse them into a
        record and write ``<prefix>_record.json``. Idempotent."""
        if self._record is not None:
            return self._record
        if self._tracker is not None and not self._dead and not getattr(self._tracker, "deleted", True):
            finished, error = _call_with_deadline(self._tracker.stop, self.call_timeout_s)
            if not finished or error:
                self._fail(f"Carbontracker stop failed: {error}")
        self._close_logs()
        self._record = self._build_record()
        if self._record.log_files:
            path = self.log_dir / f"{self.log_prefix}_record.json"
            path.write_text(json.dumps(self._record.to_dict(), indent=1, default=str))
        return self._record

    # -- internals ---------------------------------------------------------------------------------

    def _call(self, name: str) -> None:
        tracker = self._tracker
        if self._dead or tracker is None or getattr(tracker, "deleted", False):
            return
        finished, error = _call_with_deadline(getattr(tracker, name), self.call_timeout_s)
        if not finished or error:
            self._fail(f"Carbontracker {name} failed: {error}")

    def _fail(self, message: str) -> None:
        log.warning("%s; the trial goes on without it", message)
        self._note(message)
        self._status, self._dead = "failed", True

    def _note(self, message: str) -> None:
        self._messages.append(message)

    def _warn_unreadable_rapl(self) -> None:
        from jobs.meters.rapl import DEFAULT_ROOT, rapl_available

        present = "cpu" in self._present and DEFAULT_ROOT.is_dir() and any(DEFAULT_ROOT.iterdir())
        if present and not rapl_available(DEFAULT_ROOT):
            self._note("RAPL present but unreadable: Carbontracker's CPU/DRAM power will read as 0 W")

    def _loggers(self) -> list[logging.Logger]:
        ct = self._ct_logger
        if ct is None:
            return []
        return [lg for lg in (getattr(ct, a, None) for a in ("logger", "logger_output", "logger_err")) if lg]

    def _quiet_console(self) -> None:
        for lg in self._loggers():
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:
                    lg.removeHandler(h)

    def _log_paths(self) -> tuple[Path | None, Path | None, list[str]]:
        std = out = None
        files: list[str] = []
        for lg in self._loggers():
            for h in lg.handlers:
                if isinstance(h, logging.FileHandler):
                    path = Path(h.baseFilename)
                    if path.name.endswith("_carbontracker.log"):
                        std = path
                    elif path.name.endswith("_carbontracker_output.log"):
                        out = path
        if self.log_dir.is_dir():
            # Carbontracker's own log files; the console lines it would have printed are kept beside
            # them in <prefix>_console.log, which is ours, not one of its logs.
            files = sorted(str(p) for p in self.log_dir.glob(f"{self.log_prefix}_*")
                           if not p.name.endswith("_console.log"))
        return std, out, files

    def _close_logs(self) -> None:
        self._paths = self._log_paths()
        for lg in self._loggers():
            for h in list(lg.handlers):
                h.close()
                lg.removeHandler(h)
            # Its loggers are shared by name with its module-level ones: without any handler a
            # warning of theirs would reach the terminal through logging's last resort.
            lg.addHandler(logging.NullHandler())

    def _build_record(self) -> CarbonRecord:
        std, out, files = self._paths
        parsed: dict[str, Any] = {
            "pue": None,
            "devices": {},
            "epochs": [],
            "intensity": None,
            "interrupted": False,
            "actual": None,
            "predicted": None,
        }
        if std is not None and std.exists():
            try:
                parsed = parse_logs(std, out if out is not None else std.with_name("missing"))
            except (OSError, ValueError) as exc:
                self._note(f"Carbontracker logs unreadable: {exc}")
        status = self._status
        found = sorted(parsed["devices"])
        if status == "ok" and not found:
            status = "no_components"
            self._note("Carbontracker found no components (see its logs); the trial ran unmeasured")
        intensity = (
            parsed["intensity"]
            if parsed["intensity"] is not None
            else (self.intensity_g_per_kwh if self._present else None)
        )
        return CarbonRecord(
            status=status,
            requested_components=list(self.requested),
            components=found,
            missing_components=list(self._missing),
            devices=parsed["devices"],
            epochs=parsed["epochs"],
            actual=parsed["actual"],
            predicted=parsed["predicted"],
            pue=parsed["pue"],
            intensity_g_per_kwh=intensity,
            intensity_source=self.intensity_source,
            interrupted=parsed["interrupted"],
            log_files=[os.fspath(f) for f in files],
            messages=list(self._messages),
        )


__all__ = [
    "CarbonEpoch",
    "CarbonRecord",
    "CarbonTotals",
    "CarbonTrackerRun",
    "parse_logs",
    "parse_output_log",
    "parse_std_log",
]
