"""The Bus: ``emit()`` on the caller's thread; encoding, spooling and Kafka I/O on background threads.

Threads (all daemons, all stopped by ``close()``):

* the caller's threads run ``emit()``: memory mode appends ``(event, trace context)`` to the
  hand-off queue (a deque append, no lock); disk mode journals the event to the spool first.
* ``govbus-sender`` takes events from the hand-off queue, encodes them (Avro + CloudEvents
  headers + traceparent), picks their partition and hands them to librdkafka, or writes them to the
  spool while the broker is away and replays the spool in order when it is back. It is also the
  thread that serves librdkafka (delivery reports, errors), one ``poll()`` per batch.
* ``govbus-poller`` refreshes metadata, releases delivered spool segments, saves the delivered
  watermark and writes ``<spool>/health.json``.
* ``govbus-syncer`` fdatasyncs the spool every ``fsync_interval_ms`` and keeps a spare segment ready.

Ordering: records reach librdkafka in emit order (per process), so per key (= per partition) order
holds; librdkafka's idempotent producer keeps it through retries. Once anything is spooled, every
later event goes through the spool until the replay has caught up.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from confluent_kafka import KafkaError, KafkaException, Producer

import govbus.settings
from govbus.contract import Encoder
from govbus.errors import ConfigError, InvalidEventError
from govbus.event import (
    MAX_ENCODED_BYTES,
    MAX_RECORD_OVERHEAD,
    FrozenDict,
    GovernanceEvent,
    ProducerInfo,
    encoded_size_bound,
)
from govbus.producer import _tracing
from govbus.producer._delivery import DeliveryTracker
from govbus.producer._errors import BusClosedError, ProducerFatalError, RescueError, SpoolError, SpoolFullError
from govbus.producer._health import (
    AccessProblem,
    BusCounters,
    BusHealth,
    authentication_failed,
    authorization_failed,
)
from govbus.producer._heartbeat import Heartbeats
from govbus.producer._partition import Partitioner
from govbus.producer._spool import (
    TYPE_EVENT,
    TYPE_RECORD,
    Entry,
    Spool,
    SpoolFull,
    pack_event,
    pack_record,
    unpack_event,
    unpack_record,
)
from govbus.record import record_key, to_record
from govbus.registry import configured_schema_id

if TYPE_CHECKING:
    from govbus.settings import GovbusSettings

log = logging.getLogger("govbus.producer")


def _tls_refused(err: KafkaError) -> bool:
    """A TLS handshake that no retry can fix: the broker rejected our certificate (TLS alert), or
    we do not trust the broker's (wrong CA)."""
    text = err.str()
    if err.code() == KafkaError._SSL:
        return "certificate verify failed" in text
    return err.code() == KafkaError._TRANSPORT and "alert" in text and "certificate" in text


class _LibrdkafkaLog:
    """librdkafka's log, minus the connection failures it repeats on every reconnect attempt: the
    bus reports the outage itself (once, as a state change, and in health())."""

    def __init__(self) -> None:
        self._log = logging.getLogger("govbus.producer.librdkafka")

    def log(self, level: int, message: str, *args: Any) -> None:
        text = message % args if args else message
        if text.startswith("FAIL ") or "Connection refused" in text:
            level = logging.DEBUG
        self._log.log(level, "%s", text)


_DIRECT = "direct"
_SPOOLING = "spooling"
_BATCH = 256  # records per sender step; the sender yields the GIL between steps
_STARTUP_GRACE_S = 2.0  # wait this long for the first metadata before spooling
_REPORT_WAIT_S = 0.005  # sender's wait for delivery reports while messages are outstanding
_DOWN_DEBOUNCE_S = 0.5  # how long "all brokers down" must last before new events are spooled
_HOUSEKEEPING_S = 0.1
_HEALTH_FILE_S = 1.0
_ACK_SAVE_S = 0.1  # a hint for restarts: fewer duplicates after a crash
_RETRY_METADATA_S = 0.5
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
# Refusals no retry can cure: the credentials or the ACLs must change (see producer._health).
_AUTHENTICATION = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
_AUTHORIZATION = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED})
_capture_context = _tracing.capture_context
# What encoding an accepted event can raise: the writer schema cannot carry it (InvalidEventError
# is a ValueError), or something the model let through that the encoder refuses.
_UNENCODABLE = (ValueError, TypeError, OverflowError)
_EMPTY_CONTEXT = _capture_context()  # the context of a thread with no span: the common case

try:
    _VERSION = metadata.version("govbus")
except metadata.PackageNotFoundError:  # running from a source tree
    _VERSION = "0"


_OPEN: weakref.WeakSet[Bus] = weakref.WeakSet()


@atexit.register
def _close_open_buses() -> None:
    for bus in list(_OPEN):
        try:
            bus.close()
        except Exception:  # at exit: report, and go on with the others
            log.exception("closing a govbus producer at exit failed")


_LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes


def _value_budget(conf: dict[str, Any]) -> int | None:
    """The largest event value the producer's ``message.max.bytes`` takes (with the key and headers
    reserve); None when every valid event fits (the model bounds it: MAX_ENCODED_BYTES)."""
    raw = conf.get("message.max.bytes", _LIBRDKAFKA_MESSAGE_MAX_BYTES)
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        return None  # librdkafka itself refuses the configuration with its reason
    if limit >= MAX_ENCODED_BYTES + MAX_RECORD_OVERHEAD:
        return None
    if limit <= MAX_RECORD_OVERHEAD + 4096:
        raise ConfigError(
            "GOVBUS_PRODUCER__LIBRDKAFKA",
            f"message.max.bytes={limit} leaves no room for an event after the {MAX_RECORD_OVERHEAD} bytes "
            f"reserved for the key and headers; use at least {MAX_ENCODED_BYTES + MAX_RECORD_OVERHEAD}",
        )
    return limit - MAX_RECORD_OVERHEAD


def producer_config(settings: GovbusSettings) -> dict[str, Any]:
    """The librdkafka configuration of the bus's producer: connection and security settings
    (``GOVBUS_KAFKA__*``, TLS/SASL passed through) plus the producer's (``GOVBUS_PRODUCER__*``)."""
    return {**settings.kafka.librdkafka(), **settings.producer.librdkafka_producer()}


class OutgoingRecord:
    """A record on its way to librdkafka, as a :class:`BatchHook` sees it.

    ``partition`` is assigned (murmur2 of the key over the topic's partition count); ``headers``
    may be replaced or extended by the hook (signature headers). ``seq`` is the record's position
    in this producer's stream (strictly increasing in hand-over order).
    """

    __slots__ = ("_base", "_keep", "_publication", "_report", "headers", "key", "partition", "seq", "value")

    def __init__(
        self,
        seq: int,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        keep: bool,
        publication: _tracing.Publication | None,
        report: Callable[[OutgoingRecord, KafkaError | None, Any], None],
    ) -> None:
        self.seq = seq
        self.partition = -1
        self.key = key
        self.value = value
        self.headers = headers
        self._base = headers  # unsigned headers: what a rescue writes to the spool
        self._keep = keep  # True: exists only in memory (not in the spool)
        self._publication = publication
        self._report = report

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        # The record is its own delivery callback: no per-record closure to allocate.
        self._report(self, err, msg)


class BatchHook(Protocol):
    """Called on the sender thread with each micro-batch, in seq order, right before ``produce()``.

    The seam for signing (issue 4): partitions are assigned, records are unsigned; the hook may set
    ``record.headers``. Records it was given are produced exactly once each (if librdkafka's queue
    is full they wait, already processed, and are not given to the hook again). If it raises, the
    batch is retried later and ``health().last_error`` says why.
    """

    def __call__(self, topic: str, records: Sequence[OutgoingRecord]) -> None: ...


class Bus:
    """Publishes governance events to Kafka without making the caller wait, and without losing them.

    ``Bus()`` reads ``GOVBUS_*`` settings (keyword overrides as for ``load_settings``); or pass a
    ``GovbusSettings``. With ``GOVBUS_SIGNING__PRIVATE_KEY_PATH`` set, every event is signed
    (Merkle-batched Ed25519, see docs/signing.md). ``emit(event)`` is thread-safe and returns in about a microsecond
    (memory mode) or a few (disk mode); ``flush()`` waits for acknowledgements; ``close()`` flushes
    and keeps whatever could not be delivered in the spool for the next Bus on the same directory.
    """

    def __init__(
        self,
        settings: GovbusSettings | None = None,
        *,
        tracer_provider: Any = None,
        batch_hook: BatchHook | None = None,
        schema_id: int | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            settings = govbus.settings.load_settings(**overrides)
        elif overrides:
            raise TypeError("pass either a GovbusSettings or keyword overrides, not both")
        self.settings = settings
        p = settings.producer
        self._p = p
        self.topic = settings.topic
        self._disk = p.durability == "disk"
        self.producer_info = ProducerInfo(
            name=p.name, instance_id=uuid.uuid4().hex, host=socket.gethostname(), library=f"govbus-python/{_VERSION}"
        )
        # schema_id: the writer schema's id in a schema registry (Confluent framing), else
        # single-object encoding.
        if schema_id is None:  # GOVBUS_PRODUCER__FRAMING=confluent: the id from the registry
            schema_id = configured_schema_id(settings)
        self._encoder = Encoder(p.schema_version, schema_id=schema_id)
        # A writer pinned to an older contract refuses, in emit(), events it could not carry.
        self._check = self._encoder.check if self._encoder.restricted else None
        self._key_by = p.key_by
        self._source = p.source
        self._tracing = _tracing.Tracing(self.topic, tracer_provider, _VERSION)
        if batch_hook is None and settings.signing.producer_signs():
            # GOVBUS_SIGNING__PRIVATE_KEY_PATH set: every event is signed. A key verifiers would
            # reject fails here, at start-up, rather than dead-lettering everything downstream.
            from govbus.producer._signing import SigningHook

            batch_hook = SigningHook.from_settings(settings.signing)
        self._heartbeats = (
            Heartbeats(self, p.heartbeat_interval_ms / 1000, batch_hook) if p.heartbeat_interval_ms else None
        )
        self._hook = self._heartbeats.hook if self._heartbeats is not None else batch_hook
        self._queue_max = p.queue_max_events
        # Set only when message.max.bytes was lowered below what any valid event needs: then emit()
        # checks each event's size bound against it (otherwise it provably fits: no cost).
        self._max_value = _value_budget(producer_config(settings))
        self._spool = Spool(
            p.spool_dir,
            max_bytes=p.spool_max_bytes,
            segment_bytes=p.segment_bytes,
            producer=self.producer_info,
            sync_every_write=self._disk and p.fsync_interval_ms == 0,
        )
        if self._disk:
            self._spool.prepare()
        try:
            self._producer = Producer(
                {**producer_config(settings), "error_cb": self._on_error, "logger": _LibrdkafkaLog()}
            )
        except KafkaException as exc:
            self._spool.close()
            raise ConfigError(
                "GOVBUS_KAFKA__* / GOVBUS_PRODUCER__LIBRDKAFKA", f"librdkafka refused the configuration: {exc}"
            ) from None

        spool = self._spool
        self._q: deque[Any] = deque()
        self._tracker = DeliveryTracker(first_unsent=spool.start_watermark)
        self._count_submitted = self._tracker.submitted_one
        self._seq = spool.next_seq  # memory mode: the sender allocates seqs
        self._cursor = spool.next_seq  # disk mode: the next seq the sender hands over
        self._reader = spool.reader(spool.start_watermark)
        self._mode = _SPOOLING if spool.recovered else _DIRECT
        self._pending: deque[OutgoingRecord] = deque()  # processed, waiting for room in librdkafka
        self._pending_raw = False  # True: what is pending has no partition yet / the hook failed on it
        self._rescue: list[OutgoingRecord] = []  # memory-only records purged at close / after fatal
        self._partitioner: Partitioner | None = None
        self._reachable: bool | None = None
        self._down_since = 0.0
        self._probe_now = False
        self._last_contact: float | None = None
        self._topic_problem: str | None = None
        self._fatal: KafkaError | None = None
        self._access: AccessProblem | None = None  # credentials or an ACL refused: health not ok
        self._last_error: str | None = None
        self._failed_logged = 0
        self._closed = False
        self._stop_now = False
        self._idle = False
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._room_waiters = 0
        self._admission_blocked = False
        self._started = time.monotonic()
        self._stop_poller = threading.Event()
        self._stop_syncer = threading.Event()
        self._sender = threading.Thread(target=self._run_sender, name="govbus-sender", daemon=True)
        self._poller = threading.Thread(target=self._run_poller, name="govbus-poller", daemon=True)
        self._syncer = threading.Thread(target=self._run_syncer, name="govbus-syncer", daemon=True)
        self._poller.start()
        self._sender.start()
        self._syncer.start()
        if self._heartbeats is not None:
            self._heartbeats.start()
        _OPEN.add(self)  # closed at interpreter exit if the kernel forgets: nothing left in memory
        log.info(
            "govbus producer %s (%s) publishing to %s: durability %s, spool %s%s",
            self.producer_info.name,
            self.producer_info.instance_id,
            self.topic,
            p.durability,
            p.spool_dir,
            f", replaying {spool.recovered} spooled event(s)" if spool.recovered else "",
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> Bus:
        """A Bus from ``GOVBUS_*`` environment variables (and keyword overrides)."""
        return cls(**overrides)

    # -- the caller's side ----------------------------------------------------------------------

    def emit(self, event: GovernanceEvent) -> None:
        """Hand ``event`` to the bus. Returns at once; the event is then the bus's to deliver.

        Raises :class:`SpoolFullError` (event NOT accepted) when full, per ``on_spool_full``;
        :class:`BusClosedError`; :class:`ProducerFatalError`; ``TypeError`` for a non-event;
        :class:`InvalidEventError` for an event the pinned ``schema_version`` cannot carry, or
        larger than a lowered ``message.max.bytes`` takes. A full filesystem under the spool is a
        full spool (``SpoolFullError.no_space`` says so).
        """
        if self._closed:
            raise BusClosedError()
        if self._fatal is not None:
            raise self._fatal_error()
        if not isinstance(event, GovernanceEvent):
            raise TypeError(f"emit() takes a govbus GovernanceEvent, got {type(event).__name__}")
        if type(event.attributes) is not FrozenDict:
            # Not built by the constructor (read from the bus: decoded without re-validation, its
            # attributes a plain dict the caller may have changed): validated and frozen now.
            event = event.replace()
        if self._check is not None:
            self._check(event)  # InvalidEventError: the pinned schema version cannot carry it
        if self._max_value is not None and (size := encoded_size_bound(event)) > self._max_value:
            raise InvalidEventError(
                "<event>",
                f"may encode to {size} bytes; with message.max.bytes={self._max_value + MAX_RECORD_OVERHEAD} "
                f"(less {MAX_RECORD_OVERHEAD} for the key and headers) the limit is {self._max_value}",
            )
        if self._disk:
            self._emit_disk(event)
            return
        q = self._q
        if len(q) >= self._queue_max:
            self._wait_for_room()
        q.append((event, _capture_context()))
        self._count_submitted()
        if self._idle:
            self._wake.set()

    def _emit_disk(self, event: GovernanceEvent) -> None:
        captured = _tracing.capture()
        payload = pack_event(event, _tracing.journal_form(captured))
        spool = self._spool
        with spool.lock:
            try:
                seq = spool.write(TYPE_EVENT, payload)
            except SpoolFull as full:
                seq = self._spool_full_locked(payload, full)
            self._tracker.spooled += 1
            self._tracker.submitted_one()
            q = self._q
            if len(q) < self._queue_max:  # else the sender reads it back from the spool
                q.append((event, captured, seq))
        if self._idle:
            self._wake.set()

    def _spool_full_locked(self, payload: bytes, full: SpoolFull) -> int:
        """Apply ``on_spool_full`` (the spool lock is held). Returns the seq once written, or raises."""
        policy = self._p.on_spool_full
        started = time.monotonic()
        if policy == "block":
            spool = self._spool
            deadline = started + self._p.block_timeout_ms / 1000
            spool.waiting_writers += 1
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    spool.space_freed.wait(remaining)
                    try:
                        return spool.write(TYPE_EVENT, payload)
                    except SpoolFull as again:
                        full = again
            finally:
                spool.waiting_writers -= 1
        elif policy == "deny-admission":
            self._admission_blocked = True
        self._tracker.rejected_one()
        raise SpoolFullError(policy, "spool", full.used, full.limit, time.monotonic() - started, full.no_space)

    def _wait_for_room(self) -> None:
        """Memory mode, hand-off queue full: apply ``on_spool_full`` (the sender is behind or the
        spool is full too)."""
        policy = self._p.on_spool_full
        q, limit = self._q, self._queue_max
        started = time.monotonic()
        if policy == "block":
            deadline = started + self._p.block_timeout_ms / 1000
            with self._room:
                self._room_waiters += 1
                try:
                    while len(q) >= limit:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._wake.set()
                        self._room.wait(remaining)
                finally:
                    self._room_waiters -= 1
            if len(q) < limit:
                return
        else:
            # A burst can fill the queue before the sender thread even ran: give it the GIL once.
            self._wake.set()
            time.sleep(0)
            if len(q) < limit:
                return
            if policy == "deny-admission":
                self._admission_blocked = True
        self._tracker.rejected_one()
        raise SpoolFullError(policy, "hand-off queue", len(q), limit, time.monotonic() - started)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far (and every one recovered from the spool) is
        acknowledged by the broker or has failed permanently. False if ``timeout`` (s) ran out."""
        if self._closed:
            raise BusClosedError()
        return self._flush(timeout)

    def _flush(self, timeout: float | None) -> bool:
        if self._fatal is not None:
            raise self._fatal_error()
        target = self._tracker.submitted + self._spool.recovered
        self._wake.set()
        # Refused by an ACL: nothing will be acknowledged until the Bus is recreated; do not wait.
        reached = self._tracker.wait_for(target, 0 if self._denied() else timeout)
        if self._fatal is not None:
            raise self._fatal_error()
        return reached

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` s, default ``close_timeout_ms``), stop, and write whatever was not
        delivered to the spool, where the next Bus on the same directory finds and replays it."""
        if self._closed:
            return
        if self._heartbeats is not None:
            self._heartbeats.stop()  # the final heartbeats go out with the flush below
        self._closed = True
        _OPEN.discard(self)
        if timeout is None:
            timeout = self._p.close_timeout_ms / 1000
        delivered = False
        try:
            delivered = self._fatal is None and self._flush(timeout)
        except ProducerFatalError:
            pass
        finally:
            self._shutdown(delivered)

    def _shutdown(self, delivered: bool) -> None:
        self._stop_now = True
        self._wake.set()
        self._sender.join()
        self._stop_poller.set()
        self._poller.join()
        # From here this thread is the only one serving librdkafka.
        if not delivered or len(self._producer):
            with contextlib.suppress(KafkaException, RuntimeError):
                self._producer.purge(in_queue=True, in_flight=True)
            with contextlib.suppress(KafkaException, RuntimeError):
                self._producer.flush(5.0)  # serves the purge reports: memory-only records land in _rescue
        self._rescue_to_spool()
        self._stop_syncer.set()
        self._syncer.join()
        with self._spool.lock:
            self._spool.seal()  # so that a fully delivered last segment is deleted too
        self._housekeeping(final=True)
        self._reader.close()
        self._spool.close()
        self._write_health_file()
        counters, spool = self.counters(), self._spool
        undelivered = counters.submitted + counters.recovered - counters.delivered - counters.failed
        log.log(
            logging.WARNING if undelivered else logging.INFO,
            "govbus producer %s closed: %d submitted, %d delivered, %d failed; %d undelivered event(s) kept in "
            "the spool %s (%d bytes) for the next Bus there",
            self.producer_info.instance_id,
            counters.submitted,
            counters.delivered,
            counters.failed,
            undelivered,
            spool.directory,
            spool.used,
        )

    def _rescue_to_spool(self) -> None:
        """Memory mode: what exists only in memory (purged from librdkafka, waiting for room, not
        yet taken by the sender) goes to the spool, placed by seq so the replay keeps emit order."""
        entries: list[tuple[int, int, bytes]] = []
        for record in [*self._rescue, *self._pending]:
            if record._keep:
                entries.append((record.seq, TYPE_RECORD, pack_record(record.key, record.value, record._base)))
        self._rescue.clear()
        self._pending.clear()
        if not self._disk:
            tracer = self._tracing.tracer()
            while self._q:
                event, captured = self._q.popleft()
                record = self._outgoing(event, captured, tracer, self.producer_info, self._seq, keep=True)
                self._end_span(record, "spooled")
                entries.append((self._seq, TYPE_RECORD, pack_record(record.key, record.value, record._base)))
                self._seq += 1
        else:
            self._q.clear()  # journaled: already in the spool
        if entries:
            # Below the watermark they would count as delivered and be released by the final housekeeping.
            self._tracker.unsent = min(self._tracker.unsent, min(seq for seq, _, _ in entries))
        try:
            self._tracker.spooled += self._spool.rescue(entries)
        except RescueError as exc:
            # Nowhere left to keep them (a full disk): counted as failed, loudly, and close() goes on.
            self._tracker.spooled += exc.written
            self._tracker.failed += exc.lost
            self._last_error = f"{exc.lost} undelivered event(s) could not be kept in the spool: {exc.message}"
            log.critical("govbus producer: %s; they are lost", self._last_error)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- observing ------------------------------------------------------------------------------

    def counters(self) -> BusCounters:
        t = self._tracker
        return BusCounters(
            submitted=t.submitted,
            delivered=t.delivered,
            spooled=t.spooled,
            failed=t.failed,
            rejected=t.rejected,
            recovered=self._spool.recovered,
        )

    def health(self) -> BusHealth:
        """A snapshot from in-memory state (no I/O): what the policy gate reads."""
        spool = self._spool
        self._update_admission()
        if self._closed:
            state = "closed"
        elif self._fatal is not None:
            state = "failed"
        elif self._partitioner is None and self._reachable is None:
            state = "starting"
        elif self._mode is _DIRECT and self._partitioner is not None:
            state = "connected"
        else:
            state = "spooling"
        depth = max(0, spool.end_seq() - self._tracker.unsent) if self._disk else len(self._q)
        try:
            kafka_depth = len(self._producer)
        except RuntimeError:  # closed
            kafka_depth = 0
        ok, reason = self._verdict(state, spool.used, spool.max_bytes)
        return BusHealth(
            ok=ok,
            reason=reason,
            state=state,
            durability=self._p.durability,
            topic=self.topic,
            partitions=self._partitioner.partitions if self._partitioner else None,
            broker_reachable=self._reachable,
            last_broker_contact=self._last_contact,
            fatal_error=None if self._fatal is None else f"{self._fatal.name()}: {self._fatal.str()}",
            last_error=self._last_error,
            queue_depth=depth,
            kafka_queue_depth=kafka_depth,
            in_flight=self._tracker.in_flight,
            spool_bytes=spool.used,
            spool_max_bytes=spool.max_bytes,
            spool_high_water_bytes=spool.high_water,
            spool_segments=len(spool.segments()),
            spool_damage=tuple(str(d) for d in spool.damage),
            admission_blocked=self._admission_blocked,
            counters=self.counters(),
            cause=self._access.cause if self._access is not None else None,
        )

    def _verdict(self, state: str, used: int, limit: int) -> tuple[bool, str]:
        if state == "closed":
            return False, "the bus is closed"
        if self._access is not None:  # an operator must act: say what, before any symptom
            return False, self._access.reason
        if self._fatal is not None:
            return False, f"fatal producer error {self._fatal.name()}: {self._fatal.str()}"
        no_space = self._no_space()
        if no_space is not None:
            denied = "; admission denied" if self._admission_blocked else ""
            return False, f"spool filesystem full ({no_space}): the spool takes no more events{denied}"
        if self._admission_blocked:
            return False, f"spool {used * 100 // max(limit, 1)}% full: admission denied until it drains"
        if used >= limit or self._spool.refusing:
            return False, f"spool full ({used} of {limit} bytes): events are refused ({self._p.on_spool_full})"
        if state == "spooling":
            why = self._topic_problem or ("broker unreachable" if self._reachable is False else "catching up")
            return True, f"spooling to disk ({why}); {used} of {limit} bytes used"
        if state == "starting":
            return True, "waiting for the first metadata answer"
        return True, ""

    def _update_admission(self) -> None:
        if self._p.on_spool_full != "deny-admission":
            return
        spool = self._spool
        fill = max(spool.used / spool.max_bytes, len(self._q) / self._queue_max if not self._disk else 0.0)
        if self._no_space() is not None:
            fill = 1.0  # a full filesystem is a full spool, whatever spool_max_bytes says
        high = self._p.admission_high_water
        if fill >= high:
            self._admission_blocked = True
        elif fill < high - 0.1:
            self._admission_blocked = False

    def _no_space(self) -> str | None:
        """Why the spool's filesystem is full, while that matters: always in disk mode (every event
        goes through the spool), while spooling in memory mode."""
        no_space = self._spool.no_space
        return no_space if self._disk or self._mode is _SPOOLING else None

    def _fatal_error(self) -> ProducerFatalError:
        assert self._fatal is not None
        return ProducerFatalError(self._fatal.name(), self._fatal.str())

    # -- the sender thread ----------------------------------------------------------------------

    def _run_sender(self) -> None:
        # This thread also serves librdkafka (delivery reports, errors): one poll() per batch costs
        # far less than a second thread taking the GIL for every single report.
        poll, producer = self._producer.poll, self._producer
        try:
            while not self._stop_now:
                if self._step():
                    poll(0)  # also releases the GIL: emit() callers get it between batches
                    continue
                stalled = bool(self._q)
                if len(producer):
                    poll(_REPORT_WAIT_S)  # returns as soon as a report (or error) arrives
                else:
                    poll(0)
                    self._wait_for_work(stalled)
        except Exception as exc:
            error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            if isinstance(error, KafkaError) and error.fatal():
                self._on_fatal(error)  # confluent-kafka raises librdkafka's fatal error from poll()
                return
            log.critical("govbus sender thread failed; events stay queued/spooled", exc_info=True)
            self._last_error = f"sender thread failed: {exc!r}"
            if self._fatal is None:
                self._fatal = KafkaError(KafkaError._FAIL, f"sender thread failed: {exc!r}", fatal=True)
            self._tracker.wake_all()

    def _wait_for_work(self, stalled: bool) -> None:
        """Sleep until emit() wakes us. ``stalled``: the last step left queued work it could not do
        (no metadata yet, spool full, librdkafka full): retry soon rather than spin."""
        self._wake.clear()
        self._idle = True  # from here emit() sets _wake; an event queued before is seen below
        try:
            if self._q and not stalled:
                return
            busy = stalled or self._mode is _SPOOLING or self._pending or self._fatal is not None
            self._wake.wait(0.02 if busy else 0.1)  # 0.1: librdkafka may have an error to report
        finally:
            self._idle = False

    def _step(self) -> bool:
        """One batch of work; False when there was nothing to do (or nothing could be done)."""
        if self._fatal is not None:
            return False
        progressed = False
        if self._pending:
            progressed = self._hand_over_pending()
            if self._pending:  # cannot hand over now: new events go to the spool meanwhile
                why = (
                    (self._topic_problem or "no partitions known")
                    if self._pending_raw
                    else "librdkafka's queue is full"
                )
                self._enter_spooling(why)
                return self._spool_from_queue() or progressed
        if self._mode is _DIRECT:
            return self._step_direct() or progressed
        return self._step_spooling() or progressed

    def _broker_away(self) -> bool:
        # librdkafka also reports "all brokers down" for a moment when it swaps the bootstrap
        # connection for the real one; an outage is one that lasts.
        return self._reachable is False and time.monotonic() - self._down_since >= _DOWN_DEBOUNCE_S

    def _step_direct(self) -> bool:
        if self._partitioner is None or self._broker_away() or self._denied():
            waiting = time.monotonic() - self._started < _STARTUP_GRACE_S and not self._broker_away()
            if self._partitioner is None and waiting:
                return False  # the first metadata answer is usually a few ms away
            if self._access is not None:
                reason = self._access.reason
            elif self._topic_problem:
                reason = self._topic_problem
            elif self._partitioner is None and self._reachable is None:
                reason = f"no answer from {self.settings.kafka.bootstrap_servers} yet"
            else:
                reason = "broker unreachable"
            self._enter_spooling(reason)
            return True
        batch = self._take_disk() if self._disk else self._take_memory()
        if batch:
            self._hand_over(batch)
            return True
        if self._disk:
            with self._spool.lock:
                behind = self._spool.end_seq() > self._cursor and not self._q
            if behind:  # the hand-off queue overflowed: the rest is only on disk
                self._enter_spooling("hand-off queue overflowed")
                return True
        return False

    def _take_memory(self) -> list[OutgoingRecord]:
        popleft = self._q.popleft
        tracer = self._tracing.tracer()
        outgoing, producer = self._outgoing, self.producer_info
        encoder, key_by, source, report = self._encoder, self._key_by, self._source, self._on_delivery
        batch: list[OutgoingRecord] = []
        append = batch.append
        seq = self._seq
        for _ in range(_BATCH):
            try:
                event, captured = popleft()
            except IndexError:
                break
            try:
                if tracer is None and captured is _EMPTY_CONTEXT and event.trace_id is None:
                    # _outgoing's common case, inline: this loop is the producer's hot path.
                    out = to_record(event, producer, encoder, key_by=key_by, source=source)
                    append(OutgoingRecord(seq, out.key, out.value, out.headers, True, None, report))
                else:
                    append(outgoing(event, captured, tracer, producer, seq, keep=True))
            except _UNENCODABLE as exc:
                self._unencodable(event, seq, exc)
            seq += 1
        self._seq = seq
        self._tracker.unsent = seq  # nothing below it waits in the spool
        if self._room_waiters and batch:
            with self._room:
                self._room.notify_all()
        return batch

    def _take_disk(self) -> list[OutgoingRecord]:
        popleft = self._q.popleft
        tracer = self._tracing.tracer()
        tracker = self._tracker
        taking, producer = tracker.taking, self.producer_info
        encoder, key_by, source, report = self._encoder, self._key_by, self._source, self._on_delivery
        batch: list[OutgoingRecord] = []
        append = batch.append
        cursor = self._cursor
        for _ in range(_BATCH):
            try:
                event, captured, seq = popleft()
            except IndexError:
                break
            if seq < cursor:
                continue  # already sent from the spool
            if seq > cursor:  # the queue overflowed at some point: read the gap from disk
                self._cursor = cursor
                tracker.unsent = cursor
                self._enter_spooling("hand-off queue overflowed")
                return batch
            taking(seq)
            try:
                if tracer is None and captured is None and event.trace_id is None:
                    out = to_record(event, producer, encoder, key_by=key_by, source=source)
                    append(OutgoingRecord(seq, out.key, out.value, out.headers, False, None, report))
                else:
                    append(self._outgoing(event, captured, tracer, producer, seq, keep=False))
            except _UNENCODABLE as exc:
                self._unencodable(event, seq, exc)
                tracker.resolve(seq)
            cursor += 1
        self._cursor = cursor
        tracker.unsent = cursor
        return batch

    def _step_spooling(self) -> bool:
        progressed = False
        if self._disk:
            # Journaled events are read back from disk; drop what the queue holds behind the reader.
            q, next_seq = self._q, self._reader.next_seq
            while q and q[0][2] < next_seq:
                q.popleft()
        else:
            progressed = self._spool_from_queue()
        if self._partitioner is None or self._pending or self._denied():
            return progressed
        entries = self._reader.read(_BATCH)
        if entries:
            tracer = self._tracing.tracer()
            batch = [r for r in (self._from_entry(e, tracer) for e in entries) if r is not None]
            self._tracker.unsent = self._reader.next_seq
            self._cursor = self._reader.next_seq
            if batch:
                self._hand_over(batch)
            return True
        if self._reachable and not self._pending and self._catch_up():
            return True
        return progressed

    def _catch_up(self) -> bool:
        """The replay reached the end of the spool: publish directly again."""
        if self._disk:
            with self._spool.lock:
                if self._reader.next_seq < self._spool.end_seq():
                    return False
                self._cursor = self._reader.next_seq
        else:
            if self._q and self._spool.no_space is None:
                # What is queued goes through the spool first; but a full disk cannot take it,
                # and with the spool replayed to its end it can go directly, still in order.
                return False
            with self._spool.lock:
                # Seqs published directly must never fall inside a spooled segment's range.
                self._spool.seal()
            self._tracker.unsent = self._seq
        self._mode = _DIRECT
        log.info("govbus producer caught up with the spool; publishing directly")
        return True

    def _enter_spooling(self, reason: str) -> None:
        if self._mode is _SPOOLING:
            return
        self._mode = _SPOOLING
        log.warning("govbus producer spooling to %s: %s", self._spool.directory, reason)
        if self._disk:
            self._reader.close()
            self._reader = self._spool.reader(self._cursor)
            self._tracker.unsent = self._cursor

    def _spool_from_queue(self) -> bool:
        """Memory mode: move queued events into the spool (encoded, unsigned)."""
        if self._disk:
            return False
        q, spool, tracker = self._q, self._spool, self._tracker
        tracer = self._tracing.tracer()
        moved = 0
        while moved < _BATCH:
            try:
                item = q.popleft()
            except IndexError:
                break
            event, captured = item
            try:
                record = self._outgoing(event, captured, tracer, self.producer_info, self._seq, keep=False)
            except _UNENCODABLE as exc:
                self._unencodable(event, self._seq, exc)
                self._seq += 1
                continue
            payload = pack_record(record.key, record.value, record._base)
            with spool.lock:
                try:
                    spool.write(TYPE_RECORD, payload, seq=self._seq)
                except (SpoolFull, SpoolError) as exc:
                    q.appendleft(item)  # still ours, still first; emit() feels the back-pressure
                    self._end_span(record, "spool-full")
                    if isinstance(exc, SpoolError):
                        self._last_error = str(exc)
                    break
                tracker.spooled += 1
            self._seq += 1
            self._end_span(record, "spooled")
            moved += 1
        if moved and self._room_waiters:
            with self._room:
                self._room.notify_all()
        return moved > 0

    def _from_entry(self, entry: Entry, tracer: Any) -> OutgoingRecord | None:
        try:
            if entry.type == TYPE_RECORD:
                key, value, headers = unpack_record(entry.payload)
                record = OutgoingRecord(entry.seq, key, value, headers, False, None, self._on_delivery)  # type: ignore[arg-type]
            else:
                event, trace = unpack_event(entry.payload)
                producer = entry.producer or self.producer_info
                record = self._outgoing(event, trace, tracer, producer, entry.seq, keep=False)
        except ValueError as exc:
            self._tracker.failed += 1  # this thread also serves the delivery reports: one writer
            self._tracker.wake_waiters()
            self._last_error = f"spooled record {entry.seq} is unreadable: {exc}"
            log.error("spool record %d cannot be replayed (%s); kept in %s/dead", entry.seq, exc, self._spool.directory)
            self._spool.dead_letter(entry.seq, entry.type, entry.payload)
            return None
        self._tracker.taking(entry.seq)
        return record

    def _outgoing(
        self,
        event: GovernanceEvent,
        captured: _tracing.Captured,
        tracer: Any,
        producer: ProducerInfo,
        seq: int,
        *,
        keep: bool,
    ) -> OutgoingRecord:
        if tracer is None and captured is _EMPTY_CONTEXT and event.trace_id is None:
            # Nothing to propagate and no span to make: the common case without OpenTelemetry.
            out = to_record(event, producer, self._encoder, key_by=self._key_by, source=self._source)
            return OutgoingRecord(seq, out.key, out.value, out.headers, keep, None, self._on_delivery)
        publication = self._tracing.publish(
            event, captured, tracer, record_key(event, self._key_by) if tracer is not None else None
        )
        out = to_record(
            publication.event,
            producer,
            self._encoder,
            key_by=self._key_by,
            source=self._source,
            traceparent=publication.traceparent,
            tracestate=publication.tracestate,
        )
        return OutgoingRecord(
            seq, out.key, out.value, out.headers, keep, publication if tracer is not None else None, self._on_delivery
        )

    def _unencodable(self, event: GovernanceEvent, seq: int, exc: Exception) -> None:
        """An accepted event the writer schema cannot carry: counted as failed, kept in dead/."""
        self._tracker.failed += 1  # this thread also serves the delivery reports: one writer
        self._tracker.wake_waiters()
        self._failed_once(f"event {event.event_id} cannot be encoded: {exc}")
        try:
            self._spool.dead_letter(seq, TYPE_EVENT, pack_event(event, None))
        except (ValueError, TypeError) as error:  # pragma: no cover - a validated event always packs
            log.error("event %s could not be kept either: %s", event.event_id, error)

    @staticmethod
    def _end_span(record: OutgoingRecord, outcome: str) -> None:
        publication = record._publication
        if publication is not None:
            publication.end(outcome, record.partition if record.partition >= 0 else None)
            record._publication = None

    def _hand_over(self, batch: list[OutgoingRecord]) -> None:
        partitioner = self._partitioner
        if partitioner is None:  # the topic's metadata was lost meanwhile (poller thread)
            self._pending.extend(batch)  # _hand_over is only called with nothing pending
            self._pending_raw = True
            return
        hook = self._hook
        if hook is None:
            self._produce(batch, partitioner)
            return
        for record in batch:
            record.partition = partitioner(record.key)
            record.headers = list(record._base)  # the hook may extend it; the spool keeps _base
        try:
            hook(self.topic, batch)
        except Exception as exc:
            self._last_error = f"batch hook failed: {exc!r}"
            log.error("batch hook failed; retrying the batch", exc_info=True)
            self._pending.extend(batch)  # _hand_over is only called with nothing pending
            self._pending_raw = True
            return
        self._produce(batch)

    def _hand_over_pending(self) -> bool:
        pending = self._pending
        before = len(pending)
        if self._pending_raw:  # not partitioned yet, or the hook failed on these: again
            batch = list(pending)
            pending.clear()
            self._pending_raw = False
            self._hand_over(batch)
        else:
            self._produce([pending.popleft() for _ in range(min(before, _BATCH))])
        return len(pending) < before

    def _produce(self, batch: list[OutgoingRecord], partitioner: Partitioner | None = None) -> None:
        """Hand ``batch`` to librdkafka in order; what does not fit waits in ``_pending``.
        With ``partitioner``, partitions are assigned here (no hook to show them to first)."""
        produce, topic = self._producer.produce, self.topic
        end_span = self._end_span
        for i, record in enumerate(batch):
            if partitioner is not None:
                record.partition = partitioner(record.key)
            try:
                produce(
                    topic,
                    record.value,
                    record.key,
                    record.partition,
                    record,
                    headers=record.headers,  # type: ignore[arg-type]  # list is invariant; bytes values are fine
                )
            except BufferError:
                self._pending.extend(batch[i:])
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or error.code() == KafkaError._FATAL:  # _FATAL: this producer is done
                    self._on_fatal(error)
                    self._pending.extend(batch[i:])
                    return
                self._refused(record, error, record.key, record.value, record.headers)
                continue
            if record._publication is not None:
                end_span(record, "handed-over")

    # -- delivery reports (sender thread; close() once it stopped) --------------------------------

    def _on_delivery(self, record: OutgoingRecord, err: KafkaError | None, msg: Any) -> None:
        tracker = self._tracker
        if err is None:
            tracker.delivered += 1
            self._reachable = True
            if not record._keep:
                tracker.resolve(record.seq)
        else:
            code = err.code()
            denied = code in _AUTHORIZATION
            if denied:
                self._deny(err)  # not the record's fault: keep it, as for a fatal error
            fatal = err.fatal() or code == KafkaError._FATAL  # the cause comes through poll()/error_cb
            if denied or code in _PURGED or fatal or self._fatal is not None:
                if fatal:
                    self._on_fatal(err)
                if record._keep:
                    self._rescue.append(record)  # in memory only: written to the spool by close()
                return  # a spooled record stays in the spool for the next start
            self._refused(record, err, msg.key(), msg.value(), msg.headers() or [])
        if tracker.delivered + tracker.failed >= tracker.next_target:
            tracker.wake_waiters()

    def _refused(
        self, record: OutgoingRecord, err: KafkaError, key: bytes, value: bytes, headers: Sequence[tuple[str, Any]]
    ) -> None:
        """Kafka refused a record for good (librdkafka retries everything else forever)."""
        self._failed_once(f"record {record.seq} refused by Kafka: {err.name()}: {err.str()}")
        self._spool.dead_letter(record.seq, TYPE_RECORD, pack_record(key, value, list(headers)))
        self._tracker.failed += 1
        if not record._keep:
            self._tracker.resolve(record.seq)
        self._tracker.wake_waiters()

    def _failed_once(self, message: str) -> None:
        self._last_error = message
        self._failed_logged += 1
        if self._failed_logged <= 10 or self._failed_logged % 1000 == 0:
            log.error("%s (kept in %s/dead; %d so far)", message, self._spool.directory, self._failed_logged)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._on_fatal(err)
            return
        code = err.code()
        if code in _AUTHENTICATION or _tls_refused(err):
            if self._access is None or self._access.cause != "auth":
                log.error("govbus producer: %s", err.str())  # once: librdkafka repeats it every reconnect
            if self._access is None or not self._access.sticky:
                self._access = authentication_failed(err.str(), self.settings.kafka)
            self._last_error = f"{err.name()}: {err.str()}"
        elif code == KafkaError._ALL_BROKERS_DOWN:
            if self._reachable is not False:
                log.info("govbus producer: every broker is unreachable (%s)", err.str())
                self._down_since = time.monotonic()
            self._reachable = False
            self._probe_now = True  # a metadata answer is the proof that it is back (or never left)
            self._last_error = f"{err.name()}: {err.str()}"
        elif code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            log.debug("kafka: %s", err.str())
        else:
            self._last_error = f"{err.name()}: {err.str()}"
            log.warning("kafka: %s: %s", err.name(), err.str())

    def _deny(self, err: KafkaError) -> None:
        """A record was refused by an ACL: stop publishing (spool) until the Bus is recreated."""
        if self._access is not None and self._access.sticky:
            return
        if err.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            # The idempotent producer's id needs WRITE on some topic (or IDEMPOTENT_WRITE, KIP-679).
            operation, resource = "WRITE (or IDEMPOTENT_WRITE on the cluster)", f"topic {self.topic}"
        else:
            operation, resource = "WRITE", f"topic {self.topic}"
        self._access = authorization_failed(err.name(), operation, resource, self.settings.kafka, sticky=True)
        self._last_error = f"{err.name()}: {err.str()}"
        log.error("govbus producer: %s", self._access.reason)
        self._tracker.wake_all()

    def _denied(self) -> bool:
        access = self._access
        return access is not None and access.sticky

    def _on_fatal(self, err: KafkaError) -> None:
        if err.code() in _AUTHORIZATION:
            self._deny(err)
        if self._fatal is not None and self._fatal.code() == KafkaError._FATAL and err.code() != KafkaError._FATAL:
            self._fatal = None  # "Local: Fatal error" came first; this one names the cause
        if self._fatal is None:
            self._fatal = err
            self._last_error = f"fatal: {err.name()}: {err.str()}"
            log.critical(
                "govbus producer: fatal error %s: %s. emit() now raises ProducerFatalError; accepted events "
                "are kept in the spool %s for the next Bus",
                err.name(),
                err.str(),
                self._spool.directory,
            )
            self._tracker.wake_all()

    # -- the poller thread: metadata, housekeeping, health file --------------------------------

    def _run_poller(self) -> None:
        next_metadata = next_house = next_health = 0.0
        while True:
            try:
                now = time.monotonic()
                if (now >= next_metadata or self._probe_now) and self._fatal is None:
                    self._probe_now = False
                    healthy = self._refresh_metadata()
                    wait = self._p.metadata_refresh_ms / 1000 if healthy else _RETRY_METADATA_S
                    next_metadata = time.monotonic() + wait
                if now >= next_house:
                    self._housekeeping()
                    next_house = now + _HOUSEKEEPING_S
                if now >= next_health:
                    self._write_health_file()
                    next_health = now + _HEALTH_FILE_S
            except Exception as exc:
                self._last_error = f"poller: {exc!r}"
                log.exception("govbus poller iteration failed")
            if self._stop_poller.wait(0.05):
                return

    def _refresh_metadata(self) -> bool:
        # Short while nothing is known: the poller also serves delivery reports and close().
        timeout = 5.0 if self._partitioner is not None and self._reachable else 0.5
        try:
            md = self._producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            self._last_error = f"metadata request failed: {exc.args[0].str() if exc.args else exc}"
            return False
        topic = md.topics.get(self.topic)
        self._reachable = True
        self._last_contact = time.time()
        denied = topic is not None and topic.error is not None and topic.error.code() in _AUTHORIZATION
        access = self._access
        if access is not None and not access.sticky:
            if not denied:  # a metadata answer proves the credentials work, and DESCRIBE if it names the topic
                log.info("govbus producer: the broker accepts us again (was: %s)", access.reason)
            self._access = None
        if denied and self._access is None:
            self._access = authorization_failed(
                "TOPIC_AUTHORIZATION_FAILED", "DESCRIBE", f"topic {self.topic}", self.settings.kafka, sticky=False
            )
        if topic is None or topic.error is not None or not topic.partitions:
            problem = (
                f"topic {self.topic} is not available ({topic.error.str() if topic and topic.error else 'absent'})"
            )
            if problem != self._topic_problem:
                log.error("govbus producer: %s; spooling until it is", problem)
            self._topic_problem = self._last_error = problem
            self._partitioner = None  # no partitions to pick: the sender spools
            return False
        self._topic_problem = None
        count = len(topic.partitions)
        if self._partitioner is None or self._partitioner.partitions != count:
            if self._partitioner is not None:
                log.warning("topic %s now has %d partitions (was %d)", self.topic, count, self._partitioner.partitions)
            self._partitioner = Partitioner(count)
            self._wake.set()
        return True

    def _housekeeping(self, final: bool = False) -> None:
        watermark = self._tracker.watermark()
        if self._disk and not final:
            self._spool.recycle(watermark)
        self._spool.release(watermark)  # cheap: a scan of the segment list
        now = time.monotonic()
        if final or now - getattr(self, "_ack_saved_at", 0.0) >= _ACK_SAVE_S:
            if watermark != getattr(self, "_ack_saved", None):
                self._spool.save_ack(watermark)
                self._ack_saved = watermark
            self._ack_saved_at = now
        self._update_admission()

    def _write_health_file(self) -> None:
        """``<spool>/health.json``: the producer's health for out-of-process probes (gate check)."""
        health = self.health()
        data = dataclasses.asdict(health)
        data["spool_fraction"] = health.spool_fraction
        data["written_at"] = time.time()
        data["pid"] = os.getpid()
        path = Path(self._spool.directory) / "health.json"
        tmp = path.with_name(f"health.json.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data, default=str))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot write %s: %s", path, exc)

    # -- the syncer thread ----------------------------------------------------------------------

    def _run_syncer(self) -> None:
        interval = self._p.fsync_interval_ms / 1000 if self._disk and self._p.fsync_interval_ms else 1.0
        while not self._stop_syncer.wait(interval):
            try:
                self._spool.sync()
                if self._disk or self._spool.no_space is not None:
                    self._spool.prepare()  # also the probe that notices a full disk has room again
            except Exception:
                log.exception("spool sync failed")
        self._spool.sync()
