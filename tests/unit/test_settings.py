"""Settings come from GOVBUS_ variables; errors name the variable and never echo secrets."""

from __future__ import annotations

import pytest

from govbus._settings import GovbusSettings, is_setting, load_settings, setting_names
from govbus.errors import ConfigError


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


# ---- unknown names and malformed JSON (robustness issue, defects 3 and 4) ----------------------


@pytest.mark.parametrize(
    ("var", "closest"),
    [
        ("GOVBUS_PRODUCER__DURABILTY", "GOVBUS_PRODUCER__DURABILITY"),
        ("GOVBUS_KAFKA__BOOTSTRAP_SERVER", "GOVBUS_KAFKA__BOOTSTRAP_SERVERS"),
        ("GOVBUS_TOPICS", "GOVBUS_TOPIC"),
        ("GOVBUS_SINK__VERIFY__KEYRNG", "GOVBUS_SINK__VERIFY__KEYRING"),
        ("govbus_gate__policyfile", "GOVBUS_GATE__POLICY_FILE"),  # names are case-insensitive
        ("GOVBUS_SINK__HEALTH__PORT__X", "GOVBUS_SINK__HEALTH__PORT"),  # nothing below a scalar
    ],
)
def test_a_misspelt_variable_fails_naming_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, var: str, closest: str
) -> None:
    monkeypatch.setenv(var, "disk")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == var
    assert f"did you mean {closest}?" in str(info.value)


def test_an_unknown_variable_without_a_close_match_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_XYZZY", "1")
    monkeypatch.setenv("GOVBUS_ZZZ", "1")
    with pytest.raises(ConfigError, match=r"GOVBUS_XYZZY: not a govbus setting .*also unknown: GOVBUS_ZZZ"):
        load_settings()


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GOVBUS_SINK__OPTIONS__ANYTHING", "x"),  # a sink's options are checked by the sink
        ("GOVBUS_KAFKA__EXTRA__SOCKET.KEEPALIVE.ENABLE", "true"),  # a key of a dict setting
        ("GOVBUS_SIGNING__KEYRING", "/k.json"),  # a validation alias
        ("GOVBUS_SINK__VERIFY__POLICY__GAP", "skip"),
        ("GOVBUS_SINK", '{"instance": "a"}'),  # a whole section as JSON
        ("GOVBUS_TEST_BOOTSTRAP", "x:1"),  # reserved for the test suite
        ("GOVBUS_TEST_ANYTHING_NEW", "x"),
        ("GOVBUS_BENCH_PROFILE", "1"),  # reserved for the benchmarks
        ("GOVBUS_CACHE_DIR", "/tmp/c"),  # the local broker's download cache
        ("GOVBUSX_TOPIC", "x"),  # another prefix: not ours
    ],
)
def test_settings_and_reserved_names_pass_the_check(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    load_settings()


def test_the_check_knows_every_setting() -> None:
    names = list(setting_names())
    assert len(names) > 50
    assert [n for n in names if not is_setting(n)] == []
    assert "GOVBUS_SINK__OPTIONS" in names
    assert "GOVBUS_SIGNING__KEYRING" in names


@pytest.mark.parametrize(
    "var",
    ["GOVBUS_PRODUCER__LIBRDKAFKA", "GOVBUS_KAFKA__EXTRA", "GOVBUS_SINK__CONSUMER", "GOVBUS_SINK__VERIFY__POLICY"],
)
def test_invalid_json_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, '{bad json "s3cr3t"')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == var
    assert "not valid JSON" in info.value.message
    assert "s3cr3t" not in str(info.value)


def test_invalid_json_in_a_whole_section_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_PRODUCER", "{bad")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == "GOVBUS_PRODUCER"


def test_building_the_root_settings_directly_checks_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_PRODUCER__DURABILTY", "disk")
    with pytest.raises(ConfigError, match="did you mean GOVBUS_PRODUCER__DURABILITY"):
        GovbusSettings()
