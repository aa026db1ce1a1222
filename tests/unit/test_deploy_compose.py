"""docker-compose.yml, checked without a container engine.

The file is validated against the Compose Specification's JSON schema (the copy check-jsonschema
ships, offline), then held to the code: every govbus service's command parses with govbus's own
parser and builds what it would build, every GOVBUS_* variable is a real setting and the set
loads, every sink is deployed, the start order is health-gated, and the receivers the sinks
point at are the services and ports the file defines. Not checked here: that the third-party
images exist, start, and behave as configured (see docs/deploy.md).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from unit.test_deploy_support import (
    ROOT,
    assert_help,
    command_param,
    deployed_sinks,
    dockerfile,
    dry_run,
    final_stage,
    help_words,
    image_entrypoint,
    image_env,
    is_govbus_image,
    parse_command,
    settings_from_env,
    subcommand,
    unknown_settings,
)

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
GOVBUS = {name: svc for name, svc in SERVICES.items() if is_govbus_image(svc["image"])}
COLLECTOR_CONFIG = ROOT / "deploy" / "otel-collector.yaml"


def argv_of(svc: dict[str, Any]) -> list[str]:
    """What the container runs: its entrypoint (the image's unless overridden) plus its command."""
    command = svc.get("command", [])
    assert isinstance(command, list), "exec form (a list): a string would be split by a shell"
    return [*(svc.get("entrypoint") or image_entrypoint()), *command]


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping (anchors merge it)"
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def govbus_env(svc: dict[str, Any]) -> dict[str, str]:
    """The container's GOVBUS_* environment: the image's ENV, then the service's."""
    image = {k: v for k, v in image_env().items() if k.startswith("GOVBUS_")}
    return {**image, **env_of(svc)}


def sink_name(svc: dict[str, Any]) -> str | None:
    argv = argv_of(svc)
    return argv[3] if subcommand(argv) == ("sink", "run") else None


def one_shot(svc: dict[str, Any]) -> bool:
    return svc.get("restart") == "no"


def has_healthcheck(svc: dict[str, Any]) -> bool:
    """Its own healthcheck, or the image's HEALTHCHECK (/readyz) for govbus services."""
    check = svc.get("healthcheck", {})
    if check.get("disable"):
        return False
    return "test" in check or (is_govbus_image(svc["image"]) and any(i.keyword == "HEALTHCHECK" for i in final_stage()))


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


def hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


# ---- the file as a whole --------------------------------------------------------------------


def test_matches_the_compose_specification_schema() -> None:
    vendored = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []


def test_check_jsonschema_accepts_it() -> None:
    """The same schema through check-jsonschema's own loader (ruamel, YAML 1.2), as its pre-commit hook runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_is_interpolated() -> None:
    # Compose substitutes $VAR everywhere; without any, what these tests read is what runs.
    assert [s for s in strings(COMPOSE) if "$" in s] == []


def test_merged_anchors_share_no_key() -> None:
    # YAML parsers disagree on which mapping of `<<: [*a, *b]` wins a conflict.
    def walk(node: yaml.Node) -> Iterator[list[set[str]]]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge" and isinstance(value, yaml.SequenceNode):
                    yield [{k.value for k, _ in m.value} for m in value.value]
                yield from walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                yield from walk(item)

    root = yaml.compose(COMPOSE_FILE.read_text(encoding="utf-8"))
    merges = list(walk(root))
    assert merges, "the anchors this test guards are gone; drop the test"
    for keysets in merges:
        seen: set[str] = set()
        for keys in keysets:
            assert not keys & seen, f"merged mappings share {sorted(keys & seen)}"
            seen |= keys


# ---- start order and volumes ----------------------------------------------------------------


def test_start_order_is_health_gated() -> None:
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on in the long form, so each condition is explicit"
        for target, spec in deps.items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            if one_shot(SERVICES[target]):
                expected = "service_completed_successfully"
            elif has_healthcheck(SERVICES[target]):
                expected = "service_healthy"
            else:
                expected = "service_started"
            assert spec.get("condition") == expected, f"{name} → {target}"


def test_named_volumes_are_declared_and_used() -> None:
    used: set[str] = set()
    for name, svc in SERVICES.items():
        for mount in svc.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name}: bind source {source} is missing"
            else:
                used.add(source)
                if is_govbus_image(svc["image"]):
                    # A new volume takes the owner of the image's directory it mounts on; the
                    # image creates and owns exactly one (its WORKDIR).
                    assert [target] == [i.value for i in final_stage() if i.keyword == "WORKDIR"], name
    assert used == set(COMPOSE["volumes"])


# ---- govbus services: commands and settings -------------------------------------------------


@pytest.mark.parametrize("argv", [command_param(argv_of(svc), id=name) for name, svc in GOVBUS.items()])
def test_command_parses(argv: list[str]) -> None:
    parse_command(argv)


@pytest.mark.parametrize(
    "argv",
    [
        command_param(argv, id=" ".join(help_words(argv)))
        for argv in {tuple(help_words(argv_of(s))): argv_of(s) for s in GOVBUS.values()}.values()
    ],
)
def test_help_of_every_command_used(argv: list[str]) -> None:
    assert_help(help_words(argv))


@pytest.mark.parametrize("name", GOVBUS)
def test_environment_is_real_settings_that_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(GOVBUS[name])
    assert [k for k in env if not k.startswith("GOVBUS_")] == [], "govbus is configured by GOVBUS_* only"
    assert unknown_settings(env) == []
    settings_from_env(govbus_env(GOVBUS[name]), monkeypatch)


@pytest.mark.parametrize("name", [n for n, s in GOVBUS.items() if sink_name(s)])
def test_sink_dry_run(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink is built from its options (a wrong or unknown option fails, naming its variable)."""
    argv = argv_of(GOVBUS[name])
    dry_run(argv, settings_from_env(govbus_env(GOVBUS[name]), monkeypatch))


def test_every_registered_sink_has_a_service() -> None:
    assert sorted(n for s in GOVBUS.values() if (n := sink_name(s))) == deployed_sinks()


@pytest.mark.parametrize("name", [n for n, s in GOVBUS.items() if sink_name(s)])
def test_sinks_run_until_stopped_and_drain_on_stop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = GOVBUS[name]
    assert svc["restart"] == "unless-stopped"
    assert has_healthcheck(svc), "the image's /readyz healthcheck gates what starts after the sinks"
    settings = settings_from_env(govbus_env(svc), monkeypatch)
    assert seconds(svc["stop_grace_period"]) > settings.sink.shutdown_grace_s


def test_the_watchdog_runs_until_stopped_with_a_healthcheck() -> None:
    (svc,) = [s for s in GOVBUS.values() if argv_of(s)[1:2] == ["watch"]]
    assert svc["restart"] == "unless-stopped"
    assert has_healthcheck(svc)
    assert env_of(svc)["GOVBUS_WATCH__PORT"] == "9464"  # where the image's healthcheck looks


def test_other_govbus_services_are_one_shot() -> None:
    for name, svc in GOVBUS.items():
        if not sink_name(svc) and subcommand(argv_of(svc)) not in {("console",), ("watch",)}:
            assert one_shot(svc), name
            assert svc["healthcheck"] == {"disable": True}, name


def test_console_is_long_running_authenticated_and_scrapes_every_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = SERVICES["console"]
    assert svc["restart"] == "unless-stopped"
    assert has_healthcheck(svc)
    settings = settings_from_env(govbus_env(svc), monkeypatch)
    assert settings.console.auth_required, "it binds beyond loopback"
    assert all(p.startswith("127.0.0.1:") for p in svc["ports"]), "published on this machine only"
    urls = settings.console.sink_health_urls
    assert sorted(urls) == deployed_sinks()
    for sink, url in urls.items():
        host, port = hostport(urlsplit(url).netloc)
        assert sink_name(SERVICES[host]) == sink
        assert port == settings_from_env(govbus_env(SERVICES[host]), monkeypatch).sink.health.port


# ---- the broker and the receivers the sinks point at ----------------------------------------


def _kafka_listeners() -> dict[str, tuple[str, int]]:
    env = env_of(SERVICES["kafka"])
    out = {}
    for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","):
        name, _, address = item.partition("://")
        out[name] = hostport(address)
    return out


def test_kafka_is_one_kraft_node() -> None:
    env = env_of(SERVICES["kafka"])
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:4.")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # A cluster id is a base64url UUID (kafka-storage format refuses anything else).
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"]
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert hostport(voter) == ("kafka", hostport(listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]])[1])
    assert [m.split(":")[1] for m in SERVICES["kafka"]["volumes"]] == [env["KAFKA_LOG_DIRS"]]


def test_govbus_services_reach_kafka_at_its_advertised_listener() -> None:
    advertised = _kafka_listeners()[env_of(SERVICES["kafka"])["KAFKA_INTER_BROKER_LISTENER_NAME"]]
    for name, svc in GOVBUS.items():
        assert hostport(env_of(svc)["GOVBUS_KAFKA__BOOTSTRAP_SERVERS"]) == advertised, name
        argv = argv_of(svc)
        if "--bootstrap" in argv:
            assert hostport(argv[argv.index("--bootstrap") + 1]) == advertised, name


def _sink_service(sink: str) -> dict[str, Any]:
    return next(s for s in GOVBUS.values() if sink_name(s) == sink)


def _collector() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(COLLECTOR_CONFIG.read_text(encoding="utf-8"))
    return config


def test_otlp_sink_sends_to_the_collectors_http_receiver() -> None:
    url = urlsplit(env_of(_sink_service("otlp"))["GOVBUS_SINK__OPTIONS__ENDPOINT"])
    collector = SERVICES[url.hostname or ""]
    endpoint = _collector()["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert url.port == hostport(endpoint)[1]
    assert url.path == "/v1/logs"
    # The collector reads the config this repository ships.
    (config_arg,) = [a for a in collector["command"] if a.startswith("--config=")]
    assert f"./deploy/otel-collector.yaml:{config_arg.removeprefix('--config=')}:ro" in collector["volumes"]


def test_http_sink_posts_to_the_echo_service() -> None:
    url = urlsplit(env_of(_sink_service("http"))["GOVBUS_SINK__OPTIONS__URL"])
    echo = SERVICES[url.hostname or ""]
    assert url.port == int(env_of(echo)["HTTP_ECHO_PORT"])
    assert "./deploy/compose/http_echo.py:/app/http_echo.py:ro" in echo["volumes"]


def _rsyslog_conf() -> Path:
    (mount,) = [m for m in SERVICES["rsyslog"]["volumes"] if m.startswith("./")]
    source, target = mount.split(":")[:2]
    # The image's rsyslog.conf includes /etc/rsyslog.d/*.conf.
    assert re.fullmatch(r"/etc/rsyslog\.d/[^/]+\.conf", target), target
    return ROOT / source


def test_syslog_sink_sends_to_the_rsyslog_input() -> None:
    env = env_of(_sink_service("syslog"))
    assert env["GOVBUS_SINK__OPTIONS__HOST"] in SERVICES
    (port,) = re.findall(r'input\(type="imtcp" port="(\d+)"\)', _rsyslog_conf().read_text(encoding="utf-8"))
    assert env["GOVBUS_SINK__OPTIONS__PORT"] == port
    assert int(port) >= 1024, "the image runs rsyslogd unprivileged"


def test_rsyslog_accepts_the_receiver_config(tmp_path: Path) -> None:
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    assert Path(rsyslogd).exists(), "rsyslogd is missing: `make system-deps` installs it"
    main = tmp_path / "rsyslog.conf"
    # As the image does: its own rsyslog.conf includes ours and writes every message out.
    main.write_text(f"$IncludeConfig {_rsyslog_conf()}\n*.* /dev/null\n", encoding="utf-8")
    result = subprocess.run([rsyslogd, "-N1", "-f", str(main)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_schemas_are_registered_with_the_registry_service() -> None:
    argv = argv_of(GOVBUS["init-schemas"])
    url = urlsplit(argv[argv.index("--registry-url") + 1])
    registry = SERVICES[url.hostname or ""]
    listener = urlsplit(env_of(registry)["SCHEMA_REGISTRY_LISTENERS"])
    assert url.port == listener.port


def test_http_echo_accepts_a_batch_and_prints_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = ROOT / "deploy" / "compose" / "http_echo.py"
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env={"HTTP_ECHO_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "http_echo did not start"
                time.sleep(0.1)
        body = json.dumps([{"id": "e1", "specversion": "1.0"}, {"id": "e2", "specversion": "1.0"}]).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/events",
            data=body,
            headers={"Content-Type": "application/cloudevents-batch+json; charset=utf-8"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.load(resp) == {"accepted": 2}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, "SIGTERM stops it cleanly"
    assert "POST /events application/cloudevents-batch+json; charset=utf-8 events=2" in out
    assert '"id": "e1"' in out


def test_the_dockerfile_the_services_build_is_the_one_checked() -> None:
    for name, svc in GOVBUS.items():
        assert svc["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}, name
    assert dockerfile()
