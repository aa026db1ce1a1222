"""The checks behind admission. They do I/O, so only the gate's refresher runs them.

Every check answers ok or not with a reason; an exception inside a check is a failure with the
exception as its reason (fail closed: unknown means no).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, OffsetSpec

from govbus._librdkafka import new_admin
from govbus._principal import principal_of
from govbus.gate._groups import GroupProbe
from govbus.gate._policy import GatePolicy, SinkRequirement
from govbus.watch._groups import StallTracker

log = logging.getLogger(__name__)
_MIN_ISR_TTL_S = 60.0  # topic configs change rarely; describing them every refresh is waste
_LATEST: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
# Refusals of who the gate is, or of what it may see: they name the settings or ACL to fix.
_AUTHENTICATION = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})
_AUTHORIZATION = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class ComponentStatus:
    """What an in-process component (producer, signer) says about itself, without I/O."""

    ok: bool
    reason: str


StatusSource = Callable[[], ComponentStatus]


class BusProbe:
    """Runs the policy's checks against the cluster and the in-process components."""

    def __init__(
        self,
        kafka_conf: dict[str, Any],
        topic: str,
        *,
        producer: StatusSource | None = None,
        signing: StatusSource | None = None,
    ) -> None:
        self._admin_conf: dict[str, Any] = {**kafka_conf, "logger": log, "error_cb": self._on_error}
        self._admin = new_admin(self._admin_conf)
        self._kafka_conf = kafka_conf
        self._auth_error: KafkaError | None = None  # the last authentication refusal, until metadata works
        self._topic = topic
        self._producer = producer
        self._signing = signing
        self._min_isr: tuple[float, int] | None = None  # (fetched at, value)
        # Group questions go through a child process: librdkafka can abort on them (see _groups).
        self._groups = GroupProbe(kafka_conf)
        self._stalls: StallTracker | None = None  # stalls need history: kept across refreshes

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in _AUTHENTICATION or _tls_refused(err):
            self._auth_error = err

    def run(self, policy: GatePolicy) -> list[CheckResult]:
        checks = policy.checks
        topic = checks.topic.name or self._topic
        timeout = checks.broker.timeout_s
        results: list[CheckResult] = []
        metadata: Any = None
        try:
            metadata = self._admin.list_topics(topic=topic, timeout=timeout)
            self._auth_error = None
            broker = CheckResult("broker", True, f"{len(metadata.brokers)} broker(s) answered")
        except Exception as exc:
            self._admin.poll(0)  # serves error_cb: an authentication refusal explains the silence
            if self._auth_error is not None:
                broker = CheckResult("broker", False, authentication_reason(self._auth_error, self._kafka_conf))
            else:
                broker = CheckResult("broker", False, f"no metadata answer within {timeout:g} s: {_describe(exc)}")
                # librdkafka can keep asking brokers that died (2 of 3 down: measured for 90 s while
                # the third answered); a new client bootstraps from every address again.
                self._admin = new_admin(self._admin_conf)
        if checks.broker.enabled:
            results.append(broker)
        if checks.topic.enabled:
            results.append(self._guard("topic", lambda: self._check_topic(metadata, topic, policy, timeout)))
        for sink in checks.sinks:
            check = functools.partial(self._check_sink, sink, topic, metadata, timeout)
            results.append(self._guard(f"sink:{sink.name}", check))
        if policy.required_classes:
            results.extend(self._check_classes(policy, topic, metadata, timeout))
        if checks.producer.enabled:
            results.append(self._component("producer", self._producer))
        if checks.signing.enabled:
            results.append(self._component("signing", self._signing))
        return results

    @staticmethod
    def _guard(name: str, check: Callable[[], tuple[bool, str]]) -> CheckResult:
        try:
            ok, reason = check()
        except Exception as exc:
            ok, reason = False, f"check failed: {_describe(exc)}"
        return CheckResult(name, ok, reason)

    @staticmethod
    def _component(name: str, source: StatusSource | None) -> CheckResult:
        if source is None:
            return CheckResult(name, False, f"no {name} status available in this process")
        try:
            status = source()
        except Exception as exc:
            return CheckResult(name, False, f"status unavailable: {_describe(exc)}")
        return CheckResult(name, status.ok, status.reason)

    def _check_topic(self, metadata: Any, topic: str, policy: GatePolicy, timeout: float) -> tuple[bool, str]:
        if metadata is None:
            return False, "unknown: the broker did not answer"
        meta = metadata.topics.get(topic)
        if meta is not None and meta.error is not None and meta.error.code() in _AUTHORIZATION:
            return False, authorization_reason(meta.error, "DESCRIBE", f"topic {topic}", self._kafka_conf)
        if meta is None or meta.error is not None:
            err = meta.error.str() if meta is not None and meta.error is not None else "absent"
            return False, f"topic {topic} does not exist ({err})"
        count = len(meta.partitions)
        want = policy.checks.topic.min_partitions
        if count < want:
            return False, f"topic {topic} has {count} partition(s), the policy requires at least {want}"
        leaderless = sorted(p.id for p in meta.partitions.values() if p.leader < 0)
        if leaderless:
            return False, f"partition(s) {leaderless} of {topic} have no leader"
        if policy.checks.topic.require_min_isr:
            try:
                min_isr = self._topic_min_isr(topic, timeout)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() in _AUTHORIZATION:
                    return False, authorization_reason(err, "DESCRIBE_CONFIGS", f"topic {topic}", self._kafka_conf)
                raise
            short = sorted(p.id for p in meta.partitions.values() if len(p.isrs) < min_isr)
            if short:
                return (
                    False,
                    f"partition(s) {short} of {topic} have fewer in-sync replicas than min.insync.replicas={min_isr}",
                )
            return True, f"{count} partitions, every ISR ≥ min.insync.replicas={min_isr}"
        return True, f"{count} partitions with leaders"

    def _topic_min_isr(self, topic: str, timeout: float) -> int:
        now = time.monotonic()
        if self._min_isr is not None and now - self._min_isr[0] < _MIN_ISR_TTL_S:
            return self._min_isr[1]
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = self._admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout=timeout)
        entry = configs.get("min.insync.replicas")
        value = int(entry.value) if entry is not None and entry.value is not None else 1
        self._min_isr = (now, value)
        return value

    def _check_sink(self, sink: SinkRequirement, topic: str, metadata: Any, timeout: float) -> tuple[bool, str]:
        if metadata is None:
            return False, "unknown: the broker did not answer"
        group = sink.group_id
        try:
            members, state = self._groups.describe(group, timeout)
            lag = None if sink.max_lag is None else self._group_lag(group, topic, metadata, timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _AUTHORIZATION:
                return False, authorization_reason(err, "DESCRIBE", f"group {group}", self._kafka_conf)
            raise
        if members < sink.min_members:
            return False, f"group {group} has {members} live member(s), needs {sink.min_members} (state {state})"
        if sink.max_lag is None or lag is None:
            return True, f"group {group}: {members} member(s)"
        if lag > sink.max_lag:
            return False, f"group {group} lags {lag} record(s) behind {topic}, above the bound {sink.max_lag}"
        return True, f"group {group}: {members} member(s), lag {lag}"

    def _check_classes(self, policy: GatePolicy, topic: str, metadata: Any, timeout: float) -> list[CheckResult]:
        """One ``class:<name>`` result per required class: enough healthy groups declaring it?"""
        required = policy.required_classes
        names = [f"class:{c}" for c in sorted(required)]
        if metadata is None or topic not in metadata.topics:
            return [CheckResult(n, False, "unknown: the broker did not answer") for n in names]
        cc = policy.checks.classes
        try:  # in the probe's child process, like every group question (librdkafka#4605, see _groups)
            views = self._groups.observe(topic, sorted(metadata.topics[topic].partitions), cc.group_prefix, timeout)
        except Exception as exc:
            return [CheckResult(n, False, f"check failed: {_describe(exc)}") for n in names]
        if self._stalls is None or self._stalls.stall_after_s != cc.stall_after_s:
            self._stalls = StallTracker(cc.stall_after_s)
        healthy: dict[str, list[str]] = {}
        sick: dict[str, list[str]] = {}
        for view in views.values():
            stalled = self._stalls.update(view)
            if view.sink_class is None or view.sink_class == "conflict":
                continue
            if view.members < 1:
                problem = f"{view.group} has no live member"
            elif stalled:
                p, still = max(stalled.items(), key=lambda kv: kv[1])
                problem = f"{view.group} stalled: partition {p} lags {view.lag[p]} and has not moved for {still:.0f} s"
            elif cc.max_lag is not None and view.total_lag > cc.max_lag:
                problem = f"{view.group} lags {view.total_lag} record(s), above max_lag {cc.max_lag}"
            else:
                healthy.setdefault(view.sink_class, []).append(
                    f"{view.group} ({view.members} member(s), lag {view.total_lag})"
                )
                continue
            sick.setdefault(view.sink_class, []).append(problem)
        results: list[CheckResult] = []
        for sink_class in sorted(required):
            want, ok = required[sink_class], healthy.get(sink_class, [])
            if len(ok) >= want:
                results.append(CheckResult(f"class:{sink_class}", True, f"{len(ok)} healthy: {', '.join(ok)}"))
                continue
            detail = "; ".join(sick.get(sink_class, [])) or f"no sink group declares class {sink_class}"
            results.append(
                CheckResult(
                    f"class:{sink_class}",
                    False,
                    f"{len(ok)} healthy sink(s) of class {sink_class}, the policy requires {want}: {detail}",
                )
            )
        return results

    def _group_lag(self, group: str, topic: str, metadata: Any, timeout: float) -> int:
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        committed = self._groups.committed(group, topic, [tp.partition for tp in partitions], timeout)
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for tp, fut in self._admin.list_offsets(
            {TopicPartition(t.topic, t.partition): _LATEST for t in partitions}, request_timeout=timeout
        ).items():
            ends[tp.partition] = fut.result(timeout=timeout).offset
        for tp, fut in self._admin.list_offsets(
            {TopicPartition(t.topic, t.partition): _EARLIEST for t in partitions}, request_timeout=timeout
        ).items():
            starts[tp.partition] = fut.result(timeout=timeout).offset
        lag = 0
        for partition, offset in committed.items():
            # No commit yet: the whole retained log is still to be read.
            position = offset if offset >= 0 else starts.get(partition, 0)
            lag += max(0, ends.get(partition, position) - position)
        return lag


def authentication_reason(err: KafkaError, conf: dict[str, Any]) -> str:
    """``auth: …``: the credentials the gate connects with were refused (never echoes a secret)."""
    return (
        f"auth: authentication failed ({err.str()}); the broker refuses the credentials in "
        f"GOVBUS_KAFKA__SASL_USERNAME / GOVBUS_KAFKA__SASL_PASSWORD (GOVBUS_KAFKA__SASL_MECHANISM="
        f"{conf.get('sasl.mechanism')}) or the client certificate GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION "
        "(expired, or not from the broker's CA), or GOVBUS_KAFKA__SSL_CA_LOCATION does not hold the broker's CA"
    )


def _tls_refused(err: KafkaError) -> bool:
    """A TLS handshake no retry fixes: the broker rejected our certificate (a TLS alert: expired,
    unknown CA…), or we do not trust the broker's. Who we are is refused: ``auth``, not an outage."""
    text = err.str()
    if err.code() == KafkaError._SSL:
        return "certificate verify failed" in text
    return err.code() == KafkaError._TRANSPORT and "alert" in text and "certificate" in text


def authorization_reason(err: KafkaError, operation: str, resource: str, conf: dict[str, Any]) -> str:
    """``authorization: …``: the gate's principal lacks an ACL."""
    principal = principal_of(conf)
    return f"authorization: {err.name()}: {principal} lacks the ACL operation {operation} on {resource}; grant it"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args:
        err = exc.args[0]
        text = err.str() if hasattr(err, "str") else str(err)
        return f"{type(exc).__name__}: {text}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
