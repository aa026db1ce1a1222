"""The batch step: accepted events -> :class:`OutgoingRecord` s, on the sender thread.

This is the seam a native encoder plugs into: the sender hands :class:`BatchEncoder.encode` up to
``BATCH`` events taken from the hand-off queue (with the trace context captured at ``emit()``) and
gets back the records to partition, sign (:class:`BatchHook`) and hand to librdkafka. The encoder
owns nothing else: no queue, no spool, no Kafka client.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError

from govbus._contract import Encoder
from govbus._record import KeyBy, record_key, to_record
from govbus.event import GovernanceEvent, ProducerInfo
from govbus.producer import _tracing

if TYPE_CHECKING:  # the signing package (and its crypto) is imported only when signing is on
    from govbus.signing import Signer

# How many signature headers the fused encode + sign step appends to a record's CloudEvents
# headers (govbus.signing._canonical.SIGNATURE_HEADERS, checked by the tests).
SIGNATURE_HEADERS = 6

BATCH = 256  # events per sender step; the sender yields the GIL between steps
# What encoding an accepted event can raise: the writer schema cannot carry it (InvalidEventError
# is a ValueError), or something the model let through that the encoder refuses.
UNENCODABLE = (ValueError, TypeError, OverflowError)
# The context of a thread with no span (memory mode captures this; disk mode journals None):
# read in a fresh contextvars context, so a first import inside a span does not take that span's.
EMPTY_CONTEXT = contextvars.Context().run(_tracing.capture_context)

Report = Callable[["OutgoingRecord", KafkaError | None, Any], None]
# (event, seq, why) for an event the writer schema cannot carry: the sender counts and keeps it.
Unencodable = Callable[[GovernanceEvent, int, Exception], None]


class OutgoingRecord:
    """A record on its way to librdkafka, as a :class:`BatchHook` sees it.

    ``partition`` is assigned (murmur2 of the key over the topic's partition count); ``headers``
    may be replaced or extended by the hook (signature headers). ``seq`` is the record's position
    in this producer's stream (strictly increasing in hand-over order).
    """

    __slots__ = (
        "_base",
        "_keep",
        "_publication",
        "_report",
        "_size_retries",
        "headers",
        "key",
        "partition",
        "seq",
        "value",
    )

    def __init__(
        self,
        seq: int,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        keep: bool,
        publication: _tracing.Publication | None,
        report: Report,
        partition: int = -1,
        signed: bool = False,
    ) -> None:
        self.seq = seq
        self.partition = partition
        self.key = key
        self.value = value
        self.headers = headers
        # Unsigned headers: what a rescue writes to the spool. None: ``headers`` came signed from
        # the fused encode + sign step and end with the signature headers (see unsigned_headers).
        self._base: list[tuple[str, bytes]] | None = None if signed else headers
        self._keep = keep  # True: exists only in memory (not in the spool)
        self._publication = publication
        self._report = report
        self._size_retries = 0  # re-produced after a batch refused for another record's size

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


class BatchEncoder(Protocol):
    """Encodes a batch of accepted events (Avro value, CloudEvents headers, traceparent, key).

    ``events[i]`` was captured with trace context ``contexts[i]`` and gets seq ``first_seq + i``;
    ``producer`` is the emitting producer (a replayed journal entry names its own). ``keep``: the
    records exist only in memory (memory mode) rather than in the spool. An event that cannot be
    encoded is passed to ``unencodable`` and has no record; the others come back in order.
    """

    def encode(
        self,
        events: Sequence[GovernanceEvent],
        contexts: Sequence[_tracing.Captured],
        first_seq: int,
        *,
        keep: bool,
        unencodable: Unencodable,
        producer: ProducerInfo | None = None,
    ) -> list[OutgoingRecord]: ...


class EventBatchEncoder:
    """The Python :class:`BatchEncoder`: ``govbus._record.to_record`` per event, with a span each
    when OpenTelemetry is configured."""

    def __init__(
        self,
        encoder: Encoder,
        producer: ProducerInfo,
        tracing: _tracing.Tracing,
        report: Report,
        *,
        key_by: KeyBy,
        source: str | None,
    ) -> None:
        self.encoder = encoder
        self.producer = producer
        self.tracing = tracing
        self.report = report
        self.key_by: KeyBy = key_by
        self.source = source

    def encode(
        self,
        events: Sequence[GovernanceEvent],
        contexts: Sequence[_tracing.Captured],
        first_seq: int,
        *,
        keep: bool,
        unencodable: Unencodable,
        producer: ProducerInfo | None = None,
    ) -> list[OutgoingRecord]:
        # The producer's hot path: locals, and the common case (no tracing) inline.
        tracer = self.tracing.tracer()
        producer = producer or self.producer
        encoder, key_by, source, report = self.encoder, self.key_by, self.source, self.report
        batch: list[OutgoingRecord] = []
        append = batch.append
        seq = first_seq
        for event, captured in zip(events, contexts, strict=True):
            try:
                if tracer is None and (captured is EMPTY_CONTEXT or captured is None) and event.trace_id is None:
                    out = to_record(event, producer, encoder, key_by=key_by, source=source)
                    append(OutgoingRecord(seq, out.key, out.value, out.headers, keep, None, report))
                else:
                    append(self._traced(event, captured, tracer, producer, seq, keep))
            except UNENCODABLE as exc:
                unencodable(event, seq, exc)
            seq += 1
        return batch

    def _traced(
        self,
        event: GovernanceEvent,
        captured: _tracing.Captured,
        tracer: Any,
        producer: ProducerInfo,
        seq: int,
        keep: bool,
    ) -> OutgoingRecord:
        publication = self.tracing.publish(
            event, captured, tracer, record_key(event, self.key_by) if tracer is not None else None
        )
        out = to_record(
            publication.event,
            producer,
            self.encoder,
            key_by=self.key_by,
            source=self.source,
            traceparent=publication.traceparent,
            tracestate=publication.tracestate,
        )
        return OutgoingRecord(
            seq, out.key, out.value, out.headers, keep, publication if tracer is not None else None, self.report
        )


class NativeBatchEncoder(EventBatchEncoder):
    """The :class:`BatchEncoder` of the compiled core: one native call per micro-batch
    (``govbus._native.BatchEncoder.encode``: values, CloudEvents headers and keys, GIL released),
    and the Python encoder for the events it hands back (traced ones, types it does not reproduce
    exactly, events the writer schema refuses: the Python path words the refusal)."""

    def __init__(
        self,
        native: Any,
        encoder: Encoder,
        producer: ProducerInfo,
        tracing: _tracing.Tracing,
        report: Report,
        *,
        key_by: KeyBy,
        source: str | None,
    ) -> None:
        super().__init__(encoder, producer, tracing, report, key_by=key_by, source=source)
        self.native = native

    def encode(
        self,
        events: Sequence[GovernanceEvent],
        contexts: Sequence[_tracing.Captured],
        first_seq: int,
        *,
        keep: bool,
        unencodable: Unencodable,
        producer: ProducerInfo | None = None,
    ) -> list[OutgoingRecord]:
        producer = producer or self.producer
        tail = self.encoder._producer_tail(producer)
        if not tail or self.tracing.tracer() is not None:  # spans are made on the Python path
            return super().encode(events, contexts, first_seq, keep=keep, unencodable=unencodable, producer=producer)
        outs = self.native.encode(list(events), list(contexts), tail)
        return self._records(outs, events, contexts, first_seq, keep, unencodable, producer)

    def encode_signed(
        self,
        events: Sequence[GovernanceEvent],
        contexts: Sequence[_tracing.Captured],
        first_seq: int,
        *,
        keep: bool,
        unencodable: Unencodable,
        partitions: int,
        signer: Signer,
    ) -> tuple[list[OutgoingRecord], bool]:
        """:meth:`encode`, routing (murmur2 of the key among ``partitions``) and ``signer``'s
        signature of the batch in one native call (``BatchEncoder.encode_signed``, the producer's
        own signing hook, docs/native.md). Returns the records and True when they are partitioned
        and signed; False: they are what :meth:`encode` returns, for the batch hook to sign (an
        event the Python path encodes, per-event signing, a declined or panicking signing step)."""
        producer = self.producer
        tail = self.encoder._producer_tail(producer)
        if not tail or self.tracing.tracer() is not None:
            return self.encode(events, contexts, first_seq, keep=keep, unencodable=unencodable), False
        native, report = self.native, self.report
        event_list, context_list = list(events), list(contexts)
        done: list[Any] = []

        def fused(
            kid: bytes, stream: bytes, counters: dict[int, int], signed_at: int, fixed: Any, sign: Any
        ) -> dict[int, int] | None:
            rows, after = native.encode_signed(
                event_list,
                context_list,
                tail,
                partitions,
                (kid, stream, counters, signed_at),
                fixed,
                sign,
                (OutgoingRecord, first_seq, keep, report),
            )
            done.append(rows)
            return after  # type: ignore[no-any-return]

        if signer.sign_with(fused):
            return done[0], True
        if not done:  # the signer declined before the call (per-event mode)
            return self.encode(events, contexts, first_seq, keep=keep, unencodable=unencodable), False
        return self._records(done[0], events, contexts, first_seq, keep, unencodable, producer), False

    def _records(
        self,
        outs: Sequence[Any],
        events: Sequence[GovernanceEvent],
        contexts: Sequence[_tracing.Captured],
        first_seq: int,
        keep: bool,
        unencodable: Unencodable,
        producer: ProducerInfo,
    ) -> list[OutgoingRecord]:
        """The native encoder's rows as records; the events it handed back, encoded in Python."""
        report = self.report
        batch: list[OutgoingRecord] = []
        append = batch.append
        seq = first_seq
        for out, event, captured in zip(outs, events, contexts, strict=True):
            if out is not None:
                append(OutgoingRecord(seq, out[0], out[1], out[2], keep, None, report))
            else:
                batch.extend(
                    super().encode([event], [captured], seq, keep=keep, unencodable=unencodable, producer=producer)
                )
            seq += 1
        return batch


def end_span(record: OutgoingRecord, outcome: str) -> None:
    """Ends the record's send span (if traced) with ``outcome``."""
    publication = record._publication
    if publication is not None:
        publication.end(outcome, record.partition if record.partition >= 0 else None)
        record._publication = None


def unsigned_headers(record: OutgoingRecord) -> list[tuple[str, bytes]]:
    """The record's headers without its signature: what the spool keeps (replayed records are
    signed again, with new sequence numbers, when they are produced)."""
    base = record._base
    return record.headers[:-SIGNATURE_HEADERS] if base is None else base


def record_size(record: OutgoingRecord) -> int:
    """The record's bytes as the broker counts them alone in a batch (uncompressed, with the
    batch header and per-record framing): an upper bound of what it needs from max.message.bytes."""
    headers = sum(len(k) + len(v) + 10 for k, v in record.headers)
    return 61 + 24 + len(record.key) + len(record.value) + headers
