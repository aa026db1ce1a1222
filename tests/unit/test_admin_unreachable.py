"""`govbus topics create` (and every caller of ensure_topic) with no broker answering: a TopicError
naming the address and the setting, exit 2 from the CLI, never a raw TimeoutError traceback."""

from __future__ import annotations

import pytest
from _await import closed_port

from govbus._admin import TopicError, ensure_topic
from govbus._cli import main


def test_ensure_topic_without_a_broker_names_the_address_and_setting() -> None:
    address = closed_port()
    with pytest.raises(TopicError, match=r"no broker at 127\.0\.0\.1:\d+ answered.*GOVBUS_KAFKA__BOOTSTRAP_SERVERS"):
        ensure_topic({"bootstrap.servers": address}, "t", timeout=1.0)


def test_topics_create_without_a_broker_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GOVBUS_KAFKA__BOOTSTRAP_SERVERS", closed_port())
    code = main(["topics", "create", "--timeout", "1"])
    assert code == 2
    assert "answered within" in capsys.readouterr().err
