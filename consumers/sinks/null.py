"""The null sink: acknowledges everything and keeps nothing (baselines, load tests, smoke tests).

Options: ``delay_ms`` sleeps that long in every write, to play a slow destination.
"""

from __future__ import annotations

import time

from govbus.consumers._spi import OK, Batch, SinkBase, WriteResult

__all__ = ["NullSink"]


class NullSink(SinkBase):
    def __init__(self, delay_ms: int | str = 0) -> None:
        try:
            self.delay = int(delay_ms) / 1000
        except ValueError:
            raise ValueError(f"delay_ms must be an integer, not {delay_ms!r}") from None
        if self.delay < 0:
            raise ValueError("delay_ms must be >= 0")
        self.records = 0
        self.batches = 0

    def write(self, batch: Batch) -> WriteResult | None:
        if self.delay:
            time.sleep(self.delay)
        self.records += len(batch)
        self.batches += 1
        return OK
