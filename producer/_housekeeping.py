"""The poller thread (``govbus-poller``): topic metadata, spool housekeeping, ``health.json``.

Every ~50 ms it may: refresh the topic's metadata (every ``metadata_refresh_ms`` while healthy,
every 0.5 s otherwise or at once when librdkafka reported every broker down) -> :class:`Metadata`
(the partitioner the sender uses; the topic problem health reports); read the topic's
``max.message.bytes`` when a batch was refused for its size (the sender then re-produces the
records that fit alone); recycle/release delivered spool segments and save the delivered watermark
(every 0.1 s); write ``<spool>/health.json`` (every second).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import ConfigResource

from govbus._librdkafka import new_admin
from govbus.producer._delivery import AUTHORIZATION, Delivery
from govbus.producer._health import BusHealth, authorization_failed
from govbus.producer._partition import Partitioner
from govbus.producer._spool import Spool

if TYPE_CHECKING:
    from govbus._settings import KafkaSettings

log = logging.getLogger("govbus.producer")

HOUSEKEEPING_S = 0.1
HEALTH_FILE_S = 1.0
ACK_SAVE_S = 0.1  # a hint for restarts: fewer duplicates after a crash
RETRY_METADATA_S = 0.5
TICK_S = 0.05
# Kafka's default message.max.bytes: the limit assumed when the topic's cannot be read (no
# DESCRIBE_CONFIGS); records refused for size are then re-produced at most SIZE_RETRIES times.
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


class Metadata:
    """What the last metadata answer said about the topic (written by the poller, read by the
    sender and health())."""

    def __init__(self) -> None:
        self.partitioner: Partitioner | None = None  # None: no partitions known, the sender spools
        self.topic_problem: str | None = None


class Poller:
    def __init__(
        self,
        *,
        delivery: Delivery,
        spool: Spool,
        metadata: Metadata,
        kafka: KafkaSettings,
        disk: bool,
        metadata_refresh_ms: int,
        wake_sender: threading.Event,
        health: Callable[[], BusHealth],
        after_housekeeping: Callable[[], None],
    ) -> None:
        self._delivery = delivery
        self._spool = spool
        self.metadata = metadata
        self._kafka = kafka
        self._disk = disk
        self._refresh_s = metadata_refresh_ms / 1000
        self._wake_sender = wake_sender
        self._health = health
        self._after_housekeeping = after_housekeeping
        self._ack_saved: int | None = None
        self._ack_saved_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="govbus-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def run(self) -> None:
        delivery = self._delivery
        next_metadata = next_house = next_health = 0.0
        while True:
            try:
                now = time.monotonic()
                if (now >= next_metadata or delivery.probe_now) and delivery.fatal is None:
                    delivery.probe_now = False
                    healthy = self.refresh_metadata()
                    next_metadata = time.monotonic() + (self._refresh_s if healthy else RETRY_METADATA_S)
                if delivery.size_refused and delivery.topic_limit is None:
                    delivery.topic_limit = self._topic_limit()
                    self._wake_sender.set()
                if now >= next_house:
                    self.housekeeping()
                    next_house = now + HOUSEKEEPING_S
                if now >= next_health:
                    self.write_health_file()
                    next_health = now + HEALTH_FILE_S
            except Exception as exc:
                delivery.last_error = f"poller: {exc!r}"
                log.exception("govbus poller iteration failed")
            if self._stop.wait(TICK_S):
                return

    def refresh_metadata(self) -> bool:
        delivery, metadata, topic_name = self._delivery, self.metadata, self._delivery.topic
        # Short while nothing is known: the poller also serves delivery reports and close().
        timeout = 5.0 if metadata.partitioner is not None and delivery.reachable else 0.5
        try:
            md = delivery.producer.list_topics(topic_name, timeout=timeout)
        except KafkaException as exc:
            delivery.last_error = f"metadata request failed: {exc.args[0].str() if exc.args else exc}"
            return False
        topic = md.topics.get(topic_name)
        delivery.reachable = True
        delivery.last_contact = time.time()
        denied = topic is not None and topic.error is not None and topic.error.code() in AUTHORIZATION
        access = delivery.access
        if access is not None and not access.sticky:
            if not denied:  # a metadata answer proves the credentials work, and DESCRIBE if it names the topic
                log.info("govbus producer: the broker accepts us again (was: %s)", access.reason)
            delivery.access = None
        if denied and delivery.access is None:
            delivery.access = authorization_failed(
                "TOPIC_AUTHORIZATION_FAILED", "DESCRIBE", f"topic {topic_name}", self._kafka, sticky=False
            )
        if topic is None or topic.error is not None or not topic.partitions:
            problem = (
                f"topic {topic_name} is not available ({topic.error.str() if topic and topic.error else 'absent'})"
            )
            if problem != metadata.topic_problem:
                log.error("govbus producer: %s; spooling until it is", problem)
            metadata.topic_problem = delivery.last_error = problem
            metadata.partitioner = None  # no partitions to pick: the sender spools
            return False
        metadata.topic_problem = None
        count = len(topic.partitions)
        partitioner = metadata.partitioner
        if partitioner is None or partitioner.partitions != count:
            if partitioner is not None:
                log.warning("topic %s now has %d partitions (was %d)", topic_name, count, partitioner.partitions)
            metadata.partitioner = Partitioner(count)
            self._wake_sender.set()
        return True

    def _topic_limit(self) -> int:
        """The topic's ``max.message.bytes`` (read once, when a batch was first refused for its size)."""
        topic = self._delivery.topic
        admin: Any = None
        try:
            admin = new_admin(self._kafka.librdkafka())
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            configs = admin.describe_configs([resource], request_timeout=5.0)[resource].result(timeout=5.0)
            entry = configs.get("max.message.bytes")
            if entry is not None and entry.value is not None:
                return int(entry.value)
        except Exception as exc:  # no DESCRIBE_CONFIGS, broker away...: assume the broker default
            log.warning("cannot read max.message.bytes of topic %s (%s); assuming Kafka's default", topic, exc)
        return BROKER_DEFAULT_MAX_MESSAGE_BYTES

    def housekeeping(self, final: bool = False) -> None:
        spool = self._spool
        watermark = self._delivery.tracker.watermark()
        if self._disk and not final:
            spool.recycle(watermark)
        spool.release(watermark)  # cheap: a scan of the segment list
        now = time.monotonic()
        if final or now - self._ack_saved_at >= ACK_SAVE_S:
            if watermark != self._ack_saved:
                spool.save_ack(watermark)
                self._ack_saved = watermark
            self._ack_saved_at = now
        self._after_housekeeping()

    def write_health_file(self) -> None:
        """``<spool>/health.json``: the producer's health for out-of-process probes (gate check)."""
        health = self._health()
        data = dataclasses.asdict(health)
        data["spool_fraction"] = health.spool_fraction
        data["written_at"] = time.time()
        data["pid"] = os.getpid()
        path = Path(self._spool.directory) / "health.json"
        tmp = path.with_name(f"health.json.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data, default=str))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot write %s: %s", path, exc)
