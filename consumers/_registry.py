"""Finding sinks: the ``govbus.sinks`` entry-point group, or an explicit ``module:attribute``.

A sink package registers itself in its own ``pyproject.toml``::

    [project.entry-points."govbus.sinks"]
    siem = "acme_siem.sink:SiemSink"

The entry point names a factory (usually the class); the runtime calls it with the sink's
options as keyword arguments of type ``str`` (``GOVBUS_SINK__OPTIONS__<NAME>`` and
``govbus sink run … -o name=value``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points

from govbus.consumers._errors import SinkError, SinkNotFoundError
from govbus.consumers._spi import Sink
from govbus.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "available_sinks", "create_sink", "load_factory"]

ENTRY_POINT_GROUP = "govbus.sinks"
_REQUIRED = ("open", "write", "flush", "close")
SinkFactory = Callable[..., object]


def available_sinks() -> dict[str, EntryPoint]:
    """Registered sinks by name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_factory(name: str, spec: str | None = None) -> SinkFactory:
    """The factory for sink ``name``: from ``spec`` (``module:attribute``) if given, else the entry point."""
    if spec is not None:
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise SinkError(f"--class must look like package.module:Attribute, got {spec!r}")
        try:
            obj: object = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise SinkError(f"cannot load sink class {spec!r}: {exc}") from None
    else:
        found = available_sinks()
        if name not in found:
            raise SinkNotFoundError(name, list(found))
        try:
            obj = found[name].load()
        except Exception as exc:
            raise SinkError(f"sink {name!r} ({found[name].value}) failed to load: {exc}") from exc
    if not callable(obj):
        raise SinkError(f"sink {name!r} resolves to {obj!r}, which is not callable")
    return obj


def create_sink(name: str, factory: SinkFactory, options: Mapping[str, str]) -> Sink:
    """Builds the sink; a constructor that rejects its options becomes a :class:`ConfigError`."""
    try:
        sink = factory(**options)
    except (TypeError, ValueError) as exc:
        keys = ", ".join(sorted(options)) or "none"
        raise ConfigError("GOVBUS_SINK__OPTIONS", f"sink {name!r} rejected its options ({keys}): {exc}") from None
    missing = [m for m in _REQUIRED if not callable(getattr(sink, m, None))]
    if missing or not isinstance(sink, Sink):
        raise SinkError(
            f"sink {name!r} ({type(sink).__name__}) lacks {', '.join(missing)}; "
            "implement the Sink protocol or subclass govbus.consumers.SinkBase"
        )
    return sink
