"""Which process runs an attempt, and whether it still runs: what a resume on the same machine can
tell at once, where no scheduler can (the local launcher, a launch's own Ray cluster, a worker
killed with ``kill -9`` or by the OOM killer, a machine that restarted).

An identity is ``HOST/BOOT/PIDNS/PID/START``: the host name, the kernel's boot id, the process's
PID namespace, its pid and its start time (clock ticks after boot, ``/proc/PID/stat`` field 22).
A process with the same pid in the same namespace of the same boot started at the same tick is the
same process; so an identity is never mistaken for a later process that reuses the pid, nor for a
process of another container (another PID namespace) or of an earlier boot. Where ``/proc`` cannot
tell (another system), the fields are ``-`` and the answer is "cannot tell".
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

UNKNOWN = "-"
_PROC = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def boot_id(proc: Path = _PROC) -> str:
    """This machine's boot id (a new one at every boot), or ``-``."""
    return _read(proc / "sys/kernel/random/boot_id") or UNKNOWN


def pid_namespace(proc: Path = _PROC) -> str:
    """This process's PID namespace (``pid:[4026531836]``: its inode), or ``-``."""
    try:
        return os.readlink(proc / "self/ns/pid").replace("/", "_")
    except OSError:
        return UNKNOWN


def start_ticks(pid: int, proc: Path = _PROC) -> tuple[str, str] | None:
    """A process's start time (clock ticks after boot) and its state letter (``R``, ``S``, ``Z``,
    ...), None when there is no such process. The command name (field 2) may hold spaces and
    parentheses, so the fields are counted from its closing parenthesis."""
    stat = _read(proc / str(pid) / "stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20:
        return None
    return fields[19], fields[0]  # field 22 (starttime) and field 3 (state)


def identity(pid: int | None = None, proc: Path = _PROC) -> str:
    """The identity of process ``pid`` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    found = start_ticks(pid, proc)
    start = found[0] if found else UNKNOWN
    return "/".join((socket.gethostname(), boot_id(proc), pid_namespace(proc), str(pid), start))


def own() -> str:
    """This process's identity (read once per process: a forked child is another process)."""
    return _own(os.getpid())


@functools.lru_cache(maxsize=4)
def _own(pid: int) -> str:
    return identity(pid)


def describe(ident: str) -> str:
    """``pid N on HOST`` of an identity (for messages)."""
    parts = ident.split("/")
    return f"pid {parts[3]} on {parts[0]}" if len(parts) == 5 else repr(ident)


def alive(ident: str, proc: Path = _PROC) -> bool | None:
    """Whether the process of ``ident`` still runs: True, False (it has ended, or the machine has
    restarted since), or None where this process cannot tell (another host, another PID
    namespace, a field that was not known, a malformed identity)."""
    parts = ident.split("/")
    if len(parts) != 5 or UNKNOWN in parts:
        return None
    host, boot, namespace, pid_text, start = parts
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    here = boot_id(proc)
    if here == UNKNOWN:
        return None
    if boot != here:
        return False  # every process of an earlier boot has ended
    if namespace != pid_namespace(proc):
        return None
    found = start_ticks(int(pid_text), proc)
    if found is None:
        return False
    ticks, state = found
    return ticks == start and state not in ("Z", "X")  # a zombie has ended; another start is another process
