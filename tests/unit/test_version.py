"""The version is written once, in pyproject.toml; the package, its metadata and the CLI agree."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import govbus
from govbus._cli import main

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


def test_package_version_is_the_installed_metadata_which_is_pyproject() -> None:
    # A mismatch with pyproject means the editable install is stale: `make install` re-installs.
    assert metadata.version("govbus") == _pyproject_version()
    assert govbus.__version__ == _pyproject_version()


def test_the_package_source_writes_no_version_of_its_own() -> None:
    tree = ast.parse((ROOT / "govbus" / "__init__.py").read_text(encoding="utf-8"))
    assigned = [
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    assert "__version__" not in assigned, "the version lives in pyproject.toml only"


def test_cli_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    # `make install` builds the compiled core, so the suite runs on it.
    assert capsys.readouterr().out.strip() == f"govbus {_pyproject_version()} (native core: yes)"


def test_importing_govbus_does_not_look_the_version_up() -> None:
    # The metadata lookup scans sys.path; `import govbus` stays cheap for code that only builds events.
    code = "import govbus; print('__version__' in vars(govbus))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
