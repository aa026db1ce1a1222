"""deploy/compose/secure.yml (the secure compose variant), checked without a container engine.

The override is merged over docker-compose.yml the way compose merges files (no ``docker
compose`` here to do it), and the result is validated against the Compose Specification's JSON
schema and held to the code: no listener is PLAINTEXT and none is anonymous, every govbus
service that talks to Kafka does so as a principal of its own (SCRAM over SASL_SSL with its
password from a compose secret, or the admin's certificate over mTLS) and verifies the broker
with the CA, each SCRAM principal is created by init-users and gets exactly its role's ACLs
from an acl-* step, every GOVBUS_* variable is a real setting, and every command parses.
Not checked here: that the images start and behave as configured (docs/deploy.md).
"""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from cryptography import x509
from unit.test_deploy_support import (
    ROOT,
    assert_help,
    command_param,
    deployed_sinks,
    dry_run,
    help_words,
    image_entrypoint,
    image_env,
    is_govbus_image,
    parse_command,
    settings_from_env,
    subcommand,
    unknown_settings,
)

from govbus._acl import AclEntry, parse_role, parse_user, plan
from govbus._settings import KafkaSettings
from govbus.errors import ConfigError
from govbus.gate._cli import build_policy

BASE_FILE = ROOT / "docker-compose.yml"
OVERRIDE_FILE = ROOT / "deploy" / "compose" / "secure.yml"
BASE: dict[str, Any] = yaml.safe_load(BASE_FILE.read_text(encoding="utf-8"))
OVERRIDE: dict[str, Any] = yaml.safe_load(OVERRIDE_FILE.read_text(encoding="utf-8"))

# Compose's merge rules (compose-spec "merge.md"): mappings merge key by key, these sequences are
# replaced, volumes merge by their target, other sequences (ports, secrets, …) are appended.
_REPLACED = {"command", "entrypoint", "test"}


def _merge(base: Any, over: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = _merge(out[k], v, k) if k in out else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(over, list) and key not in _REPLACED:
        if key == "volumes":
            by_target = {m.split(":")[1]: m for m in base}
            by_target.update({m.split(":")[1]: m for m in over})
            return list(by_target.values())
        return base + [v for v in over if v not in base]
    return copy.deepcopy(over)


COMPOSE: dict[str, Any] = _merge(BASE, OVERRIDE)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
GOVBUS = {name: svc for name, svc in SERVICES.items() if is_govbus_image(svc["image"])}
# Talks to the schema registry over HTTP only: it builds no Kafka client.
NO_KAFKA = {("schemas", "register")}
# The TLS steps write files: not Kafka clients either.
TLS_STEP = ("dev", "tls", "issue")
KAFKA_UID, REGISTRY_UID, GOVBUS_UID = "1000:1000", "1000:1000", "10001:10001"


def argv_of(svc: dict[str, Any]) -> list[str]:
    command = svc.get("command", [])
    assert isinstance(command, list), "exec form"
    return [*(svc.get("entrypoint") or image_entrypoint()), *command]


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict)
    return {k: str(v) for k, v in env.items()}


def govbus_env(svc: dict[str, Any]) -> dict[str, str]:
    return {**{k: v for k, v in image_env().items() if k.startswith("GOVBUS_")}, **env_of(svc)}


def kafka_clients() -> dict[str, dict[str, Any]]:
    return {
        n: s for n, s in GOVBUS.items() if subcommand(argv_of(s)) not in NO_KAFKA and tuple(argv_of(s)[1:4]) != TLS_STEP
    }


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """target → source of a service's volumes."""
    return {m.split(":")[1]: m.split(":")[0] for m in svc.get("volumes", [])}


def volume_at(svc: dict[str, Any], path: str) -> str:
    """The volume (or bind source) the file ``path`` of the container lives on."""
    best = max((t for t in mounts(svc) if path == t or path.startswith(t.rstrip("/") + "/")), key=len, default=None)
    assert best is not None, f"{path} is on no volume of the service"
    return mounts(svc)[best]


def secret_file(svc: dict[str, Any], path: str) -> Path:
    """The repository file behind ``/run/secrets/<name>`` of a service."""
    assert path.startswith("/run/secrets/"), path
    name = path.removeprefix("/run/secrets/")
    assert name in svc.get("secrets", []), f"secret {name} is not given to the service"
    source: str = COMPOSE["secrets"][name]["file"]
    assert source.startswith("./"), "relative to the project directory (the first file's)"
    return ROOT / source


def tls_steps() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in GOVBUS.items() if tuple(argv_of(s)[1:4]) == TLS_STEP}


def written_by(volume: str) -> list[tuple[dict[str, Any], Any]]:
    """The tls steps writing to ``volume`` (with their parsed arguments)."""
    out = []
    for svc in tls_steps().values():
        args = parse_command(argv_of(svc))
        if volume_at(svc, str(args.dir) + "/x") == volume:
            out.append((svc, args))
    return out


# ---- the merged file ------------------------------------------------------------------------


def test_the_merge_is_the_compose_one() -> None:
    # The few rules the override relies on, on the merged result.
    kafka = SERVICES["kafka"]
    assert kafka["healthcheck"]["test"] == OVERRIDE["services"]["kafka"]["healthcheck"]["test"]
    assert kafka["healthcheck"]["interval"] == BASE["services"]["kafka"]["healthcheck"]["interval"]
    assert mounts(kafka)["/var/lib/kafka/data"] == "kafka-data"
    assert SERVICES["kernel"]["command"] == OVERRIDE["services"]["kernel"]["command"]


def test_matches_the_compose_specification_schema() -> None:
    vendored = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for doc in (OVERRIDE, COMPOSE):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == []


def test_check_jsonschema_accepts_the_override() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(OVERRIDE_FILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_govbus_service_builds_the_checked_dockerfile() -> None:
    # Relative to the project directory (the first file's), as every path in an override is.
    for name, svc in GOVBUS.items():
        assert svc["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}, name


def test_nothing_is_interpolated() -> None:
    assert "$" not in OVERRIDE_FILE.read_text(encoding="utf-8")


def test_start_order_is_health_gated() -> None:
    for name, svc in SERVICES.items():
        for target, spec in svc.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown service {target}"
            dep = SERVICES[target]
            if dep.get("restart") == "no":
                expected = "service_completed_successfully"
            elif "test" in dep.get("healthcheck", {}) or is_govbus_image(dep["image"]):
                expected = "service_healthy"
            else:
                expected = "service_started"
            assert spec.get("condition") == expected, f"{name} → {target}"


def test_volumes_and_secrets_are_declared_and_exist() -> None:
    used = {src for svc in SERVICES.values() for src in mounts(svc).values() if not src.startswith("./")}
    assert used == set(COMPOSE["volumes"])
    for svc in SERVICES.values():
        for src in mounts(svc).values():
            if src.startswith("./"):
                assert (ROOT / src).is_file(), src
    given = {s for svc in SERVICES.values() for s in svc.get("secrets", [])}
    assert given == set(COMPOSE["secrets"])
    passwords = [(ROOT / spec["file"]).read_text(encoding="utf-8").strip() for spec in COMPOSE["secrets"].values()]
    assert all("placeholder" in p for p in passwords), "the repository holds placeholders only"
    assert len(set(passwords)) == len(passwords), "one password per principal"


# ---- the broker -----------------------------------------------------------------------------


def _kafka_env() -> dict[str, str]:
    return env_of(SERVICES["kafka"])


def _protocols() -> dict[str, str]:
    return dict(item.split(":") for item in _kafka_env()["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))


def _advertised() -> dict[str, str]:
    return dict(item.split("://") for item in _kafka_env()["KAFKA_ADVERTISED_LISTENERS"].split(","))


def test_no_listener_is_plaintext_or_anonymous() -> None:
    env = _kafka_env()
    protocols = _protocols()
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert set(listeners) == set(protocols)
    assert set(protocols.values()) <= {"SSL", "SASL_SSL"}
    for name, protocol in protocols.items():
        if protocol == "SSL":  # TLS alone would let anyone in: a client certificate is required
            assert env[f"KAFKA_LISTENER_NAME_{name}_SSL_CLIENT_AUTH"] == "required", name
        else:
            assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
            jaas = env[f"KAFKA_LISTENER_NAME_{name}_SCRAM___SHA___512_SASL_JAAS_CONFIG"]
            assert jaas == "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    assert protocols[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "SSL"
    assert protocols[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == "SSL"
    # The base file's PLAINTEXT listener is gone from every list.
    assert "PLAINTEXT" not in env["KAFKA_LISTENERS"] + env["KAFKA_ADVERTISED_LISTENERS"]


def test_listener_names_avoid_the_image_scripts_jks_and_jaas_checks() -> None:
    # apache/kafka's start script requires JKS keystore variables when the advertised listeners
    # contain "SSL://", and a JAAS file when they contain "SASL_".
    advertised = _kafka_env()["KAFKA_ADVERTISED_LISTENERS"]
    assert "SSL://" not in advertised
    assert "SASL_" not in advertised


def test_authorizer_denies_what_no_acl_allows() -> None:
    env = _kafka_env()
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    supers = set(env["KAFKA_SUPER_USERS"].split(";"))
    # Certificates only (no mapping rule: the principal is the subject DN): no SCRAM user is super.
    assert supers == {"User:CN=broker", "User:CN=admin", "User:CN=schema-registry"}
    assert "KAFKA_SSL_PRINCIPAL_MAPPING_RULES" not in env


def test_broker_tls_material_is_written_for_the_brokers_user() -> None:
    kafka = SERVICES["kafka"]
    env = _kafka_env()
    assert env["KAFKA_SSL_KEYSTORE_TYPE"] == env["KAFKA_SSL_TRUSTSTORE_TYPE"] == "PEM"
    volume = volume_at(kafka, env["KAFKA_SSL_KEYSTORE_LOCATION"])
    assert volume_at(kafka, env["KAFKA_SSL_TRUSTSTORE_LOCATION"]) == volume
    assert all(m.endswith(":ro") for m in kafka["volumes"] if m.startswith(volume + ":"))
    ((step, args),) = written_by(volume)
    assert Path(env["KAFKA_SSL_KEYSTORE_LOCATION"]).name == f"{args.name}-bundle.pem"
    assert Path(env["KAFKA_SSL_TRUSTSTORE_LOCATION"]).name == "ca.pem"
    assert args.owner == KAFKA_UID
    # Clients and the controller quorum reach it as "kafka": hostname verification needs it.
    assert "kafka" in args.server_host
    assert f"User:CN={args.name}" in env["KAFKA_SUPER_USERS"]
    assert kafka["depends_on"][next(n for n, s in SERVICES.items() if s is step)]["condition"] == (
        "service_completed_successfully"
    )


def test_healthcheck_uses_the_mtls_listener_as_the_broker() -> None:
    test = SERVICES["kafka"]["healthcheck"]["test"]
    props_path = test[test.index("--command-config") + 1]
    source = volume_at(SERVICES["kafka"], props_path)
    props = dict(
        line.split("=", 1)
        for line in (ROOT / source).read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    port = test[test.index("--bootstrap-server") + 1].rpartition(":")[2]
    (name,) = [n for n, a in _advertised().items() if a.endswith(f":{port}")]
    assert _protocols()[name] == props["security.protocol"] == "SSL"
    env = _kafka_env()
    assert props["ssl.keystore.location"] == env["KAFKA_SSL_KEYSTORE_LOCATION"]
    assert props["ssl.truststore.location"] == env["KAFKA_SSL_TRUSTSTORE_LOCATION"]


def test_schema_registry_uses_its_own_certificate() -> None:
    reg = SERVICES["schema-registry"]
    env = env_of(reg)
    assert env["SCHEMA_REGISTRY_KAFKASTORE_SECURITY_PROTOCOL"] == "SSL"
    proto, _, address = env["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].partition("://")
    (name,) = [n for n, a in _advertised().items() if a == address]
    assert _protocols()[name] == proto == "SSL"
    volume = volume_at(reg, env["SCHEMA_REGISTRY_KAFKASTORE_SSL_KEYSTORE_LOCATION"])
    ((_, args),) = written_by(volume)
    assert args.owner == REGISTRY_UID
    assert Path(env["SCHEMA_REGISTRY_KAFKASTORE_SSL_KEYSTORE_LOCATION"]).name == f"{args.name}-bundle.pem"
    assert f"User:CN={args.name}" in _kafka_env()["KAFKA_SUPER_USERS"]


def test_the_cas_key_never_leaves_the_tls_steps() -> None:
    steps = tls_steps()
    assert steps
    ca_volumes = {volume_at(s, str(parse_command(argv_of(s)).ca_dir) + "/ca-key.pem") for s in steps.values()}
    assert len(ca_volumes) == 1
    for name, svc in SERVICES.items():
        if name not in steps:
            assert ca_volumes.isdisjoint(mounts(svc).values()), name
    for svc in steps.values():
        assert svc["user"] == "0:0"
        assert parse_command(argv_of(svc)).owner, "root only to hand files over"


# ---- govbus services ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [command_param(argv_of(svc), id=name) for name, svc in GOVBUS.items()])
def test_command_parses(argv: list[str]) -> None:
    parse_command(argv)


@pytest.mark.parametrize("words", sorted({help_words(argv_of(s)) for s in GOVBUS.values()}), ids=lambda w: " ".join(w))
def test_help_of_every_command_used(words: tuple[str, ...]) -> None:
    assert_help(words)


@pytest.mark.parametrize("name", GOVBUS)
def test_environment_is_real_settings_that_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(GOVBUS[name])
    assert [k for k in env if not k.startswith("GOVBUS_")] == []
    assert unknown_settings(env) == []
    settings = settings_from_env(govbus_env(GOVBUS[name]), monkeypatch)
    if subcommand(argv_of(GOVBUS[name])) == ("sink", "run"):
        dry_run(argv_of(GOVBUS[name]), settings)


def _kafka_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    return settings_from_env(govbus_env(GOVBUS[name]), monkeypatch).kafka


@pytest.mark.parametrize("name", kafka_clients())
def test_every_kafka_client_is_authenticated_and_verifies_the_broker(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = GOVBUS[name]
    kafka = _kafka_settings(name, monkeypatch)
    assert kafka.security_protocol in ("SSL", "SASL_SSL")
    assert kafka.ssl_endpoint_identification_algorithm == "https"
    # The broker is reached at a listener it advertises, of the protocol the client speaks.
    (listener,) = [n for n, a in _advertised().items() if a == kafka.bootstrap_servers]
    assert _protocols()[listener] == kafka.security_protocol
    # The CA it verifies with is the one the tls steps copied out.
    assert kafka.ssl_ca_location is not None
    ((_, args),) = written_by(volume_at(svc, kafka.ssl_ca_location))
    assert args.owner == GOVBUS_UID
    if kafka.security_protocol == "SASL_SSL":
        assert kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert kafka.sasl_password is None, "the password comes from a compose secret, never the file"
        assert kafka.sasl_password_file is not None
        path = secret_file(svc, kafka.sasl_password_file)
        # The settings read it (without its final newline) as the container would.
        loaded = kafka.model_copy(update={"sasl_password_file": str(path)}).librdkafka()
        assert loaded["sasl.password"] == path.read_text(encoding="utf-8").strip()
    else:
        # The admin's certificate: only the admin tools mount it.
        assert kafka.ssl_certificate_location
        assert kafka.ssl_key_location
        ((_, args),) = written_by(volume_at(svc, kafka.ssl_key_location))
        assert f"User:CN={args.name}" in _kafka_env()["KAFKA_SUPER_USERS"]
        assert tuple(argv_of(svc)[1:3]) in {("acl", "apply"), ("acl", "user"), ("topics", "create")}, name


def _scram_users(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, Path]]:
    """service → (SCRAM user, password file in the repository)."""
    out = {}
    for name in kafka_clients():
        kafka = _kafka_settings(name, monkeypatch)
        if kafka.security_protocol == "SASL_SSL":
            assert kafka.sasl_username
            assert kafka.sasl_password_file
            out[name] = (kafka.sasl_username, secret_file(GOVBUS[name], kafka.sasl_password_file))
    return out


def test_each_service_is_its_own_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    users = _scram_users(monkeypatch)
    assert sorted(n for n, s in GOVBUS.items() if subcommand(argv_of(s)) == ("sink", "run")) == sorted(
        f"sink-{s}" for s in deployed_sinks()
    )
    names = [u for u, _ in users.values()]
    assert len(set(names)) == len(names)
    assert len({p for _, p in users.values()}) == len(users)
    assert {"kernel", "console", "watch", *(f"sink-{s}" for s in deployed_sinks())} <= set(users)


def test_init_users_sets_every_password_the_services_use(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = GOVBUS["init-users"]
    args = parse_command(argv_of(svc))
    created = {}
    for text in args.user:
        user, _, path = text.partition(":")
        created[user] = secret_file(svc, path)
        assert parse_user(f"{user}:{created[user]}")[0] == user
    assert created == dict(_scram_users(monkeypatch).values())


def _acl_jobs(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[AclEntry]]:
    """principal → the ACLs its acl-* steps apply (with each step's own settings)."""
    jobs: dict[str, set[AclEntry]] = {}
    for _name, svc in GOVBUS.items():
        argv = argv_of(svc)
        if tuple(argv[1:3]) != ("acl", "apply"):
            continue
        args = parse_command(argv)
        settings = settings_from_env(govbus_env(svc), monkeypatch)
        entries = {
            e
            for r in args.role
            for e in plan(
                parse_role(r),
                topic=settings.topic,
                sink_settings=settings.sink,
                sinks=args.sink,
                require_min_isr=args.require_min_isr,
                required_classes=args.required_classes,
                watch_settings=settings.watch,
                console_actions=settings.console.actions_enabled,
            )
        }
        jobs.setdefault(args.principal, set()).update(entries)
    return jobs


def test_each_principal_gets_exactly_its_roles_acls(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _acl_jobs(monkeypatch)
    users = _scram_users(monkeypatch)
    assert set(jobs) == {f"User:{u}" for u, _ in users.values()}
    for name, (user, _) in users.items():
        svc = GOVBUS[name]
        settings = settings_from_env(govbus_env(svc), monkeypatch)
        argv = argv_of(svc)
        if subcommand(argv) == ("sink", "run"):
            expected = set(plan(parse_role(f"sink:{argv[3]}"), topic=settings.topic, sink_settings=settings.sink))
            # It may not create its dead-letter and replay topics: init-topics does.
            assert not settings.sink.dlq.create_topics
            assert all(e.operation != "CREATE" for e in expected)
        elif subcommand(argv) == ("kernel", "demo"):
            policy = build_policy(settings, None)
            expected = set(plan(parse_role("kernel"), topic=settings.topic)) | set(
                plan(
                    parse_role("gate"),
                    topic=settings.topic,
                    sinks=[s.name for s in policy.checks.sinks],
                    require_min_isr=policy.checks.topic.require_min_isr,
                    required_classes=bool(policy.required_classes),
                )
            )
        elif subcommand(argv) == ("console",):
            policy = build_policy(settings, settings.console.gate_policy)
            expected = set(
                plan(
                    parse_role("console"),
                    topic=settings.topic,
                    sinks=deployed_sinks(),
                    require_min_isr=policy.checks.topic.require_min_isr,
                    console_actions=settings.console.actions_enabled,
                )
            )
        else:
            assert subcommand(argv) == ("watch",), name
            expected = set(plan(parse_role("watch"), topic=settings.topic, watch_settings=settings.watch))
        assert jobs[f"User:{user}"] == expected, name


def test_acl_steps_run_before_their_principals_service(monkeypatch: pytest.MonkeyPatch) -> None:
    users = _scram_users(monkeypatch)
    for name, (user, _) in users.items():
        steps = [
            n for n, s in GOVBUS.items() if tuple(argv_of(s)[1:3]) == ("acl", "apply") and f"User:{user}" in argv_of(s)
        ]
        deps = SERVICES[name]["depends_on"]
        assert steps, name
        assert all(deps[s]["condition"] == "service_completed_successfully" for s in steps), name


def test_topics_are_created_by_the_admin_for_every_sink() -> None:
    argv = argv_of(GOVBUS["init-topics"])
    args = parse_command(argv)
    assert args.dlq_for is None, "every registered sink's dead-letter and replay topics"


# ---- the new commands -----------------------------------------------------------------------


def test_tls_issue_writes_owner_only_files(tmp_path: Path) -> None:
    def issue(*extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOVBUS_")}
        return subprocess.run(
            [sys.executable, "-m", "govbus", "dev", "tls", "issue", "--ca-dir", str(tmp_path / "ca"), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )

    out = tmp_path / "kafka"
    first = issue("--dir", str(out), "--name", "broker", "--server-host", "kafka")
    assert first.returncode == 0, first.stderr
    names = {p.name for p in out.iterdir()}
    assert names == {"ca.pem", "broker.pem", "broker-key.pem", "broker-bundle.pem"}
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate((out / "broker.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kafka" in sans.get_values_for_type(x509.DNSName)
    before = (out / "broker.pem").read_bytes()
    assert issue("--dir", str(out), "--name", "broker", "--server-host", "kafka").returncode == 0
    assert (out / "broker.pem").read_bytes() == before, "existing certificates are kept"
    ca_only = issue("--dir", str(tmp_path / "clients"))
    assert ca_only.returncode == 0, ca_only.stderr
    assert {p.name for p in (tmp_path / "clients").iterdir()} == {"ca.pem"}
    assert (tmp_path / "clients" / "ca.pem").read_bytes() == (out / "ca.pem").read_bytes()
    bad = issue("--dir", str(out), "--owner", "root")
    assert bad.returncode != 0
    assert "--owner" in bad.stderr


def test_sasl_password_file(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("s3cret\n", encoding="utf-8")
    conf = KafkaSettings(sasl_username="u", sasl_password_file=str(path)).librdkafka()
    assert conf["sasl.password"] == "s3cret"
    # An explicit password wins.
    conf = KafkaSettings.model_validate({"sasl_password": "x", "sasl_password_file": str(path)}).librdkafka()
    assert conf["sasl.password"] == "x"
    with pytest.raises(ConfigError, match="GOVBUS_KAFKA__SASL_PASSWORD_FILE") as raised:
        KafkaSettings(sasl_password_file=str(tmp_path / "missing")).librdkafka()
    assert "FileNotFoundError" in str(raised.value)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        KafkaSettings(sasl_password_file=str(path)).librdkafka()


def test_acl_user_add_reads_password_files(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("pw-1\n", encoding="utf-8")
    assert parse_user(f"alice:{path}") == ("alice", "pw-1")
    for bad in ("alice", f":{path}", "alice:", f"a,b:{path}"):
        with pytest.raises(ConfigError, match="--user"):
            parse_user(bad)
    with pytest.raises(ConfigError, match="cannot read the password file of bob") as raised:
        parse_user(f"bob:{tmp_path / 'missing'}")
    assert "pw-1" not in str(raised.value)
