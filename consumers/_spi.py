"""The sink SPI: what a sink implements, what it is handed, and what it answers.

The contract is structural (:class:`Sink` is a ``Protocol``): a third-party sink is any object
with ``open``/``write``/``flush``/``close``; subclassing :class:`SinkBase` only saves writing
the no-op hooks. The split mirrors OpenTelemetry's ``SpanExporter`` (contract) versus
``BatchSpanProcessor`` (engine): the sink only writes; the runtime batches, retries, pauses,
dead-letters and commits.

Threading: the runtime calls every method of one sink from one thread, never concurrently.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, overload, runtime_checkable

from govbus._cloudevents import CloudEventAttributes
from govbus.event import GovernanceEvent

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

__all__ = [
    "OK",
    "Batch",
    "DeliveredRecord",
    "Ok",
    "Rejected",
    "RetryLater",
    "Sink",
    "SinkBase",
    "SinkContext",
    "WriteResult",
]

RawHeaders: TypeAlias = Sequence[tuple[str, bytes | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveredRecord:
    """One verified, decoded record handed to a sink, with where it came from.

    ``verdict`` is ``"valid"`` when the signature checked out, ``"unverified"`` when the sink
    runs without a keyring, or the verdict code a policy chose to deliver anyway (``"gap"``,
    ``"reordered"``…), in which case ``flagged`` is True and ``verdict_detail`` says why.
    ``value``/``key``/``headers`` are the record's original bytes (for sinks that archive them).
    """

    event: GovernanceEvent
    attributes: CloudEventAttributes
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes
    headers: RawHeaders
    verdict: str = "unverified"
    verdict_detail: str = ""
    flagged: bool = False

    @property
    def event_id(self) -> str:
        """The event's id (equal to the ``ce_id`` header); records of the compiled core know it
        without decoding the event."""
        return self.event.event_id

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        found: bytes | None = None
        for h, v in self.headers:
            if h == name:
                found = v
        return found


class Batch(Sequence[DeliveredRecord]):
    """The records of one ``write`` call, in consumption order (per partition: offset order).

    ``attempt`` is 1 on first delivery and grows on each retry of the same records, so a sink
    that is not idempotent can tell a redelivery. Indices in :class:`Rejected` and
    :class:`RetryLater` refer to positions in this batch.
    """

    __slots__ = ("_records", "attempt", "size_bytes")

    def __init__(self, records: Sequence[DeliveredRecord], *, attempt: int = 1, size_bytes: int = 0) -> None:
        self._records = tuple(records)
        self.attempt = attempt
        self.size_bytes = size_bytes

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[DeliveredRecord]:
        return iter(self._records)

    @overload
    def __getitem__(self, index: int) -> DeliveredRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[DeliveredRecord]: ...

    def __getitem__(self, index: int | slice) -> DeliveredRecord | Sequence[DeliveredRecord]:
        return self._records[index]

    def __repr__(self) -> str:
        return f"Batch({len(self._records)} records, attempt={self.attempt})"


@dataclasses.dataclass(frozen=True, slots=True)
class Ok:
    """Every record of the batch is acknowledged: its offsets may be committed."""


OK = Ok()


@dataclasses.dataclass(frozen=True, slots=True)
class RetryLater:
    """A transient refusal (destination busy, rate limited, down): try again after ``delay`` s.

    ``delay`` None lets the runtime's exponential backoff choose. ``indices`` None means the whole
    batch; otherwise only those records are retried and every other one is acknowledged.
    """

    delay: float | None = None
    reason: str = ""
    indices: frozenset[int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """Permanent failures: ``failures`` maps batch indices to a reason; those records go to the
    dead-letter topic and are never retried. Every other record of the batch is acknowledged."""

    failures: Mapping[int, str]


WriteResult: TypeAlias = Ok | RetryLater | Rejected


@dataclasses.dataclass(frozen=True, slots=True)
class SinkContext:
    """What the runtime tells a sink when it opens it.

    ``meter`` is the runtime's OpenTelemetry meter: instruments a sink creates on it are exported
    with the runtime's own (``/metrics`` and OTLP). ``name`` is the sink instance name.
    """

    name: str
    group_id: str
    topic: str
    meter: Meter
    logger: logging.Logger


@runtime_checkable
class Sink(Protocol):
    """A destination for governance events.

    - ``open(context)``: once, before the first write.
    - ``write(batch)``: deliver the batch. Return None or :data:`OK` only once the records are as
      durable as the sink promises (the runtime then may commit their offsets), a
      :class:`RetryLater`, or :class:`Rejected`. Raising counts as a transient failure: the batch
      is retried with backoff (and counts towards the circuit breaker).
    - ``flush(timeout)``: make everything acknowledged so far durable (fsync, drain a client
      buffer…). Called before every offset commit, on partition revocation and at shutdown;
      raising skips that commit.
    - ``close()``: release resources; called once, after the last flush.

    Optional attribute ``reads_events`` (default True when absent): whether ``write`` reads
    ``record.event`` or ``record.attributes``. When True the compiled core builds them in the
    same pass that decodes the record; a sink that writes only the rendered JSON line (through
    ``_jsonl.encode_line``) or the raw bytes sets it False and never pays for them (they are then
    still decoded, on the Python path, if read after all).
    """

    def open(self, context: SinkContext) -> None: ...

    def write(self, batch: Batch) -> WriteResult | None: ...

    def flush(self, timeout: float) -> None: ...

    def close(self) -> None: ...


class SinkBase:
    """Defaults for the optional hooks; subclasses implement :meth:`write`."""

    context: SinkContext | None = None
    # See Sink: False for a sink that never reads record.event / record.attributes.
    reads_events: bool = True

    def open(self, context: SinkContext) -> None:
        self.context = context

    def write(self, batch: Batch) -> WriteResult | None:
        raise NotImplementedError(f"{type(self).__name__} must implement write(batch)")

    def flush(self, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None
