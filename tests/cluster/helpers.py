"""What the cluster tests share: the real CLI in a subprocess, and reading the results database."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

# Tiny trials: the point here is the orchestration, not the training.
TINY = ["+sweep=smoke", "seeds=1", "epochs=[1]", "protocol.warmup_s=0", "protocol.idle_s=0",
        "protocol.cooldown_s=0", "protocol.heartbeat_s=1", "dataset.n_train=256", "dataset.n_valid=64",
        "dataset.n_test=64"]


def campaign(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "campaign.cli", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, f"campaign {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def start_campaign(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "campaign.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def rows_when_ready(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Like ``rows``, but empty while the schema does not exist yet (the CLI is still starting)."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        return rows(url, sql, **params)
    except (OperationalError, ProgrammingError):
        return []


def wait_until(what: str, condition: Callable[[], Any], timeout_s: float = 180, poll_s: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def done_once(url: str) -> dict[str, int]:
    """Per trial key: how many done runs it has (every one must be exactly 1)."""
    got = rows(url, "select t.trial_key, sum(case when r.status = 'done' then 1 else 0 end) "
                    "from trial t left join run r on r.trial_id = t.id group by t.trial_key")
    return {k: int(n or 0) for k, n in got}


def url_for(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cluster.db'}"
