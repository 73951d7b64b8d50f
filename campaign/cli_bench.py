"""``campaign benchmark`` and ``campaign search``: a campaign's measurements as a tabular energy
benchmark of a whole cell space, and multi-objective search on it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(subparsers: Any, common: Callable[[argparse.ArgumentParser], None] = lambda p: None) -> None:
    """Add ``benchmark`` and ``search`` to the ``campaign`` command's subparsers (``common`` adds
    the options every command takes)."""
