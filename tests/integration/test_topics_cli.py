"""``govbus topics create``: the event topic and dead-letter topics, idempotently."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.integration


def test_creates_event_and_dlq_topics_idempotently(kafka_bootstrap: str) -> None:
    topic = f"govbus.events.{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "GOVBUS_TOPIC": topic}
    cmd = [
        sys.executable,
        "-m",
        "govbus",
        "topics",
        "create",
        "--partitions",
        "4",
        "--dlq-for",
        "audit",
        "--dlq-for",
        "otlp",
    ]
    for _ in range(2):  # the second run finds everything in place
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
        assert out.returncode == 0, out.stderr
        assert f"{topic}: 4 partitions" in out.stdout
    md = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)
    assert len(md.topics[topic].partitions) == 4
    assert f"{topic}.dlq.audit" in md.topics
    assert f"{topic}.dlq.otlp" in md.topics
    # The replay topics too: a sink that may not create topics (the secure deployments) needs them.
    assert f"{topic}.replay.audit" in md.topics
    assert f"{topic}.replay.otlp" in md.topics
