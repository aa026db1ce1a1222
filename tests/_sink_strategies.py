"""Hypothesis strategies for delivered records as sinks get them: events of every kind with unicode,
nested attributes, bytes and non-finite floats at the top level, every optional field; CloudEvents
attributes with colliding extension names; extra headers (trace context, signature headers,
malformed values). Used by the differential tests of the compiled sink paths."""

from __future__ import annotations

from datetime import UTC, datetime

from _native_strategies import _id, _json_leaf, _text
from _native_strategies import events as _events
from hypothesis import assume
from hypothesis import strategies as st

from govbus._cloudevents import CloudEventAttributes
from govbus._contract import Decoder, Encoder
from govbus._record import from_record, to_record
from govbus.consumers._spi import DeliveredRecord
from govbus.errors import DecodeError, InvalidEventError
from govbus.event import GovernanceEvent, ProducerInfo
from govbus.signing import SIGNATURE_HEADERS

__all__ = ["attributes", "events", "records"]

_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_attr = _json | st.floats() | st.binary(max_size=6)  # bytes and non-finite floats: top level only
# Mostly times a fixed64 of nanoseconds holds (1970-2554), sometimes any the model allows.
_time = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2554, 7, 1), timezones=st.just(UTC)
) | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
_tp_id = st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "0" * 32, "AB" * 16, "ab" * 16])
_traceparent = st.builds(
    lambda version, trace, span, flags, tail, pad: f"{pad}{version}-{trace}-{span}-{flags}{tail}{pad}".encode(),
    st.sampled_from(["00", "01", "ff", "0g"]),
    _tp_id,
    st.sampled_from(["b7ad6b7169203331", "0" * 16, "b7ad6b716920333"]),
    st.sampled_from(["01", "00", "ff", "1"]),
    st.sampled_from(["", "-", "-x", "-x\ny"]),
    st.sampled_from(["", " ", "\t\x1c", "\xa0"]),
)
_header_value = st.none() | st.binary(max_size=8) | _text.map(str.encode) | _traceparent
_header_name = st.sampled_from(
    ["traceparent", "tracestate", "ce_x", "content-type", *SIGNATURE_HEADERS, "ü", "a\nb", ""]
)


def events() -> st.SearchStrategy[GovernanceEvent]:
    """Events as sinks get them: any text (NUL too), a producer or none, trace ids that match
    the traceparent headers, bytes and non-finite floats among the attributes."""
    return _events(
        texts=_text,
        attributes=st.dictionaries(_text, _attr, max_size=8),
        times=_time,
        producers=st.none() | st.builds(ProducerInfo, _text, _text, _text, _text),
        trace_ids=st.just("0af7651916cd43dd8448eb211c80319c"),
    )


@st.composite
def attributes(draw: st.DrawFn) -> CloudEventAttributes:
    # Extension names may collide with the event's own attributes and with traceparent/tracestate.
    names = st.sampled_from(["id", "data", "time", "traceparent", "tracestate", "sessionid", "zz", "A", "é"])
    return CloudEventAttributes(
        specversion=draw(st.sampled_from(["1.0", "0.3"])),
        id=draw(_id),
        source=draw(_text),
        type=draw(_text),
        time=draw(st.none() | st.just("") | _text),
        subject=draw(st.none() | _text),
        datacontenttype=None,
        dataschema=None,
        extensions=draw(st.dictionaries(names | _text, _text, max_size=4)),
    )


@st.composite
def records(draw: st.DrawFn) -> DeliveredRecord:
    event = draw(events())
    if draw(st.booleans()):
        # Through the codec: attributes as the decoder builds them, headers as a producer writes them.
        try:
            out = to_record(event, ProducerInfo("k", "i", "h", "l"), Encoder(2))
            decoded = from_record(out.value, out.headers, Decoder(2))
        except (InvalidEventError, DecodeError):
            assume(False)
            raise
        event, attrs, headers = decoded.event, decoded.attributes, list(out.headers)
    else:
        attrs, headers = draw(attributes()), []
    headers += draw(st.lists(st.tuples(_header_name, _header_value), max_size=6))
    return DeliveredRecord(
        event=event,
        attributes=attrs,
        topic=draw(_text),
        partition=draw(st.integers(0, 2**31)),
        offset=draw(st.integers(0, 2**62)),
        timestamp_ms=draw(st.none() | st.integers(-(2**40), 2**42)),
        key=draw(st.none() | st.binary(max_size=8)),
        value=draw(st.binary(max_size=40)),
        headers=tuple(headers),
        verdict=draw(st.sampled_from(["valid", "unverified", "gap"])),
        verdict_detail=draw(_text),
        flagged=draw(st.booleans()),
    )
