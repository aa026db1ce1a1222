"""govbus: a Kafka-backed bus for governance events emitted by AI-agent kernels.

What a kernel imports lives here; everything else is an implementation detail.
"""

from govbus.errors import ConfigError, DecodeError, GovbusError, InvalidEventError
from govbus.event import EventKind, GovernanceEvent
from govbus.settings import GovbusSettings, load_settings

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DecodeError",
    "EventKind",
    "GovbusError",
    "GovbusSettings",
    "GovernanceEvent",
    "InvalidEventError",
    "__version__",
    "load_settings",
]
