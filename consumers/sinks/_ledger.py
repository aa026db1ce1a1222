"""The audit ledger: an append-only, hash-chained file of JSON lines (format: docs/audit-ledger.md).

Each line is one entry: the canonical JSON of its members (keys sorted, no spaces, UTF-8) with a
``"hash"`` member appended last, where ``hash`` is the SHA-256 of the line's bytes without that
member, i.e. of ``{…members…}``. Hashing the bytes as written, not a re-serialisation, means a
verifier in any language checks them without reproducing this writer's JSON formatting.
Every entry's ``prev`` is the previous entry's ``hash``; ``seq`` counts entries from 0.

This module holds the format, the writer (:class:`LedgerWriter`) and the verifier
(:func:`verify_ledger`); the sink and the CLI are thin layers over them. The writer seals its
event entries with the compiled core (``LedgerSealer``, docs/native.md) when it is in use;
:func:`seal_events` here is the reference it writes byte for byte, and its fallback.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from govbus import _accel as native_core
from govbus._cloudevents import SPEC_VERSION, TRACEPARENT, TRACESTATE, CloudEventAttributes, format_time
from govbus._contract import Decoder
from govbus._record import from_record
from govbus.consumers._errors import SinkError
from govbus.consumers._spi import DeliveredRecord
from govbus.errors import DecodeError
from govbus.event import V2_FIELDS, FrozenDict, FrozenList, GovernanceEvent
from govbus.signing import SIGNATURE_HEADERS, Keyring, SigningKey, VerdictCode, Verifier
from govbus.signing._keyring import parse_time

__all__ = [
    "CHECKPOINT_TAG",
    "FORMAT",
    "GENESIS",
    "LedgerError",
    "LedgerWriter",
    "Problem",
    "VerifyReport",
    "checkpoint_message",
    "native_ledger_format",
    "native_sealer",
    "render_event",
    "seal",
    "seal_events",
    "unseal",
    "verify_ledger",
]

_log = logging.getLogger("govbus.consumers.sinks.audit")

FORMAT = 1
GENESIS = "0" * 64  # the ``prev`` of the first entry
CHECKPOINT_TAG = b"govbus/v1/ledger-checkpoint\x00"  # domain separation for checkpoint signatures
_HASH_TAIL = re.compile(rb',"hash":"([0-9a-f]{64})"\}\n?\Z')
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIG_HEADERS = frozenset(SIGNATURE_HEADERS)
_BLOCK = 1 << 16


class LedgerError(SinkError):
    """The ledger file cannot be opened or appended to safely."""


def canonical(obj: Any) -> bytes:
    """Keys sorted by code point, no whitespace, UTF-8, no NaN (RFC 8259 strict)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def seal(fields: Mapping[str, Any]) -> tuple[bytes, str]:
    """The line (with its newline) for an entry's members, and its hash."""
    body = canonical(fields)
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode("ascii") + b'"}\n', digest


class _BadLine(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def unseal(line: bytes) -> tuple[dict[str, Any], str]:
    """The members and hash of one line; :class:`_BadLine` when the hash does not match."""
    m = _HASH_TAIL.search(line)
    if m is None:
        raise _BadLine("edited", "the line does not end with a well-formed hash member")
    body = line[: m.start()] + b"}"
    stored = m.group(1).decode("ascii")
    if hashlib.sha256(body).hexdigest() != stored:
        raise _BadLine("edited", "the entry's content does not match its hash")
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _BadLine("malformed", "the hash matches but the entry is not valid JSON") from None
    if not isinstance(fields, dict) or "hash" in fields:
        raise _BadLine("malformed", "the hash matches but the entry is not a JSON object")
    return fields, stored


def _b64(raw: bytes | None) -> str | None:
    # base64.b64encode without its wrapper (it is binascii underneath): ~20 calls per entry.
    return None if raw is None else _b2a(raw, newline=False).decode("ascii")


_b2a = binascii.b2a_base64


def _unb64(text: object) -> bytes | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text, validate=True)


def event_fields(seq: int, prev: str, record: DeliveredRecord) -> dict[str, Any]:
    headers: list[list[str | None]] = []
    sig: dict[str, str | None] = {}
    traceparent = tracestate = None  # the last of each, as record.header() finds them, in the same pass
    for name, value in record.headers:
        text = None if value is None else _b2a(value, newline=False).decode("ascii")
        if name in _SIG_HEADERS:
            sig[name] = text
        else:
            headers.append([name, text])
        if name == TRACEPARENT:
            traceparent = value
        elif name == TRACESTATE:
            tracestate = value
    return {
        "v": FORMAT,
        "seq": seq,
        "type": "event",
        "prev": prev,
        "event": render_event(
            record.event, record.attributes, traceparent=_text(traceparent), tracestate=_text(tracestate)
        ),
        "record": {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_ms": record.timestamp_ms,
            "key": _b64(record.key),
            "value": _b64(record.value),
            "headers": headers,
        },
        "sig": sig or None,
        "verdict": record.verdict,
        "verdict_detail": record.verdict_detail,
    }


def seal_events(seq: int, prev: str, records: Sequence[DeliveredRecord]) -> tuple[bytes, str]:
    """The event entries of ``records`` numbered from ``seq`` and chained from ``prev``: the lines
    joined, and the new head. The reference the compiled core's ``LedgerSealer`` is held to."""
    lines = []
    for i, record in enumerate(records):
        line, prev = seal(event_fields(seq + i, prev, record))
        lines.append(line)
    return b"".join(lines), prev


def native_sealer() -> Any | None:
    """The compiled core's ``seal_events`` (``govbus._native.LedgerSealer``), or None when the core
    is not in use (not installed, ``GOVBUS_NATIVE=off``) or predates it."""
    cls = native_core.symbol("LedgerSealer")
    if cls is None:
        return None
    return cls(
        (FrozenDict, FrozenList),
        sorted(_SIG_HEADERS),
        sorted(_OWN_ATTRIBUTES),
        list(V2_FIELDS),
        SPEC_VERSION,
        format_time,
    ).seal_events


def native_ledger_format() -> Any | None:
    """What the compiled core's intake drafts event entries with (``govbus._native.LedgerFormat``,
    native/src/ledger_draft.rs), or None when the core is not in use or predates it. A drafted
    entry lacks only its ``seq`` and ``prev``; the sealer fills them in and hashes the line."""
    cls = native_core.symbol("LedgerFormat")
    if cls is None:
        return None
    return cls(sorted(_SIG_HEADERS), sorted(_OWN_ATTRIBUTES), SPEC_VERSION)


def checkpoint_message(fields: Mapping[str, Any]) -> bytes:
    """The bytes a checkpoint's Ed25519 signature covers: the tag and its members but ``sig``."""
    return CHECKPOINT_TAG + canonical({k: v for k, v in fields.items() if k not in ("sig", "hash")})


def checkpoint_fields(seq: int, prev: str, key: SigningKey, when: datetime) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "v": FORMAT,
        "seq": seq,
        "type": "checkpoint",
        "prev": prev,
        "time": format_time(when),
        "alg": "ed25519",
        "kid": key.kid,
    }
    fields["sig"] = base64.b64encode(key.sign(checkpoint_message(fields))).decode("ascii")
    return fields


def _value_digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


# -- the event as CloudEvents JSON ------------------------------------------------------------
# Frozen with the ledger format: `verify` re-renders every event from its record and compares,
# so changing a byte of this rendering is a new format version, never an edit. (The stdout and
# file sinks render with _jsonl, which may evolve; ledgers must verify for years.)


def render_event(
    event: GovernanceEvent,
    attributes: CloudEventAttributes,
    *,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> dict[str, Any]:
    """The CloudEvents 1.0 JSON (structured mode) of an event, as ledger format 1 stores it."""
    out: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": attributes.id,
        "source": attributes.source,
        "type": attributes.type,
        "time": attributes.time or format_time(event.occurred_at),
    }
    if attributes.subject is not None:
        out["subject"] = attributes.subject
    out["datacontenttype"] = "application/json"
    ext = {k: v for k, v in attributes.extensions.items() if k not in _OWN_ATTRIBUTES}
    if traceparent:
        ext["traceparent"] = traceparent
        if tracestate:
            ext["tracestate"] = tracestate
    out.update(ext)
    out["data"] = _event_data(event)
    return out


_OWN_ATTRIBUTES = frozenset({"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "data"})


def _event_data(event: GovernanceEvent) -> dict[str, Any]:
    producer = event.producer
    data: dict[str, Any] = {
        "agent_id": event.agent_id,
        "agent_did": event.agent_did,
        "session_id": event.session_id,
        "kind": event.kind.value,
        "severity": event.severity,
        "action": event.action,
        "decision": event.decision,
        "reason": event.reason,
        "resource": event.resource,
        "policy_name": event.policy_name,
        "latency_ms": _json_value(event.latency_ms),
        "trace_id": event.trace_id,
        "span_id": event.span_id,
        "parent_span_id": event.parent_span_id,
        "attributes": _json_value(event.attributes),
        "schema_version": event.schema_version,
        "producer": None
        if producer is None
        else {
            "name": producer.name,
            "instance_id": producer.instance_id,
            "host": producer.host,
            "library": producer.library,
        },
    }
    # Contract v2 fields join the entry only when set, so entries written before v2 existed
    # re-render byte for byte and old ledgers keep verifying.
    for name in V2_FIELDS:
        value = getattr(event, name)
        if value is not None:
            data[name] = _json_value(value)
    return data


_AS_IS = frozenset({str, int, bool, type(None)})  # exact types: their JSON is themselves


def _json_value(value: Any) -> Any:
    """Strict-JSON form: bytes -> {"base64": …}; NaN/±Infinity -> "NaN"/"Infinity"/"-Infinity"."""
    if type(value) in _AS_IS:  # the common leaves first, without the isinstance chain
        return value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): v if type(v) in _AS_IS else _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _AS_IS else _json_value(v) for v in value]
    return str(value)


# -- writing ----------------------------------------------------------------------------------


class LedgerWriter:
    """Appends entries; one writer per file (an exclusive ``flock`` enforces it).

    De-duplication: the ids of the last ``dedup_window`` events (rebuilt from the file's tail at
    open) map to a digest of their record value; an event already there is skipped, one whose id
    is there with other content is reported as a conflict. Redeliveries after a restart come from
    uncommitted offsets, a few thousand records at most, so a bounded window catches them.
    """

    def __init__(
        self,
        path: Path,
        *,
        checkpoint_key: SigningKey | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 60.0,
        fsync: bool = True,
        dedup_window: int = 100_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        native: bool = True,
    ) -> None:
        self.path = Path(path)
        self._key = checkpoint_key
        self._every = checkpoint_every
        self._interval = checkpoint_interval_s
        self._fsync = fsync
        self._window = dedup_window
        self._clock = clock
        self._monotonic = monotonic
        self._fd: int | None = None
        self._size = 0
        self.next_seq = 0
        self.head = GENESIS
        self.since_checkpoint = 0
        self._checkpoint_at = 0.0
        self._seen: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._dirty = False
        self._failed = False
        self._native = native_sealer() if native else None

    # -- open / recover --------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LedgerError(
                    f"audit ledger {self.path} is in use by another process; one writer per ledger"
                ) from None
            self._fd = fd
            self._recover()
        except BaseException:
            os.close(fd)
            self._fd = None
            raise
        self._checkpoint_at = self._monotonic()
        _log.info(
            "audit ledger %s open: %d entries, head %s…, %d event ids in the de-duplication window",
            self.path,
            self.next_seq,
            self.head[:12],
            len(self._seen),
        )

    def _recover(self) -> None:
        fd = self._require_fd()
        size = os.fstat(fd).st_size
        end = _last_newline_end(fd, size)
        if end < size:
            # A write cut short by a crash: that batch was never acknowledged (acks follow fsync),
            # so its events are redelivered and appended again.
            _log.warning("audit ledger %s: dropping %d bytes of an incomplete last entry", self.path, size - end)
            os.ftruncate(fd, end)
            os.fsync(fd)
        self._size = end
        if end == 0:
            return
        events: list[tuple[str, bytes]] = []
        found_checkpoint = False
        for index, line in enumerate(_lines_backward(fd, end)):
            try:
                fields, digest = unseal(line)
            except _BadLine as exc:
                if index == 0:
                    raise LedgerError(
                        f"audit ledger {self.path}: the last entry is damaged ({exc.detail}); refusing to append "
                        f"to it. Run `govbus audit verify {self.path}` and move the file aside."
                    ) from None
                break  # older damage is verify's business; the chain head is sound
            if index == 0:
                seq = fields.get("seq")
                if not isinstance(seq, int):
                    raise LedgerError(f"audit ledger {self.path}: the last entry has no integer seq")
                self.next_seq = seq + 1
                self.head = digest
            if fields.get("type") == "checkpoint":
                found_checkpoint = True
            elif fields.get("type") == "event":
                if not found_checkpoint:
                    self.since_checkpoint += 1
                try:
                    event_id = fields["event"]["id"]
                    value = _unb64(fields["record"]["value"])
                except (KeyError, TypeError, ValueError, binascii.Error):
                    continue
                if isinstance(event_id, str) and value is not None:
                    events.append((event_id, _value_digest(value)))
            if len(events) >= self._window and (found_checkpoint or self.since_checkpoint >= self._every):
                break
        for event_id, value_digest in reversed(events[: self._window]):
            self._seen[event_id] = value_digest

    # -- appending -------------------------------------------------------------------------
    def append(self, records: Sequence[DeliveredRecord]) -> dict[int, str]:
        """Appends the events not yet in the ledger (not yet durable: call :meth:`sync`).

        Returns the conflicts: batch index -> reason, for events whose id is in the ledger with
        different content.
        """
        self._check_usable()
        conflicts: dict[int, str] = {}
        added: dict[str, bytes] = {}
        lines: list[bytes] = []
        seq, prev, since = self.next_seq, self.head, self.since_checkpoint
        checkpointed = False
        run: list[DeliveredRecord] = []  # event entries not sealed yet, numbered from run_seq
        run_seq = seq
        for i, record in enumerate(records):
            event_id = record.event_id  # known without decoding the event (records of the compiled core)
            digest = _value_digest(record.value)
            known = added.get(event_id) or self._seen.get(event_id)
            if known is not None:
                if known != digest:
                    conflicts[i] = (
                        f"audit: event id {event_id!r} is already in the ledger with different content; not appended"
                    )
                continue
            run.append(record)
            added[event_id] = digest
            seq += 1
            since += 1
            if self._key is not None and since >= self._every:
                chunk, prev = self._seal_events(run_seq, prev, run)
                lines.append(chunk)
                run = []
                line, prev = seal(checkpoint_fields(seq, prev, self._key, self._clock()))
                lines.append(line)
                seq += 1
                run_seq = seq
                since = 0
                checkpointed = True
        if run:
            chunk, prev = self._seal_events(run_seq, prev, run)
            lines.append(chunk)
        if lines:
            self._write(b"".join(lines))
            if checkpointed:
                self._checkpoint_at = self._monotonic()
            self.next_seq, self.head, self.since_checkpoint = seq, prev, since
            for event_id, digest in added.items():
                self._seen[event_id] = digest
            while len(self._seen) > self._window:
                self._seen.popitem(last=False)
        return conflicts

    def _seal_events(self, seq: int, prev: str, records: list[DeliveredRecord]) -> tuple[bytes, str]:
        if self._native is not None:
            try:
                sealed: tuple[bytes, str] = self._native(seq, prev, records)
                return sealed
            except Exception as exc:  # a value it leaves to the reference (which raises if it must)
                _log.debug("audit ledger: native sealing declined a run (%s); using the Python writer", exc)
        return seal_events(seq, prev, records)

    def checkpoint_due(self) -> bool:
        return (
            self._key is not None
            and self.since_checkpoint > 0
            and self._monotonic() - self._checkpoint_at >= self._interval
        )

    def checkpoint(self) -> bool:
        """Appends a signed checkpoint of the head if entries came since the last one."""
        self._check_usable()
        if self._key is None or self.since_checkpoint == 0:
            return False
        line, digest = seal(checkpoint_fields(self.next_seq, self.head, self._key, self._clock()))
        self._write(line)
        self.next_seq += 1
        self.head = digest
        self.since_checkpoint = 0
        self._checkpoint_at = self._monotonic()
        return True

    def sync(self) -> None:
        """Makes every appended entry durable (fsync), unless fsync is off."""
        if not self._dirty or not self._fsync:
            return
        fd = self._require_fd()
        try:
            os.fsync(fd)
        except OSError as exc:
            # After a failed fsync Linux may have dropped the dirty pages and will report success
            # next time: nothing written since open can be trusted to be on disk any more.
            self._failed = True
            raise LedgerError(f"audit ledger {self.path}: fsync failed ({exc.strerror}); restart the sink") from None
        self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            try:
                if not self._failed:
                    self.sync()
            finally:
                os.close(self._fd)  # releases the flock
                self._fd = None

    def _write(self, data: bytes) -> None:
        fd = self._require_fd()
        start = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            # Take back a partial append, so the file still ends on a whole entry.
            try:
                os.ftruncate(fd, start)
            except OSError:
                self._failed = True
            raise LedgerError(f"audit ledger {self.path}: append failed ({exc.strerror})") from None
        self._size = start + len(data)
        self._dirty = True

    def _check_usable(self) -> None:
        if self._fd is None:
            raise LedgerError(f"audit ledger {self.path} is not open")
        if self._failed:
            raise LedgerError(f"audit ledger {self.path}: an earlier write or fsync failed; restart the sink")

    def _require_fd(self) -> int:
        if self._fd is None:
            raise LedgerError(f"audit ledger {self.path} is not open")
        return self._fd


def _last_newline_end(fd: int, size: int) -> int:
    """The offset just after the file's last newline (0 if it has none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - start, start)
        i = block.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _lines_backward(fd: int, end: int) -> Iterator[bytes]:
    """The file's lines (with their newlines) from the last one backwards; ``end`` ends a line."""
    pos = end
    tail = b""
    while pos > 0:
        start = max(0, pos - _BLOCK)
        block = os.pread(fd, pos - start, start) + tail
        pos = start
        lines = block.split(b"\n")
        # The first piece may be the end of a line that starts in an earlier block.
        tail = lines[0]
        for piece in reversed(lines[1:]):
            if piece:
                yield piece + b"\n"
    if tail:
        yield tail + b"\n"


# -- verifying --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    """The first broken entry: 1-based ``line``, the ``seq`` it holds (if readable), what broke.

    ``kind``: ``edited`` (content does not match its hash, or its event does not match its
    record), ``deleted`` (a gap in the sequence), ``reordered`` (an entry out of sequence),
    ``relinked`` (``prev`` is not the previous entry's hash: an entry before it was replaced by a
    re-hashed one), ``duplicate`` (an event id seen before), ``truncated`` (an incomplete last
    line), ``malformed``, ``bad-signature``, ``unsigned``, ``bad-checkpoint``.
    """

    line: int
    seq: int | None
    kind: str
    detail: str

    def __str__(self) -> str:
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"line {self.line}{seq}: {self.kind}: {self.detail}"


@dataclasses.dataclass(slots=True)
class VerifyReport:
    path: Path
    entries: int = 0
    events: int = 0
    checkpoints: int = 0
    head: str = GENESIS
    last_checkpoint_seq: int | None = None
    signatures_verified: int = 0
    checkpoints_verified: int = 0
    events_undecodable: int = 0
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def unsealed(self) -> int:
        """Entries after the last checkpoint (their deletion is only detectable from a copy of the head)."""
        if self.last_checkpoint_seq is None:
            return self.entries
        return self.entries - self.last_checkpoint_seq - 1

    def as_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["path"] = str(self.path)
        out["ok"] = self.ok
        out["unsealed"] = self.unsealed
        out["problem"] = dataclasses.asdict(self.problem) if self.problem else None
        return out


def verify_ledger(
    path: Path | str,
    *,
    keyring: Keyring | None = None,
    checkpoint_keyring: Keyring | None = None,
    allow_unsigned: bool = False,
) -> VerifyReport:
    """Checks every entry's hash, link and sequence, that each event matches its record value, no
    event id appears twice, and — given keyrings — every event signature and every checkpoint
    signature. Stops at the first broken entry (``report.problem``)."""
    path = Path(path)
    report = VerifyReport(path)
    verifier = Verifier(keyring, track_sequences=False) if keyring is not None else None
    cp_keyring = checkpoint_keyring if checkpoint_keyring is not None else keyring
    decoder = Decoder()
    ids: dict[str, int] = {}
    expected = 0
    prev = GENESIS
    with path.open("rb") as f:
        lines = iter(f)
        for lineno, line in enumerate(lines, 1):
            problem, fields, digest = _check_line(line, lineno, expected, prev, lines)
            if problem is None:
                assert fields is not None
                if fields["type"] == "event":
                    problem = _check_event(fields, lineno, ids, decoder, verifier, allow_unsigned, report)
                else:
                    problem = _check_checkpoint(fields, lineno, cp_keyring, report)
            if problem is not None:
                report.problem = problem
                return report
            assert fields is not None
            assert digest is not None
            report.entries += 1
            prev = digest
            expected += 1
    report.head = prev
    return report


def _check_line(
    line: bytes, lineno: int, expected: int, prev: str, rest: Iterator[bytes]
) -> tuple[Problem | None, dict[str, Any] | None, str | None]:
    if not line.endswith(b"\n"):
        return (
            Problem(lineno, None, "truncated", "the last line is incomplete (cut short or a crashed write)"),
            None,
            None,
        )
    try:
        fields, digest = unseal(line)
    except _BadLine as exc:
        return Problem(lineno, _loose_seq(line), exc.kind, exc.detail), None, None
    seq = fields.get("seq")
    if (
        fields.get("v") != FORMAT
        or not isinstance(seq, int)
        or isinstance(seq, bool)
        or fields.get("type") not in ("event", "checkpoint")
        or not isinstance(fields.get("prev"), str)
    ):
        detail = f"not a version-{FORMAT} entry with integer seq, type event|checkpoint and prev"
        return Problem(lineno, seq if isinstance(seq, int) else None, "malformed", detail), None, None
    if seq != expected:
        if seq > expected:
            where = _find_seq(rest, expected, lineno)
            if where is not None:
                detail = f"expected seq {expected} here, found seq {seq}; seq {expected} is at line {where}"
                return Problem(lineno, seq, "reordered", detail), None, None
            missing = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
            detail = f"expected seq {expected}, found seq {seq}: entry {missing} was deleted"
            return Problem(lineno, seq, "deleted", detail), None, None
        detail = f"expected seq {expected}, found seq {seq}: the entry is out of order (moved or copied)"
        return Problem(lineno, seq, "reordered", detail), None, None
    if fields["prev"] != prev:
        detail = "prev is not the hash of the entry before it: that entry was replaced by one with a recomputed hash"
        return Problem(lineno, seq, "relinked", detail), None, None
    return None, fields, digest


def _find_seq(rest: Iterator[bytes], wanted: int, lineno: int) -> int | None:
    """The line number of the entry holding ``wanted`` among the remaining lines, if any."""
    for offset, line in enumerate(rest, 1):
        if _loose_seq(line) == wanted:
            return lineno + offset
    return None


def _loose_seq(line: bytes) -> int | None:
    """The seq a line claims, even if its hash is broken (for naming the broken entry)."""
    m = _HASH_TAIL.search(line)
    body = line[: m.start()] + b"}" if m else line
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    seq = fields.get("seq") if isinstance(fields, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _check_event(
    fields: dict[str, Any],
    lineno: int,
    ids: dict[str, int],
    decoder: Decoder,
    verifier: Verifier | None,
    allow_unsigned: bool,
    report: VerifyReport,
) -> Problem | None:
    seq = fields["seq"]
    try:
        event = fields["event"]
        record = fields["record"]
        event_id = event["id"]
        value = _unb64(record["value"])
        key = _unb64(record["key"])
        partition = record["partition"]
        headers: list[tuple[str, bytes | None]] = [(str(n), _unb64(v)) for n, v in record["headers"]]
        sig = fields["sig"]
        sig_headers = [(str(n), _unb64(v)) for n, v in sig.items()] if sig else []
    except (KeyError, TypeError, ValueError, binascii.Error, AttributeError) as exc:
        return Problem(lineno, seq, "malformed", f"event entry lacks a well-formed member ({exc!r})")
    if not isinstance(event_id, str) or value is None or not isinstance(partition, int):
        return Problem(lineno, seq, "malformed", "event entry needs event.id, record.value and record.partition")
    if event_id in ids:
        return Problem(lineno, seq, "duplicate", f"event id {event_id!r} is already at line {ids[event_id]}")
    ids[event_id] = lineno
    try:
        decoded = from_record(value, headers, decoder)
    except DecodeError as exc:
        if exc.reason != "unknown-fingerprint":
            return Problem(lineno, seq, "edited", f"the record value does not decode ({exc})")
        report.events_undecodable += 1  # written by a newer schema than this verifier knows
    else:
        rebuilt = render_event(
            decoded.event,
            decoded.attributes,
            traceparent=_text(dict(headers).get(TRACEPARENT)),
            tracestate=_text(dict(headers).get(TRACESTATE)),
        )
        if json.loads(canonical(rebuilt)) != event:
            return Problem(
                lineno, seq, "edited", "the event does not match the record value and headers it was ledgered with"
            )
    if verifier is not None:
        if not sig_headers:
            if not allow_unsigned:
                return Problem(lineno, seq, "unsigned", f"event {event_id!r} carries no signature headers")
        else:
            verdict = verifier.verify(value, key, headers + sig_headers, partition)
            if verdict.code is not VerdictCode.VALID:
                return Problem(lineno, seq, "bad-signature", f"event {event_id!r}: {verdict}")
            report.signatures_verified += 1
    report.events += 1
    return None


def _check_checkpoint(
    fields: dict[str, Any], lineno: int, keyring: Keyring | None, report: VerifyReport
) -> Problem | None:
    seq = fields["seq"]
    kid, sig, when = fields.get("kid"), fields.get("sig"), fields.get("time")
    if not isinstance(kid, str) or not isinstance(sig, str) or not isinstance(when, str):
        return Problem(lineno, seq, "malformed", "checkpoint entry needs string kid, time and sig")
    if fields.get("alg") != "ed25519":
        return Problem(lineno, seq, "bad-checkpoint", f"unknown checkpoint algorithm {fields.get('alg')!r}")
    if keyring is not None:
        entry = keyring.get(kid)
        if entry is None:
            return Problem(lineno, seq, "bad-checkpoint", f"checkpoint key {kid!r} is not in the keyring")
        try:
            Ed25519PublicKey.from_public_bytes(entry.public_key).verify(
                base64.b64decode(sig, validate=True), checkpoint_message(fields)
            )
        except (InvalidSignature, ValueError, binascii.Error):
            return Problem(lineno, seq, "bad-checkpoint", f"checkpoint signature does not verify under key {kid!r}")
        try:
            signed_at = parse_time(when)
        except ValueError:
            return Problem(lineno, seq, "malformed", f"checkpoint time {when!r} is not RFC 3339")
        if entry.revoked_at is not None and signed_at >= entry.revoked_at:
            return Problem(lineno, seq, "bad-checkpoint", f"checkpoint key {kid!r} was revoked before {when}")
        report.checkpoints_verified += 1
    report.checkpoints += 1
    report.last_checkpoint_seq = seq
    return None


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
