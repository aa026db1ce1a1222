"""The intake stage: size check → verify → decode, turning one consumed record into :class:`Work`.

Order matters: size first (cheapest, and no oversize record reaches the parsers), then the
signature over the raw bytes (untrusted bytes are not parsed before they are authenticated),
then decoding. A record that fails any step becomes a dead letter carrying the step's reason.

With the compiled core (:mod:`govbus._accel`), decoding is batched: ``intake(msg, epoch,
defer=True)`` leaves single-object records undecoded and :meth:`Intake.settle` decodes all of
them in one native call that also renders each record's JSON Lines line (:class:`NativeRecord`).
A record the native code refuses is decoded again on the Python path, which words the reason;
a record it cannot judge (Confluent framing) is decoded on the Python path only; a record it
fails on (a panic) is dead-lettered with reason ``internal-error``.

For a sink that reads ``record.event`` / ``record.attributes`` (``Intake(events=True)``: the
sink's ``reads_events``), the same native pass also builds them (:func:`govbus._accel.event_builder`),
so they are not decoded a second time in Python; one it could not build decodes lazily as before.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_NOT_AVAILABLE

from govbus._accel import event_builder as native_event_builder
from govbus._accel import intake_batch as native_intake_batch
from govbus._accel import intake_start as native_intake_start
from govbus._accel import message_reader as native_message_reader
from govbus._accel import renderer_for as native_renderer
from govbus._accel import work_builder as native_work_builder
from govbus._contract import SINGLE_OBJECT_MAGIC, Decoder
from govbus._heartbeat import HEARTBEAT_KEY_PREFIX, is_heartbeat
from govbus._record import from_record
from govbus.consumers._dlq import H_PARTITION
from govbus.consumers._native_record import NativeRecord
from govbus.consumers._native_verify import NativeVerify, _action
from govbus.consumers._pipeline import Failure, Work
from govbus.consumers._spi import DeliveredRecord
from govbus.consumers._verify import Verification
from govbus.errors import DecodeError
from govbus.signing._verdict import VALID, Verdict

__all__ = ["Intake", "Prepared", "Started"]

# A consumed record as the native intake read it: (topic, partition, offset, key, value, headers,
# timestamp_ms, broker time (LogAppendTime) or None, size, authentic (SignatureChecker.check's
# answer) or None, rendered (RecordRenderer.render's answer for the verdict "valid"/"unverified")).
# A record it rendered, when it builds the records (``works``): (its Work, delivering its
# NativeRecord of that verdict, authentic or None, broker time or None, legacy fingerprint).
Prepared = tuple[Any, ...]

log = logging.getLogger("govbus.consumers.intake")

_DECODE_ERROR = f"{DecodeError.__module__}.{DecodeError.__qualname__}"
# Smaller batches are prepared at once: their byte work is too short to overlap anything, and the
# consume loop would hand them on one poll later (latency at low rates).
START_MIN_RECORDS = 64


class Started:
    """A consumed batch whose native check + render runs on a thread beside the consume loop
    (:meth:`Intake.start`); :meth:`rows` waits for it. ``skip``: partitions whose records in it
    must not be taken (revoked, or rewound by a hold, after it was consumed)."""

    __slots__ = ("_pending", "msgs", "skip")

    def __init__(self, msgs: list[Any], pending: Any) -> None:
        self.msgs = msgs
        self._pending = pending
        self.skip: set[tuple[str, int]] = set()

    def rows(self) -> list[Prepared | None] | None:
        """The batch's rows, as :meth:`Intake.prepare` returns them (None: judge it record by record)."""
        try:
            rows: list[Prepared | None] = self._pending.finish()
        except Exception:  # a fault of the binding itself: the per-record path judges the batch
            log.exception("native intake failed on a batch of %d records; judging them one by one", len(self.msgs))
            return None
        return rows


_INTERNAL = "internal-error"


class Intake:
    """Judges consumed records (``confluent_kafka.Message`` or anything with its accessors)."""

    def __init__(
        self,
        decoder: Decoder,
        *,
        verification: Verification | None = None,
        max_record_bytes: int = 1 << 20,
        replay_topic: str | None = None,
        native: bool = True,
        deliver_heartbeats: bool = True,
        events: bool = False,
        draft: Any | None = None,
    ) -> None:
        self.decoder = decoder
        # False: producer heartbeats are acknowledged without delivery (unless they reveal a gap).
        self.deliver_heartbeats = deliver_heartbeats
        self.verification = verification
        self.max_record_bytes = max_record_bytes
        self.replay_topic = replay_topic
        self._renderer = native_renderer(decoder) if native else None
        # The sink reads the Python event: the native pass builds it (None: decoded lazily if read).
        self._events = native_event_builder() if events and self._renderer is not None else None
        self._event_failures_logged = 0
        # Decodes the event of a NativeRecord when a sink asks for it (not counted twice as legacy).
        self._lazy_decoder = Decoder(decoder.reader.version, resolver=decoder.resolver)
        self._pending: list[tuple[Work, str, str, bool]] = []
        # Records whose verification waits for settle() too: (work, signed partition, broker time).
        self._native_verify = NativeVerify.build(verification) if native else None
        self._pending_verify: list[tuple[Work, int, int | None]] = []
        # Records the compiled core refused but the Python path accepted (a bug to report).
        self.native_disagreements = 0
        # Transient failures made so far (the consume loop holds their partitions; it looks for
        # them in a batch only when this moved).
        self.transient_failures = 0
        # The whole-batch intake (prepare/take), when every stage of this intake has a native path.
        whole = self._renderer is not None and (verification is None or self._native_verify is not None)
        self._batch = native_intake_batch() if whole else None
        self._start = native_intake_start() if whole else None
        # Builds the Work + NativeRecord of each rendered record in the same call (None: take() does).
        self._works = native_work_builder(Work, NativeRecord, self._lazy_decoder) if whole else None
        # Reads the consumed messages' fields in place (their headers are read from the message
        # when someone looks: most records are delivered without that).
        self._reader = native_message_reader() if whole else None
        # What the sink has drafted at intake (the audit ledger's entry format, the otlp sink's log
        # record format): the records the batch intake renders get that drafted instead of their
        # JSON Lines line (NativeRecord._draft).
        self._draft = draft if whole and self._works is not None else None

    @property
    def native(self) -> bool:
        """Whether the compiled core decodes records here."""
        return self._renderer is not None

    @property
    def native_events(self) -> bool:
        """Whether the compiled core builds the Python events of the records it decodes here."""
        return self._events is not None

    @property
    def native_event_failures(self) -> int:
        """Records whose event the compiled core could not build (decoded on the Python path instead)."""
        return 0 if self._events is None else int(self._events.failures)

    def __call__(self, msg: Any, epoch: int, *, defer: bool = False) -> Work:
        """The :class:`Work` for ``msg``; with ``defer`` (and the compiled core) its decoding waits
        for :meth:`settle`, which must run before the work is handed on."""
        work = self._judge(msg, epoch)
        if not defer:
            self.settle()
        return work

    def prepare(self, msgs: list[Any]) -> list[Prepared | None] | None:
        """Reads, size-checks, signature-checks and renders a consumed batch in one native call.

        One entry per message, in order: a :data:`Prepared` row for :meth:`take`, or None for a
        record the per-record path (``__call__``) must judge (a consumer error, the replay topic,
        no value, oversize, Confluent framing, odd headers). None instead of the list: no native
        intake here (``GOVBUS_NATIVE=off``, no compiled core, or a verifier that is not govbus's).
        """
        batch = self._batch
        if batch is None:
            return None
        checker, verdict = self._checking()
        try:
            rows: list[Prepared | None] = batch(
                self._renderer, checker, msgs, self.max_record_bytes, self.replay_topic, verdict,
                self._events, self._works, self._reader, self._draft,
            )  # fmt: skip
        except Exception:  # a fault of the binding itself: the per-record path judges the batch
            log.exception("native intake failed on a batch of %d records; judging them one by one", len(msgs))
            return None
        return rows

    def start(self, msgs: list[Any]) -> Started | None:
        """:meth:`prepare` in two steps, so the byte work of this batch runs while the consume loop
        goes on: the accessors are read now, the rows come from :meth:`Started.rows`. None: prepare
        it at once instead (a small batch, or no native intake here)."""
        start = self._start
        # Events are built with the GIL from what the decode read (borrowed from the batch's
        # bytes), so a sink that reads them has its batches prepared at once.
        if start is None or len(msgs) < START_MIN_RECORDS or self._events is not None:
            return None
        checker, verdict = self._checking()
        try:
            pending = start(
                self._renderer, checker, msgs, self.max_record_bytes, self.replay_topic, verdict, self._works,
                self._draft,
            )  # fmt: skip
        except Exception:
            log.exception("native intake could not start on a batch of %d records; preparing it at once", len(msgs))
            return None
        return Started(msgs, pending)

    def _checking(self) -> tuple[Any, str]:
        """The native checker (its keys in sync with the keyring) or None, and the verdict a record
        it authenticates is rendered with ("unverified" without verification)."""
        nv = self._native_verify
        if nv is None:
            return None, "unverified"
        nv.sync_keys()
        return nv.checker, "valid"

    def take(self, row: Prepared, epoch: int) -> Work:
        """The :class:`Work` for a row of :meth:`prepare` (records of a partition in offset order,
        interleaved with ``__call__`` for the others as they were consumed); rows whose outcome
        needs more than the native answer wait for :meth:`settle`, as deferred records do."""
        if len(row) == 4:  # the compiled core built the Work and its record: the verdict's tail only
            work: Work = row[0]
            _, authentic, broker_time, legacy = row
            work.epoch = epoch
            nv = self._native_verify
            if nv is not None:
                if self._pending_verify:
                    self._settle_verify()  # the sequence tracker sees each partition's records in order
                v = nv.judge_one(work.value, work.key, work.headers, work.partition, broker_time, authentic)  # type: ignore[arg-type]
                if v is not VALID:
                    work.record = None  # rendered for "valid": not what this verdict delivers
                    self._not_valid(work, v)
                    return work
            if legacy:
                self.decoder.legacy_fingerprints += 1
            self._skip_heartbeat(work)
            return work
        topic, partition, offset, key, value, headers, timestamp_ms, broker_time, size, authentic, rendered = row
        work = Work(topic, partition, offset, epoch, size, key, value, headers, timestamp_ms)
        verdict = "unverified"
        nv = self._native_verify
        if nv is not None:
            if self._pending_verify:
                self._settle_verify()  # the sequence tracker sees each partition's records in order
            v = nv.judge_one(value, key, headers, partition, broker_time, authentic)
            if v is not VALID:
                self._not_valid(work, v)
                return work
            verdict = "valid"
        if type(rendered) is not tuple:  # a reason, "Python only" or a panic: settle() words it
            self._pending.append((work, verdict, "", False))
            return work
        if len(rendered) == 3:
            line, event_id, legacy = rendered
            event = attrs = None
        else:  # the event and attributes built in the same pass (None: not built)
            line, event_id, legacy, event, attrs = rendered
        if legacy:
            self.decoder.legacy_fingerprints += 1
        work.record = NativeRecord.create(
            line, event_id, self._lazy_decoder, topic, partition, offset, timestamp_ms, key, value, headers,
            verdict, "", False, event, attrs,
        )  # fmt: skip
        self._skip_heartbeat(work)
        return work

    def _skip_heartbeat(self, work: Work) -> None:
        """A producer heartbeat is acknowledged without delivery (unless ``deliver_heartbeats``)."""
        key = work.key
        if (
            not self.deliver_heartbeats
            and key is not None
            and key.startswith(HEARTBEAT_KEY_PREFIX)  # only candidates pay for the event
            and work.record is not None
            and is_heartbeat(work.record.event)
        ):
            work.record = None
            work.skip = "heartbeat"

    def _not_valid(self, work: Work, v: Verdict) -> None:
        """What the policy does with a record the batch intake rendered as "valid" but whose
        verdict (key status, sequence) is ``v``."""
        assert self._native_verify is not None
        action, verdict, detail = _action(self._native_verify.verification.policy, v)
        if action == "dead-letter":
            work.failure = Failure(f"verify:{verdict}", detail or verdict, verdict=verdict)
        elif action == "skip":
            work.skip = f"verify:{verdict}"
        else:  # rendered for "valid": render again with this verdict
            self._pending.append((work, verdict, detail, action == "flag"))

    def _judge(self, msg: Any, epoch: int) -> Work:
        topic: str = msg.topic()
        partition: int = msg.partition()
        offset: int = msg.offset()
        value: bytes | None = msg.value()
        key: bytes | None = msg.key()
        headers = msg.headers() or []
        ts_type, ts = msg.timestamp()
        timestamp_ms = None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts
        size = (len(value) if value else 0) + (len(key) if key else 0)
        for _, v in headers:
            if v:
                size += len(v)
        replayed = topic == self.replay_topic
        work = Work(topic, partition, offset, epoch, size, key, value, headers, timestamp_ms, replayed=replayed)
        if value is None:
            work.failure = Failure("decode:empty", "record has no value (tombstone)", exception=_DECODE_ERROR)
            return work
        if len(value) > self.max_record_bytes:
            work.failure = Failure(
                "oversize",
                f"record value is {len(value)} bytes; this sink accepts at most {self.max_record_bytes} "
                "(GOVBUS_SINK__MAX_RECORD_BYTES)",
            )
            return work
        verdict, detail, flagged = "unverified", "", False
        if self.verification is not None:
            if self._native_verify is not None and not replayed and value[:2] == SINGLE_OBJECT_MAGIC:
                broker_time = ts if ts_type == TIMESTAMP_LOG_APPEND_TIME else None
                self._pending_verify.append((work, partition, broker_time))
                return work
            if self._pending_verify:
                self._settle_verify()  # the sequence tracker sees each partition's records in order
            signed_partition = partition
            if replayed:
                # Signatures bind the partition the record was first written to.
                original = _header_int(headers, H_PARTITION)
                if original is None:
                    work.failure = Failure("replay:no-origin", f"replayed record lacks a valid {H_PARTITION} header")
                    return work
                signed_partition = original
            action, verdict, detail = self.verification.judge(
                value,
                key,
                headers,
                signed_partition,
                broker_time_ms=ts if ts_type == TIMESTAMP_LOG_APPEND_TIME else None,
                replayed=replayed,
            )
            if action == "dead-letter":
                work.failure = Failure(f"verify:{verdict}", detail or verdict, verdict=verdict)
                return work
            if action == "skip":
                work.skip = f"verify:{verdict}"
                return work
            flagged = action == "flag"
        if self._renderer is not None and value[:2] == SINGLE_OBJECT_MAGIC:
            self._pending.append((work, verdict, detail, flagged))
            return work
        self._decode(work, verdict, detail, flagged)
        return work

    def settle(self) -> None:
        """Verifies and decodes the records deferred since the last call, one native call each."""
        if self._pending_verify:
            self._settle_verify()
        pending, self._pending = self._pending, []
        if not pending:
            self._log_event_failures()
            return
        assert self._renderer is not None
        try:
            results = self._renderer.render([(w.value, w.headers, v, d, f) for w, v, d, f in pending], self._events)
        except Exception:  # a fault of the binding itself: the Python path judges the whole batch
            log.exception("native decoder failed on a batch of %d records; decoding them in Python", len(pending))
            results = [None] * len(pending)
        decoder = self._lazy_decoder
        for (work, verdict, detail, flagged), result in zip(pending, results, strict=True):
            if type(result) is tuple:
                if len(result) == 3:
                    line, event_id, legacy = result
                    event = attrs = None
                else:
                    line, event_id, legacy, event, attrs = result
                if legacy:
                    self.decoder.legacy_fingerprints += 1
                work.record = NativeRecord.create(
                    line, event_id, decoder, work.topic, work.partition, work.offset, work.timestamp_ms,
                    work.key, work.value or b"", work.headers, verdict, detail, flagged, event, attrs,
                )  # fmt: skip
                if not flagged:
                    self._skip_heartbeat(work)
            elif result == _INTERNAL:
                work.failure = Failure(
                    _INTERNAL,
                    "the compiled decoder failed on this record (a govbus bug: please report it)",
                    verdict=None if verdict == "unverified" else verdict,
                    exception="pyo3_runtime.PanicException",
                )
            elif self._decode(work, verdict, detail, flagged) and result is not None:
                self.native_disagreements += 1
                log.warning("native decoder refused %s[%d]@%d (%s); the Python path accepted it",
                            work.topic, work.partition, work.offset, result)  # fmt: skip
        self._log_event_failures()

    def _log_event_failures(self) -> None:
        failures = self.native_event_failures  # once per consumed batch, not per record
        if failures != self._event_failures_logged:
            log.warning("the compiled core could not build the event of %d record(s); it decodes on the Python "
                        "path instead (a govbus bug: please report it)", failures - self._event_failures_logged)  # fmt: skip
            self._event_failures_logged = failures

    def _settle_verify(self) -> None:
        pending, self._pending_verify = self._pending_verify, []
        assert self._native_verify is not None
        judged = self._native_verify.judge([(w.value or b"", w.key, w.headers, p, t) for w, p, t in pending])
        for (work, _, _), (action, verdict, detail) in zip(pending, judged, strict=True):
            if action == "dead-letter":
                work.failure = Failure(f"verify:{verdict}", detail or verdict, verdict=verdict)
            elif action == "skip":
                work.skip = f"verify:{verdict}"
            elif self._renderer is not None:
                self._pending.append((work, verdict, detail, action == "flag"))
            else:
                self._decode(work, verdict, detail, action == "flag")

    def _decode(self, work: Work, verdict: str, detail: str, flagged: bool) -> bool:
        """Decodes ``work`` on the Python path (the reference); True when it is deliverable."""
        value = work.value
        headers = work.headers
        try:
            decoded = from_record(value, headers, self.decoder)
        except DecodeError as exc:
            self.transient_failures += exc.transient
            work.failure = Failure(
                f"decode:{exc.reason}",
                exc.message,
                verdict=None if verdict == "unverified" else verdict,
                exception=_DECODE_ERROR,
                transient=exc.transient,
            )
            return False
        assert value is not None
        if not self.deliver_heartbeats and not flagged and is_heartbeat(decoded.event):
            work.skip = "heartbeat"
            return False
        work.record = DeliveredRecord(
            decoded.event,
            decoded.attributes,
            work.topic,
            work.partition,
            work.offset,
            work.timestamp_ms,
            work.key,
            value,
            headers,
            verdict,
            detail,
            flagged,
        )
        return True


def _header_int(headers: Any, name: str) -> int | None:
    raw = None
    for h, v in headers:
        if h == name:
            raw = v
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None
