"""The sinks shipped with govbus, one per module, each registered in the ``govbus.sinks`` entry-point group."""
