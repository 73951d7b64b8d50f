"""The identity of the process that runs an attempt (``db.process``), and whether it still runs:
real child processes (running, a zombie, reaped), and a ``/proc`` written by the test only for
what a test cannot make happen (another boot, another namespace, a command name with parentheses)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from db import process

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc on this system")


def _child() -> subprocess.Popen[bytes]:
    """A process that runs until its stdin closes."""
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


def _with(ident: str, index: int, value: str) -> str:
    parts = ident.split("/")
    parts[index] = value
    return "/".join(parts)


def test_this_process_runs_and_its_identity_names_it() -> None:
    me = process.own()
    host, boot, namespace, pid, start = me.split("/")
    assert host == socket.gethostname() and pid == str(os.getpid())
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert namespace.startswith("pid:[") and start.isdigit()
    assert process.alive(me) is True
    assert process.describe(me) == f"pid {os.getpid()} on {host}"


def test_a_killed_process_has_ended_as_a_zombie_and_once_reaped() -> None:
    child = _child()
    try:
        ident = process.identity(child.pid)
        assert process.alive(ident) is True
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped: a zombie
        assert process.start_ticks(child.pid) is not None and process.alive(ident) is False
    finally:
        child.kill()
        child.wait()
    assert process.start_ticks(child.pid) is None and process.alive(ident) is False


def test_another_process_under_the_same_pid_or_an_earlier_boot_has_ended() -> None:
    me = process.own()
    start = int(me.split("/")[4])
    assert process.alive(_with(me, 4, str(start + 1))) is False  # the pid reused by a later process
    assert process.alive(_with(me, 1, "00000000-0000-0000-0000-000000000000")) is False  # the machine restarted


def test_what_this_process_cannot_tell_is_none() -> None:
    me = process.own()
    assert process.alive(_with(me, 0, "another-host")) is None
    assert process.alive(_with(me, 2, "pid:[1]")) is None  # another container's processes
    assert process.alive(_with(me, 4, process.UNKNOWN)) is None
    for bad in ("", "a/b", "host/boot/ns/notapid/1", "////"):
        assert process.alive(bad) is None


def test_proc_fields_are_read_after_the_command_name(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "sys/kernel/random").mkdir(parents=True)
    (proc / "sys/kernel/random/boot_id").write_text("boot-1\n")
    (proc / "self/ns").mkdir(parents=True)
    os.symlink("pid:[4026531836]", proc / "self/ns/pid")
    (proc / "4242").mkdir()
    fields = ["S", *map(str, range(4, 22)), "777"]  # field 3 is the state, field 22 the start time
    (proc / "4242/stat").write_text(f"4242 (a) b (c)) {' '.join(fields)} 0 0\n")
    ident = process.identity(4242, proc)
    assert ident == f"{socket.gethostname()}/boot-1/pid:[4026531836]/4242/777"
    assert process.alive(ident, proc) is True
    (proc / "4242/stat").write_text(f"4242 (a) b (c)) Z {' '.join(fields[1:])} 0 0\n")
    assert process.alive(ident, proc) is False
    (proc / "sys/kernel/random/boot_id").unlink()
    assert process.alive(ident, proc) is None  # this machine's boot cannot be read: no answer
