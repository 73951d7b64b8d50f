"""Shared fixtures: configs composed through Hydra, real SQLite files in tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from campaign.config import compose


@pytest.fixture
def smoke_cfg(tmp_path: Path) -> dict[str, Any]:
    """The smoke sweep's resolved config, rooted in a temporary folder."""
    return compose(["+sweep=smoke", f"root={tmp_path / 'campaigns'}"])


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"
