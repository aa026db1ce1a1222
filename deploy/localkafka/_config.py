"""What the local broker is told: server.properties, the log4j2 configuration, JVM flags, ports."""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import quoteattr

HOST = "127.0.0.1"

# Kafka's own launcher defaults (kafka-run-class.sh) with a heap sized for a 2-core dev box.
JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
# The storage tool runs for a second: a small heap and no JIT tiers beyond C1 start it faster.
TOOL_JVM_OPTIONS: tuple[str, ...] = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a listener could bind ``port``; SO_REUSEADDR like the JVM, so TIME_WAIT does not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def new_cluster_id() -> str:
    """A KRaft cluster id the way Kafka makes one: a random UUID, URL-safe base64, 22 characters."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids these too: they read as options on a command line.
            return text


def server_properties(
    *, port: int, controller_port: int, log_dirs: Path, overrides: Mapping[str, str] | None = None
) -> str:
    """The broker's server.properties: one combined broker+controller node (KRaft) on 127.0.0.1."""
    settings: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dirs),
        # govbus creates its topics explicitly with the partitions, retention and cleanup policy they
        # need; auto-creation would let a typo'd topic name silently "work" with broker defaults.
        "auto.create.topics.enable": "false",
        "num.partitions": "3",
        # One node: every internal topic must live with a single replica.
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions than the defaults (50): the first consumer group or transaction
        # then waits for 5 partition leaders instead of 50; semantics are unchanged.
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.num.partitions": "5",
        # After a crash (SIGKILL) the restarted broker may only register once the controller has
        # expired its previous session: 4 s instead of 9 s keeps a simulated outage short, while
        # heartbeats every second still tolerate multi-second stalls on a busy machine.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        # Tests join groups constantly; the 3 s default delay would be pure waiting.
        "group.initial.rebalance.delay.ms": "0",
        # Thread pools sized for a 2-core machine rather than a production server.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "background.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
    }
    settings.update(overrides or {})
    lines = ["# Written by govbus.localkafka; rewritten on every start, edit the caller instead."]
    lines += [f"{key}={_escape(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def log4j2_xml(log_path: Path) -> str:
    """A log4j2 configuration sending everything at INFO to ``log_path`` (size-rotated, 3 backups)."""
    pattern = str(log_path.with_name(log_path.name + ".%i"))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by govbus.localkafka. -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName={quoteattr(str(log_path))} filePattern={quoteattr(pattern)}>
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <!-- Per-request and state-change chatter would drown the lines worth reading. -->
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
  </Loggers>
</Configuration>
"""


def _escape(value: str) -> str:
    # java.util.Properties treats backslash as an escape character.
    return value.replace("\\", "\\\\")
