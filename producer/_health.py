"""Snapshots a kernel (and the policy gate) can read at any time, without I/O."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class BusCounters:
    """Event counts since the bus started.

    ``submitted``: accepted by ``emit()``. ``delivered``: acknowledged by the broker (acks=all).
    ``spooled``: written to the on-disk spool (every event in disk mode; overflow in memory mode).
    ``failed``: permanently refused by Kafka or unreadable on replay; kept in ``<spool>/dead``.
    ``rejected``: refused by ``emit()`` with :class:`SpoolFullError` (never accepted, never lost
    silently). ``recovered``: found in the spool at start-up, left by an earlier process.

    Once everything is delivered: ``delivered + failed == submitted + recovered``.
    """

    submitted: int
    delivered: int
    spooled: int
    failed: int
    rejected: int
    recovered: int


@dataclasses.dataclass(frozen=True, slots=True)
class BusHealth:
    """The bus as last seen. ``ok`` means it accepts events without loss; ``reason`` says why not.

    ``state``: ``starting`` (no metadata yet), ``connected`` (publishing directly), ``spooling``
    (broker away, or catching up from the spool), ``failed`` (fatal producer error), ``closed``.
    ``admission_blocked`` is set only with ``on_spool_full=deny-admission``, from
    ``admission_high_water`` until the spool is 10 % below it, and while the spool's filesystem is
    full (``reason`` "spool filesystem full (...)"): the gate must deny new work.
    """

    ok: bool
    reason: str
    state: str
    durability: str
    topic: str
    partitions: int | None
    broker_reachable: bool | None
    last_broker_contact: float | None  # Unix time of the last metadata answer or delivery report
    fatal_error: str | None
    last_error: str | None
    queue_depth: int  # events emitted, not yet taken by the sender thread
    kafka_queue_depth: int  # messages in librdkafka (queued or in flight)
    in_flight: int  # spooled records handed over and not yet acknowledged
    spool_bytes: int
    spool_max_bytes: int
    spool_high_water_bytes: int
    spool_segments: int
    spool_damage: tuple[str, ...]
    admission_blocked: bool
    counters: BusCounters
    # "auth" (credentials refused) or "authorization" (an ACL missing): needs an operator, ok is False.
    cause: str | None = None

    @property
    def spool_fraction(self) -> float:
        return self.spool_bytes / self.spool_max_bytes if self.spool_max_bytes else 0.0


AUTH = "auth"
AUTHORIZATION = "authorization"


@dataclasses.dataclass(frozen=True, slots=True)
class AccessProblem:
    """Kafka refused who the bus is (``auth``) or what it may do (``authorization``).

    Neither heals by itself: credentials or ACLs must change. ``sticky``: records were refused,
    so the bus stops publishing until it is recreated (its spool is then replayed)."""

    cause: str  # AUTH or AUTHORIZATION
    reason: str
    sticky: bool = False


def principal_of(kafka: Any) -> str:
    """Who the broker sees, as far as the settings tell (never a secret)."""
    if getattr(kafka, "sasl_username", None):
        return f"User:{kafka.sasl_username}"
    if getattr(kafka, "ssl_certificate_location", None):
        return (
            f"the principal of the certificate GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION={kafka.ssl_certificate_location}"
        )
    return "User:ANONYMOUS"


def authentication_failed(detail: str, kafka: Any) -> AccessProblem:
    mechanism = getattr(kafka, "sasl_mechanism", None)
    return AccessProblem(
        AUTH,
        f"{AUTH}: authentication failed ({detail}); the broker refuses the credentials in "
        f"GOVBUS_KAFKA__SASL_USERNAME / GOVBUS_KAFKA__SASL_PASSWORD (GOVBUS_KAFKA__SASL_MECHANISM={mechanism}) "
        "or the client certificate GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION / GOVBUS_KAFKA__SSL_KEY_LOCATION "
        "(or GOVBUS_KAFKA__SSL_CA_LOCATION does not hold the broker's CA); "
        "events are spooled until they are fixed",
    )


def authorization_failed(code: str, operation: str, resource: str, kafka: Any, *, sticky: bool) -> AccessProblem:
    """``operation`` on ``resource`` (e.g. ``WRITE``, ``topic govbus.events``) was denied."""
    after = (
        "the refused events are kept in the spool: recreate the Bus (or restart the kernel) once it is granted, "
        "and the next Bus on the spool replays them"
        if sticky
        else "events are spooled until it is granted"
    )
    return AccessProblem(
        AUTHORIZATION,
        f"{AUTHORIZATION}: {code}: {principal_of(kafka)} lacks the ACL operation {operation} on {resource}; "
        f"grant it; {after}",
        sticky,
    )
