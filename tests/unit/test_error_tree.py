"""The error tree drawn in govbus/errors.py's docstring is the package's: every ``GovbusError``
subclass defined anywhere in the package is drawn under its parent, at the public module the
drawing names, and nothing drawn is missing. Decode reasons carry transient/permanent."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from _sinks import FakeMessage, events, records

import govbus
import govbus.errors
from govbus._contract import Decoder, Encoder, SchemaVersion
from govbus.consumers._intake import Intake
from govbus.errors import DecodeError, DecodeReason, GovbusError

_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w*)(?: \([\w, ]+\))?\s+(?P<module>govbus[\w.]*)")


def _package_modules() -> list[str]:
    path = Path(__file__).with_name("test_import_layers.py")
    spec = importlib.util.spec_from_file_location("_import_layers", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_import_layers", module)
    spec.loader.exec_module(module)
    return sorted(module.modules())


def drawn() -> dict[str, tuple[str, str | None]]:
    """``{class name: (module, parent name)}`` from the drawing in govbus.errors' docstring."""
    doc = govbus.errors.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    tree: dict[str, tuple[str, str | None]] = {}
    parents: list[str] = []
    for line in block.splitlines():
        m = _LINE.match(line.strip("\n")[4:])  # the literal block is indented by 4
        assert m, f"unreadable line in the error tree: {line!r}"
        depth = len(m["indent"]) // 4
        parents = parents[:depth]
        tree[m["name"]] = (m["module"], parents[-1] if parents else None)
        parents.append(m["name"])
    return tree


def defined() -> dict[str, type[GovbusError]]:
    """Every GovbusError subclass defined in the package, by name (names are unique)."""
    found: dict[str, type[GovbusError]] = {}
    for name in _package_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            # A private subclass (``_NoSpace``) never reaches a caller as itself: it is caught inside
            # its module or seen as its public parent, which is drawn.
            if (
                inspect.isclass(obj)
                and issubclass(obj, GovbusError)
                and obj.__module__ == name
                and not obj.__name__.startswith("_")
            ):
                assert obj.__name__ not in found, f"two error classes named {obj.__name__}"
                found[obj.__name__] = obj
    return found


def _exports(module: ModuleType, name: str) -> bool:
    public = getattr(module, "__all__", None)
    return name in public if public is not None else not name.startswith("_")


def test_every_error_is_drawn_under_its_parent_at_a_public_module() -> None:
    tree, classes = drawn(), defined()
    assert sorted(tree) == sorted(classes), "errors.py's docstring and the package disagree"
    for name, (module_name, parent) in tree.items():
        cls = classes[name]
        assert not any(p.startswith("_") for p in module_name.split(".")), f"{name}: {module_name} is private"
        module = importlib.import_module(module_name)
        assert getattr(module, name, None) is cls, f"{name} is not importable from {module_name}"
        assert _exports(module, name), f"{module_name} does not export {name}"
        if parent is None:
            assert cls is GovbusError
        else:
            assert classes[parent] in cls.__bases__, f"{name} is drawn under {parent}, derives from {cls.__bases__}"


def test_the_root_exports_the_root_and_the_event_errors() -> None:
    for name in ("GovbusError", "ConfigError", "InvalidEventError", "DecodeError", "DecodeReason"):
        assert name in govbus.__all__
        assert getattr(govbus, name) is getattr(govbus.errors, name)


def test_decode_reasons_keep_their_codes() -> None:
    # Dead letters carry decode:<code>: the values are a wire contract, byte for byte.
    assert [r.value for r in DecodeReason] == [
        "empty",
        "unknown-framing",
        "truncated",
        "unknown-fingerprint",
        "unknown-schema-id",
        "no-registry",
        "incompatible-schema",
        "corrupt-body",
        "bad-headers",
        "invalid-event",
        "registry-unavailable",
    ]
    assert f"decode:{DecodeReason.CORRUPT_BODY}" == "decode:corrupt-body"
    assert str(DecodeError("truncated", "short")) == "truncated: short"


def test_transient_is_carried_by_the_reason() -> None:
    assert {r for r in DecodeReason if r.transient} == {DecodeReason.REGISTRY_UNAVAILABLE}
    assert DecodeError(DecodeReason.REGISTRY_UNAVAILABLE, "down").transient
    err = DecodeError("corrupt-body", "bad")
    assert err.reason is DecodeReason.CORRUPT_BODY
    assert not err.transient
    with pytest.raises(ValueError, match="not-a-reason"):
        DecodeError("not-a-reason", "x")


class _Resolver:
    """A SchemaResolver handed to the decoder (no registry anywhere): fails with ``reason``."""

    def __init__(self, reason: DecodeReason) -> None:
        self.reason = reason
        self.asked: list[int] = []

    def resolve(self, schema_id: int) -> SchemaVersion:
        self.asked.append(schema_id)
        raise DecodeError(self.reason, f"schema id {schema_id}")


@pytest.mark.parametrize(
    ("reason", "transient"), [(DecodeReason.REGISTRY_UNAVAILABLE, True), (DecodeReason.UNKNOWN_SCHEMA_ID, False)]
)
def test_the_intake_carries_transience_from_the_type(reason: DecodeReason, transient: bool) -> None:
    # The runtime holds a record on Failure.transient (no list of reason strings to keep in step).
    resolver = _Resolver(reason)
    record = records(events(1), encoder=Encoder(schema_id=7))[0]
    work = Intake(Decoder(resolver=resolver))(FakeMessage(record.value, record.headers), epoch=0)
    assert resolver.asked == [7]
    assert work.failure is not None
    assert work.failure.reason == f"decode:{reason.value}"
    assert work.failure.transient is transient


def test_the_root_settings_are_composed_from_each_subpackage_section() -> None:
    import govbus._config
    import govbus._settings
    from govbus.consumers import SinkRuntimeSettings
    from govbus.gate import GateSettings
    from govbus.producer import ProducerSettings
    from govbus.signing import SigningSettings

    root = govbus._config.GovbusSettings
    assert govbus._settings.GovbusSettings is root
    assert govbus._settings.root_settings() is root
    sections = {name: f.annotation for name, f in root.model_fields.items()}
    assert sections["producer"] is ProducerSettings
    assert sections["sink"] is SinkRuntimeSettings
    assert sections["gate"] is GateSettings
    assert sections["signing"] is SigningSettings
    # The environment check walks the composed tree: every section's variables are settings.
    for name in ("GOVBUS_PRODUCER__DURABILITY", "GOVBUS_SINK__BATCH__MAX_RECORDS", "GOVBUS_GATE__POLICY_FILE"):
        assert govbus._settings.is_setting(name), name
    assert not govbus._settings.is_setting("GOVBUS_PRODUCER__DURABILTY")
