"""The stdout sink: CloudEvents JSON Lines on standard output (for pipes, ``kubectl logs``, demos).

Options: none. Each batch is written and flushed before it is acknowledged.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from govbus.consumers._spi import OK, Batch, SinkBase, WriteResult
from govbus.consumers.sinks._jsonl import encode_line

__all__ = ["StdoutSink"]


class StdoutSink(SinkBase):
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream

    def write(self, batch: Batch) -> WriteResult | None:
        out = self._stream or sys.stdout.buffer
        out.write(b"".join(encode_line(r) for r in batch))
        out.flush()
        return OK
