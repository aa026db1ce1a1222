"""Every slot of the consume loop's objects, to hold the ones the compiled core builds to the ones
the Python path builds (``Work``, its ``NativeRecord``; rows of the batch intake)."""

from __future__ import annotations

import re
import types
from typing import Any

_UNSET = "<unset>"


def _repr(v: Any) -> str:
    # fastavro's messages may name an object's address; nothing else differs
    return re.sub(r" at 0x[0-9a-f]+", " at 0x", repr(v))


def slots(obj: Any, decoder: Any = None) -> Any:
    """``obj``'s class and each slot of it and its bases (``<unset>`` when empty), nested objects
    with slots dumped the same way; reprs (a NaN attribute is unequal to itself). ``decoder``: the
    intake's lazy decoder, named instead of compared (two intakes have two); object addresses
    in texts are left out."""
    if obj is None or not hasattr(type(obj), "__slots__") or isinstance(obj, tuple | str | bytes):
        if isinstance(obj, tuple):
            return tuple(slots(o, decoder) for o in obj)
        return _repr(obj)
    out: dict[str, Any] = {}
    for cls in type(obj).__mro__:
        for name in cls.__dict__.get("__slots__", ()):
            d = cls.__dict__.get(name)
            if not isinstance(d, types.MemberDescriptorType):
                continue
            try:
                v = d.__get__(obj, cls)
            except AttributeError:
                out[f"{cls.__name__}.{name}"] = _UNSET
                continue
            if decoder is not None and v is decoder:
                out[f"{cls.__name__}.{name}"] = "<the intake's decoder>"
            elif name in ("record",) and v is not None:
                out[f"{cls.__name__}.{name}"] = slots(v, decoder)
            else:
                out[f"{cls.__name__}.{name}"] = _repr(v)
    return type(obj).__qualname__, out
