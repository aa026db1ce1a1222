"""A sample kernel: realistic governance events of every kind, for the demo and the benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime

from govbus.event import EventKind, GovernanceEvent

_TOOLS = ("shell.exec", "http.get", "fs.write", "db.query", "email.send", "browser.open", "git.push")
_RESOURCES = ("/etc/passwd", "https://api.example.com/v1/pay", "s3://reports/q3.csv", "db://crm/customers", None)
_POLICIES = ("no-prod-writes", "pii-egress", "tool-allowlist", "spend-limit", None)
_SEVERITY = {
    EventKind.POLICY_CHECK: "info",
    EventKind.POLICY_VIOLATION: "high",
    EventKind.TOOL_CALL_BLOCKED: "warning",
    EventKind.PROMPT_INJECTION_DETECTED: "critical",
    EventKind.IDENTITY_VERIFIED: "info",
    EventKind.IDENTITY_REJECTED: "high",
    EventKind.RESOURCE_ACCESS: "info",
    EventKind.ESCALATION_REQUESTED: "medium",
    EventKind.CHECKPOINT_CREATED: "info",
    EventKind.ANOMALY_DETECTED: "high",
    EventKind.MCP_TOOL_POISONING: "critical",
    EventKind.CONTENT_VIOLATION: "medium",
}
KINDS = tuple(k for k in EventKind if k is not EventKind.UNKNOWN)


def sample_events(count: int, *, agents: int = 8, seed: int = 7, session_size: int = 50) -> Iterator[GovernanceEvent]:
    """``count`` events cycling through every kind, spread over ``agents`` agents with sessions."""
    rng = random.Random(seed)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        agent = f"agent-{i % agents:03d}"
        denied = kind in (EventKind.POLICY_VIOLATION, EventKind.TOOL_CALL_BLOCKED, EventKind.IDENTITY_REJECTED)
        tool = rng.choice(_TOOLS)
        yield GovernanceEvent(
            agent_id=agent,
            agent_did=f"did:web:agents.example.com:{agent}" if i % 3 else None,
            session_id=f"{agent}-s{seed}-{i // session_size}",
            kind=kind,
            severity=_SEVERITY.get(kind, "high"),
            action=tool,
            resource=rng.choice(_RESOURCES),
            decision="deny" if denied else ("escalate" if kind is EventKind.ESCALATION_REQUESTED else "allow"),
            reason=f"{kind.value.replace('_', ' ')} on {tool}",
            policy_name=rng.choice(_POLICIES),
            latency_ms=round(rng.uniform(0.05, 4.0), 3),
            occurred_at=datetime.now(UTC),
            attributes={"tool": tool, "attempt": i, "score": round(rng.random(), 4), "tags": ["demo", kind.value]},
        )
