"""Faults of a replicated cluster (three brokers, a dedicated KRaft controller; RF 3,
min.insync.replicas 2) with traffic flowing from the real producer into a file sink and an audit
sink, each a ``govbus sink run`` process, and the policy gate admitting all along.

Every scenario must end with 0 lost in both sinks (every event whose ``emit()`` returned is in
both outputs), per-agent order kept in the file sink, and no duplicate left in either output where
the sinks de-duplicate. The figures (stall, recovery, gate denial) are printed; ``make faults``
writes them to benchmarks/faults.json. Harness: tests/_faults.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import _faults
import pytest
from _faults import FaultRow, Rig
from confluent_kafka.admin import ConfigResource

from govbus.localkafka._cluster import LocalCluster

pytestmark = pytest.mark.system

RATE = 100.0  # events per second: modest, so the suite stays short on a shared 2-core machine


@pytest.fixture
def rig(local_cluster: LocalCluster, tmp_path: Path) -> Iterator[Rig]:
    with Rig(local_cluster, tmp_path, rate=RATE) as started:
        yield started


def check(row: FaultRow, *, duplicates_absorbed: bool = True) -> None:
    print("\n" + _faults.table([row]))
    assert row.emitted > 0
    assert row.lost == {"file": 0, "audit": 0}, row
    assert row.order_violations == 0, row
    if duplicates_absorbed:
        assert row.duplicates == {"file": 0, "audit": 0}, row


def test_sigkill_of_the_leader_loses_nothing_and_keeps_order(rig: Rig) -> None:
    check(_faults.leader_kill(rig))


def test_rolling_restart_loses_nothing(rig: Rig) -> None:
    check(_faults.rolling_restart(rig))


def test_two_of_three_down_spools_denies_under_min_isr_and_recovers(rig: Rig) -> None:
    row = _faults.two_down(rig)
    check(row)
    # The gate's bound: the controller fences a killed broker after broker.session.timeout.ms (4 s),
    # then one refresh (0.5 s) with a metadata answer within the broker check's timeout (2 s).
    assert row.gate_isr_denial_s is not None
    assert row.gate_isr_denial_s <= 4.0 + 0.5 + 2.0 + 2.0, row
    assert row.producer_spooled > 0, "the producer never spooled during the outage"


def test_sinks_sigkilled_during_a_failover_lose_nothing_and_absorb_duplicates(rig: Rig) -> None:
    check(_faults.sink_killed_in_failover(rig))


def test_group_coordinator_killed_during_a_rebalance_loses_nothing(rig: Rig) -> None:
    # Two file-sink instances write two files: a partition handed over mid-batch may be written by
    # both (at least once); each file de-duplicates only its own lines.
    check(_faults.coordinator_kill(rig), duplicates_absorbed=False)


def test_topics_create_picks_production_replication_on_the_cluster(local_cluster: LocalCluster) -> None:
    topic = f"topics-cli-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": local_cluster.bootstrap, "GOVBUS_TOPIC": topic}
    done = subprocess.run(
        [sys.executable, "-m", "govbus", "topics", "create", "--dlq-for", "file"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    admin = local_cluster.admin()
    for name in (topic, f"{topic}.dlq.file"):
        meta = admin.list_topics(topic=name, timeout=10).topics[name]
        assert {len(p.replicas) for p in meta.partitions.values()} == {3}
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        config = admin.describe_configs([resource])[resource].result(10)
        assert config["min.insync.replicas"].value == "2"
        assert config["unclean.leader.election.enable"].value == "false"


def test_ensure_topic_on_an_existing_topic_needs_no_controller(local_cluster: LocalCluster) -> None:
    """A restarted sink ensures its dead-letter topic at start-up. In a failover that CreateTopics
    request went to a broker that had just died and the sink exited after 30 s ("cannot create
    topic …: no broker … answered", found by the sinks-killed-in-a-failover fault): an existing
    topic must be found by metadata alone. Here the controller is stopped, so any CreateTopics
    times out while the brokers still answer metadata."""
    from govbus._admin import ensure_topic

    conf = {"bootstrap.servers": local_cluster.bootstrap}
    topic = f"exists-{uuid.uuid4().hex[:8]}"
    assert ensure_topic(conf, topic, partitions=2, timeout=60) == 2
    controller = next(iter(local_cluster.controllers.values()))
    controller.stop()
    try:
        assert ensure_topic(conf, topic, partitions=2, timeout=10) == 2
    finally:
        controller.start()


def test_the_coordinator_from_metadata_is_the_one_the_group_reports(rig: Rig) -> None:
    """The fault harness finds a group's coordinator by hashing the group id onto
    __consumer_offsets (as the broker does) and reading that partition's leader from metadata."""
    rig.wait_flowing(50)
    group = "govbus.sink.file"
    described = rig.cluster.admin().describe_consumer_groups([group], request_timeout=20)[group].result(timeout=30)
    assert rig.cluster.coordinator(group) == described.coordinator.id
