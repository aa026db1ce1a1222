"""Hypothesis strategies for governance events and their records, shared by the differential
tests of the compiled core (``tests/unit/test_native_*.py``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from govbus._contract import Encoder
from govbus._record import to_record
from govbus.errors import InvalidEventError
from govbus.event import EventKind, GovernanceEvent, ProducerInfo

SETTINGS = settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PRODUCERS = [ProducerInfo("kernel", "i-1", "host", "govbus-python/0.2.0"), ProducerInfo("k\u00e9", "\n", "h\x01", "")]
VERDICTS = [("unverified", "", False), ("valid", "", False), ("gap", "3 records missing before seq 9", True)]

# --- valid events -------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_field = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
_id = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=10)
_opt_id = st.none() | _id
_hex = st.sampled_from("0123456789abcdef")
_int64 = st.integers(-(2**63), 2**63 - 1)
_json_leaf = st.none() | st.booleans() | _int64 | st.floats(allow_nan=False, allow_infinity=False) | _text
_json = st.recursive(
    _json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=8
)
_attr = (
    st.none()
    | st.booleans()
    | _int64
    | st.floats()
    | _text
    | st.binary(max_size=12)
    | st.lists(_json, max_size=3)
    | st.dictionaries(_text, _json, max_size=3)
)
_time = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)) | st.just(
    datetime(1970, 1, 1, tzinfo=UTC)
)


_ATTRIBUTES = st.dictionaries(_text, _attr, max_size=20)
_NO_PRODUCER: st.SearchStrategy[ProducerInfo | None] = st.none()
_NO_IDS: st.SearchStrategy[str] = st.nothing()


@st.composite
def events(
    draw: st.DrawFn,
    *,
    texts: st.SearchStrategy[str] = _field,
    attributes: st.SearchStrategy[dict[str, Any]] = _ATTRIBUTES,
    times: st.SearchStrategy[datetime] = _time,
    producers: st.SearchStrategy[ProducerInfo | None] = _NO_PRODUCER,
    trace_ids: st.SearchStrategy[str] = _NO_IDS,
) -> GovernanceEvent:
    """Valid events of every kind with every optional field. ``trace_ids``: ids a trace id is
    sometimes drawn from (to match traceparent headers), besides random ones."""

    def hexid(n: int) -> str | None:
        if not draw(st.booleans()):
            return None
        if n == 32 and not trace_ids.is_empty and draw(st.booleans()):
            return draw(trace_ids)
        v = "".join(draw(st.lists(_hex, min_size=n, max_size=n)))
        assume(v != "0" * n)
        return v

    fields = dict(
        agent_id=draw(_id),
        kind=draw(st.sampled_from(list(EventKind))),
        severity=draw(_id),
        action=draw(texts),
        decision=draw(texts),
        reason=draw(texts),
        event_id=draw(_id),
        occurred_at=draw(times),
        agent_did=draw(_opt_id),
        session_id=draw(_opt_id),
        resource=draw(_opt_id),
        policy_name=draw(_opt_id),
        latency_ms=draw(st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
        trace_id=hexid(32),
        span_id=hexid(16),
        parent_span_id=hexid(16),
        attributes=draw(attributes),
        schema_version=draw(_id),
        producer=draw(producers),
        tenant_id=draw(_opt_id),
        policy_version=draw(_opt_id),
        risk_score=draw(st.none() | st.floats(min_value=0, max_value=1)),
    )
    try:
        return GovernanceEvent(**fields)
    except InvalidEventError:
        assume(False)
        raise


def encode(event: GovernanceEvent, writer: int, producer: ProducerInfo = PRODUCERS[0]) -> Any:
    try:
        return to_record(event, producer, Encoder(writer))
    except InvalidEventError:
        assume(False)  # a v1 writer cannot carry this event
