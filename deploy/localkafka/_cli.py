"""``govbus dev broker up|down|status``: one local Apache Kafka broker that outlives the command.

Its data lives in ``<cache>/dev-broker`` (so topics survive ``down``/``up`` and reboots) and what
``status``/``down`` need to find it in ``<cache>/run/broker.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from govbus.errors import BrokerError

from ._broker import LocalBroker, running_pid
from ._paths import cache_root, load_state, save_state, state_path
from ._probe import ask_metadata
from ._process import is_kafka_broker, terminate_pid
from ._tls_cli import register as tls_register


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="development tools", description="Development tools.")
    tools = dev.add_subparsers(dest="dev_command", metavar="TOOL", required=True)
    tls_register(tools)
    broker = tools.add_parser(
        "broker",
        help="a local Apache Kafka broker (no Docker needed)",
        description="A single-node Apache Kafka broker from the Maven Central artifacts, run with the "
        f"local Java 17+ on 127.0.0.1. Data: {_data_dir()}",
    )
    actions = broker.add_subparsers(dest="broker_command", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start it in the background, or show the one already running")
    up.add_argument("--port", type=int, help="client port (default: the previous one, else a free one)")
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for it to answer")
    up.add_argument(
        "--secure",
        action="store_true",
        help="SASL_SSL (SCRAM-SHA-512) and mTLS listeners only, ACLs enforced (StandardAuthorizer, "
        "allow.everyone.if.no.acl.found=false); prints the CA and the admin certificate to use "
        f"(data: {_data_dir(secure=True)})",
    )
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop it (SIGTERM, then SIGKILL after --timeout)")
    down.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for a clean stop")
    down.add_argument("--purge", action="store_true", help="also delete its data (topics, records)")
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="is it running and answering? (exit 0 if so, else 1)")
    status.add_argument("--json", action="store_true", help="print a JSON object")
    status.set_defaults(func=_status)

    from ._cluster_cli import register as register_cluster

    register_cluster(tools)


def _up(args: argparse.Namespace) -> int:
    state = _load_state()
    pid = running_pid(_running_dir(state))
    if pid is not None and bool(state.get("secure")) != args.secure:
        print(
            f"govbus: a {'secure' if state.get('secure') else 'plaintext'} dev broker is already running at "
            f"{state.get('bootstrap', '?')} (pid {pid}); run 'govbus dev broker down' first.",
            file=sys.stderr,
        )
        return 1
    if pid is not None:
        if args.port is not None and state.get("port") != args.port:
            print(
                f"govbus: a dev broker is already running at {state.get('bootstrap', '?')} (pid {pid}); "
                f"run 'govbus dev broker down' before starting it on port {args.port}.",
                file=sys.stderr,
            )
            return 1
        print(f"Apache Kafka {state.get('version', '?')} is already running")
        _print_details({**state, "pid": pid or state.get("pid")})
        return 0
    started_at = datetime.now().astimezone()
    broker = LocalBroker(
        _data_dir(secure=args.secure), port=args.port, startup_timeout=args.timeout, detached=True, secure=args.secure
    )
    info = broker.start()
    state = {
        "pid": info.pid,
        "bootstrap": info.bootstrap,
        "port": int(info.bootstrap.rsplit(":", 1)[1]),
        "version": info.version,
        "data_dir": str(info.data_dir),
        "log_path": str(info.log_path),
        "started_at": started_at.isoformat(timespec="seconds"),
        "startup_seconds": round(info.startup_seconds, 2),
    }
    if info.secure is not None:
        state.update(
            secure=True,
            mtls_bootstrap=info.secure.mtls_bootstrap,
            ca=str(info.secure.ca),
            admin_cert=str(info.secure.admin.cert),
            admin_key=str(info.secure.admin.key),
        )
    _save_state(state)
    print(f"Apache Kafka {info.version} is up (started in {info.startup_seconds:.1f} s)")
    _print_details(state)
    print("  stop with   govbus dev broker down")
    return 0


def _down(args: argparse.Namespace) -> int:
    data_dir = _running_dir(_load_state())
    pid: object = running_pid(data_dir)
    if pid == 0:  # the broker holds the lock but its pid was not recorded there; trust the state file
        pid = _load_state().get("pid", 0)
    if pid is None:
        print("no dev broker is running")
    else:
        if not isinstance(pid, int) or pid <= 0 or not is_kafka_broker(pid):
            raise BrokerError(
                f"something holds {data_dir} but its pid ({pid}) is not a Kafka broker; not signalling it"
            )
        started = time.monotonic()
        clean = terminate_pid(pid, args.timeout)
        took = time.monotonic() - started
        if clean:
            print(f"stopped the dev broker (pid {pid}) in {took:.1f} s")
        else:
            print(f"the dev broker (pid {pid}) did not stop within {args.timeout:.0f} s; killed it")
    if args.purge:
        shutil.rmtree(data_dir, ignore_errors=True)
        _state_path().unlink(missing_ok=True)
        print(f"deleted {data_dir}")
    else:
        state = _load_state()
        if state:
            state.pop("pid", None)
            state["stopped_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
            _save_state(state)
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _load_state()
    pid = running_pid(_running_dir(state))
    metadata = (
        ask_metadata(state["bootstrap"], timeout=3.0, client_config=_admin_config(state))
        if pid is not None and "bootstrap" in state
        else None
    )
    up = pid is not None and metadata is not None
    if args.json:
        report: dict[str, Any] = {
            "running": pid is not None,
            "answering": metadata is not None,
            **{k: v for k, v in state.items() if k not in ("pid", "stopped_at")},
            "pid": pid or None,
            "data_dir": str(_running_dir(state)),
            "metadata": None
            if metadata is None
            else {
                "cluster_id": metadata.cluster_id,
                "brokers": metadata.brokers,
                "topics": metadata.topics,
                "seconds": round(metadata.seconds, 4),
            },
        }
        print(json.dumps(report, indent=2))
        return 0 if up else 1
    if pid is None:
        where = f" (last at {state['bootstrap']}; data kept in {_running_dir(state)})" if "bootstrap" in state else ""
        print(f"the dev broker is not running{where}; start it with 'govbus dev broker up'")
        return 1
    if metadata is None:
        print(
            f"the dev broker process is running (pid {pid}) but did not answer a metadata request on "
            f"{state.get('bootstrap', '?')} within 3 s; see {state.get('log_path', _running_dir(state))}"
        )
        return 1
    print(f"Apache Kafka {state.get('version', '?')} is running and answering")
    _print_details({**state, "pid": pid or state.get("pid")})
    print(
        f"  metadata    answered in {metadata.seconds * 1000:.0f} ms: cluster {metadata.cluster_id}, "
        f"{metadata.brokers} broker, {metadata.topics} topics"
    )
    return 0


def _print_details(state: dict[str, Any]) -> None:
    print(f"  bootstrap   {state.get('bootstrap', '?')}")
    print(f"  pid         {state.get('pid', '?')}")
    print(f"  started at  {state.get('started_at', '?')} (took {state.get('startup_seconds', '?')} s)")
    print(f"  data        {state.get('data_dir', _data_dir())}")
    print(f"  log         {state.get('log_path', '?')}")
    if state.get("secure"):
        print(f"  mTLS        {state.get('mtls_bootstrap', '?')} (SASL_SSL SCRAM-SHA-512 at the bootstrap above)")
        print(f"  CA          {state.get('ca', '?')}")
        print(
            f"  super user  User:admin: certificate {state.get('admin_cert', '?')}, key {state.get('admin_key', '?')}"
        )
        print("  connect as  GOVBUS_KAFKA__SECURITY_PROTOCOL=SSL GOVBUS_KAFKA__BOOTSTRAP_SERVERS=<mTLS>")
        print("              GOVBUS_KAFKA__SSL_CA_LOCATION=<CA> GOVBUS_KAFKA__SSL_CERTIFICATE_LOCATION=<certificate>")
        print("              GOVBUS_KAFKA__SSL_KEY_LOCATION=<key>  (create users and ACLs as this super user)")


def _data_dir(*, secure: bool = False) -> Path:
    return cache_root() / ("dev-broker-secure" if secure else "dev-broker")


def _running_dir(state: dict[str, Any]) -> Path:
    """The data directory of the dev broker the state file describes (plaintext or secure)."""
    return _data_dir(secure=bool(state.get("secure")))


def _admin_config(state: dict[str, Any]) -> dict[str, Any] | None:
    """How ``status`` asks a secure dev broker for metadata: as its super user, over mTLS."""
    if not state.get("secure"):
        return None
    return {
        "bootstrap.servers": state.get("mtls_bootstrap", ""),
        "security.protocol": "SSL",
        "ssl.ca.location": state.get("ca", ""),
        "ssl.certificate.location": state.get("admin_cert", ""),
        "ssl.key.location": state.get("admin_key", ""),
    }


def _state_path() -> Path:
    return state_path("broker")


def _load_state() -> dict[str, Any]:
    return load_state("broker")


def _save_state(state: dict[str, Any]) -> None:
    save_state("broker", state)
