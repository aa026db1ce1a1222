"""``govbus dev cluster up|down|status|kill|stop|start``: a local replicated cluster that outlives the command.

Its data lives in ``<cache>/dev-cluster`` (one directory per node, ``cluster.json`` with ids and
ports) and what the other actions need in ``<cache>/run/cluster.json``. Nodes are found by the
lock each Kafka process holds on its data directory, so a node that crashed reads as down.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from govbus.errors import BrokerError

from ._broker import running_pid
from ._cluster import LocalCluster
from ._paths import cache_root, load_state, save_state, state_path
from ._probe import ask_metadata
from ._process import is_kafka_broker, terminate_pid


def register(tools: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = tools.add_parser(
        "cluster",
        help="a local replicated Apache Kafka cluster: brokers plus a dedicated KRaft controller quorum",
        description="N broker processes and a dedicated KRaft controller quorum on 127.0.0.1 (same artifacts "
        "as 'govbus dev broker'); replication factor 3, min.insync.replicas 2, no unclean leader election. "
        f"Data: {_data_dir()}",
    )
    actions = cluster.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start every node in the background (or show the running cluster)")
    up.add_argument("--brokers", type=int, default=3, help="broker processes (default 3)")
    up.add_argument(
        "--controllers",
        type=int,
        default=1,
        help="dedicated KRaft controllers (default 1; 3 for a fault-tolerant quorum)",
    )
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every broker to register")
    up.set_defaults(func=_up)
    down = actions.add_parser("down", help="stop every node (brokers first), SIGKILL after --timeout")
    down.add_argument("--timeout", type=float, default=30.0)
    down.add_argument("--purge", action="store_true", help="also delete the cluster's data")
    down.set_defaults(func=_down)
    status = actions.add_parser("status", help="which nodes run, and does the cluster answer? (exit 0 if all up)")
    status.add_argument("--json", action="store_true", help="print a JSON object")
    status.set_defaults(func=_status)
    for name, text in (
        ("kill", "SIGKILL one broker (a crash: no controlled shutdown)"),
        ("stop", "stop one broker cleanly (controlled shutdown)"),
        ("start", "(re)start one broker on its port and data"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("broker", type=int, help="broker id (1, 2, 3 …)")
        one.add_argument("--timeout", type=float, default=120.0)
        one.set_defaults(func=_one)


def _up(args: argparse.Namespace) -> int:
    state = _load_state()
    running = _running_nodes()
    if running:
        print(f"a dev cluster is already running at {state.get('bootstrap', '?')} (nodes {sorted(running)})")
        _print_nodes(state, running)
        return 0
    cluster = LocalCluster(
        _data_dir(),
        brokers=args.brokers,
        controllers=args.controllers,
        startup_timeout=args.timeout,
        detached=True,
        quiet=False,
    )
    info = cluster.start()
    state = {
        "bootstrap": info.bootstrap,
        "version": info.version,
        "brokers": {str(k): v for k, v in info.brokers.items()},
        "controllers": {str(k): v for k, v in info.controllers.items()},
        "data_dir": str(info.data_dir),
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "startup_seconds": round(info.startup_seconds, 2),
    }
    _save_state(state)
    print(f"Apache Kafka {info.version} cluster is up (started in {info.startup_seconds:.1f} s)")
    _print_nodes(state, _running_nodes())
    print(f"  use         GOVBUS_KAFKA__BOOTSTRAP_SERVERS={info.bootstrap}")
    print("  stop with   govbus dev cluster down")
    return 0


def _down(args: argparse.Namespace) -> int:
    running = _running_nodes()
    if not running:
        print("no dev cluster is running")
    # Brokers before controllers: a broker's controlled shutdown needs its controller.
    for node_id in sorted(running, key=lambda i: (i > 100, i)):
        pid = running[node_id]
        clean = terminate_pid(pid, args.timeout)
        print(f"{'stopped' if clean else 'killed'} node {node_id} (pid {pid})")
    if args.purge:
        shutil.rmtree(_data_dir(), ignore_errors=True)
        _state_path().unlink(missing_ok=True)
        print(f"deleted {_data_dir()}")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _load_state()
    running = _running_nodes()
    metadata = ask_metadata(state["bootstrap"], timeout=3.0) if running and "bootstrap" in state else None
    expected = len(state.get("brokers", {})) + len(state.get("controllers", {}))
    up = bool(state) and len(running) == expected and metadata is not None
    if args.json:
        report = {
            **state,
            "running": {str(k): v for k, v in running.items()},
            "answering": metadata is not None,
            "live_brokers": None if metadata is None else metadata.brokers,
        }
        print(json.dumps(report, indent=2))
        return 0 if up else 1
    if not running:
        print("the dev cluster is not running; start it with 'govbus dev cluster up'")
        return 1
    _print_nodes(state, running)
    if metadata is not None:
        print(f"  metadata    {metadata.brokers} live broker(s), {metadata.topics} topics")
    else:
        print("  metadata    no broker answered within 3 s")
    return 0 if up else 1


def _one(args: argparse.Namespace) -> int:
    state = _load_state()
    if str(args.broker) not in state.get("brokers", {}):
        raise BrokerError(f"no broker {args.broker} in the dev cluster (brokers: {sorted(state.get('brokers', {}))})")
    node_dir = _data_dir() / f"broker-{args.broker}"
    pid = running_pid(node_dir)
    if args.cluster_command == "start":
        if pid is not None:
            print(f"broker {args.broker} is already running (pid {pid})")
            return 0
        cluster = LocalCluster(
            _data_dir(),
            brokers=len(state["brokers"]),
            controllers=len(state["controllers"]),
            startup_timeout=args.timeout,
            detached=True,
        )
        started = time.monotonic()
        cluster.start_broker(args.broker)
        print(f"broker {args.broker} rejoined the cluster in {time.monotonic() - started:.1f} s")
        return 0
    if pid is None:
        print(f"broker {args.broker} is not running")
        return 0
    if pid <= 0 or not is_kafka_broker(pid):
        raise BrokerError(f"something holds {node_dir} but its pid ({pid}) is not a Kafka broker; not signalling it")
    if args.cluster_command == "kill":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # each node leads its own process group
        print(f"killed broker {args.broker} (pid {pid})")
    else:
        clean = terminate_pid(pid, args.timeout)
        print(f"{'stopped' if clean else 'killed'} broker {args.broker} (pid {pid})")
    return 0


def _running_nodes() -> dict[int, int]:
    """node id -> pid (0 if unknown) of every node whose Kafka process holds its data directory."""
    out: dict[int, int] = {}
    root = _data_dir()
    if not root.exists():
        return out
    for node_dir in root.iterdir():
        role, _, ident = node_dir.name.partition("-")
        if role in ("broker", "controller") and ident.isdigit():
            pid = running_pid(node_dir)
            if pid is not None:
                out[int(ident)] = pid
    return out


def _print_nodes(state: dict[str, Any], running: dict[int, int]) -> None:
    print(f"  bootstrap   {state.get('bootstrap', '?')}")
    for role in ("controllers", "brokers"):
        for ident, port in sorted(state.get(role, {}).items(), key=lambda kv: int(kv[0])):
            pid = running.get(int(ident))
            where = f"pid {pid}" if pid is not None else "down"
            print(f"  {role[:-1]:<11} {ident:>3} at 127.0.0.1:{port} ({where})")
    print(f"  data        {state.get('data_dir', _data_dir())}")


def _data_dir() -> Path:
    return cache_root() / "dev-cluster"


def _state_path() -> Path:
    return state_path("cluster")


def _load_state() -> dict[str, Any]:
    return load_state("cluster")


def _save_state(state: dict[str, Any]) -> None:
    save_state("cluster", state)
