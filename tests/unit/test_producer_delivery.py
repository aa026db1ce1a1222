"""The delivery side without a broker: how records refused for their batch's size are judged."""

from __future__ import annotations

import socket
from pathlib import Path

from confluent_kafka import KafkaError

from govbus._settings import load_settings
from govbus.event import ProducerInfo
from govbus.producer._batch import OutgoingRecord, record_size
from govbus.producer._delivery import SIZE_RETRIES, Delivery, DeliveryTracker
from govbus.producer._spool import Spool


def _delivery(tmp_path: Path) -> Delivery:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = load_settings(topic="t", kafka={"bootstrap_servers": f"127.0.0.1:{port}"})
    spool = Spool(
        tmp_path / "spool", max_bytes=8 << 20, segment_bytes=1 << 20, producer=ProducerInfo("p", "i", "h", "l")
    )
    tracker = DeliveryTracker(first_unsent=spool.start_watermark)
    return Delivery(settings.kafka.librdkafka(), "t", settings.kafka, spool, tracker)


def test_records_refused_for_their_batch_are_retried_only_if_they_fit_alone(tmp_path: Path) -> None:
    delivery = _delivery(tmp_path)
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
    small = [OutgoingRecord(i, b"k", b"v" * 100, [("ce_id", b"x")], True, None, delivery.on_delivery) for i in (0, 2)]
    big = OutgoingRecord(1, b"k", b"v" * 30_000, [], True, None, delivery.on_delivery)
    for record in (small[1], big, small[0]):
        delivery.on_delivery(record, too_large, None)
    assert delivery.tracker.failed == 0  # not judged before the topic's limit is known
    assert delivery.judge_size_refused() == []
    delivery.topic_limit = 20_000
    assert record_size(big) > 20_000 > record_size(small[0])
    assert delivery.judge_size_refused() == small  # in seq order
    assert delivery.tracker.failed == 1  # the big one only, kept in dead/
    assert len(list((tmp_path / "spool" / "dead").glob("*.seg"))) == 1
    assert delivery.last_error is not None
    assert "MSG_SIZE_TOO_LARGE" in delivery.last_error
    # A record refused again and again (a limit that changed) ends as a counted failure.
    retried = small[0]
    for _ in range(SIZE_RETRIES - 1):
        delivery.on_delivery(retried, too_large, None)
        assert delivery.judge_size_refused() == [retried]
    assert delivery.tracker.failed == 1
    delivery.on_delivery(retried, too_large, _Msg(retried))
    assert delivery.tracker.failed == 2
    delivery._spool.close()


class _Msg:
    def __init__(self, record: OutgoingRecord) -> None:
        self._record = record

    def key(self) -> bytes:
        return self._record.key

    def value(self) -> bytes:
        return self._record.value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._record.headers
