"""Sink options: the runtime passes them as ``str`` keyword arguments; each sink validates them
against its own pydantic model here, so an error names the environment variable to fix.

Options come from ``GOVBUS_SINK__OPTIONS__<NAME>`` or ``govbus sink run … -o name=value`` (see
``govbus.consumers._registry``); Python callers may pass typed values instead of strings.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from govbus.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "SinkOptions",
    "env_name",
    "parse_options",
    "parse_pairs",
    "read_secret_file",
    "resolve_options",
]

ENV_PREFIX = "GOVBUS_SINK__OPTIONS__"
# Options whose values may be credentials: their input is never echoed in errors.
_SECRET = re.compile(r"token|secret|password|key|header", re.IGNORECASE)
_log = logging.getLogger("govbus.consumers.sinks")

M = TypeVar("M", bound="SinkOptions")


class SinkOptions(BaseModel):
    """Base of every sink's options model: unknown options are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def env_name(option: str) -> str:
    """The environment variable that sets ``option``."""
    return ENV_PREFIX + option.upper()


def parse_options(model: type[M], options: Mapping[str, Any]) -> M:
    """``model`` built from ``options``; the first error becomes a :class:`ConfigError` naming the variable.

    Values of options whose name looks secret (token, secret, password, key, headers) are never echoed.
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        option = loc[0] if loc else "?"
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            message = f"unknown option {option!r}; " + (
                f"this sink takes: {known}" if known else "this sink takes none"
            )
        elif first["type"] == "missing":
            # The input of a missing option is every option given: never echo it (credentials).
            message = "is required"
        else:
            message = first["msg"].removeprefix("Value error, ")
            if not _SECRET.search(option) and "got" not in message:
                message += f"; got {first.get('input')!r}"
        if exc.error_count() > 1:
            message += f" (and {exc.error_count() - 1} more)"
        raise ConfigError(env_name(option), message) from None


def resolve_options(model: type[M], options: M | None, raw: Mapping[str, Any]) -> M:
    """A sink constructor's options: a ready ``model`` instance, or ``raw`` keyword options parsed."""
    if options is not None:
        if raw:
            raise TypeError(f"pass either a {model.__name__} or keyword options, not both")
        return options
    return parse_options(model, raw)


def parse_pairs(value: object) -> object:
    """``"k1=v1,k2=v2"`` (the OTEL_EXPORTER_OTLP_HEADERS form) as a dict; other values unchanged.

    For ``mode="before"`` validators of ``dict[str, str]`` options, so one environment variable
    can carry several headers or resource attributes.
    """
    if not isinstance(value, str):
        return value
    out: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, val = item.partition("=")
        if not sep or not name.strip():
            # Do not echo the item: header values are often credentials.
            raise ValueError("expected name=value pairs separated by commas")
        out[name.strip()] = val.strip()
    return out


def read_secret_file(path: Path, option: str) -> str:
    """The stripped contents of a secret file (token, HMAC key). Warns when others can read it."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(env_name(option), f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(env_name(option), f"{path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(env_name(option), f"{path} is empty")
    # A warning, not a refusal: orchestrators often mount secrets 0644 inside a private volume.
    if os.name == "posix" and st.st_mode & 0o007:
        _log.warning("secret file %s is readable by others (mode %04o)", path, stat.S_IMODE(st.st_mode))
    return text
