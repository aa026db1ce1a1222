"""The dead-letter producer on a secure broker: a fatal error is raised with its cause, never retried."""

from __future__ import annotations

import pytest
from _kafka import SecureKafka, create_topic

from govbus.consumers._dlq import DeadLetterer
from govbus.consumers._errors import DeadLetterFatalError
from govbus.consumers._pipeline import Failure, Work

pytestmark = pytest.mark.integration


def _work(topic: str) -> tuple[Work, Failure]:
    failure = Failure("decode:bad-headers", "not an event")
    work = Work(topic, 0, 7, 1, 5, b"k", b"junk!", [], None, failure=failure)
    return work, failure


def test_send_raises_the_fatal_cause_instead_of_retrying(secure_kafka: SecureKafka) -> None:
    topic = secure_kafka.new_topic(1, prefix="dlqacl")
    dlq = create_topic(secure_kafka.admin, f"{topic}.dlq.file", 1)
    user, password = secure_kafka.add_scram_user()
    secure_kafka.allow(user, "TOPIC", dlq, "DESCRIBE")  # no WRITE: no producer id either
    conf = secure_kafka.scram_config(user, password)
    letterer = DeadLetterer(conf, sink="file", group="govbus.sink.file", topic_for=lambda t: f"{t}.dlq.file")
    try:
        # Unfixed, send() reported "Local: Fatal error" as a failed item and the worker retried forever.
        with pytest.raises(DeadLetterFatalError) as raised:
            letterer.send([_work(topic)])
        message = str(raised.value)
        assert "CLUSTER_AUTHORIZATION_FAILED" in message
        assert f"WRITE on {dlq}" in message
        assert "exit code 2" in message
    finally:
        letterer.close()
