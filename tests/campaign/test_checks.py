"""Check, then record: each check refuses in one line naming the path, URL or value, and writes
nothing but the campaign folder's marker; result files are written once; a resume keeps what its
trials measure."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest

from campaign.checks import (
    check_before_record,
    check_folder,
    check_meter,
    check_resume_overrides,
    check_root,
    claim_folder,
)
from campaign.config import CampaignConfig, compose
from campaign.session import check_export_folder
from db.engine import DatabaseError, check_database, database_identity
from db.errors import CampaignError, ConfigError
from db.paths import MARKER, CampaignPaths, FolderTaken
from db.records import RunResult
from jobs.meters import MeterError
from jobs.meters.nvml import NvmlReader
from jobs.results import ResultExists, read_result, write_atomic
from jobs.settings import MeterConfig, MeterKind


def _tree(folder: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path below ``folder`` with (is a file, size, mtime) - a changed file shows."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (p.is_file(), st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


@pytest.fixture
def cfg(tmp_path: Path) -> CampaignConfig:
    return compose(["+sweep=smoke", "name=c1", f"root={tmp_path / 'root'}",
                    f"db.url=sqlite:///{tmp_path / 'root' / 'c.db'}", "meter.kind=simulated"])


# -- names --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "a/b", "my run", "q/../p", "..", ".", ".hidden", "-x", "x" * 101, "",
                                  "a\\b", "tab\there"])
def test_an_unsafe_name_is_refused_in_one_line_naming_it(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        compose(["+sweep=smoke", f"name={name}"] if name else ["+sweep=smoke", "name=''"])
    message = _one_line(info)
    assert f"name={name!r} is not allowed" in message and "letters, digits" in message
    with pytest.raises(ConfigError):
        CampaignPaths.of(tmp_path, name)


@pytest.mark.parametrize("name", ["bar", "smoke-20260101-120000", "a.b_c-1", "_x", "9", "x" * 100])
def test_a_safe_name_is_accepted(name: str, tmp_path: Path) -> None:
    assert compose(["+sweep=smoke", f"name={name}"]).name == name
    assert CampaignPaths.of(tmp_path, name).folder == tmp_path.resolve() / name


# -- root ---------------------------------------------------------------------------------------

def test_a_root_that_is_a_file_is_refused_naming_it(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    before = _tree(tmp_path)
    for root in (afile, afile / "below"):
        with pytest.raises(ConfigError) as info:
            check_root(str(root), CampaignPaths.of(root, "c1"))
        assert str(root) in _one_line(info) and "root=" in str(info.value)
    assert _tree(tmp_path) == before


def test_a_missing_root_is_accepted_and_not_created(tmp_path: Path) -> None:
    check_root(str(tmp_path / "a" / "b"), CampaignPaths.of(tmp_path / "a" / "b", "c1"))
    assert list(tmp_path.iterdir()) == []


def test_a_campaign_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c1").write_text("")
    with pytest.raises(ConfigError, match="c1 is a file"):
        check_root(str(tmp_path), CampaignPaths.of(tmp_path, "c1"))


# -- database -----------------------------------------------------------------------------------

def test_a_sqlite_folder_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as info:
        check_database("sqlite:////proc/nope/c.db")
    assert "/proc/nope" in _one_line(info)
    assert not Path("/proc/nope").exists()


def test_a_sqlite_url_naming_a_folder_or_below_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="names the folder"):
        check_database(f"sqlite:///{tmp_path}")
    (tmp_path / "f").write_text("")
    with pytest.raises(DatabaseError) as info:
        check_database(f"sqlite:///{tmp_path / 'f' / 'c.db'}")
    assert str(tmp_path / "f") in _one_line(info)


def test_a_good_sqlite_url_leaves_only_its_folder(tmp_path: Path) -> None:
    check_database(f"sqlite:///{tmp_path / 'new' / 'c.db'}")
    assert [p.name for p in tmp_path.rglob("*")] == ["new"]


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://user:s3cret@127.0.0.1:{port}/db"
    with pytest.raises(DatabaseError) as info:
        check_database(url, connect_timeout_s=3)
    message = _one_line(info)
    assert "s3cret" not in message and f"127.0.0.1:{port}" in message and "server runs" in message


# -- meter --------------------------------------------------------------------------------------

def test_nvml_without_a_gpu_is_refused_naming_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gpu(self: NvmlReader) -> None:
        raise MeterError("no NVIDIA GPU visible: the NVIDIA kernel driver is not loaded")

    monkeypatch.setattr(NvmlReader, "open", no_gpu)
    with pytest.raises(ConfigError) as info:
        check_meter(MeterConfig(kind=MeterKind.nvml))
    assert "meter.kind=nvml" in _one_line(info) and "driver is not loaded" in str(info.value)


def test_nvml_with_a_gpu_is_opened_and_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(NvmlReader, "open", lambda self: calls.append("open"))
    monkeypatch.setattr(NvmlReader, "close", lambda self: calls.append("close"))
    check_meter(MeterConfig(kind=MeterKind.nvml))
    check_meter(MeterConfig(kind=MeterKind.simulated))
    assert calls == ["open", "close"]


# -- the folder marker --------------------------------------------------------------------------

def test_a_folder_is_claimed_once_and_refused_to_another_database_or_campaign(tmp_path: Path) -> None:
    mine, other = f"sqlite:///{tmp_path / 'a.db'}", "postgresql://u:pw@host/db"
    paths = CampaignPaths.of(tmp_path, "c1")
    check_folder(paths, mine)
    assert not paths.folder.exists()  # checking writes nothing
    claim_folder(paths, mine)
    marker = json.loads(paths.marker.read_text())
    assert marker == {"campaign": "c1", "database": database_identity(mine)}
    before = _tree(tmp_path)
    claim_folder(paths, f"sqlite:///{tmp_path / '.' / 'a.db'}")  # the same file, spelt otherwise
    assert _tree(tmp_path) == before
    with pytest.raises(FolderTaken) as info:
        claim_folder(paths, other)
    message = _one_line(info)
    assert "postgresql://u@host/db" in message and "pw" not in message.replace(str(tmp_path), "")
    paths.marker.write_text(json.dumps({"campaign": "c2", "database": database_identity(mine)}))
    with pytest.raises(FolderTaken, match="belongs to campaign 'c2'"):
        check_folder(paths, mine)
    paths.marker.write_text("not json")
    with pytest.raises(FolderTaken, match="is not a campaign marker"):
        check_folder(paths, mine)


def test_check_before_record_writes_only_the_marker(cfg: CampaignConfig, tmp_path: Path) -> None:
    paths = CampaignPaths.of(cfg.root, "c1")
    check_before_record(cfg, paths)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["root", "root/c1", f"root/c1/{MARKER}"]
    check_before_record(cfg, paths)  # the campaign's own folder again: accepted
    other = dataclasses.replace(cfg, db=dataclasses.replace(cfg.db, url=f"sqlite:///{tmp_path / 'other.db'}"))
    with pytest.raises(FolderTaken):
        check_before_record(other, paths)


def test_check_before_record_stops_at_the_first_problem_before_writing(cfg: CampaignConfig, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gpu(self: NvmlReader) -> None:
        raise MeterError("no NVIDIA GPU visible")

    monkeypatch.setattr(NvmlReader, "open", no_gpu)
    nvml = dataclasses.replace(cfg, meter=dataclasses.replace(cfg.meter, kind=MeterKind.nvml))
    with pytest.raises(ConfigError, match="nvml"):
        check_before_record(nvml, CampaignPaths.of(cfg.root, "c1"))
    nodb = dataclasses.replace(cfg, db=dataclasses.replace(cfg.db, url="sqlite:////proc/nope/c.db"))
    with pytest.raises(DatabaseError, match="/proc/nope"):
        check_before_record(nodb, CampaignPaths.of(cfg.root, "c1"))
    assert list(tmp_path.iterdir()) == []


# -- result files are written once ---------------------------------------------------------------

def _result(energy_j: float) -> RunResult:
    return RunResult.from_json({"campaign": "c1", "trial_key": "k1", "attempt": 1, "status": "done",
                                "started_at": "2026-01-01T00:00:00+00:00", "host": "h", "worker_id": "w",
                                "energy_j": energy_j})


def test_a_result_file_is_never_replaced(tmp_path: Path) -> None:
    path = CampaignPaths.of(tmp_path, "c1").result("k1", 1)
    write_atomic(path, _result(1.0))
    before = _tree(tmp_path)
    with pytest.raises(ResultExists) as info:
        write_atomic(path, _result(2.0))
    assert str(path) in _one_line(info) and isinstance(info.value, CampaignError)
    assert _tree(tmp_path) == before and read_result(path).energy_j == 1.0  # no temporary file left either


def test_a_result_file_written_meanwhile_wins_the_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "runs" / "k1" / "attempt-1.json"
    real_link = os.link

    def racer_first(src: str, dst: str) -> None:  # another writer lands between the check and the link
        Path(dst).write_text(json.dumps(_result(9.0).to_json()))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racer_first)
    with pytest.raises(ResultExists):
        write_atomic(path, _result(1.0))
    assert read_result(path).energy_j == 9.0 and sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_without_hard_links_the_file_is_created_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(1, "Operation not permitted", dst)  # EPERM: a file system without hard links

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "attempt-1.json"
    write_atomic(path, _result(1.0))
    assert read_result(path).energy_j == 1.0 and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    with pytest.raises(ResultExists):
        write_atomic(path, _result(2.0))
    assert read_result(path).energy_j == 1.0


# -- a resume keeps what its trials measure ------------------------------------------------------

ACCEPTED = ["meter.kind=simulated", "meter.rate_hz=5", "launcher=slurm", "launcher.mem_gb=4", "root=/elsewhere",
            "db.url=sqlite:////tmp/x.db", "dataset.root=/data", "dataset.download=true", "protocol.heartbeat_s=5",
            "max_failures=9", "+sweep=smoke", "name=other", "seeds=2"]
REFUSED = ["recipe.learning_rate=0.5", "network.stem_channels=8", "dataset.n_train=100", "protocol.idle_s=7",
           "epochs=[3]", "seeds=4", "gpus=[a100]", "device=cuda", "protocol=default", "recipe=nasbench101"]


@pytest.mark.parametrize("override", ACCEPTED)
def test_resume_accepts_what_leaves_a_trial_the_same(override: str) -> None:
    recorded = compose(["+sweep=smoke"])
    composed = compose([override] if override.startswith("+sweep") else ["+sweep=smoke", override])
    key = override.lstrip("+").split("=")[0]
    check_resume_overrides(recorded, composed, {key})


@pytest.mark.parametrize("override", REFUSED)
def test_resume_refuses_what_changes_a_trial_in_one_line(override: str) -> None:
    recorded = compose(["+sweep=smoke"])
    composed = compose(["+sweep=smoke", override])
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as info:
        check_resume_overrides(recorded, composed, {key})
    assert f"resume cannot change {key}" in _one_line(info)


def test_resume_refuses_another_sweep_naming_what_it_changes() -> None:
    with pytest.raises(ConfigError) as info:
        check_resume_overrides(compose(["+sweep=smoke"]), compose(["+sweep=cifar_cells"]), {"sweep"})
    assert "epochs" in _one_line(info) and "sweep=cifar_cells" in str(info.value)


# -- export --------------------------------------------------------------------------------------

def test_an_export_folder_that_is_a_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "outfile"
    out.write_text("keep\n")
    for target in (out, out / "sub"):
        with pytest.raises(ConfigError) as info:
            check_export_folder(target)
        assert str(out) in _one_line(info)
    assert out.read_text() == "keep\n"
    check_export_folder(tmp_path / "new" / "folder")
    assert not (tmp_path / "new").exists()
