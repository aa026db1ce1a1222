"""Settings come from GOVBUS_ variables; errors name the variable and never echo secrets."""

from __future__ import annotations

import pytest

from govbus.errors import ConfigError
from govbus.settings import load_settings


def test_nested_env_and_passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "b1:9093,b2:9093")
    monkeypatch.setenv("GOVBUS_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GOVBUS_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("GOVBUS_KAFKA__SASL_USERNAME", "u")
    monkeypatch.setenv("GOVBUS_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("GOVBUS_KAFKA__SSL_CA_LOCATION", "/etc/ca.pem")
    monkeypatch.setenv("GOVBUS_KAFKA__EXTRA", '{"socket.keepalive.enable": true}')
    monkeypatch.setenv("GOVBUS_TOPIC", "gov.events")
    s = load_settings()
    conf = s.kafka.librdkafka()
    assert conf["bootstrap.servers"] == "b1:9093,b2:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "hunter2"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert conf["socket.keepalive.enable"] is True
    assert s.topic == "gov.events"
    assert "hunter2" not in repr(s)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", "no-port"),
        ("GOVBUS_KAFKA__SECURITY_PROTOCOL", "TLS"),
        ("GOVBUS_TOPIC", "bad topic"),
    ],
)
def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == var
    assert var in str(info.value)


def test_secret_input_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(kafka={"sasl_password": ["not", "a", "string", "s3cr3t"]})
    assert info.value.setting == "GOVBUS_KAFKA__SASL_PASSWORD"
    assert "s3cr3t" not in str(info.value)
