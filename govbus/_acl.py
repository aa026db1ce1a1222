"""Least-privilege Kafka ACLs per govbus role: ``govbus acl plan|apply``.

A role is what one process does on the bus; its plan is every ACL that process needs and
nothing else. Each entry was found by test on a broker with ``allow.everyone.if.no.acl.found=false``
(tests/integration/test_acl_roles.py: the role's principal holds exactly the plan and does its whole
job; for the kernel and a sink, every plan minus any one entry fails). Kafka's implied operations
keep the plans short: ``READ``/``WRITE``/``DELETE``/``ALTER`` on a resource imply ``DESCRIBE`` on
it, and ``WRITE`` on any topic implies ``IDEMPOTENT_WRITE`` on the cluster (KIP-679, Kafka >= 3.0).

Roles (docs/security.md has the table and the threat model):

* ``kernel`` — a producer ``Bus``: ``WRITE`` on the event topic.
* ``sink:<name>`` — the sink runtime of instance ``<name>``: ``READ`` on the event topic and on its
  replay topic, ``READ`` on its own consumer group, ``WRITE`` on its own dead-letter topic
  (``CREATE`` on both only while ``GOVBUS_SINK__DLQ__CREATE_TOPICS`` is true).
* ``gate`` — the gate's broker checks: ``DESCRIBE`` on the event topic (``DESCRIBE_CONFIGS`` when
  the policy requires min.insync.replicas), ``DESCRIBE`` on the group of every sink it requires.
* ``admin`` — the operator's commands: ``topics create``, ``lag``, ``dlq inspect|replay`` and
  ``acl apply`` itself.
* ``console`` — ``govbus console``: ``READ`` on the event topic (its tail and end offsets) and on
  each ``--sink``'s dead-letter topic (no group ACL: its readers assign partitions and never use
  their group), ``DESCRIBE`` on every sink group (prefixed:
  it lists them for the lag page and its gate's class checks); ``WRITE`` on each sink's replay topic
  only while ``GOVBUS_CONSOLE__ACTIONS_ENABLED`` is true.
* ``watch`` — ``govbus watch``: ``READ`` on the watched topic and on its own group, ``DESCRIBE`` on
  every sink group (prefixed), ``WRITE`` and ``CREATE`` on its alerts topic.

``govbus schemas`` needs no Kafka ACL: it speaks only HTTP to the registry.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from govbus._librdkafka import new_admin
from govbus._principal import missing_acl, principal_of
from govbus.errors import AclError, ConfigError

__all__ = ["ROLES", "AclEntry", "AclError", "Role", "apply_plan", "missing_acl", "parse_role", "plan", "principal_of"]

log = logging.getLogger(__name__)

Resource = Literal["TOPIC", "GROUP", "CLUSTER"]
ROLES = ("kernel", "sink:<name>", "gate", "admin", "console", "watch")
_PLAIN_ROLES = ("kernel", "gate", "admin", "console", "watch")
# Sinks' groups are govbus.sink.<instance> (GOVBUS_SINK__GROUP_ID aside): what the console, the
# watchdog and the gate's class checks list, and so may DESCRIBE, by prefix.
SINK_GROUP_PREFIX = "govbus.sink."

CLUSTER_NAME = "kafka-cluster"  # the one name of Kafka's cluster resource


@dataclasses.dataclass(frozen=True, order=True)
class AclEntry:
    """One ALLOW ACL of a role: ``operation`` on ``resource`` ``name`` (LITERAL or PREFIXED), from any host."""

    resource: Resource
    name: str
    operation: str
    pattern: Literal["LITERAL", "PREFIXED"] = "LITERAL"
    why: str = dataclasses.field(default="", compare=False)

    def binding(self, principal: str) -> AclBinding:
        # confluent-kafka calls the cluster resource BROKER.
        restype = ResourceType.BROKER if self.resource == "CLUSTER" else ResourceType[self.resource]
        return AclBinding(
            restype,
            self.name,
            ResourcePatternType[self.pattern],
            principal,
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )

    def describe(self, principal: str) -> str:
        pattern = "" if self.pattern == "LITERAL" else f" ({self.pattern.lower()})"
        return f"ALLOW {principal} {self.operation} on {self.resource} {self.name}{pattern}"


@dataclasses.dataclass(frozen=True)
class Role:
    kind: Literal["kernel", "sink", "gate", "admin", "console", "watch"]
    sink: str | None = None

    def __str__(self) -> str:
        return f"sink:{self.sink}" if self.kind == "sink" else self.kind


def parse_role(text: str) -> Role:
    kind, sep, name = text.strip().partition(":")
    if kind == "sink" and sep and name:
        return Role("sink", name)
    if kind in _PLAIN_ROLES and not sep:
        return Role(kind)  # type: ignore[arg-type]
    raise ConfigError("--role", f"expected one of {', '.join(ROLES)}; got {text!r}")


def plan(
    role: Role,
    *,
    topic: str,
    sink_settings: Any = None,
    sinks: Sequence[str] = (),
    require_min_isr: bool = False,
    required_classes: bool = False,
    watch_settings: Any = None,
    console_actions: bool = False,
) -> list[AclEntry]:
    """The ACLs ``role`` needs for event topic ``topic``.

    ``sink_settings`` (a ``SinkRuntimeSettings``; default: the defaults) names the sink's group,
    dead-letter and replay topics and whether the sink creates them. ``sinks``: for ``gate``, the
    sinks its policy requires; for ``admin``, the sinks whose dead-letter topics it creates and
    replays; for ``console``, the sinks whose dead letters it shows (and replays). ``require_min_isr``:
    the gate's (or the console's gate's) topic check reads min.insync.replicas. ``required_classes``:
    the gate's policy has ``required_classes`` (it lists the sink groups). ``watch_settings`` (a
    ``WatchSettings``; default: the defaults): the watchdog's topics and groups. ``console_actions``:
    the console may replay dead letters (``GOVBUS_CONSOLE__ACTIONS_ENABLED``).
    """
    from govbus.consumers._settings import SinkRuntimeSettings

    s: SinkRuntimeSettings = sink_settings if sink_settings is not None else SinkRuntimeSettings()
    every_sink_group = AclEntry(
        "GROUP", SINK_GROUP_PREFIX, "DESCRIBE", "PREFIXED", why="list and describe every sink group: members, lag"
    )
    out: list[AclEntry] = []
    if role.kind == "kernel":
        out.append(AclEntry("TOPIC", topic, "WRITE", why="produce events (implies DESCRIBE, IDEMPOTENT_WRITE)"))
    elif role.kind == "sink":
        name = role.sink or ""
        sink_topic = s.topic or topic
        group = s.group_for(name)
        out.append(AclEntry("TOPIC", sink_topic, "READ", why="consume events"))
        out.append(AclEntry("GROUP", group, "READ", why="join its own group, fetch and commit offsets"))
        if s.dlq.enabled:
            dlq, replay = s.dlq_topic(sink_topic, name), s.replay_topic(sink_topic, name)
            out.append(AclEntry("TOPIC", replay, "READ", why="consume its replayed dead letters"))
            out.append(AclEntry("TOPIC", dlq, "WRITE", why="write its dead letters"))
            if s.dlq.create_topics:
                out.append(AclEntry("TOPIC", dlq, "CREATE", why="GOVBUS_SINK__DLQ__CREATE_TOPICS=true"))
                out.append(AclEntry("TOPIC", replay, "CREATE", why="GOVBUS_SINK__DLQ__CREATE_TOPICS=true"))
    elif role.kind == "gate":
        out.append(AclEntry("TOPIC", topic, "DESCRIBE", why="topic check: partitions and leaders"))
        if require_min_isr:
            out.append(AclEntry("TOPIC", topic, "DESCRIBE_CONFIGS", why="topic check: min.insync.replicas"))
        for name in sinks:
            out.append(AclEntry("GROUP", s.group_for(name), "DESCRIBE", why=f"sink check {name}: members, lag"))
        if required_classes:
            out.append(dataclasses.replace(every_sink_group, why="class checks: list and describe every sink group"))
    elif role.kind == "console":
        out.append(AclEntry("TOPIC", topic, "READ", why="events page (a group-less tail), end offsets"))
        out.append(
            dataclasses.replace(every_sink_group, why="lag and topology pages, its gate's sink and class checks")
        )
        if require_min_isr:
            out.append(AclEntry("TOPIC", topic, "DESCRIBE_CONFIGS", why="its gate's topic check: min.insync.replicas"))
        for name in sinks:
            out.append(AclEntry("TOPIC", s.dlq_topic(topic, name), "READ", why=f"dead letters of {name}"))
            if console_actions:
                out.append(
                    AclEntry(
                        "TOPIC",
                        s.replay_topic(topic, name),
                        "WRITE",
                        why=f"replay a dead letter of {name} (GOVBUS_CONSOLE__ACTIONS_ENABLED=true)",
                    )
                )
    elif role.kind == "watch":
        from govbus.watch._settings import WatchSettings

        w: WatchSettings = watch_settings if watch_settings is not None else WatchSettings()
        watched = w.topic or topic
        out.append(AclEntry("TOPIC", watched, "READ", why="consume events: silence, gaps, lost tails"))
        out.append(AclEntry("GROUP", w.group_id, "READ", why="its own group: join, commit"))
        out.append(
            AclEntry(
                "GROUP", w.group_prefix, "DESCRIBE", "PREFIXED", why="list and describe every sink group: stalls, gone"
            )
        )
        out.append(AclEntry("TOPIC", w.alerts_topic, "WRITE", why="publish signed alerts"))
        out.append(AclEntry("TOPIC", w.alerts_topic, "CREATE", why="create the alerts topic at start if absent"))
    else:
        out.append(AclEntry("CLUSTER", CLUSTER_NAME, "ALTER", why="acl apply: create ACLs"))
        out.append(AclEntry("TOPIC", topic, "CREATE", why="topics create"))
        out.append(AclEntry("TOPIC", topic, "DESCRIBE", why="topics create (leaders), lag (end offsets)"))
        for name in sinks:
            dlq, replay = s.dlq_topic(topic, name), s.replay_topic(topic, name)
            out.append(AclEntry("TOPIC", dlq, "CREATE", why=f"topics create: dead letters of {name}"))
            out.append(AclEntry("TOPIC", dlq, "READ", why=f"dlq inspect|replay {name}"))
            out.append(AclEntry("TOPIC", replay, "CREATE", why=f"topics create: replay topic of {name}"))
            out.append(AclEntry("TOPIC", replay, "WRITE", why=f"dlq replay {name}"))
            out.append(AclEntry("GROUP", f"govbus.dlq-replay.{name}", "READ", why=f"dlq replay {name}: progress"))
            out.append(AclEntry("GROUP", s.group_for(name), "DESCRIBE", why=f"lag of {name}"))
    return sorted(set(out))


def apply_plan(conf: dict[str, Any], principal: str, entries: Iterable[AclEntry], timeout: float = 30.0) -> int:
    """Creates the ACLs (idempotent: an existing ACL is left as it is); returns how many were sent."""
    bindings = [entry.binding(principal) for entry in entries]
    if not bindings:
        return 0
    admin = new_admin({**conf, "logger": log})
    try:
        futures = admin.create_acls(bindings, request_timeout=timeout)
        for binding, future in futures.items():
            future.result(timeout)
            log.debug("created %s", binding)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        who = principal_of(conf)
        if isinstance(err, KafkaError) and code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            raise AclError(
                f"cannot create ACLs: {err.name()}: {who} lacks the ACL operation ALTER on CLUSTER {CLUSTER_NAME}; "
                "run acl apply as an admin (a super user, or a principal with the admin role)"
            ) from None
        raise AclError(f"cannot create ACLs as {who}: {err}") from None
    except TimeoutError:
        raise AclError(
            f"cannot create ACLs: no broker at {conf.get('bootstrap.servers', '?')} answered within {timeout:g} s "
            "(is GOVBUS_KAFKA__BOOTSTRAP_SERVERS right, and are the credentials in GOVBUS_KAFKA__* accepted?)"
        ) from None
    _await_effective(admin, bindings, timeout)
    return len(bindings)


def _await_effective(admin: Any, bindings: list[AclBinding], timeout: float) -> None:
    """Returns once the answering broker lists every binding: ACLs are committed by the controller
    and applied by each broker as it replays the metadata log, so a client that starts right after
    ``create_acls`` could still be refused (seen on a loaded machine)."""
    deadline = time.monotonic() + timeout
    missing = list(bindings)
    while missing:
        filters = {
            AclBindingFilter(
                b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
            ): b
            for b in missing
        }
        still: list[AclBinding] = []
        for acl_filter, binding in filters.items():
            found = admin.describe_acls(acl_filter, request_timeout=timeout).result(timeout)
            if not found:
                still.append(binding)
        missing = still
        if missing and time.monotonic() > deadline:
            raise AclError(f"{len(missing)} ACL(s) created but not in effect after {timeout:g} s, e.g. {missing[0]}")
        if missing:
            time.sleep(0.05)


def _principal(text: str) -> str:
    if not text.startswith("User:") or len(text) <= len("User:"):
        raise ConfigError("--principal", f"expected User:<name>, got {text!r}")
    return text


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    acl = sub.add_parser("acl", help="the least-privilege Kafka ACLs of each govbus role")
    asub = acl.add_subparsers(dest="acl_command", metavar="ACTION", required=True)
    for action, helptext in (
        ("plan", "print the ACLs a principal needs for its role(s); changes nothing"),
        ("apply", "create those ACLs (as the principal in GOVBUS_KAFKA__*, which needs ALTER on the cluster)"),
    ):
        p = asub.add_parser(
            action,
            help=helptext,
            description="Names follow GOVBUS_TOPIC, GOVBUS_SINK__* and GOVBUS_WATCH__*; console actions GOVBUS_CONSOLE__ACTIONS_ENABLED.",
        )
        p.add_argument(
            "--role",
            action="append",
            required=True,
            metavar="ROLE",
            help="kernel, sink:<name>, gate, admin, console or watch (repeatable: one principal with several roles)",
        )
        p.add_argument("--principal", required=True, help="User:<name> (the SCRAM user, or the certificate's CN)")
        p.add_argument(
            "--sink",
            action="append",
            default=[],
            metavar="NAME",
            help="gate: a sink its policy requires; admin, console: a sink whose dead letters it manages (repeatable)",
        )
        p.add_argument(
            "--require-min-isr", action="store_true", help="gate, console: the policy checks min.insync.replicas"
        )
        p.add_argument(
            "--required-classes", action="store_true", help="gate: the policy has required_classes (lists sink groups)"
        )
        p.add_argument("--json", action="store_true", help="one JSON object per ACL")
        p.add_argument("--timeout", type=float, default=30.0)
        p.set_defaults(func=_run, acl_apply=action == "apply")
    user = asub.add_parser("user", help="SCRAM users (the principals of SASL_SSL clients)")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = usub.add_parser(
        "add",
        help="create or update SCRAM-SHA-512 users (as the principal in GOVBUS_KAFKA__*: needs ALTER on the cluster)",
        description="Each password is read from a file (e.g. a compose secret) and never printed.",
    )
    add.add_argument(
        "--user", action="append", required=True, metavar="NAME:FILE", help="a user and its password file (repeatable)"
    )
    add.add_argument("--iterations", type=int, default=8192, help="SCRAM iterations (Kafka's minimum is 4096)")
    add.add_argument("--timeout", type=float, default=30.0)
    add.set_defaults(func=_user_add)


def parse_user(text: str) -> tuple[str, str]:
    """``NAME:FILE`` → (name, password read from FILE without its final newline)."""
    name, sep, path = text.partition(":")
    if not sep or not name or not path or any(c in name for c in ",=:"):
        raise ConfigError("--user", f"expected NAME:FILE, got {text!r}")
    try:
        password = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("--user", f"cannot read the password file of {name}: {path}: {type(exc).__name__}") from None
    if not password:
        raise ConfigError("--user", f"the password file of {name} ({path}) is empty")
    return name, password


def _user_add(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    from govbus._settings import load_settings

    if args.iterations < 4096:
        raise ConfigError("--iterations", f"Kafka refuses fewer than 4096, got {args.iterations}")
    users = dict(parse_user(text) for text in args.user)
    conf = load_settings().kafka.librdkafka()
    upserts: list[Any] = [
        UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, args.iterations), password.encode()
        )
        for name, password in users.items()
    ]
    admin = new_admin({**conf, "logger": log})
    try:
        futures = admin.alter_user_scram_credentials(upserts, request_timeout=args.timeout)
        for name, future in futures.items():
            future.result(args.timeout)
            print(f"SCRAM-SHA-512 user {name}: set")
    except KafkaException as exc:
        raise AclError(f"cannot set SCRAM users as {principal_of(conf)}: {exc.args[0] if exc.args else exc}") from None
    except TimeoutError:
        raise AclError(
            f"cannot set SCRAM users: no broker at {conf.get('bootstrap.servers', '?')} answered within {args.timeout:g} s"
        ) from None
    return 0


def _run(args: argparse.Namespace) -> int:
    from govbus._settings import load_settings

    settings = load_settings()
    principal = _principal(args.principal)
    entries: list[AclEntry] = []
    for text in args.role:
        entries.extend(
            plan(
                parse_role(text),
                topic=settings.topic,
                sink_settings=settings.sink,
                sinks=args.sink,
                require_min_isr=args.require_min_isr,
                required_classes=args.required_classes,
                watch_settings=settings.watch,
                console_actions=settings.console.actions_enabled,
            )
        )
    entries = sorted(set(entries))
    for entry in entries:
        if args.json:
            print(json.dumps({"principal": principal, **dataclasses.asdict(entry)}))
        else:
            print(f"{entry.describe(principal):<90} # {entry.why}")
    if args.acl_apply:
        count = apply_plan(settings.kafka.librdkafka(), principal, entries, args.timeout)
        print(f"applied {count} ACL(s) for {principal}")
    return 0
