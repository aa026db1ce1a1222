"""What deploy/ may set and run, held against the code: helpers for test_deploy_*, and their tests.

The image, the compose file and the Kubernetes manifests cannot be run here (no container
engine), so every name and command in them is checked against the installed package instead:

- :func:`settings_field_exists` — is ``GOVBUS_A__B__C`` a field of the settings tree (``a.b.c``)?
  Walks the pydantic models the way pydantic-settings reads the environment, so a new section
  or field is picked up without touching these tests.
- :func:`settings_from_env` — the settings from exactly one container's environment.
- :func:`parse_command`, :func:`subcommand`, :func:`help_run` — ``govbus …`` through the real
  argparse parser and the installed console script.
- :func:`dry_run` — what a command builds before it touches the network (a sink and its
  verification stage, the gate's policy).
- :func:`dockerfile` — the instructions of deploy/Dockerfile, and the image's ENTRYPOINT, ENV, uid.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import re
import shlex
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from govbus._cli import build_parser
from govbus._settings import ENV_PREFIX, GovbusSettings, is_setting, load_settings
from govbus.consumers._registry import create_sink, load_factory
from govbus.consumers._verify import build_verification
from govbus.errors import ConfigError
from govbus.gate._cli import build_policy

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# Commands the deployment files use that are promised but not implemented yet. Their checks are
# strict xfails: once the command exists they pass, fail as XPASS, and the entry goes.
PROMISED: dict[tuple[str, ...], str] = {}

# Registered sinks that are not deployed: `null` discards everything (tests and benchmarks).
NOT_DEPLOYED = frozenset({"null"})


# ---- settings -------------------------------------------------------------------------------


def _candidates(annotation: Any) -> list[Any]:
    """The types a field accepts: ``X | None`` and ``Annotated[X, …]`` unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _candidates(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) if arg is not type(None) for t in _candidates(arg)]
    return [annotation]


def settings_field_exists(name: str) -> bool:
    """``GOVBUS_A__B__C`` names a field of :class:`GovbusSettings` (``settings.a.b.c``).

    pydantic-settings ignores unknown variables, so without this a typo
    (``GOVBUS_KAFKA__BOOTSTRAP_SERVER``) would silently leave the default in place; a process refuses
    to start with one, and these tests find it in deploy/ before a process does.
    """
    return is_setting(name)  # the rule load_settings() enforces at start-up


def settings_leaves(model: type[BaseModel] = GovbusSettings, prefix: str = ENV_PREFIX) -> Iterator[str]:
    """The variable of every scalar (or dict) field in the tree, for the helper's own test."""
    for name, field in model.model_fields.items():
        models = [t for t in _candidates(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        if models:
            yield from settings_leaves(models[0], f"{prefix}{name.upper()}__")
        else:
            yield prefix + name.upper()


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    """The names in ``env`` that are not settings; govbus containers set nothing else."""
    return sorted(name for name in env if not settings_field_exists(name))


def settings_from_env(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> GovbusSettings:
    """The settings a process would load from exactly ``env`` (the test's own GOVBUS_* removed).

    A wrong value fails here with the :class:`ConfigError` naming its variable.
    """
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# ---- commands -------------------------------------------------------------------------------


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def parse_command(argv: Sequence[str]) -> argparse.Namespace:
    """``govbus …`` parsed by the real parser (the CLI's dry run); fails the test if it would exit."""
    if not argv or argv[0] != "govbus":
        pytest.fail(f"`{shlex.join(argv)}`: the command must be govbus (the image's ENTRYPOINT)")
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            return _parser().parse_args(list(argv[1:]))
    except SystemExit:
        pytest.fail(f"govbus rejects `{shlex.join(argv)}`: {err.getvalue().strip()}")


def subcommand(argv: Sequence[str]) -> tuple[str, ...]:
    """The subcommand path of ``govbus …`` (``("sink", "run")``), as far as the parser knows it."""
    parser, path = _parser(), []
    for token in argv[1:]:
        if token.startswith("-") and not path:
            continue  # global options such as -v
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or token not in subs[0].choices:
            break
        path.append(token)
        parser = subs[0].choices[token]
    return tuple(path)


def promised(argv: Sequence[str]) -> str | None:
    """Why ``argv`` may not work yet (a command in :data:`PROMISED`), else None."""
    words = tuple(argv[1:])
    return next((why for cmd, why in PROMISED.items() if words[: len(cmd)] == cmd), None)


def help_words(argv: Sequence[str]) -> tuple[str, ...]:
    """The subcommand whose ``--help`` documents ``argv`` (the promised words if it is promised)."""
    words = tuple(argv[1:])
    return next((cmd for cmd in PROMISED if words[: len(cmd)] == cmd), None) or subcommand(argv)


def command_param(argv: Sequence[str], *, id: str) -> Any:
    """A ``pytest.param`` for a check of ``argv``: a strict xfail for a promised command."""
    why = promised(argv)
    marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
    return pytest.param(list(argv), id=id, marks=marks)


def help_run(words: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``govbus <words> --help`` through the installed console script (what ENTRYPOINT runs)."""
    govbus = Path(sys.executable).with_name("govbus")
    return subprocess.run([str(govbus), *words, "--help"], capture_output=True, text=True, timeout=120, check=False)


def assert_help(words: Sequence[str]) -> None:
    result = help_run(words)
    assert result.returncode == 0, f"govbus {' '.join(words)} --help failed:\n{result.stderr}"
    assert result.stdout.startswith(f"usage: govbus {' '.join(words)}".rstrip()), result.stdout[:200]


def dry_run(argv: Sequence[str], settings: GovbusSettings) -> None:
    """What the command builds from its settings before any network I/O, as it would build it.

    ``sink run``: the sink from its entry point and options (it validates them), and the
    signature-verification stage (it loads the keyring). ``gate check``: the policy file.
    """
    args = parse_command(argv)
    if subcommand(argv) == ("sink", "run"):
        options = dict(settings.sink.options)
        for pair in args.option:
            key, _, value = pair.partition("=")
            options[key.strip().replace("-", "_")] = value
        sink = create_sink(args.name, load_factory(args.name, args.factory), options)
        assert sink is not None
        build_verification(settings.sink, settings.signing)
    elif subcommand(argv) == ("gate", "check"):
        build_policy(settings, args.policy)


def deployed_sinks() -> list[str]:
    """Every sink govbus registers in the ``govbus.sinks`` entry-point group and means to run
    (plugins installed from other distributions are not this repository's to deploy)."""
    ours = {ep.name for ep in entry_points(group="govbus.sinks") if ep.dist is not None and ep.dist.name == "govbus"}
    return sorted(ours - NOT_DEPLOYED)


# ---- Dockerfile -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str  # the arguments as written, continuation lines joined
    stage: int  # 0 for the first FROM's stage

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of ``CMD ["a", "b"]`` and the like, None for the shell form."""
        text = self.value
        for flag in re.findall(r"--\S+\s+", text):  # HEALTHCHECK --interval=… CMD […]
            text = text.replace(flag, "", 1)
        text = text.removeprefix("CMD ").strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list)
        return [str(x) for x in parsed]


@functools.cache
def dockerfile() -> tuple[Instruction, ...]:
    """deploy/Dockerfile's instructions (comments dropped, ``\\`` continuations joined)."""
    out: list[Instruction] = []
    stage, pending = -1, ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        pending += (" " if pending else "") + line.removesuffix("\\").strip()
        if line.endswith("\\"):
            continue
        keyword, _, value = pending.partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, value.strip(), stage))
    return tuple(out)


def final_stage() -> list[Instruction]:
    last = max(i.stage for i in dockerfile())
    return [i for i in dockerfile() if i.stage == last]


def image_env() -> dict[str, str]:
    """The ENV of the runtime stage: every container of the image starts with it."""
    env: dict[str, str] = {}
    for ins in final_stage():
        if ins.keyword == "ENV":
            for token in shlex.split(ins.value):
                name, sep, value = token.partition("=")
                assert sep, f"ENV {ins.value}: use the NAME=value form"
                env[name] = value
    return env


def image_entrypoint() -> list[str]:
    found = [i.exec_form for i in final_stage() if i.keyword == "ENTRYPOINT"]
    assert found, "the runtime stage needs an ENTRYPOINT"
    assert found[-1] is not None, "ENTRYPOINT must be the exec form, so signals reach govbus"
    return found[-1]


def image_user() -> tuple[int, int]:
    """The numeric uid:gid of the runtime stage's USER."""
    users = [i.value for i in final_stage() if i.keyword == "USER"]
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER {users[-1]}: numeric, so Kubernetes can verify runAsNonRoot"
    return int(uid), int(gid or uid)


def is_govbus_image(image: str) -> bool:
    """``govbus:dev``, ``registry.example.com/govbus:0.1.0`` — the image deploy/Dockerfile builds."""
    return image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0] == "govbus"


# ---- tests of the helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "GOVBUS_TOPIC",
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS",
        "govbus_kafka__sasl_password",  # the environment is case-insensitive
        "GOVBUS_KAFKA__EXTRA",  # a dict field as a JSON object
        "GOVBUS_SINK__HEALTH__PORT",
        "GOVBUS_SINK__OPTIONS__PATH",  # a key of a dict field
        "GOVBUS_SINK__VERIFY__POLICY__GAP",
        "GOVBUS_SIGNING__KEYRING",  # a validation alias of keyring_path
        "GOVBUS_SIGNING__KEYRING_PATH",
        "GOVBUS_GATE__POLICY_FILE",
        "GOVBUS_PRODUCER__SPOOL_DIR",
        "GOVBUS_SINK",  # a whole section as JSON
    ],
)
def test_settings_field_exists_for_real_settings(name: str) -> None:
    assert settings_field_exists(name)


@pytest.mark.parametrize(
    "name",
    [
        "GOVBUS_KAFKA__BOOTSTRAP_SERVER",  # typo
        "GOVBUS_TOPICS",
        "GOVBUS_GATE__POLICYFILE",
        "GOVBUS_SINK__HEALTH__PORT__X",  # below a scalar
        "GOVBUS_SINK__OPTIONS__PATH__X",  # below a dict of strings
        "GOVBUS_SINK____HEALTH",
        "GOVBUS_",
        "GOVBSU_TOPIC",  # a misspelt prefix is not a setting either
        "KAFKA_BOOTSTRAP_SERVERS",
    ],
)
def test_settings_field_exists_rejects_everything_else(name: str) -> None:
    assert not settings_field_exists(name)


def test_every_field_of_the_settings_tree_is_found() -> None:
    leaves = list(settings_leaves())
    assert len(leaves) > 50, leaves  # the walk reached the nested sections
    assert [name for name in leaves if not settings_field_exists(name)] == []


def test_a_value_of_the_wrong_type_fails_naming_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="GOVBUS_SINK__HEALTH__PORT"):
        settings_from_env({"GOVBUS_SINK__HEALTH__PORT": "ninety"}, monkeypatch)


def test_settings_come_from_exactly_the_given_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_TOPIC", "from.the.test.runner")
    settings = settings_from_env({"GOVBUS_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092"}, monkeypatch)
    assert settings.topic == GovbusSettings.model_fields["topic"].default
    assert settings.kafka.bootstrap_servers == "kafka:9092"


def test_parse_command_and_subcommand() -> None:
    assert parse_command(["govbus", "sink", "run", "stdout"]).name == "stdout"
    assert subcommand(["govbus", "sink", "run", "stdout"]) == ("sink", "run")
    assert subcommand(["govbus", "-v", "gate", "check", "--json"]) == ("gate", "check")
    with pytest.raises(pytest.fail.Exception, match="rejects"):
        parse_command(["govbus", "sink", "walk", "stdout"])
    with pytest.raises(pytest.fail.Exception, match="must be govbus"):
        parse_command(["sink", "run", "stdout"])


def test_dry_run_builds_the_sink_and_rejects_an_unknown_option(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["govbus", "sink", "run", "file"]
    dry_run(argv, settings_from_env({"GOVBUS_SINK__OPTIONS__PATH": "/var/lib/govbus/x.jsonl"}, monkeypatch))
    with pytest.raises(ConfigError, match="GOVBUS_SINK__OPTIONS"):
        dry_run(argv, settings_from_env({"GOVBUS_SINK__OPTIONS__PAHT": "/x.jsonl"}, monkeypatch))


def test_promised_commands_are_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROMISED, ("future", "command"), "promised, not implemented yet")
    assert promised(["govbus", "future", "command", "--x"]) == "promised, not implemented yet"
    assert promised(["govbus", "schemas", "register", "--registry-url", "http://r:8081"]) is None  # implemented
    assert promised(["govbus", "topics", "create"]) is None


def test_dockerfile_parser_reads_the_image() -> None:
    assert image_entrypoint() == ["govbus"]
    assert image_user()[0] > 0
    assert "GOVBUS_SINK__HEALTH__HOST" in image_env()
    assert is_govbus_image("registry.example.com/govbus:0.1.0")
    assert is_govbus_image("govbus:dev")
    assert not is_govbus_image("registry.example.com/acme/agent-kernel:1.0.0")
