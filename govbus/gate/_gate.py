"""Admission: answer from a health snapshot a background refresher keeps current.

``admit()`` never does I/O: it reads one immutable snapshot reference and the clock. Anything
unknown denies — no snapshot yet, a snapshot older than the policy's max staleness, a check that
raised. Every decision is recorded as a governance event off the caller's path.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from govbus.event import EventKind, GovernanceEvent
from govbus.gate._checks import CheckResult
from govbus.gate._policy import GatePolicy

log = logging.getLogger(__name__)
_RECORD_INTERVAL_S = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one admission request.

    ``allowed`` is what the caller acts on; in ``observe`` mode it is always True and
    ``would_deny`` tells what ``enforce`` would have said, with the same ``reasons``.
    """

    allowed: bool
    agent_id: str
    reasons: tuple[str, ...]
    checked_at: datetime | None
    snapshot_age_s: float
    mode: str
    would_deny: bool


@dataclasses.dataclass(frozen=True, slots=True)
class CheckState:
    """A check after debouncing: ``passing`` changes only after enough results in a row."""

    name: str
    passing: bool
    reason: str
    last_ok: bool
    streak: int  # consecutive results disagreeing with ``passing``


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    checked_at: datetime
    monotonic: float
    checks: tuple[CheckState, ...]
    healthy: bool
    reasons: tuple[str, ...]


Probe = Callable[[GatePolicy], list[CheckResult]]
Recorder = Callable[[GovernanceEvent], object]


def debounce(previous: CheckState | None, result: CheckResult, policy: GatePolicy) -> CheckState:
    """The next state of one check. A check starts failing: it has to earn admission."""
    passing = previous.passing if previous is not None else False
    if result.ok == passing:
        return CheckState(result.name, passing, result.reason, result.ok, 0)
    streak = (previous.streak if previous is not None and previous.last_ok == result.ok else 0) + 1
    needed = policy.debounce.pass_after if result.ok else policy.debounce.fail_after
    if streak >= needed:
        return CheckState(result.name, result.ok, result.reason, result.ok, 0)
    if result.ok:
        reason = f"recovering ({streak}/{needed} passes in a row): {result.reason}"
    else:
        reason = previous.reason if previous is not None else result.reason
    return CheckState(result.name, passing, reason, result.ok, streak)


def summarise(states: tuple[CheckState, ...], monotonic: float, checked_at: datetime) -> Snapshot:
    reasons = tuple(f"{s.name}: {s.reason}" for s in states if not s.passing)
    return Snapshot(checked_at, monotonic, states, not reasons, reasons)


class Gate:
    """Fail-closed admission of agents on the bus's health.

    ``probe`` runs the checks (I/O); ``recorder`` (usually ``Bus.emit``) receives one governance
    event per decision. Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        policy: GatePolicy,
        probe: Probe,
        *,
        recorder: Recorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._probe = probe
        self._recorder = recorder
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._states: dict[str, CheckState] = {}
        self._observe = policy.mode == "observe"
        self._max_stale = policy.max_staleness_s
        self._pending: collections.deque[Decision] = collections.deque()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.recorded = 0
        self.record_failures = 0

    # -- admission (the caller's path: no I/O, no locks) ------------------------------------

    def admit(self, agent_id: str) -> Decision:
        snap = self._snapshot
        reasons: tuple[str, ...]
        if snap is None:
            healthy, reasons, checked_at, age = False, ("no health snapshot yet",), None, float("inf")
        else:
            age = self._clock() - snap.monotonic
            checked_at = snap.checked_at
            if age > self._max_stale:
                healthy = False
                reasons = (f"health snapshot is {age:.1f} s old, above max_staleness_s={self._max_stale:g}",)
            else:
                healthy, reasons = snap.healthy, snap.reasons
        decision = Decision(healthy or self._observe, agent_id, reasons, checked_at, age, self.policy.mode, not healthy)
        if self._recorder is not None:
            self._pending.append(decision)  # deque.append is atomic; the recorder thread drains it
        return decision

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    # -- refreshing (background) ----------------------------------------------------------

    def refresh(self) -> Snapshot:
        """Runs every check once, applies debouncing and publishes the new snapshot."""
        results = self._probe(self.policy)
        states = tuple(debounce(self._states.get(r.name), r, self.policy) for r in results)
        self._states = {s.name: s for s in states}
        snap = summarise(states, self._clock(), datetime.now(UTC))
        previous = self._snapshot
        self._snapshot = snap
        if previous is None or previous.healthy != snap.healthy:
            log.info("gate %s: %s", "open" if snap.healthy else "closed", "; ".join(snap.reasons) or "all checks pass")
        return snap

    def start(self, *, wait_first: bool = True) -> Gate:
        """Starts the refresher (and the decision recorder); by default runs the first refresh first."""
        if self._threads:
            return self
        if wait_first:
            self._safe_refresh()
        self._threads = [threading.Thread(target=self._refresh_loop, name="govbus-gate-refresh", daemon=True)]
        if self._recorder is not None:
            self._threads.append(threading.Thread(target=self._record_loop, name="govbus-gate-record", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._drain()

    def __enter__(self) -> Gate:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:
            # The snapshot is left to age: staleness turns into denial, never into admission.
            log.exception("gate refresh failed")

    def _refresh_loop(self) -> None:
        interval = self.policy.refresh_interval_s
        while not self._stop.is_set():
            started = self._clock()
            self._safe_refresh()
            self._stop.wait(max(0.0, interval - (self._clock() - started)))

    def _record_loop(self) -> None:
        while not self._stop.wait(_RECORD_INTERVAL_S):
            self._drain()

    def _drain(self) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        while self._pending:
            decision = self._pending.popleft()
            try:
                recorder(decision_event(decision))
                self.recorded += 1
            except Exception as exc:
                self.record_failures += 1
                log.warning("could not record admission decision for %s: %s", decision.agent_id, exc)


def decision_event(d: Decision) -> GovernanceEvent:
    """The governance event that records an admission decision."""
    return GovernanceEvent(
        agent_id=d.agent_id,
        kind=EventKind.POLICY_CHECK,
        severity="info" if not d.would_deny else "warning",
        action="govbus.gate.admit",
        decision="allow" if d.allowed else "deny",
        reason="; ".join(d.reasons) if d.reasons else "the bus can carry the agent's events",
        policy_name="govbus.gate",
        attributes={
            "mode": d.mode,
            "would_deny": d.would_deny,
            "snapshot_age_ms": round(d.snapshot_age_s * 1000, 3) if d.snapshot_age_s != float("inf") else None,
            "checked_at": d.checked_at.isoformat() if d.checked_at else None,
        },
    )
