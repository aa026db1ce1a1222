"""Fail closed with the cause named: an expired certificate is refused and reported as ``auth``; a
missing ACL makes ``govbus lag``, ``topics create``, ``dlq inspect|replay`` and the gate's sink
check name the operation, the resource and the principal instead of a bare error or a silent hang."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _kafka import SecureKafka, create_topic
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from govbus._admin import TopicError, ensure_topic
from govbus._cli import main
from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.consumers import sink_lag
from govbus.consumers._dlq import read_dead_letters, replay_dead_letters
from govbus.consumers._errors import DeadLetterError, SinkError
from govbus.gate import BusProbe, parse_policy
from govbus.localkafka._tls import CertificateAuthority
from govbus.producer import Bus

pytestmark = pytest.mark.integration


def _scram(secure: SecureKafka, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": secure.sasl_bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": user,
        "sasl_password": password,
        "ssl_ca_location": str(secure.ca),
    }


def _user_conf(secure: SecureKafka) -> tuple[str, dict[str, Any]]:
    user, password = secure.add_scram_user()
    return user, load_settings(kafka=_scram(secure, user, password)).kafka.librdkafka()


def test_expired_certificate_is_refused_and_is_auth(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    topic = secure_kafka.new_topic(1, prefix="expired")
    expired = CertificateAuthority(secure_kafka.info.tls_dir).issue("expired-kernel", directory=tmp_path, expired=True)
    secure_kafka.allow("expired-kernel", "TOPIC", topic, "WRITE")  # the ACL is there: only the date is wrong
    # A raw client: refused at the handshake.
    admin = AdminClient({**secure_kafka.mtls_config(expired), "socket.connection.setup.timeout.ms": 3000})
    with pytest.raises(Exception):  # noqa: B017, PT011 - KafkaException (timed out) after the TLS alert
        admin.list_topics(timeout=3)
    settings = load_settings(
        topic=topic,
        kafka={
            "bootstrap_servers": secure_kafka.mtls_bootstrap,
            "security_protocol": "SSL",
            "ssl_ca_location": str(secure_kafka.ca),
            "ssl_certificate_location": str(expired.cert),
            "ssl_key_location": str(expired.key),
        },
        producer={"spool_dir": str(tmp_path / "spool"), "close_timeout_ms": 1_000},
    )
    # The Bus: spools and says auth, naming the certificate setting.
    with Bus(settings) as bus:
        bus.emit(next(iter(sample_events(1, seed=8))))
        deadline = time.monotonic() + 30
        while bus.health().cause != "auth" and time.monotonic() < deadline:
            time.sleep(0.05)
        health = bus.health()
        assert health.cause == "auth", health
        assert "GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION" in health.reason
        assert bus.counters().failed == 0
    # The gate's broker check: auth, not "no metadata answer".
    policy = parse_policy({"checks": {"broker": {"timeout_s": 3}, "producer": {"enabled": False}}})
    results = {r.name: r for r in BusProbe(settings.kafka.librdkafka(), topic).run(policy)}
    assert not results["broker"].ok
    assert results["broker"].reason.startswith("auth: authentication failed"), results["broker"].reason
    assert "GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION" in results["broker"].reason


def test_gate_sink_check_without_describe_on_the_group_is_authorization(secure_kafka: SecureKafka) -> None:
    topic = secure_kafka.new_topic(1, prefix="gategroup")
    user, password = secure_kafka.add_scram_user()
    secure_kafka.allow(user, "TOPIC", topic, "DESCRIBE")
    settings = load_settings(topic=topic, kafka=_scram(secure_kafka, user, password))
    policy = parse_policy(
        {
            "checks": {
                "broker": {"timeout_s": 5},
                "sinks": [{"name": "audit", "max_lag": 10}],
                "producer": {"enabled": False},
            }
        }
    )
    results = {r.name: r for r in BusProbe(settings.kafka.librdkafka(), topic).run(policy)}
    reason = results["sink:audit"].reason
    assert not results["sink:audit"].ok
    assert reason.startswith("authorization: GROUP_AUTHORIZATION_FAILED"), reason
    assert f"User:{user} lacks the ACL operation DESCRIBE on group govbus.sink.audit" in reason


def test_lag_without_describe_on_the_group_names_the_acl(
    secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    user, password = secure_kafka.add_scram_user()
    conf = load_settings(kafka=_scram(secure_kafka, user, password)).kafka.librdkafka()
    with pytest.raises(SinkError) as raised:
        sink_lag(conf, groups=["govbus.sink.audit"])
    assert f"User:{user} lacks the ACL operation DESCRIBE on GROUP govbus.sink.audit" in str(raised.value)
    # The command: exit code 2 and the same sentence, at once.
    for key, value in _scram(secure_kafka, user, password).items():
        monkeypatch.setenv(f"GOVBUS_KAFKA__{key.upper()}", value)
    started = time.monotonic()
    assert main(["lag", "--sink", "audit"]) == 2
    assert time.monotonic() - started < 20
    assert "DESCRIBE on GROUP govbus.sink.audit" in capsys.readouterr().err


def test_topics_create_without_create_names_the_acl(secure_kafka: SecureKafka) -> None:
    user, conf = _user_conf(secure_kafka)
    with pytest.raises(TopicError) as raised:
        ensure_topic(conf, "acl-errors-new-topic", partitions=1, timeout=15)
    assert f"User:{user} lacks the ACL operation CREATE on TOPIC acl-errors-new-topic" in str(raised.value)


def test_dlq_inspect_and_replay_name_the_missing_acl(secure_kafka: SecureKafka) -> None:
    topic = secure_kafka.new_topic(1, prefix="dlqerr")
    dlq, replay = create_topic(secure_kafka.admin, f"{topic}.dlq.file", 1), f"{topic}.replay.file"
    create_topic(secure_kafka.admin, replay, 1)
    producer = Producer({**secure_kafka.admin_config(), "acks": "all"})
    producer.produce(dlq, b"dead", key=b"k")
    assert producer.flush(30) == 0
    del producer  # not kept alive (reconnecting) by a traceback's frames after the broker stops
    user, conf = _user_conf(secure_kafka)
    with pytest.raises(DeadLetterError) as raised:
        list(read_dead_letters(conf, dlq))
    assert f"User:{user} lacks the ACL operation READ on TOPIC {dlq}" in str(raised.value)

    secure_kafka.allow(user, "TOPIC", dlq, "READ")
    group = "govbus.dlq-replay.file"
    with pytest.raises(DeadLetterError) as raised:
        replay_dead_letters(conf, dlq, replay, group=group, timeout=4)
    assert f"User:{user} lacks the ACL operation READ on GROUP {group}" in str(raised.value)

    secure_kafka.allow(user, "GROUP", group, "READ")
    with pytest.raises(DeadLetterError) as raised:
        replay_dead_letters(conf, dlq, replay, group=group, timeout=10)
    assert f"User:{user} lacks the ACL operation WRITE on TOPIC {replay}" in str(raised.value)
