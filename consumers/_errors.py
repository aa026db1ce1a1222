"""Errors of the sink runtime, rooted in :class:`~govbus.errors.GovbusError`."""

from __future__ import annotations

from govbus.errors import GovbusError

__all__ = ["DeadLetterError", "DeadLetterFatalError", "SinkError", "SinkNotFoundError"]


class SinkError(GovbusError):
    """A sink could not be loaded, built or run."""


class SinkNotFoundError(SinkError):
    """No sink of that name is registered in the ``govbus.sinks`` entry-point group."""

    def __init__(self, name: str, available: list[str]) -> None:
        have = ", ".join(sorted(available)) or "none"
        super().__init__(
            f"no sink named {name!r} in entry-point group 'govbus.sinks' (available: {have}); "
            "install the package that provides it, or pass --class module:attribute"
        )
        self.name = name
        self.available = available


class DeadLetterError(SinkError):
    """A record could not be written to its dead-letter topic (it is retried, never dropped)."""


class DeadLetterFatalError(DeadLetterError):
    """The dead-letter producer failed fatally (e.g. no WRITE ACL on the dead-letter topic): it can
    never write again, so the sink stops (exit code 2) without committing the records concerned."""
