"""The watchdog (``govbus watch``): silence, lost tails, stalled partitions, vanished sinks, dead letters that could not be written."""

from govbus.watch._settings import WatchSettings

__all__ = ["WatchSettings"]
