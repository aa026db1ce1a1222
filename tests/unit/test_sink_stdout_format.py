"""Issue 7 item 1 against the stdout sink: one CloudEvents 1.0 JSON object per line (structured
mode), a stable key order, flushed per batch."""

from __future__ import annotations

import io
import json

from _sink_receivers import delivered

from govbus._sample import sample_events
from govbus.consumers._spi import Batch
from govbus.consumers.sinks._stdout import StdoutSink
from govbus.event import GovernanceEvent


class Stream(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushed_at: list[int] = []

    def flush(self) -> None:
        self.flushed_at.append(len(self.getvalue()))


def test_one_structured_cloudevent_per_line_flushed_per_batch() -> None:
    out = Stream()
    sink = StdoutSink(out)  # type: ignore[arg-type]
    first, second = delivered(3), delivered(2)
    sink.write(Batch(first))
    sink.write(Batch(second))
    data = out.getvalue()
    # Each batch is flushed before write() returns, right after its own lines.
    assert len(out.flushed_at) == 2
    assert data[: out.flushed_at[0]].count(b"\n") == 3
    assert out.flushed_at[1] == len(data)
    lines = data.splitlines()
    assert len(lines) == 5
    for record, line in zip(first + second, lines, strict=True):
        ce = json.loads(line)
        assert ce["specversion"] == "1.0"
        assert ce["id"] == record.event.event_id
        assert ce["source"] == record.attributes.source
        assert ce["type"] == record.event.ce_type
        assert ce["datacontenttype"] == "application/json"
        assert isinstance(ce["data"], dict)
        assert ce["data"]["agent_id"] == record.event.agent_id


def test_key_order_is_stable() -> None:
    out = Stream()
    sink = StdoutSink(out)  # type: ignore[arg-type]
    evs: list[GovernanceEvent] = list(sample_events(24))
    sink.write(Batch(delivered(evs=evs)))
    sink.write(Batch(delivered(evs=evs)))
    lines = out.getvalue().splitlines()
    # The same event renders to the same bytes every time.
    assert lines[:24] == lines[24:]
    # Every line lists its members in one order (absent optional members aside).
    orders = {tuple(k for k in json.loads(line)) for line in lines}
    longest = max(orders, key=len)
    for order in orders:
        assert [k for k in longest if k in order] == list(order)
    data_orders = {tuple(json.loads(line)["data"]) for line in lines}
    assert len(data_orders) == 1
