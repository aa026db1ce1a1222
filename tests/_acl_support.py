"""What the ACL tests on the secure broker share: a principal holding exactly a plan, its client
settings, and records produced as the broker's super user."""

from __future__ import annotations

from typing import Any

from _kafka import SecureKafka
from confluent_kafka import Producer

from govbus._acl import AclEntry, apply_plan


def scram_kafka(secure: SecureKafka, user: str, password: str) -> dict[str, Any]:
    """``GOVBUS_KAFKA__*`` settings of ``user`` on the secure broker's SASL_SSL listener."""
    return {
        "bootstrap_servers": secure.sasl_bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": user,
        "sasl_password": password,
        "ssl_ca_location": str(secure.ca),
    }


def principal(secure: SecureKafka, entries: list[AclEntry]) -> tuple[str, str]:
    """A new SCRAM user holding exactly ``entries``, applied by ``govbus acl apply``'s code as the admin."""
    user, password = secure.add_scram_user()
    apply_plan(secure.admin_config(), f"User:{user}", entries)
    return user, password


def produce_as_admin(secure: SecureKafka, topic: str, values: list[tuple[bytes | None, bytes | None, Any]]) -> None:
    producer = Producer({**secure.admin_config(), "acks": "all"})
    for key, value, headers in values:
        producer.produce(topic, value, key=key, headers=headers)
    assert producer.flush(30) == 0
