"""The build configuration is written once and the rest follows it.

* ``constraints.txt`` pins every dependency pyproject.toml declares (extras and the build backend
  included), and ``make install`` and the image's builder install through it.
* ``make typecheck``'s link tree comes from pyproject's package mapping (tools/typecheck_tree.py).
* pyproject.toml's metadata loads without a setuptools deprecation warning.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
import warnings
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONSTRAINTS = ROOT / "constraints.txt"


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, raw in enumerate(CONSTRAINTS.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line)
        assert found, f"constraints.txt:{number}: {line!r} is not name==version"
        name = canonicalize_name(found[1])
        assert name not in pins, f"constraints.txt:{number}: {name} pinned twice"
        pins[name] = Version(found[2])
    return pins


def _declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]
    for extra in project.get("optional-dependencies", {}).values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    missing = sorted({r.name for r in _declared() if canonicalize_name(r.name) not in pins})
    assert not missing, f"not in constraints.txt: {missing}; run `make constraints` and commit it"
    outside = [
        f"{r} (pinned {pins[canonicalize_name(r.name)]})"
        for r in _declared()
        if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, f"pins outside pyproject's ranges: {outside}; run `make constraints`"


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution ``requirements`` pull in here, transitively (markers and extras as installed)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]
    while todo:
        req, extras = todo.pop()
        key = (canonicalize_name(req.name), extras)
        if key in seen:
            continue
        seen.add(key)
        wanted = ["", *sorted(extras)]
        for line in metadata.requires(req.name) or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((sub, frozenset(sub.extras)))
    return {name for name, _ in seen}


def test_everything_the_dependencies_pull_in_is_pinned() -> None:
    # Without a pin, a transitive dependency resolves to whatever is newest on the day of the install.
    try:
        needed = _closure(_declared())
    except metadata.PackageNotFoundError as exc:
        pytest.fail(f"{exc} is not installed: run `make install`")
    missing = sorted(needed - set(_pins()))
    assert not missing, f"pulled in but not in constraints.txt: {missing}; run `make constraints`"


def test_constraints_pin_the_installer_and_not_govbus_itself() -> None:
    pins = _pins()
    assert "govbus" not in pins, "the package under test is installed from the checkout, never pinned"
    # `make install` and the image upgrade pip to the pin first: --build-constraint needs pip >= 25.3.
    assert pins["pip"] >= Version("25.3")


def _recipe(makefile: str, target: str) -> str:
    found = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.MULTILINE)
    assert found, f"no rule for {target} in the Makefile"
    return found[1]


def test_make_install_and_the_image_install_through_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^CONSTRAINTS := constraints\.txt$", makefile, re.MULTILINE)
    install = _recipe(makefile, "$(STAMP)")
    editable = next(line for line in install.splitlines() if "-e '.[" in line)
    assert "-c $(CONSTRAINTS)" in editable
    assert "--build-constraint $(CONSTRAINTS)" in editable
    assert re.search(r"^\$\(STAMP\):.*\$\(CONSTRAINTS\)", makefile, re.MULTILINE), "re-install when the pins change"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    wheel = re.search(r"pip wheel ([^\n]*)", dockerfile)
    assert wheel
    assert "-c constraints.txt" in wheel[1]
    assert "--build-constraint constraints.txt" in wheel[1]


def _typecheck_tree() -> ModuleType:
    spec = importlib.util.spec_from_file_location("typecheck_tree", ROOT / "tools" / "typecheck_tree.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_typecheck_tree_holds_every_package_of_pyproject(tmp_path: Path) -> None:
    out = tmp_path / "tree"
    _typecheck_tree().build(out)
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        assert (out.joinpath(*package.split(".")) / "__init__.py").is_file(), package
    assert (out / "govbus" / "py.typed").exists()
    assert not list(out.rglob("__pycache__"))


def test_typecheck_tree_follows_a_new_mapping(tmp_path: Path) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").touch()
    (tmp_path / "plugins" / "extra").mkdir(parents=True)
    (tmp_path / "plugins" / "extra" / "__init__.py").touch()
    pyproject = {
        "tool": {
            "setuptools": {
                "packages": ["pkg", "pkg.extra"],
                "package-dir": {"pkg": "core", "pkg.extra": "plugins/extra"},
            }
        }
    }
    links = _typecheck_tree().layout(pyproject, tmp_path)
    assert links == {
        Path("/pkg/__init__.py"): (tmp_path / "core" / "__init__.py").resolve(),
        Path("/pkg/extra"): (tmp_path / "plugins" / "extra").resolve(),
    }


def test_typecheck_tree_refuses_a_package_it_cannot_find(tmp_path: Path) -> None:
    pyproject = {"tool": {"setuptools": {"packages": ["pkg"], "package-dir": {"pkg": "nowhere"}}}}
    with pytest.raises(ValueError, match=r"no __init__\.py"):
        _typecheck_tree().layout(pyproject, tmp_path)


def test_make_typecheck_reads_the_mapping_instead_of_listing_it() -> None:
    recipe = _recipe((ROOT / "Makefile").read_text(encoding="utf-8"), "typecheck")
    assert "tools/typecheck_tree.py" in recipe
    assert "ln -s" not in recipe, "the package mapping is written once, in pyproject.toml"


def test_pyproject_metadata_loads_without_a_setuptools_deprecation() -> None:
    import setuptools

    # make install pins setuptools (constraints.txt), the version that builds the package.
    assert Version(setuptools.__version__) >= Version("77"), "run `make install`: setuptools is older than the pin"
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    from setuptools.warnings import SetuptoolsDeprecationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    deprecations = [str(w.message) for w in caught if issubclass(w.category, SetuptoolsDeprecationWarning)]
    assert deprecations == []
    assert dist.metadata.license_expression == "MIT"
    assert all((ROOT / f).is_file() for f in PYPROJECT["project"]["license-files"])
