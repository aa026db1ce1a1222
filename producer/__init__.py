"""The producer library: what a kernel uses to put governance events on the bus.

    from govbus.producer import Bus

    with Bus() as bus:                      # GOVBUS_* settings; or Bus(settings)
        bus.emit(GovernanceEvent(agent_id="a-1", kind=EventKind.TOOL_CALL_BLOCKED, ...))

``GovbusSink`` plugs the bus into AGT's ``GovernanceEventProcessor``.
"""

from govbus.producer._agt import GovbusSink
from govbus.producer._batch import BatchEncoder, BatchHook, OutgoingRecord
from govbus.producer._bus import Bus
from govbus.producer._errors import (
    BusClosedError,
    ProducerError,
    ProducerFatalError,
    RescueError,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
)
from govbus.producer._health import BusCounters, BusHealth
from govbus.producer._settings import ProducerSettings

__all__ = [
    "BatchEncoder",
    "BatchHook",
    "Bus",
    "BusClosedError",
    "BusCounters",
    "BusHealth",
    "GovbusSink",
    "OutgoingRecord",
    "ProducerError",
    "ProducerFatalError",
    "ProducerSettings",
    "RescueError",
    "SpoolError",
    "SpoolFullError",
    "SpoolLockedError",
]
