"""Ask a broker for cluster metadata: the one question that proves it serves clients."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

# librdkafka reports every refused connection while the broker boots; route its log to a logger
# that drops everything so waiting for a broker is not a screenful of "Connection refused".
_SILENT = logging.getLogger("govbus.localkafka.librdkafka")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False
_SILENT.setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True)
class Metadata:
    cluster_id: str | None
    brokers: int
    topics: int
    seconds: float


class MetadataProbe:
    """One quiet AdminClient reused across attempts, so retries reuse its connection and backoff."""

    def __init__(self, bootstrap: str, client_config: Mapping[str, Any] | None = None) -> None:
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **(client_config or {}),
            "logger": _SILENT,
            "log_level": 0,
            "error_cb": _ignore,
            "socket.connection.setup.timeout.ms": 1000,
            # Notice a broker that just opened its port within a quarter second.
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 250,
        }
        self._admin = AdminClient(config)

    def ask(self, timeout: float) -> Metadata | None:
        """Metadata if a broker answered within ``timeout`` seconds and lists at least one broker."""
        started = time.monotonic()
        try:
            answer = self._admin.list_topics(timeout=max(timeout, 0.05))
        except KafkaException:
            return None
        if not answer.brokers:
            return None
        return Metadata(
            cluster_id=answer.cluster_id,
            brokers=len(answer.brokers),
            topics=len(answer.topics),
            seconds=time.monotonic() - started,
        )


def ask_metadata(
    bootstrap: str, timeout: float = 3.0, client_config: Mapping[str, Any] | None = None
) -> Metadata | None:
    """Metadata from the cluster at ``bootstrap``, or None if no answer came within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    probe = MetadataProbe(bootstrap, client_config)
    # list_topics can fail fast (e.g. connection refused); keep asking until the deadline.
    while True:
        remaining = deadline - time.monotonic()
        answer = probe.ask(min(remaining, 1.0))
        if answer is not None or remaining <= 0:
            return answer
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))


def _ignore(_error: object) -> None:
    """Connection errors while probing are expected; the caller decides what silence means."""
