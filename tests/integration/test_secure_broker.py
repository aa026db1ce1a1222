"""The secure local broker: nobody anonymous gets in, wrong secrets are refused, ACLs decide."""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _kafka import SecureKafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from govbus.localkafka._tls import CertificateAuthority


def _metadata_error(config: dict[str, Any], timeout: float = 10.0, *, want_auth: bool = False) -> KafkaError | None:
    """None if a metadata request succeeds; else the error (``want_auth``: wait for the
    authentication error librdkafka reports through error_cb)."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": errors.append, "socket.connection.setup.timeout.ms": 3000})
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        if not want_auth:
            return exc.args[0]  # type: ignore[no-any-return]
        # error_cb is served by poll(): the authentication error says more than the timeout.
        deadline = time.monotonic() + 5
        while not any(e.code() == KafkaError._AUTHENTICATION for e in errors) and time.monotonic() < deadline:
            admin.poll(0.1)
        auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        return (auth or errors or [exc.args[0]])[0]
    return None


def test_tls_material_is_private(secure_kafka: SecureKafka) -> None:
    tls = secure_kafka.info.tls_dir
    keys = sorted(tls.glob("*key*.pem")) + sorted(tls.glob("*bundle*.pem"))
    assert keys
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    properties = (secure_kafka.broker.data_dir / "server.properties").read_text()
    assert "PLAINTEXT" not in properties.split("listener.security.protocol.map=")[1].splitlines()[0]
    assert "allow.everyone.if.no.acl.found=false" in properties
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in properties


def test_anonymous_clients_are_refused(secure_kafka: SecureKafka) -> None:
    # PLAINTEXT to the SASL port, PLAINTEXT to the mTLS port, TLS without a certificate to the mTLS port.
    plain_sasl = {"bootstrap.servers": secure_kafka.sasl_bootstrap, "security.protocol": "PLAINTEXT"}
    plain_mtls = {"bootstrap.servers": secure_kafka.mtls_bootstrap, "security.protocol": "PLAINTEXT"}
    no_cert = {
        "bootstrap.servers": secure_kafka.mtls_bootstrap,
        "security.protocol": "SSL",
        "ssl.ca.location": str(secure_kafka.ca),
    }
    tls_no_sasl = {**no_cert, "bootstrap.servers": secure_kafka.sasl_bootstrap}
    for config in (plain_sasl, plain_mtls, no_cert, tls_no_sasl):
        assert _metadata_error(config, timeout=2.0) is not None, config


def test_wrong_password_is_refused(secure_kafka: SecureKafka) -> None:
    name, _password = secure_kafka.add_scram_user()
    error = _metadata_error(secure_kafka.scram_config(name, "not-the-password"), 3.0, want_auth=True)
    assert error is not None
    assert error.code() == KafkaError._AUTHENTICATION, error


def test_certificate_from_another_ca_is_refused(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    stranger = CertificateAuthority(tmp_path / "other-ca").issue("admin")  # even a super user's name
    config = {**secure_kafka.info.mtls_config(stranger)}
    assert _metadata_error(config, timeout=3.0) is not None


def test_user_with_acls_produces_and_consumes(secure_kafka: SecureKafka) -> None:
    topic = secure_kafka.new_topic(1)
    group = f"secure-{uuid.uuid4().hex[:8]}"
    name, password = secure_kafka.add_scram_user()
    # The idempotent producer needs WRITE on some topic (KIP-679) to get a producer id.
    secure_kafka.allow(name, "TOPIC", topic, ["WRITE", "DESCRIBE", "READ"])
    secure_kafka.allow(name, "GROUP", group, "READ")
    producer = Producer({**secure_kafka.scram_config(name, password), "enable.idempotence": True, "acks": "all"})
    reports: list[KafkaError | None] = []
    producer.produce(topic, b"hello", on_delivery=lambda err, _msg: reports.append(err))
    assert producer.flush(30) == 0
    assert reports == [None]

    consumer = Consumer(
        {**secure_kafka.scram_config(name, password), "group.id": group, "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        got = None
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                got = msg.value()
        assert got == b"hello"
    finally:
        consumer.close()

    # And an mTLS principal without any ACL can do nothing: allow.everyone.if.no.acl.found=false.
    nobody = secure_kafka.issue_cert()
    denied = Producer({**secure_kafka.mtls_config(nobody), "acks": "all", "enable.idempotence": False})
    outcome: list[KafkaError | None] = []
    denied.produce(topic, b"nope", on_delivery=lambda err, _msg: outcome.append(err))
    denied.flush(30)
    assert outcome
    assert outcome[0] is not None
    assert outcome[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, outcome[0]


@pytest.mark.parametrize("who", ["scram", "mtls"])
def test_principal_without_acls_is_denied_metadata_of_topic(secure_kafka: SecureKafka, who: str) -> None:
    topic = secure_kafka.new_topic(1)
    if who == "scram":
        config = secure_kafka.scram_config(*secure_kafka.add_scram_user())
    else:
        config = secure_kafka.mtls_config(secure_kafka.issue_cert())
    admin = AdminClient(config)
    meta = admin.list_topics(topic=topic, timeout=10).topics[topic]
    assert meta.error is not None
    assert meta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
