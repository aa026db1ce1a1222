"""Lays out a tree of symlinks shaped like the installed ``govbus`` package, for mypy.

mypy cannot follow setuptools' directory mapping (``producer/`` -> ``govbus.producer``, ...), so
``make typecheck`` runs it on this tree. The mapping is read from ``pyproject.toml``
(``[tool.setuptools] package-dir``), the one place it is written.

Usage: python tools/typecheck_tree.py OUT_DIR   (OUT_DIR is emptied first)
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout(pyproject: Mapping[str, object], root: Path = ROOT) -> dict[Path, Path]:
    """``{path in the tree: source it links to}``; both absolute, the tree's relative to ``/``.

    A mapped package whose own subpackages are mapped elsewhere becomes a real directory holding a
    link per entry of its source; every other mapped package is one link to its source directory.
    """
    setuptools = pyproject["tool"]["setuptools"]  # type: ignore[index]
    mapping: dict[str, str] = dict(setuptools.get("package-dir", {}))
    if "" in mapping:
        raise ValueError("a root package-dir ('' = ...) is not supported; map each package by name")
    for package in setuptools.get("packages", []):
        source = _source(package, mapping, root)
        if not (source / "__init__.py").is_file():
            raise ValueError(f"package {package!r} resolves to {source}, which has no __init__.py")
    for name in mapping:
        parent = name.rpartition(".")[0]
        if parent and parent not in mapping:
            raise ValueError(f"package-dir maps {name!r} but not its parent {parent!r}: map the parent too")
    links: dict[Path, Path] = {}
    remapped = set(mapping)
    for name in sorted(mapping, key=lambda n: n.count(".")):
        source = (root / mapping[name]).resolve()
        target = Path("/", *name.split("."))
        children = {n.rpartition(".")[2] for n in remapped if n.rpartition(".")[0] == name}
        if not children:
            links[target] = source
            continue
        for entry in sorted(source.iterdir()):
            if entry.name in children or entry.name == "__pycache__":
                continue  # a remapped subpackage's source directory wins over a same-named entry
            links[target / entry.name] = entry
    return links


def _source(package: str, mapping: Mapping[str, str], root: Path) -> Path:
    """Where setuptools finds ``package``: the nearest mapped ancestor's directory + the rest."""
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        mapped = mapping.get(".".join(parts[:i]))
        if mapped is not None:
            return (root / mapped).joinpath(*parts[i:]).resolve()
    return root.joinpath(*parts).resolve()


def build(out: Path, pyproject: Path = ROOT / "pyproject.toml") -> None:
    links = layout(tomllib.loads(pyproject.read_text(encoding="utf-8")), pyproject.parent.resolve())
    if out.exists():
        shutil.rmtree(out)
    for target, source in links.items():
        path = out / target.relative_to("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(source)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    build(Path(sys.argv[1]))
