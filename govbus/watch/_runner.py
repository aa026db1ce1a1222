"""Runs a :class:`Watchdog` against Kafka: a consumer on the topic, an admin client on the sink
groups, a Bus that publishes alerts (signed with the watchdog's own key) and ``/metrics``."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError

from govbus._admin import ensure_topic
from govbus._contract import Decoder
from govbus._librdkafka import new_admin, new_consumer
from govbus._principal import missing_acl
from govbus._record import from_record
from govbus._settings import GovbusSettings
from govbus.consumers._health import HealthServer, HealthStatus
from govbus.errors import ConfigError
from govbus.event import GovernanceEvent
from govbus.gate._groups import GroupProbe
from govbus.producer._settings import default_spool_dir
from govbus.watch._alerts import ALERT_KINDS, AlertBook
from govbus.watch._settings import WatchSettings
from govbus.watch._watchdog import Watchdog

__all__ = ["WatchRunner"]

log = logging.getLogger("govbus.watch")
_BATCH = 500


class WatchRunner:
    """``WatchRunner(settings).run()`` blocks until :meth:`stop`. ``publish`` replaces the alerts
    Bus (tests); by default alerts go to ``GOVBUS_WATCH__ALERTS_TOPIC`` through a :class:`Bus`."""

    def __init__(self, settings: GovbusSettings, *, publish: Any = None) -> None:
        self.settings = settings
        w: WatchSettings = settings.watch
        self.w = w
        self.topic = w.topic or settings.topic
        if w.alerts_topic == self.topic:
            raise ConfigError("GOVBUS_WATCH__ALERTS_TOPIC", "must differ from the watched topic")
        self._conf = settings.kafka.librdkafka()
        self._bus: Any = None
        if publish is None:
            from govbus.producer import Bus

            ensure_topic(self._conf, w.alerts_topic, partitions=w.alerts_partitions)
            update: dict[str, Any] = {"topic": w.alerts_topic}
            if "spool_dir" not in settings.producer.model_fields_set:
                # Not the kernels' default spool directory: a kernel on this host may hold its lock.
                spool = default_spool_dir().with_name("watch-spool")
                update["producer"] = settings.producer.model_copy(update={"spool_dir": spool})
            alerts_settings = settings.model_copy(update=update)
            self._bus = Bus(alerts_settings)
            publish = self._bus.emit
        self.published: list[GovernanceEvent] = []
        self._publish = publish
        verifier = None
        keyring = settings.signing.keyring_path
        if keyring is not None:
            from govbus.signing import Keyring, Verifier

            verifier = Verifier(Keyring.load(keyring))
        decoder = Decoder()
        self.watchdog = Watchdog(
            AlertBook(self._record),
            lambda value, headers: from_record(value, headers, decoder),
            verifier=verifier,
            silent_factor=w.silent_factor,
            stall_after_s=w.stall_after_s,
        )
        self._stop = threading.Event()
        self._admin = new_admin({**self._conf, "logger": log})
        # The group questions (list, describe, offsets: coordinator requests) are asked from a child
        # process, as the gate asks them: librdkafka aborts the whole process when a coordinator's
        # connection drops mid-request (confluentinc/librdkafka#4605; govbus/gate/_groups.py).
        self._groups = GroupProbe(self._conf)
        self._last_loop = time.monotonic()
        self.health: HealthServer | None = None
        self.started = threading.Event()
        self.problem: str | None = None  # a refusal that stops the watchdog from reading (an ACL)

    def _record(self, event: GovernanceEvent) -> None:
        self.published.append(event)
        if len(self.published) > 10_000:  # a bounded record for tests and /metrics, not a queue
            del self.published[:5_000]
        self._publish(event)

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> HealthStatus:
        live = time.monotonic() - self._last_loop < 30
        wd = self.watchdog
        detail = {
            "topic": self.topic,
            "streams": len(wd.streams),
            "active_alerts": sorted(f"{k} {s}" for k, s in wd.alerts.active),
        }
        if self.problem is not None:
            detail["problem"] = self.problem
        return HealthStatus(live, live and self.started.is_set(), detail)

    def metrics(self) -> str:
        wd = self.watchdog
        book = wd.alerts
        lines = [
            "# HELP govbus_watch_alerts_active Alerts currently raised, by kind.",
            "# TYPE govbus_watch_alerts_active gauge",
        ]
        active = {k: 0 for k in ALERT_KINDS}
        for kind, _ in book.active:
            active[kind] = active.get(kind, 0) + 1
        lines += [f'govbus_watch_alerts_active{{alert="{k}"}} {n}' for k, n in sorted(active.items())]
        lines += [
            "# HELP govbus_watch_alerts_raised_total Alerts raised.",
            "# TYPE govbus_watch_alerts_raised_total counter",
        ]
        lines += [f'govbus_watch_alerts_raised_total{{alert="{k}"}} {n}' for k, n in sorted(book.raised_total.items())]
        lines += [
            "# TYPE govbus_watch_records_total counter",
            f"govbus_watch_records_total {wd.records}",
            "# TYPE govbus_watch_heartbeats_total counter",
            f"govbus_watch_heartbeats_total {wd.heartbeats}",
            "# TYPE govbus_watch_inauthentic_total counter",
            f"govbus_watch_inauthentic_total {wd.inauthentic}",
            "# TYPE govbus_watch_streams gauge",
            f"govbus_watch_streams {len(wd.streams)}",
            "# TYPE govbus_watch_alert_publish_failures_total counter",
            f"govbus_watch_alert_publish_failures_total {book.publish_failures}",
        ]
        return "\n".join(lines) + "\n"

    def run(self) -> None:
        w = self.w
        consumer = new_consumer(
            {
                **self._conf,
                "group.id": w.group_id,
                "client.id": f"{self._conf.get('client.id', 'govbus')}.watch",
                "auto.offset.reset": w.auto_offset_reset,
                "enable.auto.commit": True,
                "enable.partition.eof": False,
                "logger": log,
            }
        )
        wd = self.watchdog

        def forget(_c: Any, parts: list[Any]) -> None:
            with wd.lock:
                for tp in parts:
                    wd.forget_partition(tp.partition)

        consumer.subscribe([self.topic], on_assign=forget, on_revoke=forget, on_lost=forget)
        if w.metrics_enabled:
            self.health = HealthServer(w.host, w.port, self.status, self.metrics)
            self.health.start()
            log.info("watchdog: /healthz /metrics at %s", self.health.url)
        next_groups = 0.0
        log.info("watchdog: watching %s, alerts to %s", self.topic, w.alerts_topic)
        try:
            while not self._stop.is_set():
                self._last_loop = now = time.monotonic()
                for msg in consumer.consume(_BATCH, 0.2):
                    if msg.error() is not None:
                        self._refused(msg.error())
                        continue
                    if consumer.assignment():
                        self.started.set()
                    wd.observe(msg.value(), msg.key(), msg.headers(), msg.partition() or 0)  # type: ignore[arg-type]
                if consumer.assignment():
                    self.started.set()
                wd.tick()
                if now >= next_groups:
                    next_groups = now + w.groups_interval_s
                    self._read_groups()
        finally:
            consumer.close()
            self._groups.close()
            if self.health is not None:
                self.health.stop()
            if self._bus is not None:
                self._bus.close()

    def _refused(self, err: Any) -> None:
        """A refused ACL is named (logged once, in /readyz's detail as ``problem``); other errors are
        librdkafka's to retry."""
        code = err.code()
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            problem = missing_acl(err, "READ", f"TOPIC {self.topic}", self._conf, role="watch")
        elif code == KafkaError.GROUP_AUTHORIZATION_FAILED:
            problem = missing_acl(err, "READ", f"GROUP {self.w.group_id}", self._conf, role="watch")
        else:
            log.debug("consumer: %s", err)
            return
        if problem != self.problem:
            log.error("watchdog: authorization: %s", problem)
        self.problem = problem

    def _read_groups(self) -> None:
        timeout = 5.0
        try:
            meta = self._admin.list_topics(topic=self.topic, timeout=timeout)  # metadata: any broker answers
            parts = sorted(meta.topics[self.topic].partitions)
            views = self._groups.observe(self.topic, parts, self.w.group_prefix, timeout)
        except Exception as exc:  # the cluster's view is unknown this round: judge nothing
            log.warning("watchdog: cannot read the sink groups: %s", exc)
            return
        self.watchdog.groups(views)
