"""The public surface, pinned (docs/api.md).

A module is public when no part of its dotted name starts with ``_``; the public ones are exactly
``PUBLIC`` below, each exporting exactly the ``__all__`` pinned there. Changing a public module's
exports is an API change: it fails here until this file (and docs/api.md) say so. Also pinned:

* every exported name resolves (the lazy exports of ``govbus``, ``govbus.consumers`` and
  ``govbus.consumers.sinks`` included);
* no public module shows a private module's internals under a public name (``from govbus._contract
  import Encoder`` in a public module would make ``Encoder`` look supported): apart from its
  ``__all__``, a public module may show only public modules, what it defines itself (the few
  listed in ``UNLISTED``) and names from outside govbus (``annotations``, ``Any``…);
* ``import govbus`` and the kernel's first steps (``govbus.Bus``, ``govbus.Gate``, building a
  ``GovernanceEvent``) load no command-line, console, demo or development module, in a fresh
  interpreter.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]

PUBLIC: dict[str, tuple[str, ...]] = {
    "govbus": (
        "Bus",
        "BusClosedError",
        "BusCounters",
        "BusHealth",
        "ConfigError",
        "Decision",
        "DecodeError",
        "DecodeReason",
        "EventKind",
        "Gate",
        "GovbusError",
        "GovbusSettings",
        "GovbusSink",
        "GovernanceEvent",
        "InvalidEventError",
        "KafkaSettings",
        "ProducerFatalError",
        "RegistrySettings",
        "SpoolFullError",
        "__version__",
        "load_settings",
    ),
    "govbus.errors": (
        "AclError",
        "BrokerError",
        "ConfigError",
        "DecodeError",
        "DecodeReason",
        "GovbusError",
        "InvalidEventError",
        "RegistryError",
        "SchemaInvalidError",
        "TopicError",
    ),
    "govbus.event": (
        "FIELDS",
        "MAX_ATTRIBUTES",
        "MAX_ENCODED_BYTES",
        "EventKind",
        "FrozenDict",
        "FrozenList",
        "GovernanceEvent",
        "ProducerInfo",
    ),
    "govbus.producer": (
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
    ),
    "govbus.consumers": (
        "ENTRY_POINT_GROUP",
        "OK",
        "Batch",
        "DeadLetterError",
        "DeadLetterFatalError",
        "DeliveredRecord",
        "GroupLag",
        "Ok",
        "PartitionLag",
        "RecordVerifier",
        "Rejected",
        "RetryLater",
        "Sink",
        "SinkBase",
        "SinkContext",
        "SinkError",
        "SinkNotFoundError",
        "SinkRuntime",
        "SinkRuntimeSettings",
        "VerdictPolicy",
        "Verification",
        "WriteResult",
        "available_sinks",
        "create_sink",
        "load_factory",
        "sink_lag",
    ),
    "govbus.consumers.sinks": (
        "AuditSink",
        "AuditSinkOptions",
        "FileSink",
        "FileSinkOptions",
        "HttpSink",
        "HttpSinkOptions",
        "LedgerError",
        "NullSink",
        "NullSinkOptions",
        "OtlpSink",
        "OtlpSinkOptions",
        "SinkOptions",
        "StdoutSink",
        "StdoutSinkOptions",
        "SyslogSink",
        "SyslogSinkOptions",
        "parse_options",
    ),
    "govbus.gate": (
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
    ),
    "govbus.signing": (
        "ALG",
        "SIGNATURE_HEADERS",
        "SIGNED_CE_HEADERS",
        "InsecureKeyFileError",
        "KeyEntry",
        "KeyFileError",
        "KeyStatus",
        "Keyring",
        "KeyringError",
        "SequenceTracker",
        "SignInput",
        "SignInputError",
        "Signer",
        "SigningError",
        "SigningKey",
        "SigningMode",
        "SigningSettings",
        "Verdict",
        "VerdictCode",
        "Verifier",
        "load_private_key",
        "write_private_key",
    ),
    "govbus.watch": ("WatchSettings",),
    "govbus.console": ("ConsoleSettings",),
    "govbus.localkafka": ("KAFKA_VERSION", "BrokerInfo", "LocalBroker"),
    "govbus.schemas": (),
}

# Functions and classes a public module defines for the package's own use, public by name but
# not exported (each one is a decision: a new one fails here until it is listed or renamed).
UNLISTED: dict[str, frozenset[str]] = {
    "govbus.event": frozenset({"decoded_event", "encoded_size_bound"}),
}

# What the kernel's import path must never load: the command line (every module that adds a
# subcommand, see govbus._cli), the demo, the console's web application, the development broker,
# and the third-party packages only those use.
_DEV_ONLY = ("govbus.__main__", "govbus._demo", "govbus._demo_secure", "govbus._otlp_receiver", "govbus.localkafka")
_THIRD_PARTY = ("click", "jinja2", "starlette", "uvicorn", "selenium", "testcontainers", "hypothesis", "pytest")
_KERNEL = """
import json, sys
import govbus
govbus.Bus, govbus.Gate, govbus.GovbusSink
govbus.GovernanceEvent(agent_id="a-1", kind=govbus.EventKind.TOOL_CALL_BLOCKED, action="shell.exec")
print(json.dumps(sorted(sys.modules)))
"""


def _package_modules() -> list[str]:
    """Every module of the package by dotted name (the layout test's walk of pyproject's mapping)."""
    spec = importlib.util.spec_from_file_location("_import_layers", Path(__file__).with_name("test_import_layers.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_import_layers", module)
    spec.loader.exec_module(module)
    return sorted(module.modules())


def is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split("."))


def _command_modules() -> tuple[str, ...]:
    """``govbus._cli._COMMAND_MODULES``, read from the source (importing it would not prove much)."""
    tree = ast.parse((ROOT / "govbus" / "_cli.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_COMMAND_MODULES" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, tuple)
            return tuple(str(v) for v in value)
    raise AssertionError("govbus/_cli.py has no _COMMAND_MODULES")


def dev_only(loaded: list[str]) -> list[str]:
    """The modules in ``loaded`` a kernel must not load."""
    banned = ("govbus._cli", *_command_modules(), *_DEV_ONLY)
    found = []
    for name in loaded:
        top = name.split(".")[0]
        last = name.rsplit(".", 1)[-1]
        if (
            any(name == b or name.startswith(b + ".") for b in banned)
            or (name.startswith("govbus.") and last.endswith("_cli"))
            or (name.startswith("govbus.console.") and name != "govbus.console._settings")
            or top in _THIRD_PARTY
        ):
            found.append(name)
    return found


def leaks(module: ModuleType, exported: tuple[str, ...]) -> list[str]:
    """Public names of ``module`` outside ``exported`` that show govbus internals."""
    found = []
    own = UNLISTED.get(module.__name__, frozenset())
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or name in exported:
            continue
        if isinstance(value, ModuleType):
            if value.__name__.startswith("govbus") and is_private(value.__name__):
                found.append(f"{name}: the private module {value.__name__}")
            continue
        origin = getattr(value, "__module__", None)
        if not isinstance(origin, str) or not (origin == "govbus" or origin.startswith("govbus.")):
            continue  # stdlib, typing, third-party, plain constants
        if origin == module.__name__:
            if name not in own:
                found.append(f"{name}: defined here, public by name, not in __all__")
        elif is_private(origin):
            found.append(f"{name}: re-exported from the private module {origin}")
    return found


def test_the_public_modules_are_exactly_these() -> None:
    public = [m for m in _package_modules() if not is_private(m)]
    assert sorted(public) == sorted(PUBLIC), "a module became public or private by name: update PUBLIC and docs/api.md"


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_all_is_pinned(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = module.__all__
    assert len(set(exported)) == len(exported), f"{module_name}.__all__ lists a name twice"
    assert sorted(exported) == sorted(PUBLIC[module_name])


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_every_exported_name_resolves(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert getattr(module, name, None) is not None, f"{module_name}.{name} does not resolve"


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_no_public_module_shows_private_internals(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:  # load the lazy exports first: they land in the module's namespace
        getattr(module, name)
    assert not leaks(module, tuple(module.__all__)), "\n".join(leaks(module, tuple(module.__all__)))


def test_the_leak_check_sees_a_reexport_and_a_private_module() -> None:
    from govbus import _contract

    fake = ModuleType("govbus.fake")
    fake.__dict__.update(Encoder=_contract.Encoder, contract=_contract, Path=Path, ok=1)
    assert leaks(fake, ()) == [
        "Encoder: re-exported from the private module govbus._contract",
        "contract: the private module govbus._contract",
    ]
    assert leaks(fake, ("Encoder", "contract")) == []


def test_the_shipped_sinks_entry_points_name_the_public_package() -> None:
    # `govbus sink list` prints these: an operator reads public names, and a module may be renamed.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = pyproject["project"]["entry-points"]["govbus.sinks"]
    assert entry_points
    sinks = importlib.import_module("govbus.consumers.sinks")
    for name, value in entry_points.items():
        module_name, _, attr = value.partition(":")
        assert module_name == "govbus.consumers.sinks", f"{name} = {value!r}"
        assert attr in sinks.__all__, f"{name}: {attr} is not exported"
        assert getattr(sinks, attr).__name__ == attr


def test_the_exported_errors_are_the_ones_drawn_in_the_error_tree() -> None:
    # Every error a public module exports derives from GovbusError and is listed in errors.py's drawing.
    from govbus.errors import GovbusError

    drawing = importlib.import_module("govbus.errors").__doc__ or ""
    for module_name, names in PUBLIC.items():
        module = importlib.import_module(module_name)
        for name in names:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, BaseException):
                assert issubclass(value, GovbusError), f"{module_name}.{name}"
                assert f" {name} " in drawing, f"{module_name}.{name} is not in the error tree"


def test_the_kernel_imports_no_cli_console_demo_or_dev_module() -> None:
    out = subprocess.run([sys.executable, "-c", _KERNEL], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(out.stdout)
    assert "govbus.producer._bus" in loaded  # the kernel's path was taken
    assert "govbus.gate._gate" in loaded
    assert not dev_only(loaded), f"the kernel's import path loads: {dev_only(loaded)}"


def test_the_dev_only_check_names_what_it_bans() -> None:
    assert dev_only(
        [
            "govbus",
            "govbus._cli",
            "govbus._admin",
            "govbus.gate._cli",
            "govbus._schemas_cli",
            "govbus.localkafka._broker",
            "govbus.console",
            "govbus.console._settings",
            "govbus.console._app",
            "jinja2.environment",
            "govbus.producer._bus",
        ]
    ) == [
        "govbus._cli",
        "govbus._admin",
        "govbus.gate._cli",
        "govbus._schemas_cli",
        "govbus.localkafka._broker",
        "govbus.console._app",
        "jinja2.environment",
    ]
