"""``SummarySink``: appends one tab-separated summary line per governance event to a file.

It imports nothing from govbus. The runtime finds it through the ``govbus.sinks`` entry point,
calls ``SummarySink(**options)`` with the sink options as strings (``-o path=...`` or
``GOVBUS_SINK__OPTIONS__PATH``), checks that the object has ``open``/``write``/``flush``/``close``
and then drives it:

- ``open(context)``: once; ``context.name``, ``context.logger``, ``context.meter`` are there to use.
- ``write(batch)``: a sequence of delivered records (``record.event`` is the governance event,
  ``record.topic``/``partition``/``offset`` say where it came from). Returning None acknowledges
  the batch; raising makes the runtime retry it with backoff. For finer answers (retry after a
  delay, dead-letter some records) return ``govbus.consumers.RetryLater`` / ``Rejected``, which
  does need govbus.
- ``flush(timeout)``: before the runtime commits offsets: make acknowledged records durable.
- ``close()``: once, at the end.

All four are called from one thread, never concurrently.
"""

from __future__ import annotations

import os
from typing import Any


class SummarySink:
    def __init__(self, path: str, separator: str = "\t") -> None:
        self.path = path
        self.separator = separator
        self._file: Any = None
        self.written = 0

    def open(self, context: Any) -> None:
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open until close()
        context.logger.info("acme-summary sink %s writing %s", context.name, self.path)

    def write(self, batch: Any) -> None:
        sep = self.separator
        lines = []
        for record in batch:
            e = record.event
            fields = (e.occurred_at.isoformat(), e.kind.value, e.agent_id, e.decision, e.event_id)
            lines.append(sep.join(str(f).replace(sep, " ").replace("\n", " ") for f in fields) + "\n")
        self._file.write("".join(lines))
        self._file.flush()
        self.written += len(lines)

    def flush(self, timeout: float) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
