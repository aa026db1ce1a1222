"""Alerts: raised when a cause appears, cleared when it ends, each transition a governance event.

An alert is carried as an existing kind (``anomaly_detected``) with action ``govbus.watch.<alert>``
and decision ``raised`` / ``cleared``: no schema change, so every reader of every contract version
decodes it, and SIEM rules can match on the action. The watchdog signs them with its own key.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from govbus.event import EventKind, GovernanceEvent

__all__ = ["ALERT_KINDS", "Alert", "AlertBook", "alert_event"]

log = logging.getLogger("govbus.watch")

# silent: a producer stream sent nothing (not even a heartbeat) for interval x factor.
# lost-tail: a heartbeat arrived after a gap: the stream's last records before it are gone.
# gap: an ordinary record arrived after a gap (sinks see it too; the watchdog makes it an alert).
# stalled: a sink partition lags and its committed offset has not moved, while the group has members.
# sink-gone: a sink group that had members has none (or vanished).
# dlq-failed: a sink partition is held by a record whose dead letter could not be written.
ALERT_KINDS = ("silent", "lost-tail", "gap", "stalled", "sink-gone", "dlq-failed")
_SEVERITY = {
    "silent": "critical",
    "lost-tail": "critical",
    "gap": "high",
    "stalled": "high",
    "sink-gone": "critical",
    "dlq-failed": "critical",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    subject: str  # what it is about: a stream (hex id), stream/partition, group, group/partition
    detail: str
    raised_at: float  # wall clock


def alert_event(alert: Alert, *, raised: bool, cleared_detail: str = "") -> GovernanceEvent:
    return GovernanceEvent(
        agent_id=f"govbus.watch/{alert.kind}/{alert.subject}",  # one key per alert: raise and clear stay in order
        kind=EventKind.ANOMALY_DETECTED,
        severity=_SEVERITY.get(alert.kind, "high") if raised else "info",
        action=f"govbus.watch.{alert.kind}",
        decision="raised" if raised else "cleared",
        reason=alert.detail if raised else (cleared_detail or f"cleared: {alert.detail}"),
        policy_name="govbus.watch",
        resource=alert.subject,
        attributes={"alert": alert.kind, "subject": alert.subject, "raised_at_ms": round(alert.raised_at * 1000)},
    )


class AlertBook:
    """The active alerts; ``publish`` receives each transition (raised / cleared) once."""

    def __init__(self, publish: Callable[[GovernanceEvent], Any] | None = None) -> None:
        self.active: dict[tuple[str, str], Alert] = {}
        self.raised_total: dict[str, int] = dict.fromkeys(ALERT_KINDS, 0)
        self.cleared_total: dict[str, int] = dict.fromkeys(ALERT_KINDS, 0)
        self.publish_failures = 0
        self._publish = publish

    def raise_(self, kind: str, subject: str, detail: str) -> bool:
        if (kind, subject) in self.active:
            return False
        alert = Alert(kind, subject, detail, time.time())
        self.active[(kind, subject)] = alert
        self.raised_total[kind] = self.raised_total.get(kind, 0) + 1
        log.warning("alert raised: %s %s: %s", kind, subject, detail)
        self._send(alert_event(alert, raised=True))
        return True

    def clear(self, kind: str, subject: str, why: str = "") -> bool:
        alert = self.active.pop((kind, subject), None)
        if alert is None:
            return False
        self.cleared_total[kind] = self.cleared_total.get(kind, 0) + 1
        log.info("alert cleared: %s %s%s", kind, subject, f": {why}" if why else "")
        self._send(alert_event(alert, raised=False, cleared_detail=why))
        return True

    def subjects(self, kind: str) -> list[str]:
        return [s for k, s in self.active if k == kind]

    def _send(self, event: GovernanceEvent) -> None:
        if self._publish is None:
            return
        try:
            self._publish(event)
        except Exception as exc:  # the log and /metrics still carry it
            self.publish_failures += 1
            log.error("could not publish alert %s: %s", event.action, exc)
