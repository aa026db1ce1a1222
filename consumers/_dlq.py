"""Dead letters: the records a sink can never deliver, with why, where from and when.

A dead letter keeps the original key, value and headers byte for byte and adds ``govbus.dlq.*``
headers (see :data:`ERROR_HEADERS`). ``govbus dlq replay`` puts dead letters on the sink's own
replay topic (``<topic>.replay.<sink>``), which only that sink's group reads: other sinks never
see the record twice, and replayed records are verified for authenticity without the sequence
checks (a record back from the dead is late by design, not a replay attack).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from govbus._admin import ensure_topic
from govbus._cloudevents import format_time
from govbus._librdkafka import new_consumer, new_producer
from govbus._principal import missing_acl, principal_of
from govbus.consumers._errors import DeadLetterError, DeadLetterFatalError
from govbus.consumers._pipeline import Failure, Work
from govbus.consumers._spi import RawHeaders

__all__ = [
    "ERROR_HEADERS",
    "DeadLetter",
    "DeadLetterer",
    "ReplayReport",
    "read_dead_letters",
    "replay_dead_letters",
]

log = logging.getLogger("govbus.consumers.dlq")

PREFIX = "govbus.dlq."
H_REASON = PREFIX + "reason"
H_MESSAGE = PREFIX + "message"
H_VERDICT = PREFIX + "verdict"
H_EXCEPTION = PREFIX + "exception"
H_TOPIC = PREFIX + "topic"
H_PARTITION = PREFIX + "partition"
H_OFFSET = PREFIX + "offset"
H_TIMESTAMP = PREFIX + "timestamp"
H_SINK = PREFIX + "sink"
H_GROUP = PREFIX + "group"
H_TIME = PREFIX + "time"
H_COUNT = PREFIX + "count"
H_REPLAYED_AT = "govbus.replay.time"
ERROR_HEADERS = (
    H_REASON,
    H_MESSAGE,
    H_VERDICT,
    H_EXCEPTION,
    H_TOPIC,
    H_PARTITION,
    H_OFFSET,
    H_TIMESTAMP,
    H_SINK,
    H_GROUP,
    H_TIME,
    H_COUNT,
)
_MAX_MESSAGE = 1024  # a header, not a log: long sink error texts are cut
_ACL_REFUSALS = frozenset({KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED})


def _get(headers: RawHeaders | None, name: str) -> bytes | None:
    found: bytes | None = None
    for h, v in headers or ():
        if h == name:
            found = v
    return found


def _text(headers: RawHeaders | None, name: str) -> str | None:
    raw = _get(headers, name)
    return None if raw is None else raw.decode("utf-8", "replace")


def _int(headers: RawHeaders | None, name: str) -> int | None:
    raw = _text(headers, name)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def origin(work: Work) -> tuple[str, int, int, int | None]:
    """(topic, partition, offset, timestamp) of the record as first published.

    A replayed dead letter points back at the event topic, not at the replay topic."""
    if work.replayed:
        topic = _text(work.headers, H_TOPIC)
        partition = _int(work.headers, H_PARTITION)
        offset = _int(work.headers, H_OFFSET)
        if topic is not None and partition is not None and offset is not None:
            return topic, partition, offset, _int(work.headers, H_TIMESTAMP)
    return work.topic, work.partition, work.offset, work.timestamp_ms


def dead_letter_headers(
    work: Work, failure: Failure, *, sink: str, group: str, now: datetime
) -> list[tuple[str, str | bytes | None]]:
    """The original headers (minus earlier error headers) plus this failure's."""
    topic, partition, offset, timestamp = origin(work)
    count = (_int(work.headers, H_COUNT) or 0) + 1
    kept: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in work.headers if not k.startswith(PREFIX) and k != H_REPLAYED_AT
    ]
    added = [
        (H_REASON, failure.reason),
        (H_MESSAGE, failure.message[:_MAX_MESSAGE]),
        (H_TOPIC, topic),
        (H_PARTITION, str(partition)),
        (H_OFFSET, str(offset)),
        (H_SINK, sink),
        (H_GROUP, group),
        (H_TIME, format_time(now)),
        (H_COUNT, str(count)),
    ]
    if failure.verdict is not None:
        added.append((H_VERDICT, failure.verdict))
    if failure.exception is not None:
        added.append((H_EXCEPTION, failure.exception))
    if timestamp is not None:
        added.append((H_TIMESTAMP, str(timestamp)))
    return kept + [(k, v.encode("utf-8", "replace")) for k, v in added]


class DeadLetterer:
    """Produces dead letters (idempotent, ``acks=all``) and reports which ones made it.

    ``topic_for`` maps an original topic to its dead-letter topic. A record only counts as
    dead-lettered once the broker acknowledged it; the worker acknowledges its offset after that.

    A fatal error of its producer (librdkafka cannot go on: e.g. the idempotent producer was refused
    its id because the sink's principal may not WRITE its dead-letter topic) raises
    :class:`DeadLetterFatalError` naming the cause; :meth:`check` finds it without a dead letter to write.
    """

    def __init__(
        self,
        conf: dict[str, Any],
        *,
        sink: str,
        group: str,
        topic_for: Callable[[str], str],
        max_message_bytes: int = 16 << 20,
    ) -> None:
        self.sink = sink
        self.group = group
        self.topic_for = topic_for
        self._conf = conf
        self._producer = new_producer(
            {
                **conf,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": max_message_bytes + 64 * 1024,
                "message.timeout.ms": 30_000,
                "logger": logging.getLogger("govbus.consumers.librdkafka"),
                "error_cb": self._on_error,
            }
        )
        self._fatal: KafkaError | None = None

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = self._fatal or err

    def _poll(self, timeout: float) -> None:
        """poll(), where confluent-kafka raises librdkafka's fatal error (with its cause)."""
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.fatal()):
                raise
            self._fatal = self._fatal or err

    def check(self) -> KafkaError | None:
        """Serves the producer's events; the fatal error that ended it, if one did (any thread)."""
        if self._fatal is None:
            self._poll(0)
        return self._fatal

    def fatal_error(self, example_topic: str | None = None) -> DeadLetterFatalError:
        err = self._fatal
        cause = f"{err.name()}: {err.str()}" if err is not None else "Local: Fatal error (cause not reported)"
        hint = ""
        if err is not None and err.code() in _ACL_REFUSALS:
            topic = example_topic or "its dead-letter topic"
            hint = (
                f"; the sink's principal {principal_of(self._conf)} needs the ACL operation WRITE on {topic} "
                "(its idempotent producer "
                "gets its id only with WRITE on some topic, or IDEMPOTENT_WRITE on the cluster)"
            )
        return DeadLetterFatalError(
            f"sink {self.sink}: the dead-letter producer failed fatally: {cause}{hint}. The sink stops (exit code 2) "
            "without committing the records whose dead letter was not acknowledged; they are read again after "
            "the restart"
        )

    def send(
        self, items: Sequence[tuple[Work, Failure]], *, abort: Callable[[], bool] = lambda: False
    ) -> list[tuple[Work, Failure, str]]:
        """Produces every item and waits for every delivery report; returns the ones that failed.

        ``abort`` (polled while waiting) gives up at shutdown: unreported items count as failed.
        """
        failed: list[tuple[Work, Failure, str]] = []
        reported: set[int] = set()
        fatal_reports: list[KafkaError] = []
        now = datetime.now(UTC)
        first_topic = self.topic_for(origin(items[0][0])[0]) if items else None
        if self.check() is not None:
            raise self.fatal_error(first_topic)

        def report(index: int) -> Callable[[KafkaError | None, object], None]:
            def on_delivery(err: KafkaError | None, _msg: object) -> None:
                # Delivery callbacks run inside poll()/flush() on this same thread.
                reported.add(index)
                if err is not None:
                    failed.append((items[index][0], items[index][1], str(err)))
                    if err.fatal() or err.code() == KafkaError._FATAL:
                        fatal_reports.append(err)

            return on_delivery

        for index, (work, failure) in enumerate(items):
            topic = self.topic_for(origin(work)[0])
            headers = dead_letter_headers(work, failure, sink=self.sink, group=self.group, now=now)
            while True:
                try:
                    self._producer.produce(
                        topic, value=work.value, key=work.key, headers=headers, on_delivery=report(index)
                    )
                    break
                except BufferError:
                    self._poll(0.05)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL):
                        self._poll(0.1)  # "Local: Fatal error": poll() reports the cause
                        raise self.fatal_error(topic) from None
                    reported.add(index)
                    failed.append((work, failure, str(exc)))
                    break
        while len(reported) < len(items):
            # Delivery reports always come (message.timeout.ms bounds them); abort only at shutdown.
            self._poll(0.05)
            if self._fatal is not None:
                raise self.fatal_error(first_topic)
            if len(reported) < len(items) and abort():
                return failed + [(w, f, "abandoned at shutdown") for i, (w, f) in enumerate(items) if i not in reported]
        if self._fatal is not None or fatal_reports:
            self._poll(0.1)
            raise self.fatal_error(first_topic)
        return failed

    def close(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(KafkaException):  # a fatal producer has nothing left to flush
            self._producer.flush(timeout)


def prepare_topics(conf: dict[str, Any], topics: Sequence[str], *, partitions: int, max_message_bytes: int) -> None:
    """Creates the dead-letter and replay topics unless they exist."""
    for topic in topics:
        ensure_topic(conf, topic, partitions=partitions, config={"max.message.bytes": str(max_message_bytes)})


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic, with its error headers parsed."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @property
    def reason(self) -> str | None:
        return _text(self.headers, H_REASON)

    @property
    def error(self) -> dict[str, str]:
        """The ``govbus.dlq.*`` headers by short name (``reason``, ``verdict``, ``offset``…)."""
        out: dict[str, str] = {}
        for name in ERROR_HEADERS:
            value = _text(self.headers, name)
            if value is not None:
                out[name.removeprefix(PREFIX)] = value
        return out

    @property
    def event_id(self) -> str | None:
        return _text(self.headers, "ce_id")


def _reader(conf: dict[str, Any], group: str) -> Consumer:
    return new_consumer(
        {
            **conf,
            "logger": log,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
        }
    )


_COORDINATOR_MOVING = frozenset(
    {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE}
)


def _committed(
    consumer: Consumer, parts: list[TopicPartition], timeout: float, conf: dict[str, Any]
) -> list[TopicPartition]:
    """The group's committed offsets; a coordinator that is moving or loading (a new group, a fresh
    cluster) answers within moments, so those answers are retried within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return list(consumer.committed(parts, timeout=max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError._TIMED_OUT:
                # A coordinator lookup refused by an ACL surfaces as a consumer error, not here.
                event = consumer.poll(0.1)
                refused = event.error() if event is not None else None
                err = (
                    refused if refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED else err
                )
            if isinstance(err, KafkaError) and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                group = f"GROUP {conf.get('group.id', '?')}"
                raise DeadLetterError(
                    f"cannot read the replay progress: {missing_acl(err, 'READ', group, conf)}"
                ) from None
            if not isinstance(err, KafkaError) or err.code() not in _COORDINATOR_MOVING:
                raise
            if time.monotonic() + 0.1 >= deadline:
                raise
            time.sleep(0.1)


def _read_until_end(
    consumer: Consumer, topic: str, *, start_committed: bool, timeout: float, conf: dict[str, Any] | None = None
) -> Iterator[Any]:
    """Assigns every partition of ``topic`` and yields its records up to the end as of now."""
    md = consumer.list_topics(topic, timeout=timeout)
    meta = md.topics.get(topic)
    if meta is not None and meta.error is not None and meta.error.code() in _ACL_REFUSALS:
        raise DeadLetterError(f"cannot read {topic!r}: {missing_acl(meta.error, 'READ', f'TOPIC {topic}', conf or {})}")
    if meta is None or meta.error is not None:
        raise DeadLetterError(f"topic {topic!r} does not exist or cannot be described: {meta.error if meta else ''}")
    parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
    ends: dict[int, int] = {}
    for tp in parts:
        _low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        ends[tp.partition] = high
    starts = parts
    if start_committed:
        starts = [
            TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            for tp in _committed(consumer, parts, timeout, conf or {})
        ]
    else:
        starts = [TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in parts]
    positions = {tp.partition: (tp.offset if tp.offset >= 0 else 0) for tp in starts}
    todo = {p for p, end in ends.items() if positions[p] < end}
    if not todo:
        return
    consumer.assign(starts)
    deadline = time.monotonic() + timeout
    while todo:
        msg = consumer.poll(0.2)
        if msg is None:
            if time.monotonic() > deadline:
                raise DeadLetterError(f"timed out reading {topic!r}; partitions {sorted(todo)} not read to the end")
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED and not start_committed:
                continue  # inspect never uses its group: its principal needs no ACL on one
            raise DeadLetterError(f"reading {topic!r}: {err}")
        deadline = time.monotonic() + timeout
        p = msg.partition()
        if p is None or p not in todo:
            continue
        yield msg
        if (msg.offset() or 0) + 1 >= ends[p]:
            todo.discard(p)


def _dead_letter(msg: Any) -> DeadLetter:
    ts_type, ts = msg.timestamp()
    return DeadLetter(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=ts if ts_type else None,
        key=msg.key(),
        value=msg.value(),
        headers=list(msg.headers() or []),
    )


def read_dead_letters(
    conf: dict[str, Any], topic: str, *, limit: int | None = None, reason: str | None = None, timeout: float = 10.0
) -> Iterator[DeadLetter]:
    """The dead letters in ``topic`` from the beginning (no consumer group offsets are changed)."""
    consumer = _reader(conf, f"govbus.dlq-inspect.{uuid.uuid4().hex[:12]}")
    count = 0
    try:
        for msg in _read_until_end(consumer, topic, start_committed=False, timeout=timeout, conf=conf):
            dl = _dead_letter(msg)
            if reason is not None and not (dl.reason or "").startswith(reason):
                continue
            yield dl
            count += 1
            if limit is not None and count >= limit:
                return
    finally:
        consumer.close()


@dataclasses.dataclass(frozen=True)
class ReplayReport:
    replayed: int
    passed_over: int
    target: str


def _replay_refused(
    producer: Any, exc: KafkaException, fatal: list[KafkaError], target: str, conf: dict[str, Any]
) -> DeadLetterError:
    """The replay producer went fatal (no producer id: no WRITE): the cause, with the ACL named."""
    cause: KafkaError = exc.args[0]
    if cause.code() == KafkaError._FATAL:
        try:
            producer.poll(0)  # serves error_cb, or raises the fatal error itself
        except KafkaException as again:
            cause = again.args[0]
        cause = fatal[0] if fatal and cause.code() == KafkaError._FATAL else cause
    text = missing_acl(cause, "WRITE", f"TOPIC {target}", conf) if cause.code() in _ACL_REFUSALS else str(cause)
    return DeadLetterError(
        f"replay to {target!r} failed: {text}; nothing was committed, so running it again replays the same dead letters"
    )


def replay_dead_letters(
    conf: dict[str, Any],
    dlq_topic: str,
    target_topic: str,
    *,
    group: str,
    reason: str | None = None,
    limit: int | None = None,
    from_beginning: bool = False,
    dry_run: bool = False,
    timeout: float = 10.0,
    on_record: Callable[[DeadLetter, bool], None] | None = None,
) -> ReplayReport:
    """Re-produces dead letters to ``target_topic`` (the sink's replay topic) and records progress.

    Progress is the committed offset of consumer group ``group`` on the dead-letter topic, so a
    dead letter is replayed once; ``from_beginning`` starts over. Records whose reason does not
    start with ``reason`` are passed over (and count as done). ``dry_run`` neither produces nor
    commits. The original key, value and headers are replayed unchanged (error headers included,
    as history), plus ``govbus.replay.time``.
    """
    consumer = _reader(conf, group)
    fatal: list[KafkaError] = []  # the cause behind "Local: Fatal error" (e.g. no producer id: no WRITE)
    producer = new_producer(
        {
            **conf,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "logger": log,
            "error_cb": lambda e: fatal.append(e) if e.fatal() else None,
        }
    )
    replayed = passed = 0
    errors: list[str] = []
    next_offsets: dict[int, int] = {}
    now = format_time(datetime.now(UTC)).encode()
    try:
        for msg in _read_until_end(
            consumer, dlq_topic, start_committed=not from_beginning, timeout=timeout, conf={**conf, "group.id": group}
        ):
            if limit is not None and replayed >= limit:
                break
            dl = _dead_letter(msg)
            chosen = reason is None or (dl.reason or "").startswith(reason)
            if on_record is not None:
                on_record(dl, chosen)
            if chosen:
                replayed += 1
                if not dry_run:
                    headers: list[tuple[str, str | bytes | None]] = [
                        (k, v) for k, v in dl.headers if k != H_REPLAYED_AT
                    ]
                    headers.append((H_REPLAYED_AT, now))

                    def report(err: KafkaError | None, _m: object) -> None:
                        cause = fatal[0] if err is not None and err.code() == KafkaError._FATAL and fatal else err
                        if cause is not None and cause.code() in _ACL_REFUSALS:
                            errors.append(missing_acl(cause, "WRITE", f"TOPIC {target_topic}", conf))
                        elif cause is not None:
                            errors.append(str(cause))

                    try:
                        producer.produce(target_topic, value=dl.value, key=dl.key, headers=headers, on_delivery=report)
                        producer.poll(0)
                    except KafkaException as exc:
                        raise _replay_refused(producer, exc, fatal, target_topic, conf) from None
            else:
                passed += 1
            next_offsets[dl.partition] = dl.offset + 1
        if dry_run:
            return ReplayReport(replayed, passed, target_topic)
        try:
            remaining = producer.flush(timeout)
        except KafkaException as exc:  # the fatal error can surface here rather than in a delivery report
            raise _replay_refused(producer, exc, fatal, target_topic, conf) from None
        if remaining or errors:
            raise DeadLetterError(
                f"replay to {target_topic!r} failed ({remaining} unsent, errors: {'; '.join(errors[:3])}); "
                "nothing was committed, so running it again replays the same dead letters"
            )
        if next_offsets:
            consumer.commit(
                offsets=[TopicPartition(dlq_topic, p, o) for p, o in sorted(next_offsets.items())], asynchronous=False
            )
        return ReplayReport(replayed, passed, target_topic)
    finally:
        consumer.close()
