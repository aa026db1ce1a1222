"""Where the local broker keeps things that outlive one run: fetched jars, the dev broker's data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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


def state_path(name: str) -> Path:
    """Where a dev command (``broker``, ``cluster``) records what it started, for a later command."""
    return cache_root() / "run" / f"{name}.json"


def load_state(name: str) -> dict[str, Any]:
    """The recorded state of ``name`` ({} when there is none or it cannot be read)."""
    try:
        state = json.loads(state_path(name).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(name: str, state: dict[str, Any]) -> None:
    path = state_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(scratch, path)  # readers never see half a file
