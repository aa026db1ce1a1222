"""Metrics rendered as Prometheus text, the health endpoint, and traceparent parsing."""

from __future__ import annotations

from _sinks import http_get

from govbus.consumers._health import HealthServer, HealthStatus
from govbus.consumers._metrics import SinkMetrics
from govbus.consumers._tracing import parse_traceparent


def test_prometheus_text() -> None:
    m = SinkMetrics("file", readers=[])
    m.consumed.add(5, m.attrs())
    m.dead_lettered.add(2, m.attrs(reason='decode:"odd"\n'))
    m.write_duration.record(0.003, m.attrs())
    m.set_gauge("govbus.sink.inflight.records", 7)
    m.set_lag({("gov", 0): 3, ("gov", 1): 0})
    text = m.render_prometheus()
    assert "# TYPE govbus_sink_records_consumed_total counter" in text
    assert 'govbus_sink_records_consumed_total{sink="file"} 5' in text
    assert 'govbus_sink_records_dead_lettered_total{reason="decode:\\"odd\\"\\n",sink="file"} 2' in text
    assert "# TYPE govbus_sink_write_duration_seconds histogram" in text
    assert 'govbus_sink_write_duration_seconds_bucket{le="0.005",sink="file"} 1' in text
    assert 'govbus_sink_write_duration_seconds_bucket{le="+Inf",sink="file"} 1' in text
    assert 'govbus_sink_write_duration_seconds_count{sink="file"} 1' in text
    assert 'govbus_sink_inflight_records{sink="file"} 7' in text
    assert 'govbus_sink_consumer_lag{partition="0",sink="file",topic="gov"} 3' in text
    assert text.endswith("\n")
    m.shutdown()


def test_health_endpoints() -> None:
    state = {"ready": False}

    def status() -> HealthStatus:
        return HealthStatus(True, state["ready"], {"sink": "file"})

    server = HealthServer("127.0.0.1", 0, status, lambda: "x_total 1\n")
    server.start()
    try:
        assert http_get(server.url + "/healthz")[0] == 200
        code, body = http_get(server.url + "/readyz")
        assert code == 503
        assert '"ready": false' in body
        state["ready"] = True
        assert http_get(server.url + "/readyz")[0] == 200
        assert http_get(server.url + "/metrics") == (200, "x_total 1\n")
        assert http_get(server.url + "/nope")[0] == 404
    finally:
        server.stop()


def test_traceparent() -> None:
    ctx = parse_traceparent(b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01")
    assert ctx is not None
    assert ctx.is_remote
    assert ctx.trace_flags.sampled
    assert ctx.trace_id == int("ab" * 16, 16)
    assert ctx.span_id == int("cd" * 8, 16)
    for bad in (None, b"", b"01-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01", b"00-" + b"0" * 32 + b"-" + b"cd" * 8 + b"-01",
                b"00-" + b"AB" * 16 + b"-" + b"cd" * 8 + b"-01", b"00-" + b"ab" * 16 + b"_" + b"cd" * 8 + b"-01"):  # fmt: skip
        assert parse_traceparent(bad) is None
