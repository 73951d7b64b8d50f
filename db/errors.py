"""The project's one exception base. Every error whose message is meant for a user (a bad value,
a missing campaign, an unreachable database, a device that cannot be read) derives from it, so
the CLI catches exactly these and prints their one line; anything else is a bug and keeps its
traceback.

It lives on the ground floor (``db/`` imports nothing of ours) so that every layer can raise it.
"""

from __future__ import annotations

import enum
from typing import Any


class CampaignError(Exception):
    """A failure the user or their environment caused; ``str(exc)`` is one line naming the bad
    value, what is allowed and what to do."""


class ConfigError(CampaignError, ValueError):
    """A bad configuration value (a key, a range, an unknown name); the message is one line naming
    it and what is allowed. Raised by the schema's own checks in every layer."""


def enum_value(kind: type[enum.StrEnum], key: str, value: Any, error: type[ConfigError] = ConfigError) -> Any:
    """``value`` as a member of ``kind``; ``error`` (one line) names ``key``, the value and the members."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise error(f"{key}={value!r} is not allowed (allowed: {allowed})") from None
