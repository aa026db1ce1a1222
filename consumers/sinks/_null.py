"""The null sink: acknowledges everything and keeps nothing (baselines, load tests, smoke tests).

Options: ``delay_ms`` sleeps that long in every write, to play a slow destination.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from govbus.consumers._spi import OK, Batch, SinkBase, WriteResult
from govbus.consumers.sinks._options import SinkOptions, resolve_options

__all__ = ["NullSink", "NullSinkOptions"]


class NullSinkOptions(SinkOptions):
    """Options of the ``null`` sink (``GOVBUS_SINK__OPTIONS__<NAME>``)."""

    delay_ms: int = Field(default=0, ge=0)


class NullSink(SinkBase):
    reads_events = False

    def __init__(self, options: NullSinkOptions | None = None, /, **raw: Any) -> None:
        self.options = resolve_options(NullSinkOptions, options, raw)
        self.delay = self.options.delay_ms / 1000
        self.records = 0
        self.batches = 0

    def write(self, batch: Batch) -> WriteResult | None:
        if self.delay:
            time.sleep(self.delay)
        self.records += len(batch)
        self.batches += 1
        return OK
