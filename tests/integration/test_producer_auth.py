"""Refused credentials and missing ACLs are not outages: health says so, the gate denies, nothing is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _kafka import SecureKafka

from govbus._kernel import producer_status
from govbus._sample import sample_events
from govbus._settings import GovbusSettings, load_settings
from govbus.gate import BusProbe, Gate, parse_policy
from govbus.localkafka._tls import CertificateAuthority
from govbus.producer import Bus

pytestmark = pytest.mark.integration

_EVENTS = 5


def _settings(secure: SecureKafka, topic: str, spool: Path, user: str, password: str) -> GovbusSettings:
    return load_settings(
        topic=topic,
        kafka={
            "bootstrap_servers": secure.sasl_bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": password,
            "ssl_ca_location": str(secure.ca),
        },
        producer={"spool_dir": str(spool), "close_timeout_ms": 2_000},
    )


def _until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _gate(settings: GovbusSettings, bus: Bus, *, broker: bool) -> Gate:
    policy = parse_policy(
        {
            "refresh_interval_s": 0.3,
            "max_staleness_s": 30,
            "debounce": 1,
            "checks": {
                "broker": {"enabled": broker, "timeout_s": 3},
                "topic": {"enabled": broker},
                "producer": {"enabled": True},
                "signing": {"enabled": False},
            },
        }
    )
    probe = BusProbe(settings.kafka.librdkafka(), settings.topic, producer=producer_status(bus, policy))
    return Gate(policy, probe.run)


def _replay(settings: GovbusSettings) -> int:
    """A new Bus on the same spool with working credentials and ACLs: what it delivers."""
    with Bus(settings) as bus:
        assert bus.flush(60)
        counters = bus.counters()
    assert counters.failed == 0
    return counters.delivered


def test_wrong_password_is_auth_not_an_outage(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    topic = secure_kafka.new_topic(3)
    user, password = secure_kafka.add_scram_user()
    secure_kafka.allow(user, "TOPIC", topic, ["WRITE", "DESCRIBE"])
    spool = tmp_path / "spool"
    wrong = _settings(secure_kafka, topic, spool, user, "not-the-password")
    bus = Bus(wrong)
    try:
        for event in sample_events(_EVENTS, seed=3):
            bus.emit(event)
        health = _until(lambda: (h := bus.health()).cause == "auth" and h, "health to say auth")
        assert not health.ok
        assert health.reason.startswith("auth: authentication failed")
        assert "GOVBUS_KAFKA__SASL_USERNAME" in health.reason
        assert "GOVBUS_KAFKA__SASL_PASSWORD" in health.reason
        assert "not-the-password" not in health.reason
        _until(lambda: bus.counters().spooled >= _EVENTS, "the events to be spooled")

        gate = _gate(wrong, bus, broker=True)
        gate.refresh()
        decision = gate.admit("agent-auth")
        assert not decision.allowed
        assert any(r.startswith("producer: auth:") for r in decision.reasons), decision.reasons
        assert any(r.startswith("broker: auth:") for r in decision.reasons), decision.reasons
        assert bus.counters().failed == 0
    finally:
        bus.close(timeout=1)
    assert bus.counters().failed == 0
    # Nothing was dropped: the right password delivers every event from the spool.
    assert _replay(_settings(secure_kafka, topic, spool, user, password)) == _EVENTS


def test_missing_write_acl_is_authorization_and_nothing_is_dropped(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    topic = secure_kafka.new_topic(3)
    user, password = secure_kafka.add_scram_user()
    # DESCRIBE (metadata) and a producer id (IDEMPOTENT_WRITE), but no WRITE on the topic.
    secure_kafka.allow(user, "TOPIC", topic, "DESCRIBE")
    secure_kafka.allow(user, "CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE")
    spool = tmp_path / "spool"
    settings = _settings(secure_kafka, topic, spool, user, password)
    bus = Bus(settings)
    try:
        for event in sample_events(_EVENTS, seed=4):
            bus.emit(event)
        health = _until(lambda: (h := bus.health()).cause == "authorization" and h, "health to say authorization")
        assert not health.ok
        assert health.reason.startswith("authorization: TOPIC_AUTHORIZATION_FAILED")
        assert f"User:{user}" in health.reason
        assert "WRITE" in health.reason
        assert f"topic {topic}" in health.reason
        assert health.counters.failed == 0  # refused by an ACL is not the record's fault

        gate = _gate(settings, bus, broker=False)
        gate.refresh()
        decision = gate.admit("agent-acl")
        assert not decision.allowed
        assert any(r.startswith("producer: authorization:") for r in decision.reasons), decision.reasons
    finally:
        bus.close(timeout=1)
    assert bus.counters().failed == 0
    assert not list((spool / "dead").glob("*")) if (spool / "dead").exists() else True
    secure_kafka.allow(user, "TOPIC", topic, "WRITE")
    assert _replay(settings) == _EVENTS


def test_gate_without_describe_denies_with_authorization(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    topic = secure_kafka.new_topic(1)
    user, password = secure_kafka.add_scram_user()
    settings = _settings(secure_kafka, topic, tmp_path / "spool", user, password)
    policy = parse_policy(
        {
            "refresh_interval_s": 0.3,
            "max_staleness_s": 30,
            "debounce": 1,
            "checks": {"producer": {"enabled": False}, "signing": {"enabled": False}},
        }
    )
    gate = Gate(policy, BusProbe(settings.kafka.librdkafka(), topic).run)
    gate.refresh()
    decision = gate.admit("agent-describe")
    assert not decision.allowed
    assert any(r.startswith("topic: authorization: TOPIC_AUTHORIZATION_FAILED") for r in decision.reasons), (
        decision.reasons
    )
    assert any("DESCRIBE" in r and f"User:{user}" in r for r in decision.reasons)


def test_no_producer_id_is_authorization_not_a_crash(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    """No WRITE anywhere: the idempotent producer's id is refused (fatal CLUSTER_AUTHORIZATION_FAILED,
    which confluent-kafka raises from poll()); health names the ACL, and the events are kept."""
    topic = secure_kafka.new_topic(1)
    user, password = secure_kafka.add_scram_user()
    secure_kafka.allow(user, "TOPIC", topic, "DESCRIBE")
    spool = tmp_path / "spool"
    settings = _settings(secure_kafka, topic, spool, user, password)
    bus = Bus(settings)
    try:
        for event in sample_events(_EVENTS, seed=5):
            bus.emit(event)
        health = _until(lambda: (h := bus.health()).cause == "authorization" and h, "health to say authorization")
        assert not health.ok
        assert health.reason.startswith("authorization: CLUSTER_AUTHORIZATION_FAILED")
        assert f"User:{user}" in health.reason
        assert "sender thread failed" not in (health.last_error or "")
    finally:
        bus.close(timeout=1)
    assert bus.counters().failed == 0
    secure_kafka.allow(user, "TOPIC", topic, "WRITE")
    assert _replay(settings) == _EVENTS


def test_certificate_from_another_ca_is_auth(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    topic = secure_kafka.new_topic(1)
    stranger = CertificateAuthority(tmp_path / "other-ca").issue("kernel")
    settings = load_settings(
        topic=topic,
        kafka={
            "bootstrap_servers": secure_kafka.mtls_bootstrap,
            "security_protocol": "SSL",
            "ssl_ca_location": str(secure_kafka.ca),
            "ssl_certificate_location": str(stranger.cert),
            "ssl_key_location": str(stranger.key),
        },
        producer={"spool_dir": str(tmp_path / "spool"), "close_timeout_ms": 2_000},
    )
    with Bus(settings) as bus:
        bus.emit(next(iter(sample_events(1, seed=6))))
        health = _until(lambda: (h := bus.health()).cause == "auth" and h, "health to say auth")
        assert not health.ok
        assert "GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION" in health.reason
