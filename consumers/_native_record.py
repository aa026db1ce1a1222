"""A delivered record decoded by the compiled core: its JSON Lines line is rendered already; the
Python event and CloudEvents attributes are built by the compiled core in the same pass for sinks
that read them (``reads_events``), and otherwise decoded on the Python path only if asked for."""

from __future__ import annotations

from typing import Any

from govbus import _cloudevents as ce
from govbus._cloudevents import CloudEventAttributes
from govbus._contract import Decoder
from govbus._record import from_record
from govbus.consumers._spi import DeliveredRecord
from govbus.event import GovernanceEvent

__all__ = ["NativeRecord"]

# DeliveredRecord's own slot setters (the properties below shadow two of them).
_SET = {name: getattr(DeliveredRecord, name).__set__ for name in DeliveredRecord.__dataclass_fields__}
# ... bound to module names, with NativeRecord's own slots' setters (bound in after the class):
# create() runs for every delivered record, and a dict lookup or object.__setattr__ per field
# doubled its cost.
_set_topic, _set_partition, _set_offset, _set_timestamp, _set_key, _set_value, _set_headers = (
    _SET[n] for n in ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers")
)
_set_verdict, _set_detail, _set_flagged = (_SET[n] for n in ("verdict", "verdict_detail", "flagged"))
_new = object.__new__


class NativeRecord(DeliveredRecord):
    """A :class:`DeliveredRecord` whose ``line`` is what ``_jsonl.encode_line`` would give.

    ``event`` and ``attributes`` are the compiled core's when it built them (``event``/``attrs``
    given), else they decode lazily on the Python path (with a decoder of the same reader
    version), so text sinks never pay for them; ``event_id`` is known without either.

    For the audit and otlp sinks the compiled core drafts what the sink writes instead of the
    line (``_draft``: a ``govbus._native.LedgerDraft`` or ``OtlpDraft``; ``line`` is then None and
    renders lazily).
    """

    __slots__ = ("_attrs", "_decoder", "_draft", "_event", "event_id", "line")

    _event: GovernanceEvent | None
    _attrs: CloudEventAttributes | None
    _decoder: Decoder
    _draft: Any
    line: bytes | None

    @classmethod
    def create(
        cls,
        line: bytes,
        event_id: str,
        decoder: Decoder,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        key: bytes | None,
        value: bytes,
        headers: Any,
        verdict: str,
        verdict_detail: str,
        flagged: bool,
        event: GovernanceEvent | None = None,
        attrs: CloudEventAttributes | None = None,
        draft: Any = None,
    ) -> NativeRecord:
        r = _new(cls)
        _set_topic(r, topic)
        _set_partition(r, partition)
        _set_offset(r, offset)
        _set_timestamp(r, timestamp_ms)
        _set_key(r, key)
        _set_value(r, value)
        _set_headers(r, headers)
        _set_verdict(r, verdict)
        _set_detail(r, verdict_detail)
        _set_flagged(r, flagged)
        _set_line(r, line)
        _set_event_id(r, event_id)
        _set_decoder(r, decoder)
        _set_event(r, event)
        _set_attrs(r, attrs)
        _set_draft(r, draft)
        return r

    @property
    def event(self) -> GovernanceEvent:
        e = self._event
        if e is None:
            decoded = from_record(self.value, self.headers, self._decoder)
            e = decoded.event
            object.__setattr__(self, "_event", e)
            if self._attrs is None:
                object.__setattr__(self, "_attrs", decoded.attributes)
        return e

    @event.setter
    def event(self, value: GovernanceEvent) -> None:
        # dataclasses.replace() and the inherited __init__ set fields: the line and the draft no
        # longer apply.
        object.__setattr__(self, "_event", value)
        object.__setattr__(self, "event_id", value.event_id)
        object.__setattr__(self, "line", None)
        object.__setattr__(self, "_draft", None)
        if not hasattr(self, "_attrs"):
            object.__setattr__(self, "_attrs", None)

    @property
    def attributes(self) -> CloudEventAttributes:
        a = self._attrs
        if a is None:
            a = ce.parse_headers(self.headers)
            object.__setattr__(self, "_attrs", a)
        return a

    @attributes.setter
    def attributes(self, value: CloudEventAttributes) -> None:
        object.__setattr__(self, "_attrs", value)
        object.__setattr__(self, "line", None)
        object.__setattr__(self, "_draft", None)


_set_line, _set_event_id, _set_decoder, _set_event, _set_attrs, _set_draft = (
    getattr(NativeRecord, n).__set__ for n in ("line", "event_id", "_decoder", "_event", "_attrs", "_draft")
)
