"""The console's pieces that need no broker: settings, sink classes, metrics parsing, charts, and the
sink health server's control endpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from govbus._settings import load_settings
from govbus.console._classes import sink_class
from govbus.console._plot import line_chart
from govbus.console._scrape import parse_prometheus
from govbus.console._settings import is_loopback
from govbus.consumers._health import HealthServer, HealthStatus
from govbus.errors import ConfigError


def test_loopback_is_the_default_and_needs_no_credentials() -> None:
    s = load_settings().console
    assert s.host == "127.0.0.1"
    assert not s.auth_required
    assert not s.actions_enabled


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "console.example", "::"])
def test_a_host_off_loopback_requires_credentials_naming_the_variable(host: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(console={"host": host})
    assert err.value.setting == "GOVBUS_CONSOLE__HOST"
    assert "GOVBUS_CONSOLE__TOKEN" in str(err.value)
    assert load_settings(console={"host": host, "token": "t0ken"}).console.auth_required
    assert load_settings(console={"host": host, "basic_user": "ops", "basic_password": "pw"}).console.auth_required


def test_the_settings_come_from_govbus_console_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_CONSOLE__PORT", "9999")
    monkeypatch.setenv("GOVBUS_CONSOLE__SINK_HEALTH_URLS", '{"audit": "http://audit:9464/"}')
    monkeypatch.setenv("GOVBUS_CONSOLE__TOKEN", "very-secret")
    s = load_settings().console
    assert s.port == 9999
    assert s.sink_health_urls == {"audit": "http://audit:9464"}
    assert "very-secret" not in repr(s)


def test_secrets_are_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(console={"basic_password": "hunter2"})
    assert "hunter2" not in str(err.value)
    assert "basic_user" in str(err.value)


@pytest.mark.parametrize(
    ("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False)]
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("sink", "cls"),
    [
        ("audit", "audit"),
        ("http", "siem"),
        ("syslog", "siem"),
        ("otlp", "observability"),
        ("stdout", "debug"),
        ("file", "debug"),
        ("audit-eu", "audit"),
        ("mystery", "unknown"),
    ],
)
def test_sink_class_from_the_one_mapping(sink: str, cls: str) -> None:
    assert sink_class(sink) == cls
    assert sink_class(sink, "siem") == "siem"


def test_parse_prometheus_reads_labels_and_values() -> None:
    text = (
        "# HELP x y\n# TYPE govbus_sink_records_flagged_total counter\n"
        'govbus_sink_records_flagged_total{sink="file",verdict="gap"} 3\n'
        'govbus_sink_records_dead_lettered_total{reason="verify:bad-signature",sink="a\\"b"} 2.0\n'
        "garbage line\n"
    )
    parsed = parse_prometheus(text)
    assert parsed == [
        ("govbus_sink_records_flagged_total", {"sink": "file", "verdict": "gap"}, 3.0),
        ("govbus_sink_records_dead_lettered_total", {"reason": "verify:bad-signature", "sink": 'a"b'}, 2.0),
    ]


def test_line_chart_escapes_names_and_exposes_the_last_value() -> None:
    svg = line_chart({"<p0>": [(0.0, 1.0), (1.0, 5.0)]}, title="t", unit="records", chart_id="c")
    assert 'data-last="5"' in svg
    assert "<p0>" not in svg
    assert "no data yet" in line_chart({}, title="t", unit="u", chart_id="e")


def _post(url: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_server_control_endpoint_only_when_the_runtime_offers_one() -> None:
    status = lambda: HealthStatus(True, True, {})  # noqa: E731
    calls: list[str] = []
    plain = HealthServer("127.0.0.1", 0, status, lambda: "")
    controlled = HealthServer("127.0.0.1", 0, status, lambda: "", lambda a: {"did": calls.append(a) or a})
    for s in (plain, controlled):
        s.start()
    try:
        assert _post(plain.url + "/control/pause")[0] == 404
        assert _post(controlled.url + "/control/pause") == (200, {"did": "pause"})
        assert _post(controlled.url + "/control/explode")[0] == 404
        assert calls == ["pause"]
    finally:
        plain.stop()
        controlled.stop()


def test_the_console_keeps_only_the_head_of_a_dead_letters_value() -> None:
    from govbus.console._collector import _dead_letter
    from govbus.console._tail import RawRecord

    big = RawRecord("t.dlq.file", 0, 7, None, b"k", b"x" * (16 << 20), (("govbus.dlq.reason", b"oversize"),))
    kept = _dead_letter(big)
    assert kept.value == b"x" * 64
    assert kept.value_size == 16 << 20
    assert kept.reason == "oversize"


def test_sink_health_state_tells_an_operator_pause_from_backpressure() -> None:
    from govbus.console._scrape import SinkHealth

    assert SinkHealth("a", "u", True, status={"ready": True, "paused": True, "operator_paused": True}).state == "paused"
    assert SinkHealth("a", "u", True, status={"ready": True, "paused": True}).state == "backpressure"
    assert SinkHealth("a", "u", True, status={"ready": True}).state == "ready"
    assert SinkHealth("a", "u", False, error="refused").state == "unreachable"


def test_govbus_console_prints_its_url_serves_and_stops_on_sigint() -> None:
    """The command as a process: no broker is reachable, yet it serves at once and says why."""
    env = {
        **os.environ,
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "GOVBUS_CONSOLE__TIMEOUT_S": "0.5",
        "GOVBUS_CONSOLE__REFRESH_S": "0.5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "govbus", "console", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"govbus console at (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        deadline = time.monotonic() + 30
        while True:  # the listening socket exists before the line is printed; the app needs a moment
            try:
                with urllib.request.urlopen(match.group(1) + "/", timeout=5) as resp:
                    body = resp.read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "govbus console" in body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize(("args", "named"), [(["--host", "0.0.0.0"], "--host"), (["--port", "99999"], "--port")])
def test_govbus_console_refuses_bad_options_naming_them(args: list[str], named: str) -> None:
    out = subprocess.run([sys.executable, "-m", "govbus", "console", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"govbus: error: {named}:" in out.stderr
