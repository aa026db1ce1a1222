"""librdkafka's side of the bus: the producer client, its delivery reports and errors, and the
bookkeeping they feed (counters, the delivered watermark of spooled records, flush waiters).

:class:`Delivery` wraps the confluent-kafka ``Producer``: it classifies every report and error
(delivered; refused for good -> a counted failure in ``dead/``; purged, fatal or refused by an ACL
-> kept for the next Bus; refused for another record's size -> re-produced; credentials or TLS
refused -> ``health().cause``) and holds what they tell about the broker.

:class:`DeliveryTracker` threads: the sender thread registers the spooled records it hands over (``taking``) and, as the
only thread that calls ``producer.poll()`` (``close()`` takes over once it stopped), resolves
them from the delivery reports. Each counter has a single writer, so plain ints suffice under the
GIL; ``submitted`` (many emitting threads) is an ``itertools.count``; the flush waiters, touched
only when someone flushes, have a lock.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError

from govbus._librdkafka import new_producer
from govbus.producer._batch import OutgoingRecord, record_size
from govbus.producer._errors import ProducerFatalError
from govbus.producer._health import AccessProblem, authentication_failed, authorization_failed
from govbus.producer._spool import TYPE_RECORD, Spool, pack_record

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from govbus._settings import KafkaSettings

log = logging.getLogger("govbus.producer")

PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
# Refusals no retry can cure: the credentials or the ACLs must change (see producer._health).
AUTHENTICATION = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
AUTHORIZATION = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED})
# A record refused for the size of the batch it shared is re-produced at most this often (the
# bound for a topic limit we could not read, or one that changed).
SIZE_RETRIES = 3


class DeliveryTracker:
    def __init__(self, first_unsent: int) -> None:
        self._submitted = itertools.count()  # next() is atomic: emit() may run on many threads
        # Bound once: emit() calls it for every event.
        self.submitted_one: Callable[[], int] = self._submitted.__next__
        self.delivered = 0  # sender thread (delivery reports) only
        self.failed = 0  # sender thread only
        self.spooled = 0  # the thread that writes the spool, under the spool lock
        self.rejected = 0  # under _lock
        # Seqs taken from the spool (or journaled) and handed towards Kafka, not yet resolved, in
        # increasing order; resolved ones that are not at the head wait in _early.
        self._inflight: deque[int] = deque()
        self._early: set[int] = set()
        # Every spooled seq below this was taken (sender thread writes it, others read it).
        self.unsent = first_unsent
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, threading.Event]] = []
        # The lowest target a flush waits for: a delivery report only takes the lock when reached.
        self.next_target: float = math.inf

    # -- counting -------------------------------------------------------------------------------

    @property
    def submitted(self) -> int:
        # itertools.count keeps its value in C; its repr is the only public read-out ("count(5)").
        return int(repr(self._submitted)[6:-1])

    def rejected_one(self) -> None:
        with self._lock:
            self.rejected += 1

    # -- the watermark --------------------------------------------------------------------------

    def taking(self, seq: int) -> None:
        """Sender: ``seq`` (a spooled record) is about to be handed over."""
        self._inflight.append(seq)

    def untake(self) -> None:
        """Sender: the last ``taking`` did not happen after all."""
        self._inflight.pop()

    def resolve(self, seq: int) -> None:
        """A spooled record was delivered or dead-lettered."""
        inflight = self._inflight
        if inflight and inflight[0] == seq:
            inflight.popleft()
            early = self._early
            while inflight and inflight[0] in early:
                early.remove(inflight.popleft())
        else:
            self._early.add(seq)

    def watermark(self) -> int:
        """Every spooled seq below this is resolved: its segment may go."""
        unsent = self.unsent  # read first: a seq taken after this read is >= it
        inflight = self._inflight
        try:
            return min(inflight[0], unsent)
        except IndexError:
            return unsent

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # -- flush ----------------------------------------------------------------------------------

    def resolved(self) -> int:
        return self.delivered + self.failed

    def wait_for(self, target: int, timeout: float | None) -> bool:
        """Block until ``resolved() >= target`` or the timeout; True if reached."""
        if self.resolved() >= target:
            return True
        event = threading.Event()
        entry = (target, event)
        with self._lock:
            self._waiters.append(entry)
            self.next_target = min(self.next_target, target)
        try:
            if self.resolved() >= target:
                return True
            event.wait(timeout)
            return self.resolved() >= target  # wake_all() (a fatal error) also ends the wait
        finally:
            with self._lock:
                self._waiters.remove(entry)
                self.next_target = min((t for t, _ in self._waiters), default=math.inf)

    def wake_waiters(self) -> None:
        """After resolving records: release the flushes whose target is reached."""
        resolved = self.resolved()
        if resolved < self.next_target:
            return
        with self._lock:
            for target, event in self._waiters:
                if resolved >= target:
                    event.set()
            self.next_target = min((t for t, _ in self._waiters if t > resolved), default=math.inf)

    def wake_all(self) -> None:
        with self._lock:
            for _target, event in self._waiters:
                event.set()


def tls_refused(err: KafkaError) -> bool:
    """A TLS handshake that no retry can fix: the broker rejected our certificate (TLS alert), or
    we do not trust the broker's (wrong CA)."""
    text = err.str()
    if err.code() == KafkaError._SSL:
        return "certificate verify failed" in text
    return err.code() == KafkaError._TRANSPORT and "alert" in text and "certificate" in text


class LibrdkafkaLog:
    """librdkafka's log, minus the connection failures it repeats on every reconnect attempt: the
    bus reports the outage itself (once, as a state change, and in health())."""

    def __init__(self) -> None:
        self._log = logging.getLogger("govbus.producer.librdkafka")

    def log(self, level: int, message: str, *args: Any) -> None:
        text = message % args if args else message
        if text.startswith("FAIL ") or "Connection refused" in text:
            level = logging.DEBUG
        self._log.log(level, "%s", text)


class Delivery:
    """The librdkafka producer, its delivery reports and errors, and what they say about the broker.

    Built by the Bus with ``govbus._librdkafka.new_producer`` (a refused configuration is a
    ``ConfigError`` naming the ``GOVBUS_`` variable). Reports and errors are served on the sender
    thread (its ``poll()``), by ``close()`` once the sender stopped; the poller writes
    ``reachable``/``last_contact`` from metadata answers.
    """

    def __init__(
        self, conf: dict[str, Any], topic: str, kafka: KafkaSettings, spool: Spool, tracker: DeliveryTracker
    ) -> None:
        self.topic = topic
        self._kafka = kafka
        self._spool = spool
        self.tracker = tracker
        self.reachable: bool | None = None  # None: no answer yet
        self.down_since = 0.0
        self.probe_now = False  # the poller asks for metadata at once: is the broker back?
        self.last_contact: float | None = None
        self.fatal: KafkaError | None = None
        self.access: AccessProblem | None = None  # credentials or an ACL refused: health not ok
        self.last_error: str | None = None
        self._failed_logged = 0
        # Memory-only records purged at close / after a fatal error: written to the spool by close().
        self.rescue: list[OutgoingRecord] = []
        # Records refused with MSG_SIZE_TOO_LARGE, waiting for the topic's limit to judge them.
        self.size_refused: list[tuple[OutgoingRecord, KafkaError]] = []
        self.topic_limit: int | None = None  # the topic's max.message.bytes, once read (poller)
        self.producer: Producer = new_producer({**conf, "error_cb": self.on_error, "logger": LibrdkafkaLog()})

    # -- delivery reports ------------------------------------------------------------------------

    def on_delivery(self, record: OutgoingRecord, err: KafkaError | None, msg: Any) -> None:
        tracker = self.tracker
        if err is None:
            tracker.delivered += 1
            self.reachable = True
            if not record._keep:
                tracker.resolve(record.seq)
        else:
            code = err.code()
            denied = code in AUTHORIZATION
            if denied:
                self.deny(err)  # not the record's fault: keep it, as for a fatal error
            fatal = err.fatal() or code == KafkaError._FATAL  # the cause comes through poll()/error_cb
            if denied or code in PURGED or fatal or self.fatal is not None:
                if fatal:
                    self.on_fatal(err)
                if record._keep:
                    self.rescue.append(record)  # in memory only: written to the spool by close()
                return  # a spooled record stays in the spool for the next start
            if code == KafkaError.MSG_SIZE_TOO_LARGE and record._size_retries < SIZE_RETRIES:
                # The broker refuses a whole batch for one record too large: judged (retried or
                # failed) by the sender once the topic's limit is known.
                self.size_refused.append((record, err))
                return
            self.refused(record, err, msg.key(), msg.value(), msg.headers() or [])
        if tracker.delivered + tracker.failed >= tracker.next_target:
            tracker.wake_waiters()

    def judge_size_refused(self) -> list[OutgoingRecord]:
        """Sender: the records refused only for the batch they shared (each fits the topic's limit
        alone), to produce again; the ones too large themselves become counted failures."""
        limit = self.topic_limit
        if limit is None:
            return []
        retry: list[OutgoingRecord] = []
        refused, self.size_refused = self.size_refused, []
        for record, err in refused:
            if record_size(record) <= limit:
                record._size_retries += 1
                retry.append(record)
            else:
                self.refused(record, err, record.key, record.value, record.headers)
        retry.sort(key=lambda r: r.seq)  # back in emit order among themselves
        return retry

    def refused(
        self, record: OutgoingRecord, err: KafkaError, key: bytes, value: bytes, headers: Sequence[tuple[str, Any]]
    ) -> None:
        """Kafka refused a record for good (librdkafka retries everything else forever)."""
        self.failed_once(f"record {record.seq} refused by Kafka: {err.name()}: {err.str()}")
        self._spool.dead_letter(record.seq, TYPE_RECORD, pack_record(key, value, list(headers)))
        self.tracker.failed += 1
        if not record._keep:
            self.tracker.resolve(record.seq)
        self.tracker.wake_waiters()

    def failed_once(self, message: str) -> None:
        """A counted failure: the last error, logged (the first ten, then every thousandth)."""
        self.last_error = message
        self._failed_logged += 1
        if self._failed_logged <= 10 or self._failed_logged % 1000 == 0:
            log.error("%s (kept in %s/dead; %d so far)", message, self._spool.directory, self._failed_logged)

    # -- errors ----------------------------------------------------------------------------------

    def on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.on_fatal(err)
            return
        code = err.code()
        if code in AUTHENTICATION or tls_refused(err):
            if self.access is None or self.access.cause != "auth":
                log.error("govbus producer: %s", err.str())  # once: librdkafka repeats it every reconnect
            if self.access is None or not self.access.sticky:
                self.access = authentication_failed(err.str(), self._kafka)
            self.last_error = f"{err.name()}: {err.str()}"
        elif code == KafkaError._ALL_BROKERS_DOWN:
            if self.reachable is not False:
                log.info("govbus producer: every broker is unreachable (%s)", err.str())
                self.down_since = time.monotonic()
            self.reachable = False
            self.probe_now = True  # a metadata answer is the proof that it is back (or never left)
            self.last_error = f"{err.name()}: {err.str()}"
        elif code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            log.debug("kafka: %s", err.str())
        else:
            self.last_error = f"{err.name()}: {err.str()}"
            log.warning("kafka: %s: %s", err.name(), err.str())

    def deny(self, err: KafkaError) -> None:
        """A record was refused by an ACL: stop publishing (spool) until the Bus is recreated."""
        if self.access is not None and self.access.sticky:
            return
        if err.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            # The idempotent producer's id needs WRITE on some topic (or IDEMPOTENT_WRITE, KIP-679).
            operation, resource = "WRITE (or IDEMPOTENT_WRITE on the cluster)", f"topic {self.topic}"
        else:
            operation, resource = "WRITE", f"topic {self.topic}"
        self.access = authorization_failed(err.name(), operation, resource, self._kafka, sticky=True)
        self.last_error = f"{err.name()}: {err.str()}"
        log.error("govbus producer: %s", self.access.reason)
        self.tracker.wake_all()

    def denied(self) -> bool:
        """Refused by an ACL for good: nothing is published until the Bus is recreated."""
        access = self.access
        return access is not None and access.sticky

    def on_fatal(self, err: KafkaError) -> None:
        if err.code() in AUTHORIZATION:
            self.deny(err)
        if self.fatal is not None and self.fatal.code() == KafkaError._FATAL and err.code() != KafkaError._FATAL:
            self.fatal = None  # "Local: Fatal error" came first; this one names the cause
        if self.fatal is None:
            self.fatal = err
            self.last_error = f"fatal: {err.name()}: {err.str()}"
            log.critical(
                "govbus producer: fatal error %s: %s. emit() now raises ProducerFatalError; accepted events "
                "are kept in the spool %s for the next Bus",
                err.name(),
                err.str(),
                self._spool.directory,
            )
            self.tracker.wake_all()

    def fatal_error(self) -> ProducerFatalError:
        assert self.fatal is not None
        return ProducerFatalError(self.fatal.name(), self.fatal.str())

    def broker_away(self, debounce: float) -> bool:
        """Every broker unreachable for at least ``debounce`` s. librdkafka also reports "all
        brokers down" for a moment when it swaps the bootstrap connection for the real one; an
        outage is one that lasts."""
        return self.reachable is False and time.monotonic() - self.down_since >= debounce
