"""The Bus: a thin facade over the producer's engine (``emit()`` on the caller's thread; encoding,
spooling and Kafka I/O on background threads), one concept per module:

* ``_bus`` (this module): wiring, ``emit()``/admission (memory mode appends the event, or
  ``(event, trace context)`` inside a span, to the hand-off queue: a deque append, no lock; disk
  mode journals the event to the spool first), ``flush()``, ``close()``, counters and ``health()``.
* ``_sender``: the ``govbus-sender`` thread and its state machine (:class:`SenderState`): hand-off
  queue -> batch step -> partition -> batch hook -> librdkafka, or the spool while the broker is
  away, replayed in order when it is back. It also serves librdkafka, one ``poll()`` per batch.
* ``_batch``: the batch step, events -> :class:`OutgoingRecord` (:class:`BatchEncoder`, the seam of
  a native encoder) and the :class:`BatchHook` seam (signing).
* ``_delivery``: the librdkafka producer, delivery reports and error classification.
* ``_housekeeping``: the ``govbus-poller`` thread: metadata, segment release, watermark, health.json.
* ``_syncer``: the ``govbus-syncer`` thread: fdatasync, spare segment, full-disk probe.

Ordering: records reach librdkafka in emit order (per process), so per key (= per partition) order
holds; librdkafka's idempotent producer keeps it through retries. Once anything is spooled, every
later event goes through the spool until the replay has caught up. (One exception: a record
refused only because the broker refused the whole batch it shared with a record too large for the
topic is produced again, after the records handed over meanwhile.)
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import socket
import time
import uuid
import weakref
from collections import deque
from importlib import metadata
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from confluent_kafka import KafkaException

import govbus._accel
import govbus._settings
from govbus._contract import Encoder
from govbus._registry import configured_schema_id
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
from govbus.producer._batch import (
    BATCH,
    EMPTY_CONTEXT,
    BatchEncoder,
    BatchHook,
    EventBatchEncoder,
    NativeBatchEncoder,
    OutgoingRecord,
)
from govbus.producer._delivery import Delivery, DeliveryTracker
from govbus.producer._errors import BusClosedError, ProducerFatalError, RescueError, SpoolFullError
from govbus.producer._health import BusCounters, BusHealth
from govbus.producer._heartbeat import Heartbeats
from govbus.producer._housekeeping import Metadata, Poller
from govbus.producer._sender import Sender, SenderState
from govbus.producer._spool import TYPE_EVENT, Spool, SpoolFull, pack_event
from govbus.producer._syncer import Syncer

if TYPE_CHECKING:
    from govbus._settings import GovbusSettings

__all__ = ["BatchEncoder", "BatchHook", "Bus", "OutgoingRecord", "SenderState", "producer_config"]

log = logging.getLogger("govbus.producer")

_capture_context = _tracing.capture_context

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


def _raise_gc_threshold(gen0: int) -> None:
    """GOVBUS_PRODUCER__GC_GEN0_THRESHOLD: each record in flight keeps a few containers alive (its
    ``OutgoingRecord``, its headers, the hand-off tuple) until acknowledged, so with CPython's
    default threshold young collections run every few hundred records and re-walk them. Only ever
    raised, never lowered (the process may have set a larger one)."""
    current, gen1, gen2 = gc.get_threshold()
    if gen0 > current:
        gc.set_threshold(gen0, gen1, gen2)
        log.info("govbus producer: cyclic GC gen-0 threshold %d -> %d", current, gen0)


def _fused_signer(hook: BatchHook | None) -> Any:
    """The Signer of govbus's own SigningHook (exactly that class: a subclass may do more), when
    the compiled core can sign its batches in the same call that encodes them (docs/native.md)."""
    if hook is None:
        return None
    from govbus.producer._signing import SigningHook

    return hook.signer if type(hook) is SigningHook and hook.fusable(BATCH) else None


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
            settings = govbus._settings.load_settings(**overrides)
        elif overrides:
            raise TypeError("pass either a GovbusSettings or keyword overrides, not both")
        self.settings = settings
        options = self._options = settings.producer
        self.topic = settings.topic
        self._disk = options.durability == "disk"
        self.producer_info = ProducerInfo(
            name=options.name,
            instance_id=uuid.uuid4().hex,
            host=socket.gethostname(),
            library=f"govbus-python/{_VERSION}",
        )
        # schema_id: the writer schema's id in a schema registry (Confluent framing), else
        # single-object encoding.
        if schema_id is None:  # GOVBUS_PRODUCER__FRAMING=confluent: the id from the registry
            schema_id = configured_schema_id(settings)
        self._encoder = Encoder(options.schema_version, schema_id=schema_id)
        # A writer pinned to an older contract refuses, in emit(), events it could not carry.
        self._schema_check = self._encoder.check if self._encoder.restricted else None
        tracing = _tracing.Tracing(self.topic, tracer_provider, _VERSION)
        if batch_hook is None and settings.signing.producer_signs():
            # GOVBUS_SIGNING__PRIVATE_KEY_PATH set: every event is signed. A key verifiers would
            # reject fails here, at start-up, rather than dead-lettering everything downstream.
            from govbus.producer._signing import SigningHook

            batch_hook = SigningHook.from_settings(settings.signing)
        # Heartbeats see which partitions the batches went to (GOVBUS_PRODUCER__HEARTBEAT_INTERVAL_MS).
        self._heartbeats = (
            Heartbeats(self, options.heartbeat_interval_ms / 1000, batch_hook)
            if options.heartbeat_interval_ms
            else None
        )
        hook = self._heartbeats.hook if self._heartbeats is not None else batch_hook
        self._queue_max = options.queue_max_events
        if options.gc_gen0_threshold:
            _raise_gc_threshold(options.gc_gen0_threshold)
        # Set only when message.max.bytes was lowered below what any valid event needs: then emit()
        # checks each event's size bound against it (otherwise it provably fits: no cost).
        conf = producer_config(settings)
        self._max_value_bytes = _value_budget(conf)
        spool = self._spool = Spool(
            options.spool_dir,
            max_bytes=options.spool_max_bytes,
            segment_bytes=options.segment_bytes,
            producer=self.producer_info,
            sync_every_write=self._disk and options.fsync_interval_ms == 0,
        )
        if self._disk:
            spool.prepare()
        self._tracker = tracker = DeliveryTracker(first_unsent=spool.start_watermark)
        try:
            self._delivery = delivery = Delivery(conf, self.topic, settings.kafka, spool, tracker)
        except ConfigError:  # librdkafka refused the configuration: the variable is named
            spool.close()
            raise
        self._count_submitted = tracker.submitted_one
        self._admission_blocked = False
        self._closed = False
        self._metadata = Metadata()
        self._sender = sender = Sender(
            disk=self._disk,
            spool=spool,
            delivery=delivery,
            metadata=self._metadata,
            encoder=self._batch_encoder(tracing, delivery),
            hook=hook,
            producer_info=self.producer_info,
            tracing=tracing,
            bootstrap=settings.kafka.bootstrap_servers,
            signer=_fused_signer(batch_hook),
            seen=self._heartbeats.seen if self._heartbeats is not None else None,
        )
        self._queue: deque[Any] = sender.queue  # the hand-off queue: emit() appends, the sender takes
        self._poller = Poller(
            delivery=delivery,
            spool=spool,
            metadata=self._metadata,
            kafka=settings.kafka,
            disk=self._disk,
            metadata_refresh_ms=options.metadata_refresh_ms,
            wake_sender=sender.wake,
            health=self.health,
            after_housekeeping=self._update_admission,
        )
        self._syncer = Syncer(spool, disk=self._disk, fsync_interval_ms=options.fsync_interval_ms)
        self._poller.start()
        sender.start()
        self._syncer.start()
        if self._heartbeats is not None:
            self._heartbeats.start()
        _OPEN.add(self)  # closed at interpreter exit if the kernel forgets: nothing left in memory
        log.info(
            "govbus producer %s (%s) publishing to %s: durability %s, spool %s%s",
            self.producer_info.name,
            self.producer_info.instance_id,
            self.topic,
            options.durability,
            options.spool_dir,
            f", replaying {spool.recovered} spooled event(s)" if spool.recovered else "",
        )

    def _batch_encoder(self, tracing: _tracing.Tracing, delivery: Delivery) -> BatchEncoder:
        """The compiled batch encoder when the native core is in use (docs/native.md), else Python."""
        options = self._options
        args = (self._encoder, self.producer_info, tracing, delivery.on_delivery)
        native = govbus._accel.batch_encoder(
            self._encoder,
            key_by_session=options.key_by == "session_id",
            source=options.source,
            empty_context=EMPTY_CONTEXT,
        )
        if native is not None:
            return NativeBatchEncoder(native, *args, key_by=options.key_by, source=options.source)
        return EventBatchEncoder(*args, key_by=options.key_by, source=options.source)

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
        if self._delivery.fatal is not None:
            raise self._delivery.fatal_error()
        if not isinstance(event, GovernanceEvent):
            raise TypeError(f"emit() takes a govbus GovernanceEvent, got {type(event).__name__}")
        if type(event.attributes) is not FrozenDict:
            # Not built by the constructor (read from the bus: decoded without re-validation, its
            # attributes a plain dict the caller may have changed): validated and frozen now.
            event = event.replace()
        if self._schema_check is not None:
            self._schema_check(event)  # InvalidEventError: the pinned schema version cannot carry it
        if self._max_value_bytes is not None and (size := encoded_size_bound(event)) > self._max_value_bytes:
            raise InvalidEventError(
                "<event>",
                f"may encode to {size} bytes; with message.max.bytes={self._max_value_bytes + MAX_RECORD_OVERHEAD} "
                f"(less {MAX_RECORD_OVERHEAD} for the key and headers) the limit is {self._max_value_bytes}",
            )
        if self._disk:
            self._emit_disk(event)
            return
        q = self._queue
        if len(q) >= self._queue_max:
            self._wait_for_room()
        captured = _capture_context()
        # Outside any span (the common case) the event goes alone: no (event, context) tuple per
        # event for the cyclic collector to count, and to walk while a burst waits in the queue.
        q.append(event if captured is EMPTY_CONTEXT else (event, captured))
        self._count_submitted()
        if self._sender.idle:
            self._sender.wake.set()

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
            q = self._queue
            if len(q) < self._queue_max:  # else the sender reads it back from the spool
                q.append((event, captured, seq))
        if self._sender.idle:
            self._sender.wake.set()

    def _spool_full_locked(self, payload: bytes, full: SpoolFull) -> int:
        """Apply ``on_spool_full`` (the spool lock is held). Returns the seq once written, or raises."""
        policy = self._options.on_spool_full
        started = time.monotonic()
        if policy == "block":
            spool = self._spool
            deadline = started + self._options.block_timeout_ms / 1000
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
        policy = self._options.on_spool_full
        q, limit = self._queue, self._queue_max
        started = time.monotonic()
        if policy == "block":
            deadline = started + self._options.block_timeout_ms / 1000
            with self._sender.room:
                self._sender.room_waiters += 1
                try:
                    while len(q) >= limit:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._sender.wake.set()
                        self._sender.room.wait(remaining)
                finally:
                    self._sender.room_waiters -= 1
            if len(q) < limit:
                return
        else:
            # A burst can fill the queue before the sender thread even ran: give it the GIL once.
            self._sender.wake.set()
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
        if self._delivery.fatal is not None:
            raise self._delivery.fatal_error()
        target = self._tracker.submitted + self._spool.recovered
        self._sender.wake.set()
        # Refused by an ACL: nothing will be acknowledged until the Bus is recreated; do not wait.
        reached = self._tracker.wait_for(target, 0 if self._delivery.denied() else timeout)
        if self._delivery.fatal is not None:
            raise self._delivery.fatal_error()
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
            timeout = self._options.close_timeout_ms / 1000
        delivered = False
        try:
            delivered = self._delivery.fatal is None and self._flush(timeout)
        except ProducerFatalError:
            pass
        finally:
            self._shutdown(delivered)

    def _shutdown(self, delivered: bool) -> None:
        self._sender.stop()
        self._poller.stop()
        # From here this thread is the only one serving librdkafka.
        producer = self._delivery.producer
        if not delivered or len(producer):
            with contextlib.suppress(KafkaException, RuntimeError):
                producer.purge(in_queue=True, in_flight=True)
            with contextlib.suppress(KafkaException, RuntimeError):
                producer.flush(5.0)  # serves the purge reports: memory-only records land in the rescue list
        self._rescue_to_spool()
        self._syncer.stop()
        with self._spool.lock:
            self._spool.seal()  # so that a fully delivered last segment is deleted too
        self._poller.housekeeping(final=True)
        self._sender.reader.close()
        self._spool.close()
        self._poller.write_health_file()
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
        """Memory mode: what exists only in memory goes to the spool, placed by seq so the replay
        keeps emit order (see ``Sender.rescue_entries``)."""
        tracker, delivery = self._tracker, self._delivery
        entries = self._sender.rescue_entries()
        if entries:
            # Below the watermark they would count as delivered and be released by the final housekeeping.
            tracker.unsent = min(tracker.unsent, min(seq for seq, _, _ in entries))
        try:
            tracker.spooled += self._spool.rescue(entries)
        except RescueError as exc:
            # Nowhere left to keep them (a full disk): counted as failed, loudly, and close() goes on.
            tracker.spooled += exc.written
            tracker.failed += exc.lost
            delivery.last_error = f"{exc.lost} undelivered event(s) could not be kept in the spool: {exc.message}"
            log.critical("govbus producer: %s; they are lost", delivery.last_error)

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
        elif self._delivery.fatal is not None:
            state = "failed"
        elif self._metadata.partitioner is None and self._delivery.reachable is None:
            state = "starting"
        elif self._sender.state is SenderState.DIRECT and self._metadata.partitioner is not None:
            state = "connected"
        else:
            state = "spooling"
        depth = max(0, spool.end_seq() - self._tracker.unsent) if self._disk else len(self._queue)
        try:
            kafka_depth = len(self._delivery.producer)
        except RuntimeError:  # closed
            kafka_depth = 0
        ok, reason = self._verdict(state, spool.used, spool.max_bytes)
        return BusHealth(
            ok=ok,
            reason=reason,
            state=state,
            durability=self._options.durability,
            topic=self.topic,
            partitions=self._metadata.partitioner.partitions if self._metadata.partitioner else None,
            broker_reachable=self._delivery.reachable,
            last_broker_contact=self._delivery.last_contact,
            fatal_error=None
            if self._delivery.fatal is None
            else f"{self._delivery.fatal.name()}: {self._delivery.fatal.str()}",
            last_error=self._delivery.last_error,
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
            cause=self._delivery.access.cause if self._delivery.access is not None else None,
        )

    def _verdict(self, state: str, used: int, limit: int) -> tuple[bool, str]:
        if state == "closed":
            return False, "the bus is closed"
        if self._delivery.access is not None:  # an operator must act: say what, before any symptom
            return False, self._delivery.access.reason
        if self._delivery.fatal is not None:
            return False, f"fatal producer error {self._delivery.fatal.name()}: {self._delivery.fatal.str()}"
        no_space = self._no_space()
        if no_space is not None:
            denied = "; admission denied" if self._admission_blocked else ""
            return False, f"spool filesystem full ({no_space}): the spool takes no more events{denied}"
        if self._admission_blocked:
            return False, f"spool {used * 100 // max(limit, 1)}% full: admission denied until it drains"
        if used >= limit or self._spool.refusing:
            return False, f"spool full ({used} of {limit} bytes): events are refused ({self._options.on_spool_full})"
        if state == "spooling":
            why = self._metadata.topic_problem or (
                "broker unreachable" if self._delivery.reachable is False else "catching up"
            )
            return True, f"spooling to disk ({why}); {used} of {limit} bytes used"
        if state == "starting":
            return True, "waiting for the first metadata answer"
        return True, ""

    def _update_admission(self) -> None:
        if self._options.on_spool_full != "deny-admission":
            return
        spool = self._spool
        fill = max(spool.used / spool.max_bytes, len(self._queue) / self._queue_max if not self._disk else 0.0)
        if self._no_space() is not None:
            fill = 1.0  # a full filesystem is a full spool, whatever spool_max_bytes says
        high = self._options.admission_high_water
        if fill >= high:
            self._admission_blocked = True
        elif fill < high - 0.1:
            self._admission_blocked = False

    def _no_space(self) -> str | None:
        """Why the spool's filesystem is full, while that matters: always in disk mode (every event
        goes through the spool), while spooling in memory mode."""
        no_space = self._spool.no_space
        return no_space if self._disk or self._sender.state is SenderState.SPOOLING else None

    def _fatal_error(self) -> ProducerFatalError:
        assert self._delivery.fatal is not None
        return ProducerFatalError(self._delivery.fatal.name(), self._delivery.fatal.str())
