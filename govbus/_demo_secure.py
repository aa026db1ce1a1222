"""``govbus demo --secure``: the demo on the secure local broker, every process its own principal.

The operator's part is done as the broker's super user (``User:admin``, mTLS): the event topic and
each sink's dead-letter and replay topics are created, one SCRAM-SHA-512 user per process is added
(``kernel``, ``sink-<name>``, ``console``), and each gets exactly its role's ACLs from
:mod:`govbus._acl` — the kernel ``kernel`` + ``gate`` (its gate checks the sinks' groups), each sink
``sink:<name>`` with ``GOVBUS_SINK__DLQ__CREATE_TOPICS=false``, the console ``console`` (every
sink's dead letters). Passwords are random per run and never printed.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from govbus._acl import apply_plan, parse_role, plan
from govbus._admin import ensure_topic
from govbus._librdkafka import new_admin


@dataclass
class SecureDemo:
    admin: dict[str, Any]  # librdkafka settings of the super user (operator tasks, the report)
    bootstrap: str
    ca: str
    passwords: dict[str, str] = field(default_factory=dict)

    def kafka(self, user: str) -> dict[str, str]:
        """``kafka`` settings (GovbusSettings field names) of principal ``user``."""
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": user,
            "sasl_password": self.passwords[user],
            "ssl_ca_location": self.ca,
        }

    def env(self, user: str) -> dict[str, str]:
        return {f"GOVBUS_KAFKA__{k.upper()}": v for k, v in self.kafka(user).items()}


def start(stack: contextlib.ExitStack, say: Callable[[str], None]) -> SecureDemo:
    from govbus.localkafka import LocalBroker

    say("• starting a secure local Apache Kafka broker (SASL_SSL + mTLS, ACLs enforced)…")
    broker = LocalBroker.ephemeral(secure=True)
    stack.callback(say, "• broker stopped")
    stack.callback(broker.close)
    info = broker.start()
    assert info.secure is not None
    say(
        f"  Apache Kafka {info.version}: SASL_SSL at {info.secure.sasl_bootstrap}, up in "
        f"{info.startup_seconds:.1f} s; CA {info.secure.ca}; log {info.log_path}"
    )
    return SecureDemo(info.secure.admin_config(), info.secure.sasl_bootstrap, str(info.secure.ca))


def provision(demo: SecureDemo, topic: str, sinks: Sequence[str], say: Callable[[str], None]) -> None:
    """Topics, SCRAM users and least-privilege ACLs, as the super user."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    from govbus.consumers._settings import SinkRuntimeSettings

    s = SinkRuntimeSettings.model_validate({"dlq": {"create_topics": False}})
    for name in sinks:
        for extra in (s.dlq_topic(topic, name), s.replay_topic(topic, name)):
            ensure_topic(demo.admin, extra, partitions=1)
    users = {"kernel": ["kernel", "gate"], **{f"sink-{n}": [f"sink:{n}"] for n in sinks}, "console": ["console"]}
    demo.passwords = {user: secrets.token_urlsafe(24) for user in users}
    admin = new_admin(demo.admin)
    upserts: list[Any] = [
        UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), p.encode())
        for u, p in demo.passwords.items()
    ]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(30)
    count = 0
    for user, roles in users.items():
        entries = sorted(
            {
                e
                for r in roles
                for e in plan(parse_role(r), topic=topic, sink_settings=s, sinks=sinks, require_min_isr=True)
            }
        )
        count += apply_plan(demo.admin, f"User:{user}", entries)
    say(f"• principals {', '.join(f'User:{u}' for u in users)}: {count} ACLs from `govbus acl plan`, nothing else")
