"""A local replicated Apache Kafka cluster: N broker processes and a separate KRaft controller quorum.

Why dedicated controllers rather than three combined (broker+controller) nodes: in combined mode
killing a broker also kills a quorum voter, and with two of three nodes down the quorum is gone —
no leader election, no ISR change — so the surviving broker can never say NOT_ENOUGH_REPLICAS,
it just times out. Production clusters run dedicated controllers; with them, killing brokers
exercises the data plane (leader failover, ISR shrink below ``min.insync.replicas``) while the
metadata stays available, which is what the fault suite measures. One controller is the default
(a 2-core machine runs four JVMs already); ``controllers=3`` gives a fault-tolerant quorum.

Every node is a :class:`LocalBroker` (same artifacts, config writer, storage format, lock, process
handling) with its own data directory under the cluster's, so each can be stopped, killed and
restarted on its own, keeping its port::

    with LocalCluster.ephemeral(brokers=3) as cluster:
        cluster.kill_broker(cluster.leader(topic, 0))
        cluster.start_broker(...)
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from govbus.errors import BrokerError

from ._broker import _EPHEMERAL_PREFIX, _OWNER, _STATE, LocalBroker, _read_state, _require_free, _sweep_orphans
from ._config import HOST, JVM_OPTIONS, free_port, new_cluster_id
from ._fetch import KAFKA_VERSION
from ._probe import _SILENT, _ignore

OFFSETS_TOPIC = "__consumer_offsets"


def group_partition(group: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of ``group``, as the broker computes it:
    ``Utils.abs(groupId.hashCode()) % partitions`` (Java's String hash over UTF-16 code units,
    32-bit wrap-around; ``Utils.abs(Integer.MIN_VALUE)`` is 0)."""
    units = group.encode("utf-16-be")
    h = 0
    for k in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[k : k + 2], "big")) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


_CLUSTER_STATE = "cluster.json"
_CONTROLLER_BASE_ID = 100  # controllers are 101, 102, …; brokers 1, 2, 3 (ids are cluster-wide)
# Four JVMs on a 2-core dev box: a modest heap each (Kafka's own default is 1 GB).
CLUSTER_JVM_OPTIONS: tuple[str, ...] = ("-Xms128m", "-Xmx512m")


@dataclass(frozen=True)
class ClusterInfo:
    """A running local cluster: ``bootstrap`` lists every broker; ids map to client ports and pids."""

    bootstrap: str
    version: str
    brokers: dict[int, int]  # broker id -> port
    controllers: dict[int, int]  # controller id -> port
    pids: dict[int, int]  # node id -> pid
    data_dir: Path
    startup_seconds: float


def replication_defaults(brokers: int) -> dict[str, str]:
    """Broker defaults of a production-like cluster of ``brokers`` nodes: RF 3, min ISR 2, no unclean
    election (capped for smaller clusters, where the same durability cannot be had)."""
    rf = min(3, brokers)
    min_isr = min(2, rf)
    return {
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "unclean.leader.election.enable": "false",
    }


class _Node(LocalBroker):
    """One process of the cluster: a broker-only or controller-only KRaft node on a fixed port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        node_id: int,
        role: str,
        port: int,
        voters: str,
        cluster_id: str,
        config: Mapping[str, str],
        version: str,
        startup_timeout: float,
        detached: bool,
        quiet: bool,
    ) -> None:
        self.node_id = node_id
        self.role = role
        self.defer_wait = False  # the cluster waits for all its brokers at once instead
        self.port = port
        listener = "CONTROLLER" if role == "controller" else "PLAINTEXT"
        overrides = {
            "process.roles": role,
            "node.id": str(node_id),
            "controller.quorum.voters": voters,
            "listeners": f"{listener}://{HOST}:{port}",
            "advertised.listeners": f"{listener}://{HOST}:{port}",
            # Controllers too: in KRaft they create topics, applying default.replication.factor.
            **config,
        }
        super().__init__(
            data_dir,
            port,
            version=version,
            startup_timeout=startup_timeout,
            broker_config=overrides,
            detached=detached,
            quiet=quiet,
        )
        # Every node of a cluster is formatted with the cluster's id (the base class reads it from here).
        data_dir.mkdir(parents=True, exist_ok=True)
        state = _read_state(data_dir)
        if state.get("cluster_id") != cluster_id:
            state["cluster_id"] = cluster_id
            (data_dir / _STATE).write_text(json.dumps(state, indent=2) + "\n")

    def _choose_ports(self) -> tuple[int, int]:
        # The cluster fixed this node's port; the base class's second (controller) port is not used
        # by a single-role node, whose listeners are overridden.
        _require_free(self.port, f"{self.role} {self.node_id}'s port, kept so the cluster finds it again")
        return self.port, self.port

    def _java_base(self, java: Path, libs: Path, jvm_options: tuple[str, ...]) -> list[str]:
        if jvm_options is JVM_OPTIONS:
            jvm_options = (*jvm_options, *CLUSTER_JVM_OPTIONS)  # the last -Xmx wins
        return super()._java_base(java, libs, jvm_options)

    def _await_metadata(self, proc: Any, bootstrap: str, started: float) -> None:
        if self.role != "controller":
            if not self.defer_wait:
                super()._await_metadata(proc, bootstrap, started)
            return
        # A controller serves no Metadata requests; its listener accepting connections is the sign.
        deadline = time.monotonic() + self._startup_timeout
        while True:
            if proc.poll() is not None:
                raise BrokerError(f"controller {self.node_id} exited with code {proc.poll()}.\n{self._tails()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.25):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"controller {self.node_id} did not listen on {HOST}:{self.port} within "
                    f"{self._startup_timeout:.0f} s.\n{self._tails()}"
                )
            time.sleep(0.05)


class LocalCluster:
    """``brokers`` broker processes and ``controllers`` dedicated KRaft controllers on 127.0.0.1.

    ``data_dir`` holds ``cluster.json`` (cluster id, node ids and ports) and one directory per node;
    a later ``LocalCluster`` on the same directory keeps ids, ports, topics and records.
    ``broker_config`` overrides server.properties of every broker (after the replication defaults
    of :func:`replication_defaults`). Nodes started from the main thread die with this process
    unless ``detached``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        brokers: int = 3,
        controllers: int = 1,
        version: str = KAFKA_VERSION,
        startup_timeout: float = 120.0,
        broker_config: Mapping[str, str] | None = None,
        detached: bool = False,
        quiet: bool = True,
    ) -> None:
        if brokers < 1 or controllers < 1:
            raise BrokerError(f"a cluster needs at least one broker and one controller, not {brokers}/{controllers}")
        self._data_dir = Path(data_dir).absolute()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._version = version
        self._startup_timeout = startup_timeout
        self._remove_on_close = False
        self._info: ClusterInfo | None = None
        state = self._load_or_plan(brokers, controllers)
        ports: dict[str, int] = state["ports"]
        self._cluster_id: str = state["cluster_id"]
        controller_ids = sorted(int(k) for k in ports if int(k) > _CONTROLLER_BASE_ID)
        broker_ids = sorted(int(k) for k in ports if int(k) <= _CONTROLLER_BASE_ID)
        voters = ",".join(f"{i}@{HOST}:{ports[str(i)]}" for i in controller_ids)
        config = {**replication_defaults(len(broker_ids)), **(broker_config or {})}

        def node(node_id: int, role: str) -> _Node:
            return _Node(
                self._data_dir / f"{role}-{node_id}",
                node_id=node_id,
                role=role,
                port=ports[str(node_id)],
                voters=voters,
                cluster_id=self._cluster_id,
                config=config,
                version=version,
                startup_timeout=startup_timeout,
                detached=detached,
                quiet=quiet,
            )

        self.controllers: dict[int, _Node] = {i: node(i, "controller") for i in controller_ids}
        self.brokers: dict[int, _Node] = {i: node(i, "broker") for i in broker_ids}
        self._admin: AdminClient | None = None

    @classmethod
    def ephemeral(cls, *, brokers: int = 3, controllers: int = 1, **kwargs: Any) -> LocalCluster:
        """A cluster in a fresh temporary directory, deleted by ``close()`` or at interpreter exit."""
        _sweep_orphans()
        data_dir = Path(tempfile.mkdtemp(prefix=f"{_EPHEMERAL_PREFIX}cluster-"))
        (data_dir / _OWNER).write_text(f"{os.getpid()}\n")
        cluster = cls(data_dir, brokers=brokers, controllers=controllers, **kwargs)
        cluster._remove_on_close = True
        atexit.register(cluster.close)
        return cluster

    # -- the whole cluster --------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def bootstrap(self) -> str:
        """Every broker's address: clients reach the cluster through whichever of them is up."""
        return ",".join(f"{HOST}:{n.port}" for n in self.brokers.values())

    @property
    def info(self) -> ClusterInfo:
        if self._info is None:
            raise BrokerError(f"the cluster in {self._data_dir} has not been started")
        return self._info

    def start(self) -> ClusterInfo:
        """Start every node not running (controllers first) and wait until all brokers are registered."""
        started = time.monotonic()
        for controller in self.controllers.values():
            controller.start()
        version = self._version
        # Launched one after the other (from this thread, so they die with it), awaited together:
        # the JVMs boot in parallel.
        for broker in self.brokers.values():
            broker.defer_wait = True
            try:
                version = broker.start().version
            finally:
                broker.defer_wait = False
        self.wait_for_brokers(len(self.brokers), timeout=self._startup_timeout)
        self._info = ClusterInfo(
            bootstrap=self.bootstrap,
            version=version,
            brokers={i: n.port for i, n in self.brokers.items()},
            controllers={i: n.port for i, n in self.controllers.items()},
            pids={i: n.info.pid for i, n in self._nodes().items() if n.is_running()},
            data_dir=self._data_dir,
            startup_seconds=time.monotonic() - started,
        )
        return self._info

    def stop(self, timeout: float = 20.0) -> None:
        """Stop brokers (controlled shutdown), then controllers; data and ports survive."""
        for broker in self.brokers.values():
            broker.stop(timeout)
        for controller in self.controllers.values():
            controller.stop(timeout)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._admin is not None:
                self._admin = None
            for n in self._nodes().values():
                n.close()
            if self._remove_on_close:
                shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def pids(self) -> dict[int, int]:
        """node id -> pid of every running node (for RSS/fd accounting)."""
        return {i: n.info.pid for i, n in self._nodes().items() if n.is_running()}

    # -- one broker ----------------------------------------------------------------------------------

    def kill_broker(self, broker_id: int) -> None:
        """SIGKILL one broker (no controlled shutdown): its partitions fail over after the session timeout."""
        self._broker(broker_id).kill()

    def stop_broker(self, broker_id: int, timeout: float = 30.0) -> None:
        """SIGTERM one broker: a controlled shutdown moves its leaderships first."""
        self._broker(broker_id).stop(timeout)

    def start_broker(self, broker_id: int) -> None:
        """(Re)start one broker on its port and data, and wait until the cluster lists it again."""
        self._broker(broker_id).start()
        deadline = time.monotonic() + self._startup_timeout
        while broker_id not in self.live_broker_ids():
            if time.monotonic() > deadline:
                raise BrokerError(f"broker {broker_id} did not rejoin the cluster within {self._startup_timeout:.0f} s")
            time.sleep(0.1)

    def live_broker_ids(self) -> set[int]:
        """Ids of the brokers the cluster's metadata lists now (registered and unfenced)."""
        try:
            return {int(b) for b in self.admin().list_topics(timeout=2.0).brokers}
        except KafkaException:
            return set()

    def running_brokers(self) -> int:
        return sum(1 for b in self.brokers.values() if b.is_running())

    # -- questions to the cluster -------------------------------------------------------------------

    def admin(self) -> AdminClient:
        if self._admin is None:
            config: dict[str, Any] = {
                "bootstrap.servers": self.bootstrap,
                "logger": _SILENT,
                "log_level": 0,
                "error_cb": _ignore,
            }
            self._admin = AdminClient(config)
        return self._admin

    def wait_for_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Until the metadata lists exactly ``count`` live (registered, unfenced) brokers."""
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            for broker in self.brokers.values():
                code = broker._proc.poll() if broker._proc is not None else None
                if code is not None:
                    broker._proc = None
                    raise BrokerError(f"broker {broker.node_id} exited with code {code}.\n{broker._tails()}")
            try:
                seen = len(self.admin().list_topics(timeout=2.0).brokers)
            except KafkaException:
                seen = -1
            if seen == count:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"the cluster lists {seen} broker(s), not {count}, after {timeout:.0f} s")
            time.sleep(0.1)

    def leader(self, topic: str, partition: int) -> int:
        """The broker id leading ``topic``'s partition (-1: none)."""
        meta = self.admin().list_topics(topic=topic, timeout=10.0).topics[topic]
        return int(meta.partitions[partition].leader)

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader broker id of ``topic``."""
        meta = self.admin().list_topics(topic=topic, timeout=10.0).topics[topic]
        return {p: int(m.leader) for p, m in meta.partitions.items()}

    def coordinator(self, group: str, timeout: float = 60.0) -> int:
        """The broker id coordinating consumer group ``group``: the leader of the
        ``__consumer_offsets`` partition the group id hashes to (Kafka's ``partitionFor``:
        ``abs(groupId.hashCode()) % partitions``), read from metadata.

        Not from DescribeGroups: right after brokers come back its answer stayed NOT_COORDINATOR,
        or none came, for over a minute at a time (a 30-minute soak stopped three times on it),
        while metadata answers as soon as one broker does. Asked again until ``timeout`` while the
        partition has no leader."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                topic = self.admin().list_topics(topic=OFFSETS_TOPIC, timeout=10.0).topics.get(OFFSETS_TOPIC)
            except KafkaException:
                topic = None
            if topic is not None and topic.error is None and topic.partitions:
                leader = int(topic.partitions[group_partition(group, len(topic.partitions))].leader)
                if leader >= 0:
                    return leader
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"no leader for the {OFFSETS_TOPIC} partition of group {group} within {timeout:.0f} s"
                )
            time.sleep(0.2)

    def under_replicated(self, topics: Iterable[str] | None = None) -> list[str]:
        """``topic[partition]`` of every partition whose ISR is smaller than its replica set."""
        md = self.admin().list_topics(timeout=10.0)
        wanted = set(topics) if topics is not None else None
        out = []
        for name, meta in md.topics.items():
            if wanted is not None and name not in wanted:
                continue
            for p, m in meta.partitions.items():
                if len(m.isrs) < len(m.replicas) or m.leader < 0:
                    out.append(f"{name}[{p}]")
        return sorted(out)

    def wait_in_sync(self, topics: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        """Until every partition (of ``topics``, else all) has its full replica set in sync."""
        names = list(topics) if topics is not None else None
        deadline = time.monotonic() + timeout
        while True:
            try:
                behind = self.under_replicated(names)
            except KafkaException as exc:
                behind = [str(exc)]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"still under-replicated after {timeout:.0f} s: {behind[:10]}")
            time.sleep(0.1)

    # -- internals ----------------------------------------------------------------------------------

    def _broker(self, broker_id: int) -> _Node:
        try:
            return self.brokers[broker_id]
        except KeyError:
            raise BrokerError(f"no broker {broker_id} in this cluster (brokers: {sorted(self.brokers)})") from None

    def _nodes(self) -> dict[int, _Node]:
        return {**self.controllers, **self.brokers}

    def _load_or_plan(self, brokers: int, controllers: int) -> dict[str, Any]:
        path = self._data_dir / _CLUSTER_STATE
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {}
        if isinstance(state, dict) and "ports" in state and "cluster_id" in state:
            have = (
                sum(1 for k in state["ports"] if int(k) <= _CONTROLLER_BASE_ID),
                sum(1 for k in state["ports"] if int(k) > _CONTROLLER_BASE_ID),
            )
            if have != (brokers, controllers):
                raise BrokerError(
                    f"{self._data_dir} holds a cluster of {have[0]} broker(s) and {have[1]} controller(s), "
                    f"not {brokers}/{controllers}; use another data directory or delete it"
                )
            return state
        ports: dict[str, int] = {}
        for i in [*range(1, brokers + 1), *range(_CONTROLLER_BASE_ID + 1, _CONTROLLER_BASE_ID + controllers + 1)]:
            port = free_port()
            while port in ports.values():
                port = free_port()
            ports[str(i)] = port
        state = {"cluster_id": new_cluster_id(), "ports": ports, "version": self._version}
        path.write_text(json.dumps(state, indent=2) + "\n")
        return state
