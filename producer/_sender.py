"""The sender thread: from the hand-off queue (or the spool) to librdkafka, in emit order.

State machine (:class:`SenderState`):

* ``DIRECT``: events taken from the hand-off queue are encoded (the batch step,
  :class:`~govbus.producer._batch.BatchEncoder`), partitioned, given to the batch hook and
  produced (with govbus's own signing hook and the compiled core, encode, partition and sign are
  one native call: ``NativeBatchEncoder.encode_signed``). No metadata yet (after a short grace), an outage that lasts, an ACL refusal, a topic
  gone or librdkafka's queue full -> ``SPOOLING``.
* ``SPOOLING``: memory mode writes queued events to the spool (encoded, unsigned); both modes
  replay the spool from the first unsent seq while the broker takes records. When the replay
  reaches the spool's end -> ``DIRECT`` (memory mode seals the segment first so that direct seqs
  never fall inside a spooled segment's range).

The sender is also the thread that serves librdkafka (delivery reports, errors): one ``poll()``
per batch costs far less than a second thread taking the GIL for every report.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from govbus.event import GovernanceEvent, ProducerInfo
from govbus.producer import _tracing
from govbus.producer._batch import (
    BATCH,
    EMPTY_CONTEXT,
    BatchEncoder,
    BatchHook,
    NativeBatchEncoder,
    OutgoingRecord,
    Unencodable,
    end_span,
    unsigned_headers,
)
from govbus.producer._errors import SpoolError
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

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from govbus.producer._delivery import Delivery
    from govbus.producer._housekeeping import Metadata
    from govbus.signing import Signer

log = logging.getLogger("govbus.producer")

STARTUP_GRACE_S = 2.0  # wait this long for the first metadata before spooling
REPORT_WAIT_S = 0.005  # the wait for delivery reports while messages are outstanding
DOWN_DEBOUNCE_S = 0.5  # how long "all brokers down" must last before new events are spooled


class SenderState(enum.Enum):
    DIRECT = "direct"  # the hand-off queue goes straight to librdkafka
    SPOOLING = "spooling"  # new events go to the spool; the spool is replayed while it can be


class Sender:
    """Owns the hand-off queue's consumer side, the spool reader and the records waiting for room
    in librdkafka. ``emit()`` appends to :attr:`queue` and sets :attr:`wake` when :attr:`idle`."""

    def __init__(
        self,
        *,
        disk: bool,
        spool: Spool,
        delivery: Delivery,
        metadata: Metadata,
        encoder: BatchEncoder,
        hook: BatchHook | None,
        producer_info: ProducerInfo,
        tracing: _tracing.Tracing,
        bootstrap: str,
        signer: Signer | None = None,
        seen: Callable[[Sequence[OutgoingRecord]], None] | None = None,
    ) -> None:
        self.disk = disk
        self._spool = spool
        self._delivery = delivery
        self._tracker = delivery.tracker
        self._metadata = metadata
        self.encoder = encoder
        self._hook = hook
        # The hook is govbus's own SigningHook and the batch step is compiled: batches taken from
        # the hand-off queue are encoded, routed and signed in one native call instead, and
        # ``seen`` (the heartbeats) is shown what the hook would have seen. Spooled records are
        # still signed by the hook, without being encoded again.
        self._signer = signer if isinstance(encoder, NativeBatchEncoder) else None
        self._seen = seen
        self._producer_info = producer_info
        self._tracing = tracing
        self._bootstrap = bootstrap
        self.topic = delivery.topic
        # Memory mode: an event (no span) or (event, captured context), see queued(); disk mode:
        # (event, captured, seq) of journaled events.
        self.queue: deque[Any] = deque()
        self.next_seq = spool.next_seq  # memory mode: the sender allocates seqs
        self.cursor = spool.next_seq  # disk mode: the next seq the sender hands over
        self.reader = spool.reader(spool.start_watermark)
        self.state = SenderState.SPOOLING if spool.recovered else SenderState.DIRECT
        self.waiting: deque[OutgoingRecord] = deque()  # processed, waiting for room in librdkafka
        self.waiting_raw = False  # True: what waits has no partition yet / the hook failed on it
        self.idle = False
        self.wake = threading.Event()
        self.room = threading.Condition()  # memory mode: emit() blocked on a full queue waits here
        self.room_waiters = 0
        self._stop = False
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self.run, name="govbus-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self.wake.set()
        self._thread.join()

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        producer = self._delivery.producer
        poll = producer.poll
        try:
            while not self._stop:
                if self.step():
                    poll(0)  # also releases the GIL: emit() callers get it between batches
                    continue
                stalled = bool(self.queue)
                if len(producer):
                    poll(REPORT_WAIT_S)  # returns as soon as a report (or error) arrives
                else:
                    poll(0)
                    self._wait_for_work(stalled)
        except Exception as exc:
            error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            delivery = self._delivery
            if isinstance(error, KafkaError) and error.fatal():
                delivery.on_fatal(error)  # confluent-kafka raises librdkafka's fatal error from poll()
                return
            log.critical("govbus sender thread failed; events stay queued/spooled", exc_info=True)
            delivery.last_error = f"sender thread failed: {exc!r}"
            if delivery.fatal is None:
                delivery.fatal = KafkaError(KafkaError._FAIL, f"sender thread failed: {exc!r}", fatal=True)
            self._tracker.wake_all()

    def _wait_for_work(self, stalled: bool) -> None:
        """Sleep until emit() wakes us. ``stalled``: the last step left queued work it could not do
        (no metadata yet, spool full, librdkafka full): retry soon rather than spin."""
        self.wake.clear()
        self.idle = True  # from here emit() sets wake; an event queued before is seen below
        try:
            if self.queue and not stalled:
                return
            busy = (
                stalled
                or self.state is SenderState.SPOOLING
                or self.waiting
                or self._delivery.fatal is not None
                or self._delivery.size_refused
            )
            self.wake.wait(0.02 if busy else 0.1)  # 0.1: librdkafka may have an error to report
        finally:
            self.idle = False

    def step(self) -> bool:
        """One batch of work; False when there was nothing to do (or nothing could be done)."""
        delivery = self._delivery
        if delivery.fatal is not None:
            return False
        progressed = False
        if delivery.size_refused and self._metadata.partitioner is not None:
            retry = delivery.judge_size_refused()
            if retry:
                self._produce(retry)
                progressed = True
        if self.waiting:
            progressed = self._hand_over_waiting() or progressed
            if self.waiting:  # cannot hand over now: new events go to the spool meanwhile
                why = (
                    (self._metadata.topic_problem or "no partitions known")
                    if self.waiting_raw
                    else "librdkafka's queue is full"
                )
                self._enter_spooling(why)
                return self._spool_from_queue() or progressed
        if self.state is SenderState.DIRECT:
            return self._step_direct() or progressed
        return self._step_spooling() or progressed

    # -- DIRECT ----------------------------------------------------------------------------------

    def _step_direct(self) -> bool:
        delivery, metadata = self._delivery, self._metadata
        away = delivery.broker_away(DOWN_DEBOUNCE_S)
        if metadata.partitioner is None or away or delivery.denied():
            waiting = time.monotonic() - self._started < STARTUP_GRACE_S and not away
            if metadata.partitioner is None and waiting:
                return False  # the first metadata answer is usually a few ms away
            if delivery.access is not None:
                reason = delivery.access.reason
            elif metadata.topic_problem:
                reason = metadata.topic_problem
            elif metadata.partitioner is None and delivery.reachable is None:
                reason = f"no answer from {self._bootstrap} yet"
            else:
                reason = "broker unreachable"
            self._enter_spooling(reason)
            return True
        batch, signed = self._take_disk() if self.disk else self._take_memory()
        if batch:
            if signed:
                if self._seen is not None:
                    self._seen(batch)
                self._produce(batch)
            else:
                self._hand_over(batch)
            return True
        if self.disk:
            with self._spool.lock:
                behind = self._spool.end_seq() > self.cursor and not self.queue
            if behind:  # the hand-off queue overflowed: the rest is only on disk
                self._enter_spooling("hand-off queue overflowed")
                return True
        return False

    def _encode(
        self,
        events: list[GovernanceEvent],
        contexts: list[_tracing.Captured],
        first: int,
        keep: bool,
        unencodable: Unencodable,
    ) -> tuple[list[OutgoingRecord], bool]:
        """The batch step; True: the records are also routed and signed (the fused native step)."""
        signer, partitioner = self._signer, self._metadata.partitioner
        if signer is not None and partitioner is not None:
            encoder: NativeBatchEncoder = self.encoder  # type: ignore[assignment]  # checked in __init__
            try:
                return encoder.encode_signed(
                    events,
                    contexts,
                    first,
                    keep=keep,
                    unencodable=unencodable,
                    partitions=partitioner.partitions,
                    signer=signer,
                )
            except Exception:
                # Signing raised (nothing consumed): the batch hook signs this batch, and says why.
                log.debug("fused encode + sign failed; the batch hook signs the batch", exc_info=True)
        return self.encoder.encode(events, contexts, first, keep=keep, unencodable=unencodable), False

    def _take_memory(self) -> tuple[list[OutgoingRecord], bool]:
        popleft = self.queue.popleft
        events: list[GovernanceEvent] = []
        contexts: list[_tracing.Captured] = []
        for _ in range(BATCH):
            try:
                item = popleft()
            except IndexError:
                break
            if type(item) is tuple:  # queued(), inline: this loop runs for every event
                event, captured = item
            else:
                event, captured = item, EMPTY_CONTEXT
            events.append(event)
            contexts.append(captured)
        seq = self.next_seq
        if not events:
            self._tracker.unsent = seq
            return [], False
        batch, signed = self._encode(events, contexts, seq, True, self._unencodable)
        self.next_seq = seq = seq + len(events)
        self._tracker.unsent = seq  # nothing below it waits in the spool
        if self.room_waiters and batch:
            with self.room:
                self.room.notify_all()
        return batch, signed

    def _take_disk(self) -> tuple[list[OutgoingRecord], bool]:
        popleft = self.queue.popleft
        tracker = self._tracker
        taking = tracker.taking
        events: list[GovernanceEvent] = []
        contexts: list[_tracing.Captured] = []
        first = cursor = self.cursor
        overflowed = False
        for _ in range(BATCH):
            try:
                event, captured, seq = popleft()
            except IndexError:
                break
            if seq < cursor:
                continue  # already sent from the spool
            if seq > cursor:  # the queue overflowed at some point: read the gap from disk
                overflowed = True
                break
            taking(seq)
            events.append(event)
            contexts.append(captured)
            cursor += 1
        self.cursor = cursor
        tracker.unsent = cursor
        batch = self._encode_journaled(events, contexts, first) if events else ([], False)
        if overflowed:
            self._enter_spooling("hand-off queue overflowed")
        return batch

    def _encode_journaled(
        self, events: list[GovernanceEvent], contexts: list[_tracing.Captured], first: int
    ) -> tuple[list[OutgoingRecord], bool]:
        def unencodable(event: GovernanceEvent, seq: int, exc: Exception) -> None:
            self._unencodable(event, seq, exc)
            self._tracker.resolve(seq)

        return self._encode(events, contexts, first, False, unencodable)

    # -- SPOOLING --------------------------------------------------------------------------------

    def _step_spooling(self) -> bool:
        progressed = False
        if self.disk:
            # Journaled events are read back from disk; drop what the queue holds behind the reader.
            q, next_seq = self.queue, self.reader.next_seq
            while q and q[0][2] < next_seq:
                q.popleft()
        else:
            progressed = self._spool_from_queue()
        if self._metadata.partitioner is None or self.waiting or self._delivery.denied():
            return progressed
        entries = self.reader.read(BATCH)
        if entries:
            batch = self._from_entries(entries)
            self._tracker.unsent = self.reader.next_seq
            self.cursor = self.reader.next_seq
            if batch:
                self._hand_over(batch)
            return True
        if self._delivery.reachable and not self.waiting and self._catch_up():
            return True
        return progressed

    def _catch_up(self) -> bool:
        """The replay reached the end of the spool: publish directly again."""
        spool = self._spool
        if self.disk:
            with spool.lock:
                if self.reader.next_seq < spool.end_seq():
                    return False
                self.cursor = self.reader.next_seq
        else:
            if self.queue and spool.no_space is None:
                # What is queued goes through the spool first; but a full disk cannot take it,
                # and with the spool replayed to its end it can go directly, still in order.
                return False
            with spool.lock:
                # Seqs published directly must never fall inside a spooled segment's range.
                spool.seal()
            self._tracker.unsent = self.next_seq
        self.state = SenderState.DIRECT
        log.info("govbus producer caught up with the spool; publishing directly")
        return True

    def _enter_spooling(self, reason: str) -> None:
        if self.state is SenderState.SPOOLING:
            return
        self.state = SenderState.SPOOLING
        log.warning("govbus producer spooling to %s: %s", self._spool.directory, reason)
        if self.disk:
            self.reader.close()
            self.reader = self._spool.reader(self.cursor)
            self._tracker.unsent = self.cursor

    def _spool_from_queue(self) -> bool:
        """Memory mode: move queued events into the spool (encoded, unsigned)."""
        if self.disk:
            return False
        q, spool, tracker = self.queue, self._spool, self._tracker
        moved = 0
        while moved < BATCH:
            try:
                item = q.popleft()
            except IndexError:
                break
            event, captured = queued(item)
            seq = self.next_seq
            records = self.encoder.encode([event], [captured], seq, keep=False, unencodable=self._unencodable)
            if not records:  # unencodable: counted and kept in dead/
                self.next_seq += 1
                continue
            record = records[0]
            payload = pack_record(record.key, record.value, unsigned_headers(record))
            with spool.lock:
                try:
                    spool.write(TYPE_RECORD, payload, seq=seq)
                except (SpoolFull, SpoolError) as exc:
                    q.appendleft(item)  # still ours, still first; emit() feels the back-pressure
                    end_span(record, "spool-full")
                    if isinstance(exc, SpoolError):
                        self._delivery.last_error = str(exc)
                    break
                tracker.spooled += 1
            self.next_seq += 1
            end_span(record, "spooled")
            moved += 1
        if moved and self.room_waiters:
            with self.room:
                self.room.notify_all()
        return moved > 0

    def _from_entries(self, entries: list[Entry]) -> list[OutgoingRecord]:
        """Spooled entries back to records (journaled events are encoded again, as their producer)."""
        batch: list[OutgoingRecord] = []
        report = self._delivery.on_delivery
        for entry in entries:
            try:
                if entry.type == TYPE_RECORD:
                    key, value, headers = unpack_record(entry.payload)
                    record = OutgoingRecord(entry.seq, key, value, headers, False, None, report)  # type: ignore[arg-type]
                else:
                    event, trace = unpack_event(entry.payload)
                    encoded = self.encoder.encode(
                        [event],
                        [trace],
                        entry.seq,
                        keep=False,
                        unencodable=_raise,
                        producer=entry.producer or self._producer_info,
                    )
                    record = encoded[0]
            except ValueError as exc:
                tracker = self._tracker
                tracker.failed += 1  # this thread also serves the delivery reports: one writer
                tracker.wake_waiters()
                self._delivery.last_error = f"spooled record {entry.seq} is unreadable: {exc}"
                log.error(
                    "spool record %d cannot be replayed (%s); kept in %s/dead", entry.seq, exc, self._spool.directory
                )
                self._spool.dead_letter(entry.seq, entry.type, entry.payload)
                continue
            self._tracker.taking(entry.seq)
            batch.append(record)
        return batch

    def _unencodable(self, event: GovernanceEvent, seq: int, exc: Exception) -> None:
        """An accepted event the writer schema cannot carry: counted as failed, kept in dead/."""
        tracker = self._tracker
        tracker.failed += 1  # this thread also serves the delivery reports: one writer
        tracker.wake_waiters()
        self._delivery.failed_once(f"event {event.event_id} cannot be encoded: {exc}")
        try:
            self._spool.dead_letter(seq, TYPE_EVENT, pack_event(event, None))
        except (ValueError, TypeError) as error:  # pragma: no cover - a validated event always packs
            log.error("event %s could not be kept either: %s", event.event_id, error)

    # -- to librdkafka ---------------------------------------------------------------------------

    def _hand_over(self, batch: list[OutgoingRecord]) -> None:
        partitioner = self._metadata.partitioner
        if partitioner is None:  # the topic's metadata was lost meanwhile (poller thread)
            self.waiting.extend(batch)  # _hand_over is only called with nothing waiting
            self.waiting_raw = True
            return
        hook = self._hook
        if hook is None:
            self._produce(batch, partitioner)
            return
        for record in batch:
            record.partition = partitioner(record.key)
            record.headers = list(unsigned_headers(record))  # the hook may extend it; the spool keeps _base
        try:
            hook(self.topic, batch)
        except Exception as exc:
            self._delivery.last_error = f"batch hook failed: {exc!r}"
            log.error("batch hook failed; retrying the batch", exc_info=True)
            self.waiting.extend(batch)  # _hand_over is only called with nothing waiting
            self.waiting_raw = True
            return
        self._produce(batch)

    def _hand_over_waiting(self) -> bool:
        waiting = self.waiting
        before = len(waiting)
        if self.waiting_raw:  # not partitioned yet, or the hook failed on these: again
            batch = list(waiting)
            waiting.clear()
            self.waiting_raw = False
            self._hand_over(batch)
        else:
            self._produce([waiting.popleft() for _ in range(min(before, BATCH))])
        return len(waiting) < before

    def _produce(self, batch: list[OutgoingRecord], partitioner: Any = None) -> None:
        """Hand ``batch`` to librdkafka in order; what does not fit waits in :attr:`waiting`.
        With ``partitioner``, partitions are assigned here (no hook to show them to first)."""
        delivery = self._delivery
        produce, topic = delivery.producer.produce, self.topic
        for i, record in enumerate(batch):
            if partitioner is not None:
                record.partition = partitioner(record.key)
            try:
                # All positional (callback alias None, timestamp 0 = now): parsing the headers keyword
                # cost ~0.2 of the call's ~2 us per record (test_producer_delivery checks them on the wire).
                produce(topic, record.value, record.key, record.partition, record, None, 0, record.headers)  # type: ignore[arg-type]  # list is invariant; bytes values are fine
            except BufferError:
                self.waiting.extend(batch[i:])
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or error.code() == KafkaError._FATAL:  # _FATAL: this producer is done
                    delivery.on_fatal(error)
                    self.waiting.extend(batch[i:])
                    return
                delivery.refused(record, error, record.key, record.value, record.headers)
                continue
            if record._publication is not None:
                end_span(record, "handed-over")

    # -- close() ---------------------------------------------------------------------------------

    def rescue_entries(self) -> list[tuple[int, int, bytes]]:
        """After the sender stopped, memory mode: what exists only in memory (purged from
        librdkafka, waiting for room or for a size verdict, not yet taken from the queue), as spool
        entries placed by seq so that the replay keeps emit order."""
        delivery = self._delivery
        kept = [*delivery.rescue, *self.waiting, *(record for record, _ in delivery.size_refused)]
        entries = [
            (record.seq, TYPE_RECORD, pack_record(record.key, record.value, unsigned_headers(record)))
            for record in kept
            if record._keep
        ]
        delivery.rescue.clear()
        delivery.size_refused.clear()
        self.waiting.clear()
        if not self.disk:
            while self.queue:
                event, captured = queued(self.queue.popleft())
                seq = self.next_seq
                for record in self.encoder.encode([event], [captured], seq, keep=True, unencodable=self._unencodable):
                    end_span(record, "spooled")
                    entries.append((seq, TYPE_RECORD, pack_record(record.key, record.value, unsigned_headers(record))))
                self.next_seq += 1
        else:
            self.queue.clear()  # journaled: already in the spool
        return entries


def queued(item: Any) -> tuple[GovernanceEvent, _tracing.Captured]:
    """A memory-mode hand-off queue item as (event, captured context): ``emit()`` queues an event
    outside any span alone, and ``(event, context)`` inside one."""
    return item if type(item) is tuple else (item, EMPTY_CONTEXT)


def _raise(_event: GovernanceEvent, _seq: int, exc: Exception) -> None:
    raise exc
