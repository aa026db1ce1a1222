"""The on-disk spool: append-only segment files of checksummed records, replayed in order.

Layout of ``spool_dir``::

    lock                          flock'd by the owning process (holds its pid)
    ack                           "every record below seq N is delivered" (a hint: saves duplicates)
    00000000000000000042.seg      segments, named by the seq of their first record
    damaged/                      copies of unreadable regions and segments, for forensics

A segment is ``GBSPOOL1`` + u32 header length + u32 CRC-32 of the header + the header (JSON: format,
producer identity) followed by records::

    u32 body length | u32 CRC-32 of body | body = u64 seq | u8 type | payload      (little-endian)

``type`` 1 is an encoded Kafka record, unsigned (key, value, headers: what ``to_record`` built); type
2 is an event journaled by ``emit()`` in disk mode (fields + trace context, ``marshal`` format 4,
see :func:`pack_event`),
encoded by the sender like any other event. Seqs increase across the whole spool, so replaying
segments in name order and records in file order replays in emit order.

A record whose length, CRC, seq or type does not check out is damage: reported, copied to
``damaged/``, and skipped by scanning forward for the next record that checks out. A torn tail
(the process killed mid-write) is the common case and costs only that record, which ``emit()``
had not returned for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import marshal
import mmap
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from govbus.event import FrozenDict, FrozenList, GovernanceEvent, ProducerInfo
from govbus.producer._errors import RescueError, SpoolError, SpoolLockedError

log = logging.getLogger("govbus.producer.spool")

MAGIC = b"GBSPOOL1"
FORMAT = 1
TYPE_RECORD = 1
TYPE_EVENT = 2
_TYPES = (TYPE_RECORD, TYPE_EVENT)
_HEAD = struct.Struct("<II")  # body length, CRC-32 of body
_BODY = struct.Struct("<QB")  # seq, type
_SEG_HEAD = struct.Struct("<8sII")  # magic, header length, header CRC
_ACK = struct.Struct("<8sQI")  # magic, watermark, CRC-32 of watermark
_ACK_MAGIC = b"GBSPACK1"
_SUFFIX = ".seg"
_MAX_BODY = 64 * 1024 * 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_READ_CHUNK = 1024 * 1024
_SEQ_SPAN = 1 << 40
_MAX_HEADER = 65536  # a resynchronised record's seq must be within this of the last good one
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

Headers = list[tuple[str, bytes | None]]
Trace = tuple[int, int, int, str | None]  # trace id, span id, trace flags, tracestate header


@dataclasses.dataclass(frozen=True, slots=True)
class SpoolDamage:
    """An unreadable region of a segment: reported, copied to ``damaged/``, skipped."""

    segment: str
    offset: int
    length: int
    reason: str

    def __str__(self) -> str:
        return f"{self.segment} bytes {self.offset}..{self.offset + self.length}: {self.reason}"


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One record read back from the spool."""

    seq: int
    type: int
    payload: bytes
    producer: ProducerInfo | None  # from the segment header (who journaled a type-2 event)


class SpoolFull(Exception):
    """The record does not fit: ``spool_max_bytes`` is reached, or (``no_space`` says why) the
    filesystem cannot allocate the next segment."""

    def __init__(self, used: int, limit: int, no_space: str | None = None) -> None:
        super().__init__(f"{used} of {limit} bytes" + (f"; filesystem full: {no_space}" if no_space else ""))
        self.used = used
        self.limit = limit
        self.no_space = no_space


class _NoSpace(SpoolError):
    """The filesystem has no room for a segment (ENOSPC, EDQUOT): the spool is full, not broken."""


@dataclasses.dataclass(slots=True)
class _Segment:
    path: Path
    first_seq: int
    last_seq: int  # first_seq - 1 while empty
    size: int  # bytes written and complete (a reader never reads past it)
    producer: ProducerInfo | None
    sealed: bool
    records: int = 0
    # (seq, offset) of every 1024th record written by this process: a reader positioned at a seq
    # starts near it instead of parsing the segment from the beginning.
    index: list[tuple[int, int]] = dataclasses.field(default_factory=list)


# --- payloads ------------------------------------------------------------------------------------


def pack_record(key: bytes, value: bytes, headers: Sequence[tuple[str, bytes | None]]) -> bytes:
    """An encoded Kafka record as a type-1 payload."""
    parts = [struct.pack("<I", len(key)), key, struct.pack("<I", len(value)), value, struct.pack("<H", len(headers))]
    for name, raw in headers:
        encoded = name.encode()
        parts.append(struct.pack("<H", len(encoded)))
        parts.append(encoded)
        if raw is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
    return b"".join(parts)


def unpack_record(payload: bytes) -> tuple[bytes, bytes, Headers]:
    """Inverse of :func:`pack_record`; ``ValueError`` on a malformed payload."""
    try:
        (n,) = struct.unpack_from("<I", payload, 0)
        key = payload[4 : 4 + n]
        pos = 4 + n
        (n,) = struct.unpack_from("<I", payload, pos)
        value = payload[pos + 4 : pos + 4 + n]
        pos += 4 + n
        (count,) = struct.unpack_from("<H", payload, pos)
        pos += 2
        headers: Headers = []
        for _ in range(count):
            (n,) = struct.unpack_from("<H", payload, pos)
            name = payload[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            (n,) = struct.unpack_from("<I", payload, pos)
            pos += 4
            if n == 0xFFFFFFFF:
                headers.append((name, None))
            else:
                headers.append((name, payload[pos : pos + n]))
                pos += n
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed record payload: {exc}") from None
    if pos != len(payload) or len(key) + len(value) > len(payload):
        raise ValueError("malformed record payload: lengths do not add up")
    return key, value, headers


_JOURNALED = (
    "event_id",
    "occurred_at",
    "kind",
    "severity",
    "agent_id",
    "agent_did",
    "session_id",
    "action",
    "resource",
    "decision",
    "reason",
    "policy_name",
    "latency_ms",
    "trace_id",
    "span_id",
    "parent_span_id",
    "attributes",
    "schema_version",
)
# Model fields added since (contract v2's tenant_id, policy_version, risk_score...): journaled by
# name when set, so a newer field never needs a new journal format.
_EXTRA = tuple(name for name in GovernanceEvent.__dataclass_fields__ if name not in (*_JOURNALED, "producer"))


def pack_event(event: GovernanceEvent, trace: Trace | None) -> bytes:
    """An event as journaled by ``emit()`` in disk mode (type 2). Cheap: no Avro, no headers.

    Format 2: ``(2, <the 18 fields of _JOURNALED, occurred_at as µs since the epoch and kind as its
    value>, trace, {name: value of every newer field that is set})``. Format 1 lacks the dict.
    """
    delta = event.occurred_at - _EPOCH
    extras = {name: value for name in _EXTRA if (value := getattr(event, name)) is not None}
    fields = (
        2,
        event.event_id,
        (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,
        event.kind.value,
        event.severity,
        event.agent_id,
        event.agent_did,
        event.session_id,
        event.action,
        event.resource,
        event.decision,
        event.reason,
        event.policy_name,
        event.latency_ms,
        event.trace_id,
        event.span_id,
        event.parent_span_id,
        _journal_attributes(event.attributes),
        event.schema_version,
        trace,
        extras,
    )
    try:
        return marshal.dumps(fields, 4)  # values are checked by the model
    except ValueError:
        # marshal takes exact built-in types only; an attribute of a subclass (an IntEnum, a str
        # subclass...) is written as its base type, which encodes to the same Avro bytes.
        return marshal.dumps((*fields[:17], _plain(event.attributes), *fields[18:20], _plain(extras)), 4)


def _journal_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes as marshal takes them: exact dicts and lists, not the model's read-only ones."""
    out = dict(attributes)
    for key, value in out.items():
        if type(value) in _FROZEN:
            out[key] = _thaw(value)  # an existing key: the dict does not change size
    return out


def _thaw(value: Any) -> Any:
    kind = type(value)
    if kind is FrozenList or kind is list:
        return [_thaw(v) for v in value]
    if kind is FrozenDict or kind is dict:
        return {k: _thaw(v) for k, v in value.items()}
    if kind is tuple:
        return tuple(_thaw(v) for v in value)
    return value  # a scalar (a subclass of one: pack_event's fallback writes its base type)


_FROZEN = (FrozenDict, FrozenList, tuple)


def unpack_event(payload: bytes) -> tuple[GovernanceEvent, Trace | None]:
    """Inverse of :func:`pack_event` (the event is validated again); ``ValueError`` if malformed."""
    try:
        fields = marshal.loads(payload)  # noqa: S302 - our own spool, CRC-checked, owner-only directory
    except (EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"malformed event payload: {exc}") from None
    if not isinstance(fields, tuple) or (fields[:1], len(fields)) not in (((1,), 20), ((2,), 21)):
        raise ValueError("malformed event payload: not a format-1 or format-2 event tuple")
    values = dict(zip(_JOURNALED, fields[1:19], strict=True))
    micros, trace = values["occurred_at"], fields[19]
    extras = fields[20] if len(fields) == 21 else {}
    if not isinstance(micros, int) or not isinstance(values["attributes"], dict) or not isinstance(extras, dict):
        raise ValueError("malformed event payload: wrong field types")
    values["occurred_at"] = _EPOCH + timedelta(microseconds=micros)
    try:
        event = GovernanceEvent(**values, **extras)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"journaled event does not validate: {exc}") from None
    if trace is not None and not (isinstance(trace, tuple) and len(trace) == 4):
        trace = None
    return event, trace


def _plain(value: Any) -> Any:
    if value is None or type(value) in (bool, int, float, str, bytes):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value  # the model rejects anything else before it gets here


# --- the spool -----------------------------------------------------------------------------------


class Spool:
    """A directory of segments owned (flock) by one process.

    Writers call :meth:`write` under :attr:`lock` (the bus keeps its hand-off queue in seq order
    by appending to it under the same lock). :meth:`release` deletes segments once every record
    in them is below the delivered watermark. :meth:`sync` makes written records durable.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int,
        producer: ProducerInfo,
        sync_every_write: bool = False,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._producer = producer
        self._sync_every_write = sync_every_write
        self.lock = threading.Lock()
        self.space_freed = threading.Condition(self.lock)
        self.damage: list[SpoolDamage] = []
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._capacity = 0
        self._spare: _Allocated | None = None
        self._dirty = False
        self._dir_dirty = False
        self._to_close: list[tuple[int, mmap.mmap, int]] = []
        self.used = 0
        self.high_water = 0
        self.next_seq = 0
        self.recovered = 0  # valid records found at open, at or above the ack watermark
        self.start_watermark = 0
        self.waiting_writers = 0
        self.refusing = False  # the last write did not fit (cleared by a write that does, or a release)
        # Why the last segment allocation failed for lack of space (None: the last one succeeded).
        # Set, the spool counts as full; prepare() (syncer thread) probes until space is back.
        self.no_space: str | None = None
        self._ack_error: str | None = None
        self._dead_lock = threading.Lock()
        self._dead_fd: int | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SpoolError(directory, f"cannot create the directory: {exc}") from None
        self._lock_fd = _acquire(directory)
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening --------------------------------------------------------------------------------

    def _recover(self) -> None:
        for stale in self.directory.glob("spare-*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        self.start_watermark = self._read_ack()
        last_seq = -1
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            segment = self._scan(path, last_seq)
            if segment is None:
                continue
            self._segments.append(segment)
            self.used += segment.size
            if segment.records:
                last_seq = segment.last_seq
        self.high_water = self.used
        self.next_seq = max(last_seq + 1, self.start_watermark)
        if self._segments:
            log.info(
                "spool %s: %d record(s) to replay in %d segment(s), %d bytes, %d damaged region(s)",
                self.directory,
                self.recovered,
                len(self._segments),
                self.used,
                len(self.damage),
            )

    def _scan(self, path: Path, last_seq: int) -> _Segment | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.report(SpoolDamage(path.name, 0, 0, f"unreadable: {exc}"), None)
            return None
        header = _parse_segment_header(data)
        if isinstance(header, str):
            self.report(SpoolDamage(path.name, 0, len(data), header), data)
            self._quarantine(path)
            return None
        producer, offset = header
        first = _first_seq_from_name(path)
        segment = _Segment(path, first, first - 1, len(data), producer, sealed=True)
        for item in _parse(data, offset, max(last_seq, first - 1), path.name):
            if isinstance(item, SpoolDamage):
                self.report(item, data)
            elif isinstance(item, _End):
                segment.size = item.offset
            elif isinstance(item, tuple):
                segment.records += 1
                segment.last_seq = item[0]
                if item[0] >= self.start_watermark:
                    self.recovered += 1
        if segment.records == 0 and not self.damage_in(path.name):
            # Nothing in it (a crash right after creating it): drop it rather than carry it.
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        return segment

    def damage_in(self, segment: str) -> bool:
        return any(d.segment == segment for d in self.damage)

    def report(self, damage: SpoolDamage, data: bytes | None) -> None:
        self.damage.append(damage)
        log.warning("spool %s: damaged region skipped: %s", self.directory, damage)
        if data is not None and damage.length:
            target = self.directory / "damaged" / f"{damage.segment}.{damage.offset}.bin"
            try:
                target.parent.mkdir(exist_ok=True, mode=0o700)
                target.write_bytes(data[damage.offset : damage.offset + damage.length])
            except OSError as exc:
                log.warning("could not keep a copy of the damaged region in %s: %s", target, exc)

    def _quarantine(self, path: Path) -> None:
        target = self.directory / "damaged" / path.name
        try:
            target.parent.mkdir(exist_ok=True, mode=0o700)
            path.rename(target)
        except OSError as exc:
            log.warning("could not move damaged segment %s aside: %s", path, exc)

    def _read_ack(self) -> int:
        try:
            raw = (self.directory / "ack").read_bytes()
        except OSError:
            return 0
        if len(raw) != _ACK.size:
            return 0
        magic, watermark, crc = _ACK.unpack(raw)
        if magic != _ACK_MAGIC or crc != zlib.crc32(raw[8:16]):
            log.warning("spool %s: ack file is damaged; replaying every spooled record", self.directory)
            return 0
        return int(watermark)

    # -- writing --------------------------------------------------------------------------------

    def write(self, kind: int, payload: bytes, seq: int | None = None) -> int:
        """Append one record; the caller holds :attr:`lock`. Returns its seq; :class:`SpoolFull`.

        The active segment is preallocated and memory-mapped: appending is a copy into the page
        cache with no system call, so the caller keeps the GIL (an ``os.write`` would hand it to
        the sender thread mid-``emit()``). The bytes survive the process being killed at once,
        and a power cut once :meth:`sync` (fdatasync, on the syncer thread) has run.
        """
        size = _HEAD.size + _BODY.size + len(payload)
        if self.used + size > self.max_bytes:
            self.refusing = True
            raise SpoolFull(self.used, self.max_bytes)
        if seq is None:
            seq = self.next_seq
        active = self._active
        if active is None or active.size + size > self._capacity:
            # (no_space, not refusing, says the spool is full: it stays set until space is back)
            if self.no_space is not None:
                # Known full: fail fast instead of a doomed allocation per write; prepare() probes.
                raise SpoolFull(self.used, self.max_bytes, self.no_space)
            try:
                active = self._open_segment(seq, size)
            except _NoSpace as exc:
                self._out_of_space(exc)
                raise SpoolFull(self.used, self.max_bytes, exc.message) from None
        if not active.records & 1023:
            active.index.append((seq, active.size))
        body_head = _BODY.pack(seq, kind)
        crc = zlib.crc32(payload, zlib.crc32(body_head))
        position = active.size
        mapped = self._map
        assert mapped is not None
        # Body first, then the header that makes it visible to a scan after a crash.
        mapped[position + _HEAD.size : position + size] = body_head + payload
        mapped[position : position + _HEAD.size] = _HEAD.pack(len(payload) + _BODY.size, crc)
        if self._sync_every_write:
            assert self._fd is not None
            os.fdatasync(self._fd)
        else:
            self._dirty = True
        active.size = position + size
        active.last_seq = seq
        active.records += 1
        self.used += size
        if self.used > self.high_water:
            self.high_water = self.used
        self.next_seq = seq + 1
        self.refusing = False
        return seq

    def prepare(self) -> bool:
        """Have the next segment ready (preallocated, mapped) so that no ``emit()`` waits for it.
        Called at start and by the syncer thread; cheap when a spare is already there. False when
        the filesystem has no room for it (then :attr:`no_space` is set: the spool is full, and
        the next call probes again); other errors raise :class:`SpoolError`."""
        if self._spare is not None:
            return True
        try:
            spare = _Allocated.create(self.directory / f"spare-{os.getpid()}.tmp", self.segment_bytes)
        except _NoSpace as exc:
            with self.lock:
                self._out_of_space(exc)
            return False
        with self.lock:
            taken = self._take_spare(spare)
            if self.no_space is not None:
                log.warning("spool %s: space is available again; accepting events", self.directory)
                self.no_space = None
                if self.waiting_writers:
                    self.space_freed.notify_all()
        if not taken:
            spare.discard()
        return True

    def _out_of_space(self, exc: SpoolError) -> None:
        if self.no_space is None:
            log.error(
                "spool %s: the filesystem is full (%s); the spool counts as full until space is freed",
                self.directory,
                exc.message,
            )
        self.no_space = exc.message

    def _take_spare(self, spare: _Allocated) -> bool:
        if self._spare is not None:  # another thread was faster
            return False
        self._spare = spare
        return True

    def _open_segment(self, first_seq: int, record_size: int, *, exact: bool = False) -> _Segment:
        self.seal()
        path = self.directory / f"{first_seq:020d}{_SUFFIX}"
        header = _segment_header(self._producer)
        needed = len(header) + record_size
        spare, self._spare = self._spare, None
        if spare is not None and spare.capacity >= needed:
            try:
                os.rename(spare.path, path)  # the cheap way: allocated and mapped already
            except OSError as exc:
                spare.discard()
                error = _NoSpace if exc.errno in _NO_SPACE else SpoolError
                raise error(self.directory, f"cannot create segment {path.name}: {exc}") from None
        else:
            if spare is not None:
                spare.discard()
            spare = _Allocated.create(path, needed if exact else max(self.segment_bytes, needed))
        self.no_space = None
        spare.mapped[: len(header)] = header
        segment = _Segment(path, first_seq, first_seq - 1, len(header), self._producer, sealed=False)
        self._segments.append(segment)
        self._active, self._fd, self._map, self._capacity = segment, spare.fd, spare.mapped, spare.capacity
        self.used += len(header)
        self._dirty = self._dir_dirty = True
        return segment

    def recycle(self, watermark: int) -> None:
        """Seal the active segment once everything in it is delivered and it holds a fair share of
        data, so that :meth:`release` can give its space back (disk mode: the active segment never
        fills up while the broker keeps pace)."""
        with self.lock:
            active = self._active
            delivered = active is not None and active.records > 0 and active.last_seq < watermark
            if delivered and active is not None and active.size >= self.segment_bytes // 8:
                self.seal()

    def seal(self) -> None:
        """Close the active segment (the next write starts a new one). Caller holds the lock."""
        active = self._active
        if active is not None:
            active.sealed = True
            if self._fd is not None and self._map is not None:
                # fdatasync'd, unmapped, trimmed to its data and closed by sync(), off the writer's path.
                self._to_close.append((self._fd, self._map, active.size))
            self._active, self._fd, self._map, self._capacity = None, None, None, 0

    def rescue(self, entries: Iterable[tuple[int, int, bytes]]) -> int:
        """Write records that exist only in memory (memory mode, at close or after a fatal error)
        into new segments placed by seq between the existing ones. Returns how many were written.
        Bypasses ``max_bytes`` on purpose: these events were accepted, losing them is not an option.
        :class:`RescueError` (after writing what it could) when the filesystem cannot take them."""
        ordered = sorted(entries)
        if not ordered:
            return 0
        written, lost, problem = 0, 0, ""
        with self.lock:
            self.seal()
            bounds = sorted(s.first_seq for s in self._segments)
            runs: list[list[tuple[int, int, bytes]]] = [[]]
            for entry in ordered:
                if runs[-1] and _between(bounds, runs[-1][0][0], entry[0]):
                    runs.append([])
                runs[-1].append(entry)
            for run in runs:
                try:
                    self._write_run(run)
                    written += len(run)
                except SpoolError as exc:
                    lost, problem = lost + len(run), exc.message
            self._segments.sort(key=lambda s: s.first_seq)
        self.sync()
        if lost:
            raise RescueError(self.directory, problem, written, lost)
        return written

    def _write_run(self, run: list[tuple[int, int, bytes]]) -> None:
        size = sum(_HEAD.size + _BODY.size + len(payload) for _, _, payload in run)
        # Exactly its size (sealed at once): on a nearly full disk the records may still fit.
        self._open_segment(run[0][0], size, exact=True)
        limit, self.max_bytes = self.max_bytes, max(self.max_bytes, self.used + size)
        try:
            for seq, kind, payload in run:
                self.write(kind, payload, seq)
        finally:
            self.max_bytes = limit
        self.seal()

    def dead_letter(self, seq: int, kind: int, payload: bytes) -> None:
        """Keep a record Kafka refused for good (or that cannot be replayed) in ``dead/``, in the
        segment format, outside the spool's byte budget. Any thread."""
        with self._dead_lock:
            try:
                if self._dead_fd is None:
                    folder = self.directory / "dead"
                    folder.mkdir(exist_ok=True, mode=0o700)
                    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{seq:020d}{_SUFFIX}"
                    self._dead_fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    os.write(self._dead_fd, _segment_header(self._producer))
                body_head = _BODY.pack(seq, kind)
                crc = zlib.crc32(payload, zlib.crc32(body_head))
                os.write(self._dead_fd, _HEAD.pack(len(payload) + _BODY.size, crc) + body_head + payload)
                os.fsync(self._dead_fd)
            except OSError as exc:
                log.error("spool %s: cannot keep dead letter %d: %s", self.directory, seq, exc)

    # -- durability and space -------------------------------------------------------------------

    def sync(self) -> None:
        """fdatasync what was written (and the directory, after a new segment). Any thread."""
        with self.lock:
            fd = self._fd if self._dirty else None
            self._dirty = False
            closing, self._to_close = self._to_close, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        for old_fd, mapped, size in closing:
            with contextlib.suppress(OSError, ValueError):
                os.fdatasync(old_fd)
                mapped.close()
                os.ftruncate(old_fd, size)  # give back the preallocated tail
            with contextlib.suppress(OSError):
                os.close(old_fd)
        if fd is not None:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                if exc.errno != 9:  # EBADF: the segment was sealed and closed meanwhile (synced then)
                    log.error("spool %s: fdatasync failed: %s", self.directory, exc)
        if dir_dirty:
            _fsync_dir(self.directory)

    def release(self, watermark: int) -> int:
        """Delete sealed segments whose records are all below ``watermark`` (delivered). Returns bytes freed."""
        with self.lock:
            done = [s for s in self._segments if s.sealed and s.last_seq < watermark]
            if not done:
                return 0
            self._segments = [s for s in self._segments if not (s.sealed and s.last_seq < watermark)]
            freed = sum(s.size for s in done)
            self.used -= freed
            self.refusing = False
            if self.waiting_writers:
                self.space_freed.notify_all()
        for segment in done:
            try:
                segment.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("spool %s: cannot delete delivered segment %s: %s", self.directory, segment.path, exc)
        return freed

    def save_ack(self, watermark: int) -> None:
        """Record the delivered watermark (a hint: without it a restart replays more, never less)."""
        raw = watermark.to_bytes(8, "little")
        data = _ACK.pack(_ACK_MAGIC, watermark, zlib.crc32(raw))
        path = self.directory / "ack"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, data, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            if str(exc) != self._ack_error:  # once per problem, not every 100 ms (a full disk)
                log.warning("spool %s: cannot write the ack file: %s", self.directory, exc)
            self._ack_error = str(exc)
        else:
            self._ack_error = None

    # -- reading --------------------------------------------------------------------------------

    def segments(self) -> list[_Segment]:
        with self.lock:
            return list(self._segments)

    def end_seq(self) -> int:
        """One past the last record written."""
        return self.next_seq

    def reader(self, from_seq: int) -> SpoolReader:
        return SpoolReader(self, from_seq)

    def close(self) -> None:
        with self.lock:
            self.seal()
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.discard()
        self.sync()
        with self._dead_lock:
            if self._dead_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._dead_fd)
                self._dead_fd = None
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


class _Allocated:
    """A preallocated, memory-mapped file: a segment's storage before it has a name."""

    __slots__ = ("capacity", "fd", "mapped", "path")

    def __init__(self, path: Path, fd: int, mapped: mmap.mmap, capacity: int) -> None:
        self.path, self.fd, self.mapped, self.capacity = path, fd, mapped, capacity

    @classmethod
    def create(cls, path: Path, capacity: int) -> _Allocated:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            error = _NoSpace if exc.errno in _NO_SPACE else SpoolError
            raise error(path.parent, f"cannot create {path.name}: {exc}") from None
        try:
            # Reserve the blocks now: writing into a mapping of a sparse file on a full disk is a
            # SIGBUS; here it is an error the caller sees.
            os.posix_fallocate(fd, 0, capacity)
            # Populated up front (on the syncer thread for spares): fewer page faults inside emit().
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mapped = mmap.mmap(fd, capacity, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            error = _NoSpace if exc.errno in _NO_SPACE else SpoolError
            raise error(path.parent, f"cannot allocate {path.name} ({capacity} bytes): {exc}") from None
        return cls(path, fd, mapped, capacity)

    def discard(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.mapped.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            self.path.unlink()


class SpoolReader:
    """Reads records in seq order from ``from_seq`` on, across segments, up to what is written."""

    def __init__(self, spool: Spool, from_seq: int) -> None:
        self._spool = spool
        self.next_seq = from_seq  # the next seq this reader will return (or a later one)
        self._segment: _Segment | None = None
        self._file: Any = None
        self._offset = 0
        self._buffer = b""
        self._last_seq = -1
        self._seek: tuple[int, int] | None = None
        self._pending: deque[Entry] = deque()

    def read(self, max_records: int) -> list[Entry]:
        """Up to ``max_records`` records; fewer (or none) at the end of what has been written."""
        while len(self._pending) < max_records and self._advance():
            pass
        pending = self._pending
        return [pending.popleft() for _ in range(min(max_records, len(pending)))]

    def _advance(self) -> bool:
        """Parse one more chunk into the pending records; False at the end of what is written."""
        while True:
            if self._segment is None:
                self._segment = self._next_segment()
                if self._segment is None:
                    return False
                self._close_file()
                self._offset, self._buffer, self._seek = 0, b"", None
                for seq, offset in self._segment.index:
                    if seq > self.next_seq:
                        break
                    self._seek = (seq, offset)
            segment = self._segment
            if self._fill(segment):
                break
            if segment.sealed and self._offset >= segment.size:
                self._segment = None  # finished (an incomplete tail left in the buffer was reported at open)
                continue
            return False
        name = segment.path.name
        for item in _parse(self._buffer, 0, self._last_seq, name, partial_ok=True):
            if isinstance(item, SpoolDamage):
                if not self._spool.damage_in(name):
                    self._spool.report(item, None)
            elif isinstance(item, int):
                self._buffer = self._buffer[item:]
            elif isinstance(item, tuple):
                seq, kind, payload = item
                self._last_seq = seq
                if seq >= self.next_seq:
                    self._pending.append(Entry(seq, kind, payload, segment.producer))
                    self.next_seq = seq + 1
        return True

    def _fill(self, segment: _Segment) -> bool:
        # Read only what is complete: segment.size grows after a record is fully written.
        limit = segment.size
        if self._file is None:
            try:
                self._file = segment.path.open("rb", buffering=0)  # unbuffered: the file grows under us
            except FileNotFoundError:
                self._offset = limit
                return False
            header = _parse_segment_header(self._file.read(_MAX_HEADER + _SEG_HEAD.size))
            self._offset = limit if isinstance(header, str) else header[1]
            if self._seek is not None and not isinstance(header, str):
                self._last_seq, self._offset = self._seek[0] - 1, self._seek[1]
        if self._offset >= limit:
            return False
        self._file.seek(self._offset)
        chunk = self._file.read(min(_READ_CHUNK, limit - self._offset))
        if not chunk:
            return False
        self._offset += len(chunk)
        self._buffer += chunk
        return True

    def _next_segment(self) -> _Segment | None:
        # Segments are in seq order; the first that holds a seq at or after next_seq, or that may
        # still grow (the active one), is next.
        for segment in self._spool.segments():
            if segment.last_seq >= self.next_seq or not segment.sealed:
                return segment
        return None

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        self._close_file()


# --- parsing -------------------------------------------------------------------------------------


class _End:
    """Where the data of a segment ends (the rest is the zeroed, preallocated tail)."""

    __slots__ = ("offset",)

    def __init__(self, offset: int) -> None:
        self.offset = offset


def _parse(
    data: bytes, offset: int, last_seq: int, name: str, *, partial_ok: bool = False
) -> Iterator[tuple[int, int, bytes] | SpoolDamage | int | _End]:
    """Records of ``data`` from ``offset``: (seq, type, payload), :class:`SpoolDamage`, and last an
    :class:`_End` (recovery) or, with ``partial_ok`` (a live segment read in chunks), the number of
    bytes consumed: an incomplete record at the end of the chunk is not damage there.
    """
    end = len(data)
    pos = offset
    while pos < end:
        record = _record_at(data, pos, last_seq)
        if isinstance(record, tuple):
            seq, kind, payload, size = record
            yield seq, kind, payload
            last_seq = seq
            pos += size
            continue
        if partial_ok and record == "incomplete":
            yield pos
            return
        if data[pos : pos + 4] == b"\0\0\0\0" and data.count(b"\0", pos, end) == end - pos:
            yield _End(pos)  # the preallocated tail: nothing was written here
            return
        start = pos
        pos = _resync(data, pos + 1, last_seq)
        if pos < 0:
            length = max(1, len(data[start:].rstrip(b"\0")))
            reason = "torn tail (incomplete last record)" if record == "incomplete" or start + length < end else record
            yield SpoolDamage(name, start, length, f"{reason}; nothing readable after it")
            yield start + length if partial_ok else _End(start + length)
            return
        yield SpoolDamage(name, start, pos - start, record)
    yield end if partial_ok else _End(end)


def _record_at(data: bytes, pos: int, last_seq: int) -> tuple[int, int, bytes, int] | str:
    end = len(data)
    if pos + _HEAD.size + _BODY.size > end:
        return "incomplete"
    length, crc = _HEAD.unpack_from(data, pos)
    if length < _BODY.size or length > _MAX_BODY:
        return f"implausible record length {length}"
    stop = pos + _HEAD.size + length
    if stop > end:
        return "incomplete"
    seq, kind = _BODY.unpack_from(data, pos + _HEAD.size)
    if kind not in _TYPES:
        return f"unknown record type {kind}"
    if zlib.crc32(memoryview(data)[pos + _HEAD.size : stop]) != crc:
        return "checksum mismatch"
    if seq <= last_seq:
        return f"seq {seq} not after {last_seq}"
    return seq, kind, data[pos + _HEAD.size + _BODY.size : stop], stop - pos


def _resync(data: bytes, pos: int, last_seq: int) -> int:
    """The next offset at which a record checks out completely, or -1."""
    end = len(data) - _HEAD.size - _BODY.size
    while pos <= end:
        length = int.from_bytes(data[pos : pos + 4], "little")
        if _BODY.size <= length <= len(data) - pos - _HEAD.size:
            seq, kind = _BODY.unpack_from(data, pos + _HEAD.size)
            if (
                kind in _TYPES
                and last_seq < seq < last_seq + _SEQ_SPAN
                and isinstance(_record_at(data, pos, last_seq), tuple)
            ):
                return pos
        pos += 1
    return -1


def _segment_header(producer: ProducerInfo) -> bytes:
    header = json.dumps(
        {"format": FORMAT, "producer": dataclasses.asdict(producer), "created": time.time()},
        separators=(",", ":"),
    ).encode()
    return _SEG_HEAD.pack(MAGIC, len(header), zlib.crc32(header)) + header


def _parse_segment_header(data: bytes) -> tuple[ProducerInfo | None, int] | str:
    if len(data) < _SEG_HEAD.size:
        return "segment header is truncated"
    magic, length, crc = _SEG_HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        return f"not a govbus spool segment (magic {magic!r})"
    stop = _SEG_HEAD.size + length
    if length > _MAX_HEADER or stop > len(data) or zlib.crc32(data[_SEG_HEAD.size : stop]) != crc:
        return "segment header is damaged"
    try:
        header = json.loads(data[_SEG_HEAD.size : stop])
        if header.get("format") != FORMAT:
            return f"segment format {header.get('format')!r} is not {FORMAT}"
        producer = ProducerInfo(**header["producer"]) if header.get("producer") else None
    except (ValueError, TypeError, KeyError) as exc:
        return f"segment header is unreadable: {exc}"
    return producer, stop


def _first_seq_from_name(path: Path) -> int:
    stem = path.name[: -len(_SUFFIX)]
    return int(stem) if stem.isdigit() else 0


def _between(bounds: list[int], low: int, high: int) -> bool:
    """Whether an existing segment starts in (low, high]: then a rescue run must split there."""
    import bisect

    i = bisect.bisect_right(bounds, low)
    return i < len(bounds) and bounds[i] <= high


def _acquire(directory: Path) -> int:
    path = directory / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SpoolError(directory, f"cannot open the lock file: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SpoolLockedError(
            directory,
            f"in use by another producer process (pid {holder}); give each process its own GOVBUS_PRODUCER__SPOOL_DIR",
        ) from None
    pid = f"{os.getpid()}\n".encode()
    try:
        # Over the old contents, then trimmed: on a full disk the existing block is reused.
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
    except OSError as exc:  # only informative (who holds it); the flock is what counts
        log.warning("spool %s: cannot write the pid into the lock file: %s", directory, exc)
    return fd


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("spool %s: directory fsync failed: %s", directory, exc)
    finally:
        os.close(fd)
