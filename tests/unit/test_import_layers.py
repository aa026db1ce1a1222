"""The import layers of the package, pinned: lower layers never import higher ones, and no module
imports itself back through others.

Layers, lowest first (a module may import its own layer and those below; docs/architecture.md):

1. ``core``: errors, event, _contract, _cloudevents, _record, _compat, _sample, schemas, signing,
   _settings (the base and the sections every layer needs), _librdkafka, _admin, ...
2. ``registry``: govbus._registry (the schema registry client; the decoder is handed its resolver).
3. ``components``: govbus.producer, govbus.consumers, govbus.gate, which never import each other.
4. ``composition``: govbus._config (the root settings, composed from each component's section).
5. ``entry``: what a user runs or imports first: the root package, ``python -m govbus``, every
   CLI, _demo, _kernel, localkafka, and any module not listed (so a new module can be imported only from above
   until it is placed).

What counts as an import: every ``import``/``from`` statement anywhere in a module, inside
functions and methods too (a deferred import is still a dependency), relative ones resolved.
Exempt: statements under ``if TYPE_CHECKING:``, which never run (annotations may name a type
from above). ``importlib.import_module`` with a computed name (the lazy exports of a package's
``__init__``) is not seen. The package-directory mapping (``producer/`` → ``govbus.producer``…)
is read from pyproject.toml through tools/typecheck_tree.py.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "govbus.errors",
            "govbus.event",
            "govbus._contract",
            "govbus._cloudevents",
            "govbus._record",
            "govbus._compat",
            "govbus._sample",
            "govbus.schemas",
            "govbus.signing",
            "govbus._settings",
            "govbus._librdkafka",
            "govbus._principal",
            "govbus._replication",
            "govbus._accel",
            "govbus._admin",
            "govbus._heartbeat",
            "govbus._sinkclass",
            "govbus._accel",
            "govbus._admin",
            "govbus.heartbeat",
            "govbus._sinkclass",
            "govbus._dlqmark",
        ),
    ),
    ("registry", ("govbus._registry",)),
    # govbus.watch reads what the others write (sink groups, producer heartbeats): not a sibling.
    # The console is an entry point; only its settings section sits with the components.
    ("components", ("govbus.producer", "govbus.consumers", "govbus.gate", "govbus.watch", "govbus.console._settings")),
    ("composition", ("govbus._config",)),
    (
        "entry",
        (
            "govbus",
            "govbus.__main__",
            "govbus._cli",
            "govbus._demo",
            "govbus._kernel",
            "govbus._schemas_cli",
            "govbus._otlp_receiver",
            "govbus.localkafka",
            "govbus.signing._cli",
            "govbus.consumers._cli",
            "govbus.consumers.sinks._audit_cli",
            "govbus.gate._cli",
            "govbus.watch._cli",
            "govbus.console",
        ),
    ),
]
# Components that must not import one another (each may be deployed without the others).
SIBLINGS = ("govbus.producer", "govbus.consumers", "govbus.gate")


def _layout() -> dict[Path, Path]:
    spec = importlib.util.spec_from_file_location("_typecheck_tree", ROOT / "tools" / "typecheck_tree.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_typecheck_tree", module)
    spec.loader.exec_module(module)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    links: dict[Path, Path] = module.layout(pyproject, ROOT)
    return links


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name → its source file."""
    found: dict[str, Path] = {}
    for target, source in _layout().items():
        files = sorted(source.rglob("*.py")) if source.is_dir() else [source]
        for file in files:
            if file.suffix != ".py" or "__pycache__" in file.parts:
                continue
            base = list(target.parts[1:]) if source.is_dir() else list(target.parent.parts[1:])
            rel = file.relative_to(source).with_suffix("") if source.is_dir() else Path(file.stem)
            parts = base + list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = file
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements below ``node``, at any depth, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            for other in child.orelse:
                yield from _statements(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _statements(child)


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The module ``name`` is (or is defined in): the longest known prefix. None for a name only
    the root prefixes (``govbus._native``: no Python source here, e.g. a compiled extension)."""
    found = name
    while found not in known:
        if "." not in found:
            return None
        found = found.rpartition(".")[0]
    return None if found == "govbus" and name != "govbus" else found


def imports(module: str, file: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules ``module`` imports (run-time statements only)."""
    is_package = file.name == "__init__.py"
    found: set[str] = set()
    for stmt in _statements(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(stmt, ast.Import):
            targets = [a.name for a in stmt.names]
        else:
            base = stmt.module or ""
            if stmt.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(stmt.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # `from a import b`: b may be a submodule (then that is the dependency) or a name in a.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in stmt.names]
        for target in targets:
            owner = _owner(target, known) if target.startswith("govbus") else None
            if owner is not None and owner != module:
                found.add(owner)
    return found


@functools.cache
def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, f, known) for m, f in known.items()}


def layer_of(module: str) -> tuple[int, str]:
    """(rank, prefix): the layer whose most specific prefix names ``module``; unlisted: entry."""
    best: tuple[int, int, str] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix), prefix)
    if best is None:
        return len(LAYERS) - 1, "govbus"
    return best[0], best[2]


def _sibling(module: str) -> str | None:
    return next((s for s in SIBLINGS if module == s or module.startswith(s + ".")), None)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_mapping_finds_every_subpackage() -> None:
    known = modules()
    for name in ("govbus", "govbus.producer._bus", "govbus.consumers._runtime", "govbus.localkafka._cli"):
        assert name in known
    assert "govbus.schemas" in known


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for module, targets in sorted(graph().items()):
        rank, _ = layer_of(module)
        for target in sorted(targets):
            target_rank, _ = layer_of(target)
            if target_rank > rank:
                wrong.append(f"{module} ({LAYERS[rank][0]}) imports {target} ({LAYERS[target_rank][0]})")
    # A new module counts as entry until it is placed in LAYERS (docs/architecture.md).
    assert not wrong, "\n".join(wrong)


def test_components_do_not_import_each_other() -> None:
    wrong = []
    for module, targets in sorted(graph().items()):
        own = _sibling(module)
        if own is None or layer_of(module)[0] != 2:
            continue
        wrong += [f"{module} imports {t}" for t in sorted(targets) if _sibling(t) not in (None, own)]
    assert not wrong, "\n".join(wrong)


def test_core_never_imports_producer_consumers_or_gate() -> None:
    # The rule, spelled out on its own: nothing in core names a component, even deferred.
    wrong = [
        f"{m} imports {t}"
        for m, targets in sorted(graph().items())
        if layer_of(m)[0] == 0
        for t in sorted(targets)
        if _sibling(t) is not None
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles (deferred imports included):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from govbus._config import GovbusSettings\n"
        "def f():\n    from govbus._registry import SchemaIds\n"
        "from . import event\n",
        encoding="utf-8",
    )
    known = {"govbus.errors": source, "govbus._config": source, "govbus._registry": source, "govbus.event": source}
    assert imports("govbus.errors", source, known) == {"govbus._registry", "govbus.event"}
    known["govbus"] = source
    assert _owner("govbus._compiled", known) is None
    assert _owner("govbus", known) == "govbus"
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["govbus.errors", "govbus._contract", "govbus._settings"])
def test_core_modules_are_core(module: str) -> None:
    assert layer_of(module)[0] == 0
