"""The Kafka broker the test session runs against, and topic helpers for tests.

Which broker, in order of preference:

1. ``GOVBUS_TEST_BOOTSTRAP=host:port`` — an external cluster, used as is;
2. a Testcontainers Kafka container, when a Docker engine answers;
3. a local Apache Kafka broker from the Maven Central artifacts (``govbus.localkafka``).

``GOVBUS_TEST_BROKER=local|container`` forces 3 or 2 (e.g. ``local`` to run the outage tests,
which need a broker they can stop, on a machine that has Docker).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from govbus.localkafka import KAFKA_VERSION, LocalBroker
from govbus.localkafka._secure import SecureInfo
from govbus.localkafka._tls import CertificateAuthority, Identity

DEFAULT_IMAGE = "confluentinc/cp-kafka:8.0.0"  # Confluent Platform 8.0 ships Apache Kafka 4.0
_QUIET = logging.getLogger("tests.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


@dataclass
class KafkaSource:
    """The broker of this session. ``broker`` is set only when tests may stop and restart it."""

    kind: Literal["external", "container", "local"]
    bootstrap: str
    description: str
    broker: LocalBroker | None = None
    close: Callable[[], None] = field(default=lambda: None)


def describe_choice() -> str:
    """One line for the session header: which broker integration tests will get (none started yet)."""
    kind = _choose()
    if kind == "external":
        return f"external cluster GOVBUS_TEST_BOOTSTRAP={os.environ['GOVBUS_TEST_BOOTSTRAP']}"
    if kind == "container":
        return f"Testcontainers {os.environ.get('GOVBUS_TEST_KAFKA_IMAGE', DEFAULT_IMAGE)} (Docker)"
    return f"local Apache Kafka {KAFKA_VERSION} broker from the Maven Central artifacts"


def start_source() -> KafkaSource:
    kind = _choose()
    if kind == "external":
        bootstrap = os.environ["GOVBUS_TEST_BOOTSTRAP"]
        return KafkaSource("external", bootstrap, f"external Kafka cluster at {bootstrap}")
    if kind == "container":
        return _start_container()
    broker = LocalBroker.ephemeral()
    info = broker.start()
    return KafkaSource(
        "local",
        info.bootstrap,
        f"Apache Kafka {info.version} at {info.bootstrap} (local broker, pid {info.pid}, "
        f"started in {info.startup_seconds:.1f} s; log {info.log_path})",
        broker=broker,
        close=broker.close,
    )


@functools.cache
def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping within ``timeout`` s; never hangs, never raises."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not Path("/var/run/docker.sock").exists():
        return False  # the common no-Docker case, decided without importing the SDK
    try:
        import docker  # type: ignore[import-untyped, unused-ignore]

        client = docker.from_env(timeout=max(1, round(timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def quiet_admin(bootstrap: str) -> AdminClient:
    """An AdminClient whose librdkafka log (connection refused while a broker restarts…) goes nowhere."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _QUIET, "error_cb": lambda _e: None}
    return AdminClient(config)


def create_topic(
    admin: AdminClient,
    name: str,
    partitions: int = 3,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create ``name`` and return once every partition has a leader (i.e. it can be produced to)."""
    # replication_factor -1: the cluster's default, 1 locally and whatever an external cluster needs.
    futures = admin.create_topics(
        [NewTopic(name, partitions, -1, config=dict(config or {}))], operation_timeout=timeout
    )
    futures[name].result(timeout)
    wait_for_topic(admin, name, partitions, timeout)
    return name


def wait_for_topic(admin: AdminClient, name: str, partitions: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            topic = admin.list_topics(topic=name, timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            meta = topic.topics.get(name)
        except KafkaException as exc:
            last, meta = exc, None
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in meta.partitions.values())
        ):
            return
        last = meta.error if meta is not None and meta.error is not None else last
        time.sleep(0.05)
    raise TimeoutError(f"topic {name} has no leader for every one of its {partitions} partitions ({last})")


def read_all(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[tuple[bytes | None, bytes | None]]:
    """``(key, value)`` of the first ``count`` records of every partition of ``topic``, read from the start
    without a consumer group (no coordinator, no rebalance); fewer if ``timeout`` runs out first."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": f"read-all-{uuid.uuid4().hex}",  # required by the client; never joined
        "enable.auto.commit": False,
        "logger": _QUIET,
    }
    consumer = Consumer(config)
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                records.append((message.key(), message.value()))
        return records
    finally:
        consumer.close()


def unique_topic_name(prefix: str = "test") -> str:
    """``test-<current test's name>-<random>``: readable in broker logs, never reused."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].split(" ")[0]
    hint = re.sub(r"[^A-Za-z0-9]+", "-", current).strip("-")[:60]
    return "-".join(part for part in (prefix, hint, uuid.uuid4().hex[:10]) if part)


def _choose() -> Literal["external", "container", "local"]:
    if os.environ.get("GOVBUS_TEST_BOOTSTRAP"):
        return "external"
    forced = os.environ.get("GOVBUS_TEST_BROKER", "auto")
    if forced not in ("auto", "local", "container"):
        raise ValueError(f"GOVBUS_TEST_BROKER must be auto, local or container, not {forced!r}")
    if forced == "local":
        return "local"
    if forced == "container" or docker_available():
        return "container"
    return "local"


def _start_container() -> KafkaSource:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.9 kept it at the old place
        from testcontainers.kafka import KafkaContainer

    image = os.environ.get("GOVBUS_TEST_KAFKA_IMAGE", DEFAULT_IMAGE)
    container = (
        KafkaContainer(image)
        .with_kraft()
        # Same topic behaviour as the local broker: govbus creates its topics explicitly.
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_NUM_PARTITIONS", "3")
    )
    started = time.monotonic()
    container.start()
    bootstrap = container.get_bootstrap_server()
    return KafkaSource(
        "container",
        bootstrap,
        f"{image} at {bootstrap} (Testcontainers, started in {time.monotonic() - started:.1f} s)",
        close=container.stop,
    )


@dataclass
class SecureKafka:
    """The session's secure broker (``govbus.localkafka`` with ``secure=True``): SASL_SSL
    (SCRAM-SHA-512) at ``sasl_bootstrap``, mTLS at ``mtls_bootstrap``, ACLs enforced, nothing
    anonymous. ``admin_config()`` is a super user (mTLS); the helpers create users and ACLs as it."""

    broker: LocalBroker
    info: SecureInfo
    admin: AdminClient

    @property
    def sasl_bootstrap(self) -> str:
        return self.info.sasl_bootstrap

    @property
    def mtls_bootstrap(self) -> str:
        return self.info.mtls_bootstrap

    @property
    def ca(self) -> Path:
        return self.info.ca

    def admin_config(self) -> dict[str, Any]:
        return self.info.admin_config()

    def add_scram_user(self, name: str | None = None, password: str | None = None) -> tuple[str, str]:
        """A new SCRAM-SHA-512 user (random name and password unless given); returns (name, password)."""
        name = name or f"user-{uuid.uuid4().hex[:10]}"
        password = password or uuid.uuid4().hex
        upsert = UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
        )
        for future in self.admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)
        return name, password

    def issue_cert(self, name: str | None = None) -> Identity:
        """A client certificate from the broker's CA (principal ``User:<name>`` on the mTLS listener)."""
        return CertificateAuthority(self.info.tls_dir).issue(name or f"cert-{uuid.uuid4().hex[:10]}")

    def scram_config(self, name: str, password: str) -> dict[str, Any]:
        return {**self.info.scram_config(name, password), "logger": _QUIET}

    def mtls_config(self, identity: Identity) -> dict[str, Any]:
        return {**self.info.mtls_config(identity), "logger": _QUIET}

    def allow(
        self,
        principal: str,
        resource: str,
        name: str,
        operations: str | list[str],
        *,
        prefixed: bool = False,
    ) -> None:
        """Grant ``User:<principal>`` the operations (``READ``, ``WRITE``, ``DESCRIBE``…) on a resource
        (``TOPIC``, ``GROUP``, ``CLUSTER`` — name ``kafka-cluster``, ``TRANSACTIONAL_ID``)."""
        self._acls("create", principal, resource, name, operations, prefixed)

    def revoke(
        self, principal: str, resource: str, name: str, operations: str | list[str], *, prefixed: bool = False
    ) -> None:
        """Delete ACLs granted by :meth:`allow` (the same arguments)."""
        self._acls("delete", principal, resource, name, operations, prefixed)

    def new_topic(self, partitions: int = 3, config: Mapping[str, str] | None = None, *, prefix: str = "secure") -> str:
        return create_topic(self.admin, unique_topic_name(prefix), partitions, config)

    def _acls(
        self, action: str, principal: str, resource: str, name: str, operations: str | list[str], prefixed: bool
    ) -> None:
        ops = [operations] if isinstance(operations, str) else operations
        pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
        # confluent-kafka calls the cluster resource BROKER (its name is always "kafka-cluster").
        restype = ResourceType.BROKER if resource.upper() == "CLUSTER" else ResourceType[resource.upper()]
        if action == "create":
            bindings = [
                AclBinding(
                    restype, name, pattern, f"User:{principal}", "*", AclOperation[op.upper()], AclPermissionType.ALLOW
                )
                for op in ops
            ]
            for future in self.admin.create_acls(bindings, request_timeout=30).values():
                future.result(30)
        else:
            filters = [
                AclBindingFilter(
                    restype, name, pattern, f"User:{principal}", "*", AclOperation[op.upper()], AclPermissionType.ALLOW
                )
                for op in ops
            ]
            for future in self.admin.delete_acls(filters, request_timeout=30).values():
                future.result(30)


def start_secure() -> SecureKafka:
    """A secure local broker for this session (always local: it needs our CA and listeners)."""
    broker = LocalBroker.ephemeral(secure=True)
    info = broker.start()
    assert info.secure is not None
    admin = AdminClient({**info.secure.admin_config(), "logger": _QUIET, "error_cb": lambda _e: None})
    return SecureKafka(broker, info.secure, admin)
