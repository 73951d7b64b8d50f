"""Bad inputs through the real command line, one row per class: each exits non-zero with exactly
one line on stderr and no traceback, records nothing, and creates or changes no file outside the
campaign's own folder (and the database file).

Launch rows run ``campaign launch +sweep=smoke seeds=1 epochs=[1] ...`` with their own root and
SQLite file in a case folder; read rows run against a campaign recorded once through the store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CAMPAIGN = Path(sys.executable).with_name("campaign")
LAUNCH = ["launch", "+sweep=smoke", "seeds=1", "epochs=[1]", "meter.kind=simulated"]
TIMEOUT_S = 120


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    want: str  # what the one error line must name (case-insensitive); {case} is the case folder
    args: Callable[[Path], list[str]]  # the command line, given the case folder
    setup: Callable[[Path], None] = lambda case: None
    allowed: Callable[[Path], list[Path]] = lambda case: []  # where the command may write
    recorded: bool = True  # a read row: given the root= and db.url= of the recorded campaign


def _launch(*overrides: str, root: str = "root", db: str = "root/c.db") -> Callable[[Path], list[str]]:
    return lambda case: [*LAUNCH, *overrides, f"root={case / root}", f"db.url=sqlite:///{case / db}"]


def _own(root: str = "root", db: str = "root/c.db") -> Callable[[Path], list[Path]]:
    """A launch may write under its root and the database file (with its journal files)."""
    return lambda case: [case / root, *(case / f"{db}{s}" for s in ("", "-wal", "-shm", "-journal"))]


def _a_file(case: Path) -> None:
    (case / "afile").write_text("x\n")


def _foreign_folder(case: Path) -> None:
    folder = case / "root" / "taken"
    folder.mkdir(parents=True)
    (folder / ".campaign.json").write_text(json.dumps({"campaign": "taken", "database": "sqlite:////elsewhere/x.db"}))


def _no_gpu() -> bool:
    from jobs.meters.nvml import nvml_available

    return not nvml_available()


LAUNCH_CASES = [
    Case("name with ..", "../x", _launch("name=../x"), allowed=_own()),
    Case("name with /", "a/b", _launch("name=a/b"), allowed=_own()),
    Case("name with a space", "my run", _launch("name=my run"), allowed=_own()),
    Case("root is a regular file", "{case}/afile", _launch("name=rootfile", root="afile", db="c.db"), _a_file,
         _own(root="afile", db="c.db")),
    Case("database folder cannot be created", "/proc/nope",
         lambda case: [*LAUNCH, "name=nodb", f"root={case / 'root'}", "db.url=sqlite:////proc/nope/c.db"],
         allowed=_own()),
    pytest.param(Case("meter.kind=nvml without a GPU", "nvml", _launch("name=nogpu", "meter.kind=nvml"),
                      allowed=_own()),
                 marks=pytest.mark.skipif(not _no_gpu(), reason="this machine has a GPU NVML sees")),
    Case("a folder of another campaign's database", "{case}/root/taken", _launch("name=taken"), _foreign_folder,
         _own()),
]


def _listing(folder: Path) -> dict[Path, tuple[bool, int, int]]:
    out = {}
    for p in folder.rglob("*"):
        st = p.lstat()
        out[p] = (p.is_file(), st.st_size if p.is_file() else 0, st.st_mtime_ns if p.is_file() else 0)
    return out


def _campaign_rows(db: Path) -> int:
    if not db.is_file():
        return 0
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM campaign").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "SQLITE_TMPDIR": str(cwd), "COLUMNS": "200"}
    try:
        return subprocess.run([str(CAMPAIGN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"accepted: `campaign {' '.join(args[:2])} ...` still running after {TIMEOUT_S} s")


def _refused_in_one_line(proc: subprocess.CompletedProcess[str], want: str) -> None:
    assert proc.returncode != 0, f"accepted (exit 0): {proc.stdout[-300:]}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{len(lines)} lines on stderr, not one: {lines[:5]}"
    assert want.lower() in lines[0].lower(), f"the error line does not name {want!r}: {lines[0]}"


def _changed(before: dict[Path, tuple[bool, int, int]], after: dict[Path, tuple[bool, int, int]],
             allowed: list[Path]) -> list[Path]:
    return [p for p in sorted(after) if before.get(p) != after[p]
            and not any(p == a or a in p.parents for a in allowed)]


pytestmark = pytest.mark.skipif(not CAMPAIGN.exists(), reason=f"no {CAMPAIGN}: install the project in its venv")


@pytest.mark.parametrize("case", LAUNCH_CASES, ids=lambda c: c.label)
def test_a_bad_launch_is_refused_in_one_line_and_records_nothing(case: Case, tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    case.setup(folder)
    args = case.args(folder)
    db = Path(next(a for a in args if a.startswith("db.url=")).removeprefix("db.url=sqlite:///"))
    before = _listing(folder)
    proc = _run(args, tmp_path)
    _refused_in_one_line(proc, case.want.format(case=folder))
    assert _campaign_rows(db) == 0, "recorded: the database holds a campaign row"
    assert _changed(before, _listing(folder), case.allowed(folder)) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]  # nothing beside the case folder


# -- read commands ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A campaign ``bar`` recorded (not run) through the store; the overrides that find it."""
    from campaign.config import compose
    from campaign.plan import make_plan, resolve_architectures
    from db.engine import make_engine
    from db.store import ResultStore

    root = tmp_path_factory.mktemp("recorded")
    url = f"sqlite:///{root / 'bars.db'}"
    cfg = compose(["+sweep=smoke", f"root={root}", "name=bar"])
    plan = make_plan(cfg, resolve_architectures(cfg))
    engine = make_engine(url)
    ResultStore(engine).create_campaign("bar", cfg.sweep, str(root), "test", cfg.to_dict(), plan.archs, plan.trials)
    engine.dispose()
    return [f"root={root}", f"db.url={url}"]


def _keep(case: Path) -> None:
    (case / "outfile").write_text("keep\n")


READ_CASES = [
    Case("status with a missing root", "{case}/typo", lambda case: ["status", "bar", f"root={case / 'typo'}"],
         recorded=False),
    Case("query ATTACH of a new file", "read-only", lambda case: ["query", "bar", f"ATTACH '{case / 'attached.db'}' AS y"]),
    Case("query VACUUM INTO a new file", "read-only", lambda case: ["query", "bar", f"VACUUM INTO '{case / 'v.db'}'"]),
    Case("export over an existing file", "{case}/outfile",
         lambda case: ["export", "bar", "--format", "csv", "--out", str(case / "outfile")], _keep),
]


@pytest.mark.parametrize("case", READ_CASES, ids=lambda c: c.label)
def test_a_bad_read_is_refused_in_one_line_and_writes_nothing(case: Case, recorded: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    case.setup(folder)
    args = [*case.args(folder), *(recorded if case.recorded else [])]
    db = Path(recorded[1].removeprefix("db.url=sqlite:///"))
    rows = _campaign_rows(db)
    before = _listing(folder)
    proc = _run(args, tmp_path)
    _refused_in_one_line(proc, case.want.format(case=folder))
    assert _listing(folder) == before
    assert _campaign_rows(db) == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]

