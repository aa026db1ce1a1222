"""deploy/Dockerfile and .dockerignore, checked without a container engine.

Nothing is built here. What is checked: the stages (wheels, then a slim non-root runtime), that
every ENV is a real setting, that ENTRYPOINT/CMD run against the installed package, that the
HEALTHCHECK command answers right against the sinks' real health server, and that the build
context holds exactly what the wheel is built from.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tomllib

import pytest
from unit.test_deploy_support import (
    ROOT,
    assert_help,
    dockerfile,
    final_stage,
    image_entrypoint,
    image_env,
    image_user,
    settings_field_exists,
    settings_from_env,
    unknown_settings,
)

from govbus.consumers._health import HealthServer, HealthStatus

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _args() -> dict[str, str]:
    """ARG defaults declared before the first FROM (usable in FROM lines)."""
    out: dict[str, str] = {}
    for ins in dockerfile():
        if ins.keyword == "ARG" and ins.stage == -1:
            name, _, default = ins.value.partition("=")
            out[name] = default
    return out


def _base(value: str) -> str:
    image = value.split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: _args()[m.group(1)], image)


def test_builder_makes_wheels_and_the_runtime_installs_only_those() -> None:
    froms = [i for i in dockerfile() if i.keyword == "FROM"]
    assert len(froms) == 2, "two stages: builder and runtime"
    assert froms[0].value.split()[-2:] == ["AS", "builder"]
    builder_runs = " ".join(i.value for i in dockerfile() if i.stage == 0 and i.keyword == "RUN")
    assert "pip wheel --wheel-dir /wheels" in builder_runs
    runtime_runs = [i.value for i in final_stage() if i.keyword == "RUN"]
    install = next(r for r in runtime_runs if "pip install" in r)
    assert "from=builder" in install
    assert "--no-index" in install
    assert "--find-links=/wheels" in install


def test_runtime_is_python_slim() -> None:
    froms = [i for i in dockerfile() if i.keyword == "FROM"]
    assert _base(froms[-1].value) == "python:3.11-slim"


def test_runtime_user_is_a_fixed_non_root_uid_that_owns_the_data_directory() -> None:
    uid, gid = image_user()
    assert uid > 0
    assert gid > 0
    setup = " ".join(i.value for i in final_stage() if i.keyword == "RUN")
    assert f"--uid {uid}" in setup
    assert f"--gid {gid}" in setup
    assert "install -d -o govbus -g govbus" in setup
    assert [i.value for i in final_stage() if i.keyword == "WORKDIR"] == ["/var/lib/govbus"]


def test_entrypoint_is_govbus_and_the_default_command_is_help() -> None:
    assert image_entrypoint() == ["govbus"]
    cmds = [i.exec_form for i in final_stage() if i.keyword == "CMD"]
    assert cmds == [["--help"]]
    assert_help([])


def test_image_env_names_are_settings_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    env = image_env()
    assert unknown_settings({k: v for k, v in env.items() if k.startswith("GOVBUS_")}) == []
    assert set(env) - {k for k in env if k.startswith("GOVBUS_")} <= {
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    }
    settings = settings_from_env({k: v for k, v in env.items() if k.startswith("GOVBUS_")}, monkeypatch)
    # Probes come from other network namespaces (kubelet) or containers.
    assert settings.sink.health.host == "0.0.0.0"


def test_exposed_port_is_the_sink_health_port(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_env({k: v for k, v in image_env().items() if k.startswith("GOVBUS_")}, monkeypatch)
    exposed = [i.value for i in final_stage() if i.keyword == "EXPOSE"]
    assert exposed == [f"{settings.sink.health.port} {settings.console.port}"]  # sinks' health, the console


def _healthcheck() -> list[str]:
    checks = [i for i in final_stage() if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    argv = checks[0].exec_form
    assert argv is not None, "exec form: slim has a shell, but no curl to put in it"
    assert argv[:2] == ["python", "-c"]
    return argv


def test_healthcheck_reads_the_health_port_setting() -> None:
    code = _healthcheck()[2]
    found = re.search(r"os\.environ\.get\('(\w+)', '(\d+)'\)", code)
    assert found, code
    variable, default = found.groups()
    assert settings_field_exists(variable)
    assert variable == "GOVBUS_SINK__HEALTH__PORT"
    assert int(default) == _default_health_port()
    assert "/readyz" in code


def _default_health_port() -> int:
    from govbus.consumers._settings import HealthSettings

    return HealthSettings().port


@pytest.mark.parametrize(("ready", "exit_ok"), [(True, True), (False, False)])
def test_healthcheck_command_against_the_real_health_server(ready: bool, exit_ok: bool) -> None:
    server = HealthServer("127.0.0.1", 0, lambda: HealthStatus(live=True, ready=ready, detail={}), lambda: "")
    server.start()
    try:
        code = _healthcheck()[2]
        result = subprocess.run(
            [sys.executable, "-c", code],
            env={"GOVBUS_SINK__HEALTH__PORT": str(server.port)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.stop()
    assert (result.returncode == 0) is exit_ok, result.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and refuses connections now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", _healthcheck()[2]],
        env={"GOVBUS_SINK__HEALTH__PORT": str(port)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0


def _copied_sources() -> set[str]:
    out: set[str] = set()
    for ins in dockerfile():
        # COPY --from=<image> brings a toolchain, not a file of the build context.
        if ins.keyword == "COPY" and ins.stage == 0 and "--from=" not in ins.value:
            out |= {s.rstrip("/") for s in ins.value.split()[:-1] if not s.startswith("--")}
    return out


def test_the_builder_copies_every_input_of_the_wheel() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    project = PYPROJECT["project"]
    needed = {
        "pyproject.toml",
        project["readme"],
        *project.get("license-files", []),
        *setuptools["package-dir"].values(),
    }
    assert needed <= _copied_sources()


def test_the_builder_compiles_the_native_core_and_the_wheel_must_carry_it() -> None:
    # pyproject's Rust extension is optional for pip; the image is not allowed to ship without it.
    (ext,) = PYPROJECT["tool"]["setuptools-rust"]["ext-modules"]
    assert ext["target"] == "govbus._native"
    crate_dir = ext["path"].rsplit("/", 1)[0]
    assert crate_dir in _copied_sources()
    copies = [i.value for i in dockerfile() if i.stage == 0 and i.keyword == "COPY" and "--from=" in i.value]
    assert any(c.endswith(" /usr/local/cargo") for c in copies), "cargo from the Rust image"
    assert any(c.endswith(" /usr/local/rustup") for c in copies), "the toolchain rustup installed there"
    env = " ".join(i.value for i in dockerfile() if i.stage == 0 and i.keyword == "ENV")
    assert "PATH=/usr/local/cargo/bin:$PATH" in env
    rust = _args()["RUST_IMAGE"]
    assert rust.startswith("rust:")
    # Same Debian release as the Python image: the extension links against the runtime's glibc.
    assert rust.endswith("-bookworm")
    builder_runs = " ".join(i.value for i in dockerfile() if i.stage == 0 and i.keyword == "RUN")
    assert "gcc" in builder_runs, "rustc links with the system C compiler"
    assert "govbus/_native" in builder_runs, "the build fails when the wheel lacks the compiled core"


def test_the_build_context_leaves_out_local_build_output() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "native/target" in lines
    assert "**/*.so" in lines


def test_the_builder_installs_the_tested_versions() -> None:
    builder_runs = " ".join(i.value for i in dockerfile() if i.stage == 0 and i.keyword == "RUN")
    assert "constraints.txt" in _copied_sources()
    assert re.search(r"pip wheel [^&]*-c constraints\.txt", builder_runs)
    assert re.search(r"pip wheel [^&]*--build-constraint constraints\.txt", builder_runs)


def test_dockerignore_lets_in_exactly_what_is_copied() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: nothing enters the build context unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == _copied_sources()
    for secret in ("**/*.pem", "**/*.key", "**/*.jwk"):
        assert secret in lines


def test_extras_the_image_installs_are_declared() -> None:
    extras: set[str] = set()
    for ins in dockerfile():
        if ins.keyword == "RUN" and re.search(r"pip (wheel|install)", ins.value):
            for group in re.findall(r"\[([\w,-]+)\]", ins.value):
                extras |= set(group.split(","))
    declared = set(PYPROJECT["project"].get("optional-dependencies", {}))
    assert extras <= declared, f"pyproject.toml lacks the extra(s) {sorted(extras - declared)} the image installs"
