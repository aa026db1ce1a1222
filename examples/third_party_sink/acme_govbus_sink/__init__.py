"""An example third-party govbus sink (see README.md)."""

from acme_govbus_sink.sink import SummarySink

__all__ = ["SummarySink"]
