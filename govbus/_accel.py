"""The compiled core (``govbus._native``, built from ``native/``) and the choice between it and the
pure-Python reference path.

The extension is optional: without it (no Rust toolchain at install time, or ``GOVBUS_NATIVE=off``)
every stage runs the pure-Python code it replaces, which stays the reference the differential
tests hold the compiled code to. ``govbus --version`` and one log line say which is in use.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from govbus._cloudevents import CloudEventAttributes, dataschema
from govbus._contract import (
    CONTENT_TYPE,
    Decoder,
    Encoder,
    _by_legacy_fingerprint,
    _fast_layout,
    _Projection,
    schema_versions,
)
from govbus.errors import ConfigError
from govbus.event import FIELDS, EventKind, FrozenDict, FrozenList, GovernanceEvent, ProducerInfo

__all__ = [
    "ENV",
    "active",
    "announce",
    "batch_encoder",
    "describe",
    "event_builder",
    "intake_batch",
    "intake_start",
    "merkle_batch",
    "message_reader",
    "record_signer",
    "renderer_for",
    "signature_checker",
    "symbol",
    "work_builder",
]

log = logging.getLogger("govbus.native")

ENV = "GOVBUS_NATIVE"  # "auto" (default: use the compiled core when it is installed) or "off"


def _load() -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module("govbus._native"), ""
    except ImportError as exc:
        return None, f"govbus._native is not installed ({exc})"


_MODULE, _MISSING = _load()
_announced = False


def _mode() -> str:
    mode = os.environ.get(ENV, "auto").strip().lower()
    if mode not in ("auto", "off"):
        raise ConfigError(ENV, f"is {mode!r}; expected 'auto' or 'off'")
    return mode


def active() -> bool:
    """Whether the compiled core is in use (installed, and not turned off with ``GOVBUS_NATIVE=off``)."""
    return _MODULE is not None and _mode() == "auto"


def describe() -> str:
    """``yes``, or ``no`` and why (for ``govbus --version`` and the start-up log line)."""
    if _MODULE is None:
        return f"no: {_MISSING}"
    if _mode() == "off":
        return f"no: turned off ({ENV}=off)"
    return "yes"


def announce() -> None:
    """Logs once per process which path decodes records."""
    global _announced
    if not _announced:
        _announced = True
        log.info("govbus native core: %s", describe())


def renderer_for(decoder: Decoder) -> Any | None:
    """A native renderer reading records as ``decoder`` does (its reader version, every shipped
    writer version), or None when the compiled core is not in use or cannot read a shipped layout."""
    announce()
    if not active():
        return None
    assert _MODULE is not None
    reader = decoder.reader
    legacy = {v.version: fp for fp, v in _by_legacy_fingerprint().items()}
    writers: list[tuple[bytes, bytes | None, bool, list[str], bool]] = []
    for writer in schema_versions():
        layout = _fast_layout(writer.schema)
        plan = _Projection.between(writer, reader)
        if layout is None or plan.resolve:
            log.info("govbus native core: schema v%d is read on the Python path only", writer.version)
            return None
        steps = {name: (how, arg) for name, how, arg in plan.steps} if plan.steps is not None else None
        kinds = [_kind(symbol, steps) for symbol in _symbols(writer.schema)]
        # The v2 fields reach the event only when the reader copies them from the writer.
        extras_read = steps is None or all(steps.get(f, ("",))[0] == "copy" for f in _EXTRAS)
        writers.append((writer.fingerprint, legacy.get(writer.version), layout.extras, kinds, extras_read))
    return _MODULE.RecordRenderer(writers)


_EXTRAS = ("tenant_id", "policy_version", "risk_score")
_KIND_VALUES = {k.name: k.value for k in EventKind}


def _symbols(schema: dict[str, Any]) -> list[str]:
    for f in schema["fields"]:
        if f["name"] == "kind":
            return list(f["type"]["symbols"])
    return []


def _kind(symbol: str, steps: dict[str, tuple[str, Any]] | None) -> str:
    """The rendered kind (``EventKind`` value) of a writer's enum symbol, as the reader sees it."""
    if steps is not None:
        how, arg = steps["kind"]
        if how == "enum":
            symbols, default = arg
            symbol = symbol if symbol in symbols else default
    return _KIND_VALUES.get(symbol, EventKind.UNKNOWN.value)


def event_builder() -> Any | None:
    """A builder of the Python event and CloudEvents attributes of natively decoded records
    (``govbus._native.EventBuilder``), for sinks that read them; None without the compiled core
    (or when the event model has fields the compiled builder does not know: logged)."""
    if not active():
        return None
    assert _MODULE is not None
    try:
        return _MODULE.EventBuilder(
            GovernanceEvent,
            list(FIELDS),
            ProducerInfo,
            CloudEventAttributes,
            [f.name for f in dataclasses.fields(CloudEventAttributes)],
            datetime,
            UTC,
            {k.value: k for k in EventKind},
        )
    except ValueError as exc:
        log.info("govbus native core: events are built on the Python path (%s)", exc)
        return None


def signature_checker(cache_size: int) -> Any | None:
    """A native batch signature checker (``govbus._native.SignatureChecker``), or None without the core."""
    announce()
    if not active():
        return None
    assert _MODULE is not None
    return _MODULE.SignatureChecker(cache_size)


def symbol(name: str) -> Any | None:
    """``govbus._native.<name>`` when the compiled core is in use; None when it is not (not
    installed, ``GOVBUS_NATIVE=off``) or predates that name."""
    return getattr(_MODULE, name, None) if active() else None


def intake_batch() -> Any | None:
    """The one-call intake of a consumed batch (``govbus._native.intake_batch``), or None without the core."""
    if not active():
        return None
    assert _MODULE is not None
    return _MODULE.intake_batch


def intake_start() -> Any | None:
    """``intake_batch`` in two steps (``govbus._native.intake_start``: the byte work of a batch on a
    thread of its own, its rows from ``.finish()``), or None without the core."""
    if not active() or _MODULE is None:
        return None
    return _MODULE.intake_start


def message_reader() -> Any | None:
    """A reader of consumed ``confluent_kafka.Message`` fields in place, for ``intake_batch``
    (``govbus._native.MessageReader``, native/src/message.rs); None without the compiled core, or
    when confluent-kafka's layout or librdkafka cannot be proven (logged once: the intake then
    reads each record through its accessors, as before)."""
    return _make_reader() if active() else None


@functools.cache  # one per process: the layout and the library do not change
def _make_reader() -> Any | None:
    import confluent_kafka

    assert _MODULE is not None
    # The librdkafka confluent-kafka loaded (its wheel's copy, or the system's), by its mapping.
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            found = {line.split(maxsplit=5)[-1].strip() for line in maps if "/librdkafka" in line}
    except OSError as exc:
        found, why = set(), f"cannot read /proc/self/maps ({exc})"
    else:
        why = f"librdkafka is mapped from {len(found)} files"
    if len(found) != 1:
        log.info("govbus native core: the intake reads records through their accessors (%s)", why)
        return None
    try:
        return _MODULE.MessageReader(confluent_kafka.Message, found.pop(), confluent_kafka.libversion()[1])
    except ValueError as exc:
        log.info("govbus native core: the intake reads records through their accessors (%s)", exc)
        return None


def work_builder(work_type: type, record_type: type, decoder: Decoder) -> Any | None:
    """A builder of the consume loop's ``Work`` and its ``NativeRecord`` in the batch intake
    (``govbus._native.WorkBuilder``, handed to ``intake_batch``/``intake_start`` as ``works``);
    None without the compiled core, or when the classes do not have the slots it fills (logged:
    the intake then builds them in Python)."""
    if not active():
        return None
    assert _MODULE is not None
    try:
        return _MODULE.WorkBuilder(work_type, record_type, decoder)
    except ValueError as exc:
        log.info("govbus native core: the intake builds its records on the Python path (%s)", exc)
        return None


def batch_encoder(encoder: Encoder, *, key_by_session: bool, source: str | None, empty_context: object) -> Any | None:
    """A native producer batch encoder writing as ``encoder`` does (``govbus._native.BatchEncoder``:
    Avro values, CloudEvents headers, record keys), or None when the compiled core is not in use or
    does not know the writer schema's layout. Logs once per encoder which path the producer takes."""
    announce()
    if not active():
        log.info("govbus producer batch encode: Python (%s)", describe())
        return None
    assert _MODULE is not None
    layout = _fast_layout(encoder.schema.schema)
    if layout is None:
        log.info("govbus producer batch encode: Python (schema v%d has no native writer)", encoder.schema.version)
        return None
    kinds = [(kind.value, index, kind.ce_type) for kind, index in layout.kinds.items()]
    log.info("govbus producer batch encode: native (schema v%d)", encoder.schema.version)
    return _MODULE.BatchEncoder(
        encoder.prefix,
        layout.extras,
        kinds,
        CONTENT_TYPE,
        dataschema(encoder.schema.fingerprint),
        source,
        key_by_session,
        empty_context,
        (FrozenList, FrozenDict),
    )


def merkle_batch() -> Any | None:
    """The native leaf hashes + Merkle tree of a batch to sign (``govbus._native.merkle_batch``),
    or None without the compiled core."""
    if not active():
        return None
    assert _MODULE is not None
    return _MODULE.merkle_batch


def record_signer() -> Any | None:
    """The native numbering + leaf hashes + Merkle tree of a batch of records, signed through a
    Python callback and written to the records' headers (``govbus._native.sign_records``, used by
    ``Signer.sign_in_place``), or None without the compiled core."""
    announce()
    if not active():
        return None
    assert _MODULE is not None
    return _MODULE.sign_records


def set_panic_probe(value: bytes | None) -> None:
    """Tests only: make the compiled decoder panic on records whose value is ``value``."""
    if _MODULE is not None:
        _MODULE._set_panic_probe(value)


def set_event_panic_probe(value: bytes | None) -> None:
    """Tests only: make the compiled event builder panic on records whose value is ``value``."""
    if _MODULE is not None:
        _MODULE._set_event_panic_probe(value)


def set_draft_panic_probe(value: bytes | None) -> None:
    """Tests only: make the audit ledger's draft panic on records whose value is ``value``."""
    if _MODULE is not None:
        _MODULE._set_draft_panic_probe(value)
