"""The file sink: CloudEvents JSON Lines appended to a local file.

Options (``GOVBUS_SINK__OPTIONS__<NAME>`` or ``govbus sink run file -o name=value``):

- ``path`` (required): the file; ``{sink}``, ``{hostname}`` and ``{pid}`` are substituted, so
  several instances of one sink can each write their own file. One writer per file.
- ``fsync``: ``commit`` (default) fsyncs before the runtime commits offsets, so a committed
  record is on disk even after a power cut; ``batch`` fsyncs every batch before acknowledging
  it; ``never`` leaves it to the OS (a process crash loses nothing, a power cut may).
- ``dedup_window``: how many recent event ids are remembered (also across restarts, by reading
  the file's tail at start-up) so that redelivered events are not written twice; 0 disables.
  Redeliveries after a crash come from after the last commit, so the window only needs to cover
  what can be in flight between two commits.

Each batch is written with one ``write`` call and acknowledged after it; a failed write is
truncated away before the error propagates, so a retry never leaves a torn line behind. A torn
last line left by a killed process is removed at start-up (it was never acknowledged).
"""

from __future__ import annotations

import collections
import logging
import os
import socket
from pathlib import Path
from typing import Any, Literal

from opentelemetry.metrics import Counter
from pydantic import Field, field_validator

from govbus.consumers._spi import OK, Batch, SinkBase, SinkContext, WriteResult
from govbus.consumers.sinks._jsonl import encode_line, line_id
from govbus.consumers.sinks._options import SinkOptions, resolve_options

__all__ = ["FileSink", "FileSinkOptions"]

log = logging.getLogger("govbus.sink.file")
Fsync = Literal["batch", "commit", "never"]
_CHUNK = 1 << 20
_PLACEHOLDERS = {"sink": "s", "hostname": "h", "pid": 1}


class FileSinkOptions(SinkOptions):
    """Options of the ``file`` sink (``GOVBUS_SINK__OPTIONS__<NAME>``)."""

    path: str = Field(min_length=1)
    fsync: Fsync = "commit"
    dedup_window: int = Field(default=100_000, ge=0)

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        # Checked here, not at open(): a typo in a placeholder names the setting before any I/O.
        try:
            value.format(**_PLACEHOLDERS)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad placeholder ({exc}); use {{sink}}, {{hostname}} or {{pid}}") from None
        return value


class FileSink(SinkBase):
    reads_events = False  # writes the rendered line only (dedup reads record.event_id)

    def __init__(self, options: FileSinkOptions | str | os.PathLike[str] | None = None, /, **raw: Any) -> None:
        # FileSink(path, ...) stays valid: a positional path is the ``path`` option.
        if options is not None and not isinstance(options, FileSinkOptions):
            if "path" in raw:
                raise TypeError("path given twice")
            raw["path"] = options
            options = None
        self.options = o = resolve_options(FileSinkOptions, options, raw)
        self._template = o.path
        self.fsync: Fsync = o.fsync
        self.dedup_window = o.dedup_window
        self.path: Path | None = None
        self._fd = -1
        self._size = 0
        self._dirty = False
        self._seen: set[str] = set()
        self._order: collections.deque[str] = collections.deque()
        self.duplicates = 0
        self._dup_counter: Counter | None = None

    def open(self, context: SinkContext) -> None:
        super().open(context)
        self.path = Path(self._template.format(sink=context.name, hostname=socket.gethostname(), pid=os.getpid()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._repair_tail()
        self._size = os.fstat(self._fd).st_size
        if self.dedup_window:
            for event_id in self._tail_ids(self.dedup_window):
                self._remember(event_id)
        self._dup_counter = context.meter.create_counter(
            "govbus.sink.file.duplicates", "{record}", "Redelivered events not written again (same event id)"
        )
        log.info("file sink writing %s (fsync=%s, dedup window %d, %d ids loaded)", self.path, self.fsync,
                 self.dedup_window, len(self._seen))  # fmt: skip

    def write(self, batch: Batch) -> WriteResult | None:
        lines: list[bytes] = []
        fresh: list[str] = []
        seen = self._seen
        window = self.dedup_window
        batch_ids: set[str] = set()
        dups = 0
        for record in batch:
            if window:
                event_id = record.event_id
                if event_id in seen or event_id in batch_ids:
                    dups += 1
                    continue
                batch_ids.add(event_id)
                fresh.append(event_id)
            lines.append(encode_line(record))
        if lines:
            data = b"".join(lines)
            start = self._size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                if self.fsync == "batch":
                    os.fsync(self._fd)
            except BaseException:
                # Leave no torn line for the retry to append after.
                os.ftruncate(self._fd, start)
                raise
            self._size = start + len(data)
            self._dirty = True
            if fresh:
                self._remember_all(fresh)
        if dups:
            self.duplicates += dups
            counter = self._dup_counter
            if counter is not None:
                counter.add(dups)
        return OK

    def flush(self, timeout: float) -> None:
        if self._dirty and self.fsync != "never" and self._fd >= 0:
            os.fsync(self._fd)
        self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush(5.0)
            finally:
                os.close(self._fd)
                self._fd = -1

    # -- de-duplication ----------------------------------------------------------------------
    def _remember_all(self, event_ids: list[str]) -> None:
        # _remember for a batch of ids not seen yet: the same window, one update per batch.
        self._seen.update(event_ids)
        order = self._order
        order.extend(event_ids)
        seen = self._seen
        for _ in range(len(order) - self.dedup_window):
            seen.discard(order.popleft())

    def _remember(self, event_id: str) -> None:
        self._seen.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.dedup_window:
            self._seen.discard(self._order.popleft())

    def _repair_tail(self) -> None:
        assert self.path is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            pos = size
            while pos > 0:
                start = max(0, pos - 65536)
                fh.seek(start)
                chunk = fh.read(pos - start)
                if pos == size and chunk.endswith(b"\n"):
                    return
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                pos = start
            else:
                keep = 0
        os.ftruncate(self._fd, keep)
        log.warning("%s: removed a torn last line (%d bytes) left by an interrupted write", self.path, size - keep)

    def _tail_ids(self, count: int) -> list[str]:
        """Event ids of the last ``count`` lines, oldest first."""
        assert self.path is not None
        lines: list[bytes] = []
        with open(self.path, "rb") as fh:
            pos = fh.seek(0, os.SEEK_END)
            rest = b""
            while pos > 0 and len(lines) < count:
                start = max(0, pos - _CHUNK)
                fh.seek(start)
                chunk = fh.read(pos - start) + rest
                parts = chunk.split(b"\n")
                rest = parts[0] if start > 0 else b""
                lines.extend(reversed([p for p in (parts[1:] if start > 0 else parts) if p]))
                pos = start
        ids = [i for i in (line_id(line) for line in lines[:count]) if i is not None]
        ids.reverse()
        return ids
