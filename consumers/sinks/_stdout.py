"""The stdout sink: CloudEvents JSON Lines on standard output (for pipes, ``kubectl logs``, demos).

Options: none. Each batch is written and flushed before it is acknowledged.
"""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

from govbus.consumers._spi import OK, Batch, SinkBase, WriteResult
from govbus.consumers.sinks._jsonl import encode_line
from govbus.consumers.sinks._options import SinkOptions, parse_options

__all__ = ["StdoutSink", "StdoutSinkOptions"]


class StdoutSinkOptions(SinkOptions):
    """The ``stdout`` sink has no options: any ``GOVBUS_SINK__OPTIONS__<NAME>`` is an error naming it."""


class StdoutSink(SinkBase):
    reads_events = False  # writes the rendered line only

    def __init__(self, stream: BinaryIO | None = None, /, **raw: Any) -> None:
        # ``stream`` is for Python callers (tests, benchmarks); the runtime passes only options.
        self.options = parse_options(StdoutSinkOptions, raw)
        self._stream = stream

    def write(self, batch: Batch) -> WriteResult | None:
        out = self._stream or sys.stdout.buffer
        out.write(b"".join(encode_line(r) for r in batch))
        out.flush()
        return OK
