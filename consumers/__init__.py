"""Sink consumers: one consumer group per sink (the sink runtime and the sinks)."""
