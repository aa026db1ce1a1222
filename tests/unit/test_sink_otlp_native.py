"""The otlp sink's compiled mapping (``govbus._native.OtlpMapper``), held to the Python mapping.

Both turn the same delivered records (and the same observed time) into an
``ExportLogsServiceRequest``: the compiled mapper directly, the reference through ``_otlp._rows``
and the generated opentelemetry-proto classes. The bytes must be identical; a batch the mapper
declines must be one it may decline, and the sink then sends the reference's bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from _sink_receivers import delivered, signed_batch
from _sink_strategies import records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.metrics import get_meter

from govbus import _accel as native
from govbus.consumers._spi import DeliveredRecord, SinkContext
from govbus.consumers.sinks._otlp import OtlpSink, _rows
from govbus.event import GovernanceEvent

pytestmark = pytest.mark.skipif(not native.active(), reason="the compiled core is not installed")

SETTINGS = settings(
    max_examples=int(os.environ.get("GOVBUS_TEST_NATIVE_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
CTX = SinkContext("otlp", "govbus.sink.otlp", "govbus.events", get_meter("t"), logging.getLogger("t"))
NOW = 1_764_000_123_456_789_000


@pytest.fixture(params=[256, 32], ids=["max256", "max32"])
def sink(request: pytest.FixtureRequest) -> Iterator[OtlpSink]:
    s = OtlpSink(
        endpoint="http://127.0.0.1:9/v1/logs",  # never contacted
        service_name="audit-svc",
        resource_attributes="deployment.environment=test",
        max_attributes=str(request.param),
    )
    s.open(CTX)
    yield s
    s.close()


def reference(sink: OtlpSink, recs: list[DeliveredRecord]) -> bytes | type[Exception]:
    """The Python mapping encoded by the generated classes (what the sink sent before)."""
    assert sink._encoder is not None
    try:
        return sink._encoder.request(list(_rows(recs, NOW))).SerializeToString()  # type: ignore[no-any-return]
    except Exception as exc:
        return type(exc)


def mapped(sink: OtlpSink, recs: list[DeliveredRecord]) -> bytes | None:
    assert sink._mapper is not None
    try:
        return sink._mapper(recs, NOW)
    except TypeError:
        return None  # declined: the sink maps this batch in Python


@SETTINGS
@given(recs=st.lists(records(), min_size=1, max_size=4))
def test_mapped_requests_equal_the_python_mapping(sink: OtlpSink, recs: list[DeliveredRecord]) -> None:
    got = mapped(sink, recs)
    want = reference(sink, recs)
    if got is not None:
        assert got == want
    # Whatever the mapper did, what the sink encodes is the reference's (or raises as it does).
    assert sink._encoder is not None
    if isinstance(want, bytes):
        assert sink._encode(sink._encoder, recs, NOW) == want
    else:
        with pytest.raises(want):
            sink._encode(sink._encoder, recs, NOW)


def test_signed_batches_and_odd_values_are_mapped_natively(sink: OtlpSink) -> None:
    recs, _ = signed_batch(60)
    evs = [
        GovernanceEvent(
            agent_id="a", attributes={"raw": b"\x00", "nan": float("nan"), "deep": {"b": [1, 2.5], "a": None}}
        ),
        GovernanceEvent(agent_id="b", reason="", action=" \u2028", decision="\x1c", severity=" WARN "),
        GovernanceEvent(agent_id="c", reason="", action="", decision="", trace_id="ab" * 16, span_id=None),
    ]
    recs += delivered(evs=evs, traceparent=f"00-{'ab' * 16}-{'cd' * 8}-01")
    flagged = dataclasses.replace(recs[0], verdict="gap", flagged=True, verdict_detail="2 missing", timestamp_ms=None)
    recs.append(flagged)
    got = mapped(sink, recs)
    assert got is not None
    assert got == reference(sink, recs)


@pytest.mark.parametrize(
    "change",
    [
        {"partition": True},  # str(True): only the Python path words it so
        {"headers": (("traceparent", b"00-x", b""),)},  # a header that is not a pair
        {"timestamp_ms": -1},  # a negative observed time: the reference refuses it
        {"topic": "lone \ud800 surrogate"},
    ],
)
def test_what_the_mapper_declines_the_sink_encodes_as_the_reference(sink: OtlpSink, change: dict[str, Any]) -> None:
    recs = delivered(3)
    recs[1] = dataclasses.replace(recs[1], **change)
    assert mapped(sink, recs) is None
    want = reference(sink, recs)
    assert sink._encoder is not None
    if isinstance(want, bytes):
        assert sink._encode(sink._encoder, recs, NOW) == want
    else:
        with pytest.raises(want):
            sink._encode(sink._encoder, recs, NOW)


def test_headers_as_lists_map_the_same(sink: OtlpSink) -> None:
    tp = f"00-{'ab' * 16}-{'cd' * 8}-01"
    recs = [dataclasses.replace(r, headers=[list(h) for h in r.headers]) for r in delivered(3, traceparent=tp)]
    got = mapped(sink, recs)
    assert got is not None
    assert got == reference(sink, recs)


def test_no_mapper_without_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "active", lambda: False)
    s = OtlpSink(endpoint="http://127.0.0.1:9/v1/logs")
    s.open(CTX)
    try:
        assert s._mapper is None
        recs = delivered(2)
        assert s._encoder is not None
        assert s._encode(s._encoder, recs, NOW) == s._encoder.request(list(_rows(recs, NOW))).SerializeToString()
    finally:
        s.close()
