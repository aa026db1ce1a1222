"""The policy gate: admits agents only while the bus can carry their events; fails closed."""

from govbus.gate._checks import BusProbe, CheckResult, ComponentStatus
from govbus.gate._gate import Decision, Gate, Snapshot
from govbus.gate._policy import GatePolicy, load_policy, parse_policy
from govbus.gate._settings import GateSettings

__all__ = [
    "BusProbe",
    "CheckResult",
    "ComponentStatus",
    "Decision",
    "Gate",
    "GatePolicy",
    "GateSettings",
    "Snapshot",
    "load_policy",
    "parse_policy",
]
