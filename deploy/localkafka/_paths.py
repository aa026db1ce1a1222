"""Where the local broker keeps things that outlive one run: fetched jars, the dev broker's data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The per-user cache: ``$GOVBUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/govbus``, else ``~/.cache/govbus``.

    Deliberately outside the repository: 45 MB of jars and broker data must not end up in a
    checkout, and one fetch should serve every checkout and worktree of the same user.
    """
    explicit = os.environ.get("GOVBUS_CACHE_DIR", "")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "govbus"
    return Path.home() / ".cache" / "govbus"


def kafka_home(version: str, cache: Path | None = None) -> Path:
    """The directory holding one Kafka version's jars (``libs/``) and its completion marker."""
    return (cache or cache_root()) / "kafka" / version
