"""The watchdog (``govbus watch``): silence, lost tails, stalled partitions, vanished sinks."""

from govbus.watch._settings import WatchSettings

__all__ = ["WatchSettings"]
