"""``govbus schemas``: the event schema's versions, locally and in a Confluent-compatible registry.

``check`` and ``diff`` work on the shipped files and candidate files with no registry at all (CI
of schema changes); ``list``, ``register``, ``set-compatibility`` and ``pull`` talk to the registry
named by ``--registry-url`` or ``GOVBUS_REGISTRY__URL`` (credentials: ``GOVBUS_REGISTRY__*``, or
the options below). Exit codes: 0 fine, 1 incompatible (check, register), 2 error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from govbus import _compat as compat
from govbus._compat import Level, Schema
from govbus._contract import load_schema, schema_versions, shipped_by_fingerprint
from govbus._registry import RegistryError, as_registry_error, connect, redact_url, registry_schema, subject_for
from govbus.errors import ConfigError

_REGISTRY_HELP = "registry base URL, e.g. http://registry:8081 [env GOVBUS_REGISTRY__URL]"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schemas = sub.add_parser(
        "schemas",
        help="event schema versions: check compatibility, diff, and manage a schema registry",
        description="The versions of the event schema (schemas/governance_event.v<N>.avsc): check their "
        "compatibility locally (no registry needed), diff them, and manage them in a Confluent-compatible "
        "schema registry.",
    )
    actions = schemas.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)

    reg = argparse.ArgumentParser(add_help=False)
    reg.add_argument("--registry-url", metavar="URL", help=_REGISTRY_HELP)
    reg.add_argument(
        "--basic-auth-user-info",
        metavar="USER:PASSWORD",
        help="HTTP basic credentials (visible in the process list: prefer GOVBUS_REGISTRY__BASIC_AUTH_USER_INFO)",
    )
    reg.add_argument("--bearer-token", metavar="TOKEN", help="bearer token (prefer GOVBUS_REGISTRY__BEARER_TOKEN)")
    reg.add_argument("--ca-location", metavar="PATH", help="CA bundle [env GOVBUS_REGISTRY__SSL_CA_LOCATION]")
    reg.add_argument("--subject", help="subject [env GOVBUS_REGISTRY__SUBJECT; default <GOVBUS_TOPIC>-value]")

    p = actions.add_parser("list", parents=[reg], help="the shipped versions, or a registry subject's versions")
    p.add_argument("--all-subjects", action="store_true", help="list every subject of the registry")
    p.set_defaults(func=_list)

    p = actions.add_parser("register", parents=[reg], help="register every shipped version, oldest first (idempotent)")
    p.set_defaults(func=_register)

    p = actions.add_parser(
        "check",
        parents=[reg],
        help="check compatibility of the versions (and candidates) under a level; no registry needed",
        description="Without --against-registry: every shipped version must be compatible with the ones "
        "before it, and each --candidate with all of those (and the earlier candidates). With "
        "--against-registry: the subject's registered versions are the history, and the candidates "
        "default to the shipped versions not registered yet. Exit 1 when incompatible.",
    )
    p.add_argument(
        "--level",
        type=_level,
        help="compatibility level (default FULL_TRANSITIVE; with --against-registry: the subject's level)",
    )
    p.add_argument("--candidate", action="append", type=Path, metavar="FILE", help="a new .avsc to check (repeatable)")
    p.add_argument("--against-registry", action="store_true", help="history = the registry subject's versions")
    p.set_defaults(func=_check)

    p = actions.add_parser(
        "diff",
        parents=[reg],
        help="field-level differences between two versions",
        description="A version is vN (shipped), a path to an .avsc file, or registry:N / registry:latest.",
    )
    p.add_argument("old")
    p.add_argument("new")
    p.set_defaults(func=_diff)

    p = actions.add_parser("set-compatibility", parents=[reg], help="set the registry's compatibility level")
    p.add_argument("level", type=_level, metavar="LEVEL", help=", ".join(Level))
    p.add_argument("--global", dest="global_", action="store_true", help="the registry's default, not the subject's")
    p.set_defaults(func=_set_compatibility)

    p = actions.add_parser("pull", parents=[reg], help="download the subject's registered versions as .avsc files")
    p.add_argument("--dir", type=Path, required=True, help="directory to write <subject>.v<N>.avsc into")
    p.set_defaults(func=_pull)


def _level(text: str) -> Level:
    try:
        return Level(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a compatibility level: {text!r} (one of {', '.join(Level)})") from None


# --- the registry these options name --------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Any:
    from govbus._settings import RegistrySettings, config_error, load_settings

    root = load_settings()
    overrides = {
        "url": args.registry_url,
        "basic_auth_user_info": args.basic_auth_user_info,
        "bearer_token": args.bearer_token,
        "ssl_ca_location": args.ca_location,
        "subject": args.subject,
    }
    merged = {**root.registry.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    from pydantic import ValidationError

    try:
        registry = RegistrySettings(**merged)
    except ValidationError as exc:
        error = config_error(exc)
        raise ConfigError(error.setting.replace("GOVBUS_", "GOVBUS_REGISTRY__", 1), error.message) from None
    return registry, registry.subject or subject_for(root.topic)


def _client(args: argparse.Namespace) -> tuple[Any, str, str]:
    registry, subject = _settings(args)
    # The client's HTTP library logs every request at INFO: noise in a command's output.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return connect(registry), subject, redact_url(registry.url or "")


def _call(what: str, fn: Any, *a: Any) -> Any:
    """A registry call whose failure becomes a :class:`RegistryError` saying what was attempted."""
    try:
        return fn(*a)
    except RegistryError:
        raise
    except Exception as exc:
        raise as_registry_error(what, exc) from None


def _registered(client: Any, subject: str) -> list[tuple[int, int, Schema]]:
    """(version, id, schema) of each version under ``subject``, oldest first; [] if none."""
    try:
        versions = client.get_versions(subject)
    except Exception as exc:
        if getattr(exc, "http_status_code", None) == 404:
            return []
        raise as_registry_error(f"list the versions of {subject!r}", exc) from None
    out = []
    for n in sorted(versions):
        rs = _call(f"fetch version {n} of {subject!r}", client.get_version, subject, n)
        out.append((n, int(rs.schema_id), Schema(f"registry version {n}", json.loads(rs.schema.schema_str))))
    return out


def _shipped_label(schema: Any) -> str:
    try:
        found = shipped_by_fingerprint(load_schema(0, schema).fingerprint)
    except Exception:
        return "not valid Avro"
    return f"= shipped v{found.version}" if found else "not shipped"


def _compatibility(client: Any, subject: str) -> str | None:
    for name in (subject, None):
        try:
            config = client.get_config(name) if name else client.get_config()
        except Exception as exc:
            if getattr(exc, "http_status_code", None) == 404:
                continue
            raise as_registry_error("read the compatibility level", exc) from None
        level = getattr(config, "compatibility_level", None) or getattr(config, "compatibility", None)
        if level is not None:
            return str(getattr(level, "value", level))
    return None


# --- actions ----------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    registry, _ = _settings(args)
    if not registry.url:
        for v in schema_versions():
            print(f"v{v.version}  fingerprint {v.fingerprint.hex()}  governance_event.v{v.version}.avsc")
        return 0
    client, subject, url = _client(args)
    if args.all_subjects:
        for name in sorted(_call("list subjects", client.get_subjects)):
            print(name)
        return 0
    versions = _registered(client, subject)
    level = _compatibility(client, subject)
    print(f"{subject} at {url}: {len(versions)} version(s), compatibility {level or 'not reported'}")
    for n, schema_id, schema in versions:
        print(f"  version {n}  id {schema_id}  {_shipped_label(schema.schema)}")
    return 0


def _register(args: argparse.Namespace) -> int:
    client, subject, url = _client(args)
    for v in schema_versions():
        try:
            schema_id = int(client.register_schema(subject, registry_schema(v)))
        except Exception as exc:
            status = getattr(exc, "http_status_code", None)
            if status in (409, 422):  # the registry's compatibility rule refused it
                print(f"v{v.version}: refused by {url} under {subject}: {getattr(exc, 'error_message', exc)}")
                return 1
            raise as_registry_error(f"register v{v.version} under {subject!r} at {url}", exc) from None
        print(f"v{v.version}: {subject} id {schema_id}")
    return 0


def _check(args: argparse.Namespace) -> int:
    candidates = [Schema.from_file(path, str(path)) for path in args.candidate or ()]
    level = args.level
    if args.against_registry:
        client, subject, url = _client(args)
        registered = _registered(client, subject)
        history = [schema for _, _, schema in registered]
        level = level or Level(_compatibility(client, subject) or Level.FULL_TRANSITIVE)
        where = f"{subject} at {url}"
        if not candidates:
            known = {_fingerprint(s.schema) for s in history}
            candidates = [s for s in compat.shipped() if _fingerprint(s.schema) not in known]
    else:
        history = compat.shipped()
        level = level or Level.FULL_TRANSITIVE
        where = "the shipped versions"
    problems = [] if args.against_registry else compat.check_history(history, level)
    for candidate in candidates:
        problems.extend(compat.check(candidate, history, level))
        history = [*history, candidate]
    checked = ", ".join(s.label for s in candidates) or "every version"
    if problems:
        print(
            f"{level}: {checked} against {where}: {len(problems)} incompatibilit{'y' if len(problems) == 1 else 'ies'}"
        )
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"{level}: {checked} against {where}: compatible")
    return 0


def _fingerprint(schema: Any) -> bytes:
    return load_schema(0, schema).fingerprint


def _diff(args: argparse.Namespace) -> int:
    old, new = _version(args, args.old), _version(args, args.new)
    lines = compat.diff(old, new)
    print(f"{old.label} → {new.label}: " + (f"{len(lines)} difference(s)" if lines else "no field-level differences"))
    for line in lines:
        print(f"  {line}")
    return 0


def _version(args: argparse.Namespace, spec: str) -> Schema:
    """``v2`` / ``2`` (shipped), ``registry:N`` / ``registry:latest``, or a path to an .avsc file."""
    if spec.startswith("registry:"):
        client, subject, _ = _client(args)
        which = spec.partition(":")[2]
        if which == "latest":
            rs = _call(f"fetch the latest version of {subject!r}", client.get_latest_version, subject)
        elif which.isdigit():
            rs = _call(f"fetch version {which} of {subject!r}", client.get_version, subject, int(which))
        else:
            raise ConfigError(spec, "expected registry:<version number> or registry:latest")
        return Schema(f"{subject} version {rs.version}", json.loads(rs.schema.schema_str))
    number = spec[1:] if spec[:1] in ("v", "V") else spec
    if number.isdigit() and not Path(spec).exists():
        for v in schema_versions():
            if v.version == int(number):
                return Schema(f"v{v.version}", v.schema)
        raise ConfigError(spec, f"no shipped version {number}; shipped: {[f'v{v.version}' for v in schema_versions()]}")
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(spec, "neither a shipped version (vN), registry:N, nor an .avsc file")
    try:
        return Schema.from_file(path, str(path))
    except ValueError as exc:
        raise ConfigError(spec, f"is not JSON: {exc}") from None


def _set_compatibility(args: argparse.Namespace) -> int:
    from confluent_kafka.schema_registry import ConfigCompatibilityLevel, ServerConfig

    client, subject, url = _client(args)
    config = ServerConfig(compatibility=ConfigCompatibilityLevel(str(args.level)))
    target = None if args.global_ else subject
    _call(f"set the compatibility of {target or 'the registry'}", client.set_config, target, config)
    print(f"{target or 'global'} at {url}: compatibility {args.level}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    client, subject, url = _client(args)
    registered = _registered(client, subject)
    if not registered:
        print(f"{subject} at {url}: no versions", file=sys.stderr)
        return 1
    args.dir.mkdir(parents=True, exist_ok=True)
    for n, schema_id, schema in registered:
        path = args.dir / f"{subject}.v{n}.avsc"
        path.write_text(json.dumps(schema.schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"{path}: version {n}, id {schema_id}, {_shipped_label(schema.schema)}")
    return 0
