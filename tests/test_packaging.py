"""A built wheel works on its own: conf/ ships inside the package, and `campaign plan` composes
from it in a fresh virtual environment, run from a folder outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tracked_tree(dest: Path) -> Path:
    """A copy of the checkout's tracked and not-ignored files (no build/ or egg-info lands here)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    archive = dest / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        for name in filter(None, files):
            path = REPO / name.decode()
            if path.exists() or path.is_symlink():
                tar.add(path, arcname=name.decode(), recursive=False)
    src = dest / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="tar")
    return src


@pytest.mark.slow
def test_a_built_wheel_plans_the_smoke_sweep_from_a_fresh_venv(tmp_path: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to know which files are the project's")
    src = _tracked_tree(tmp_path)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(src)], check=True, capture_output=True, env={**os.environ, "PIP_CACHE_DIR": str(tmp_path / "pc")})
    [wheel] = dist.glob("campaign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "campaign/conf/config.yaml" in names and "campaign/conf/sweep/smoke.yaml" in names
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies come from the project's environment; the project itself only from the wheel
    Path(site, "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                    str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CAMPAIGN_CONF_DIR", "PYTHONPATH")}
    where = tmp_path / "elsewhere"
    where.mkdir()
    proc = subprocess.run([str(venv / "bin" / "campaign"), "plan", "+sweep=smoke", f"root={where / 'c'}"],
                          cwd=where, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "= 8 trials" in proc.stdout
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", "import campaign; print(campaign.__file__)"],
                              cwd=where, env=env, capture_output=True, text=True, check=True).stdout
    assert imported.startswith(str(venv))
