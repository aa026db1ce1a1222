"""The sink runtime as separate processes (``python -m govbus._cli sink run``) on a real broker:
independence of sinks, SIGKILL mid-batch, rebalancing between two instances, poison records and
replay through the CLI. Every wait is on something observable (file contents, health endpoint,
committed offsets), never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _sinks import (
    FileWatcher,
    PacedProducer,
    Rec,
    SinkProcess,
    events,
    file_ids,
    produce,
    records,
    sign,
    signing_pair,
    wait_for,
)

from govbus.consumers import sink_lag

pytestmark = pytest.mark.system


@pytest.fixture
def procs() -> Iterator[list[SinkProcess]]:
    started: list[SinkProcess] = []
    yield started
    for p in started:
        p.close()


def env_for(bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    return {
        "GOVBUS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "GOVBUS_TOPIC": topic,
        "GOVBUS_SINK__COMMIT_INTERVAL_MS": "200",
        "GOVBUS_SINK__BATCH__MAX_WAIT_MS": "5",
        # A killed instance's partitions move on after the session timeout: keep it short.
        "GOVBUS_SINK__CONSUMER": json.dumps({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}),
        **extra,
    }


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))]


def test_a_sleeping_sink_does_not_slow_another(
    kafka_bootstrap: str, new_topic: Callable[..., str], procs: list[SinkProcess], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    env = env_for(kafka_bootstrap, topic)
    out = tmp_path / "fast.jsonl"
    fast = SinkProcess("file", env, f"path={out}", "fsync=never", log_dir=tmp_path)
    procs.append(fast)
    fast.wait_ready()
    watcher = FileWatcher(out)
    # One steady stream throughout (no idle gap between the two measurements): the first records
    # after a pause in traffic can wait out a broker fetch wait, which is not what is measured here.
    producer = PacedProducer(kafka_bootstrap, topic, 3000, rate=250).start()
    started = time.time()

    def follow(until: Callable[[], bool], what: str) -> None:
        def check() -> bool:
            watcher.poll()  # every few ms: the time a line is first seen is its arrival time
            return until()

        wait_for(check, 90, interval=0.002, what=what)

    follow(lambda: time.time() - started > 4.0, "4 s of traffic to the fast sink alone")
    slow_started = time.time()
    slow = SinkProcess("null", env, "delay_ms=5000", log_dir=tmp_path)  # sleeps 5 s in every write
    procs.append(slow)
    follow(lambda: slow.status().get("worker") == "writing", "the sleeping sink asleep in a write")
    slow_ready = time.time()
    follow(lambda: producer.done.is_set() and set(producer.emitted) <= set(watcher.first_seen), "fast sink caught up")
    producer.join()
    emitted = dict(producer.emitted)
    alone = [watcher.first_seen[i] - t for i, t in emitted.items() if started + 1.0 <= t < slow_started]
    together = [watcher.first_seen[i] - t for i, t in emitted.items() if t >= slow_ready]
    assert len(alone) > 300, len(alone)
    assert len(together) > 300, len(together)
    slow_delivered = slow.metric("govbus_sink_records_delivered_total")
    p50a, p99a = percentile(alone, 50), percentile(alone, 99)
    p50b, p99b = percentile(together, 50), percentile(together, 99)
    print(f"\nfast sink e2e alone: p50 {p50a * 1000:.1f} ms p99 {p99a * 1000:.1f} ms; "
          f"beside a sleeping sink: p50 {p50b * 1000:.1f} ms p99 {p99b * 1000:.1f} ms "
          f"(sleeping sink delivered {slow_delivered:.0f} of {len(emitted)})")  # fmt: skip
    # Coupled sinks would put the sleeper's 5 s into the latencies; independent ones do not move.
    # (Bounds are loose: other processes share this machine's two cores.)
    assert p50b < p50a + 0.1
    assert p99b < 2.0
    assert slow_delivered < len(emitted)  # the sleeper really is behind


def test_sigkill_mid_batch_then_restart_delivers_everything(
    kafka_bootstrap: str, new_topic: Callable[..., str], procs: list[SinkProcess], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    recs = records(events(20_000))
    produce(kafka_bootstrap, topic, recs)
    # The sink can read a topic this size in well under a second: more keeps coming until the
    # kill, so there is always a write in progress to catch (bounded at 200k more).
    stop = threading.Event()

    def feed() -> None:
        for seed in range(100, 200):
            if stop.is_set():
                return
            more = records(events(2_000, seed=seed))
            produce(kafka_bootstrap, topic, more)
            recs.extend(more)

    feeder = threading.Thread(target=feed, daemon=True)
    out = tmp_path / "crash.jsonl"
    env = env_for(kafka_bootstrap, topic, GOVBUS_SINK__BATCH__MAX_RECORDS="200")
    # dedup_window=0: every redelivery shows up in the file, so duplicates can be counted.
    opts = (f"path={out}", "fsync=batch", "dedup_window=0")
    first = SinkProcess("file", env, *opts, log_dir=tmp_path)
    procs.append(first)
    feeder.start()
    try:
        wait_for(lambda: len(file_ids(out)) >= 4000, 60, what="first instance well into the topic")
        # Mid-batch: a batch has been handed to the sink and is not acknowledged yet.
        wait_for(lambda: first.status().get("worker") == "writing", 30, interval=0.001, what="a write in progress")
        first.kill()  # SIGKILL: no flush, no commit, maybe a torn line
    finally:
        stop.set()
        feeder.join()
    lines_at_kill = out.read_bytes().count(b"\n")
    second = SinkProcess("file", env, *opts, log_dir=tmp_path)
    procs.append(second)
    wanted = {r.event_id for r in recs}
    wait_for(lambda: wanted <= set(file_ids(out)), 120, what="every event delivered after the restart")
    ids = file_ids(out)
    dupes = len(ids) - len(set(ids))
    print(f"\nkilled after {lines_at_kill} lines; {len(ids)} lines for {len(wanted)} events: {dupes} duplicates")
    assert set(ids) == wanted
    assert second.terminate() == 0
    group = sink_lag({"bootstrap.servers": kafka_bootstrap}, groups=["govbus.sink.file"])
    assert sum(p.lag for g in group for p in g.partitions if p.topic == topic) == 0


def test_two_instances_rebalance_and_take_over_without_loss(
    kafka_bootstrap: str, new_topic: Callable[..., str], procs: list[SinkProcess], tmp_path: Path
) -> None:
    topic = new_topic(partitions=6)
    env = env_for(kafka_bootstrap, topic, GOVBUS_SINK__INSTANCE="pair")
    a_env, b_env = (
        {**env, "GOVBUS_SINK__GROUP_INSTANCE_ID": "pair-a"},
        {**env, "GOVBUS_SINK__GROUP_INSTANCE_ID": "pair-b"},
    )
    a_out, b_out = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a = SinkProcess("file", a_env, f"path={a_out}", log_dir=tmp_path)
    b = SinkProcess("file", b_env, f"path={b_out}", log_dir=tmp_path)
    procs += [a, b]

    def assigned(p: SinkProcess) -> list[str]:
        return [x for x in p.status().get("assigned", []) if x.startswith(topic + "[")]

    wait_for(lambda: len(assigned(a)) + len(assigned(b)) == 6 and assigned(a) and assigned(b), 60,
             what="both instances share the partitions")  # fmt: skip
    producer = PacedProducer(kafka_bootstrap, topic, 6000, rate=600).start()
    wait_for(lambda: len(file_ids(a_out)) + len(file_ids(b_out)) >= 1000, 60)
    assert a.terminate() == 0  # graceful: commits and leaves; b takes all six
    wait_for(lambda: len(assigned(b)) == 6, 60, what="b took over after a left")
    a2 = SinkProcess("file", a_env, f"path={a_out}", log_dir=tmp_path)
    procs.append(a2)
    wait_for(lambda: assigned(a2) and len(assigned(a2)) + len(assigned(b)) == 6, 60, what="rebalanced back")
    wait_for(lambda: len(file_ids(a_out)) + len(file_ids(b_out)) >= 3500, 60)
    b.kill()  # hard: a2 takes over after the session timeout
    wait_for(lambda: len(assigned(a2)) == 6, 60, what="a took over after b was killed")
    producer.join()
    wanted = set(producer.emitted)
    wait_for(lambda: wanted <= set(file_ids(a_out)) | set(file_ids(b_out)), 60, what="nothing lost")
    both = file_ids(a_out) + file_ids(b_out)
    dupes = sum(n - 1 for n in Counter(both).values())
    print(f"\n{len(wanted)} events, {len(both)} lines over two instances: {dupes} duplicates")
    assert set(both) == wanted
    assert a2.terminate() == 0


def test_poison_records_are_dead_lettered_and_replayed_through_the_cli(
    kafka_bootstrap: str, new_topic: Callable[..., str], procs: list[SinkProcess], tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    signer, keyring = signing_pair("cli-k1")
    keyring_path = tmp_path / "keyring.json"
    keyring.save(keyring_path)
    good = records(events(300))
    template = good[0]
    bad_sig = records(events(1))[0]
    fingerprint = Rec(template.key, b"\xc3\x01" + b"\x11" * 8 + b"body", list(template.headers), "fp")
    big = records([events(1)[0].replace(attributes={"blob": "y" * 20_000})])[0]
    signed = sign([*good, bad_sig, fingerprint, big], signer, partitions=2)
    assert bad_sig.value is not None
    bad_sig.value = bad_sig.value[:-2] + b"!!"  # tampered after signing
    garbage = Rec(b"k", b"\xde\xad\xbe\xef garbage", [], None, 0)
    produce(kafka_bootstrap, topic, [*signed[:150], garbage, bad_sig, fingerprint, big, *signed[150:300]])
    out = tmp_path / "out.jsonl"
    env = env_for(kafka_bootstrap, topic, GOVBUS_SINK__VERIFY__KEYRING=str(keyring_path),
                  GOVBUS_SINK__MAX_RECORD_BYTES="10000")  # fmt: skip
    sink = SinkProcess("file", env, f"path={out}", log_dir=tmp_path)
    procs.append(sink)
    wanted = {r.event_id for r in good}
    wait_for(lambda: wanted <= set(file_ids(out)), 60, what="good records delivered past the poison")
    wait_for(lambda: sink.metric("govbus_sink_records_dead_lettered_total") == 4, 30)
    cli_env = {**os.environ, **env}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "govbus", *args], env=cli_env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    dead = [json.loads(line) for line in cli("dlq", "inspect", "file", "--json").splitlines()]
    assert sorted(d["reason"] for d in dead) == [
        "decode:unknown-fingerprint",
        "oversize",
        "verify:bad-signature",
        "verify:malformed",
    ]
    by = {d["reason"]: d for d in dead}
    assert by["verify:bad-signature"]["verdict"] == "bad-signature"
    assert by["oversize"]["event_id"] == big.event_id
    assert by["oversize"]["sink"] == "file"
    assert by["oversize"]["origin"].startswith(f"{topic}[")
    assert sink.proc.poll() is None  # the consumer kept going
    assert sink.terminate() == 0

    # Fix the cause (raise the limit), restart, replay: the dead letter is delivered, verified.
    fixed = SinkProcess("file", {**env, "GOVBUS_SINK__MAX_RECORD_BYTES": "100000"}, f"path={out}", log_dir=tmp_path)
    procs.append(fixed)
    fixed.wait_ready()
    assert "replayed 1 dead letter(s)" in cli("dlq", "replay", "file", "--reason", "oversize")
    wait_for(lambda: big.event_id in file_ids(out), 30, what="replayed dead letter delivered")
    line = next(json.loads(x) for x in out.read_text().splitlines() if big.event_id in x)
    assert line["govbusverdict"] == "valid"
    assert "lag" in cli("lag", "--sink", "file") or "total lag" in cli("lag", "--sink", "file")
    assert fixed.terminate() == 0


# -- static group membership (group.instance.id) -------------------------------------------------
SESSION_TIMEOUT_MS = 45_000  # librdkafka's default: what a crashed dynamic member costs
RESUME_BOUND_S = 15.0  # clearly below it


def static_env(bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    consumer = {"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 500}
    return {**env_for(bootstrap, topic, **extra), "GOVBUS_SINK__CONSUMER": json.dumps(consumer)}


def test_a_sigkilled_sink_restarted_resumes_well_before_the_session_timeout(
    kafka_bootstrap: str, new_topic: Callable[..., str], procs: list[SinkProcess], tmp_path: Path
) -> None:
    assert RESUME_BOUND_S < SESSION_TIMEOUT_MS / 1000 / 2
    topic = new_topic(partitions=3)
    env = static_env(kafka_bootstrap, topic)  # group.instance.id: the default, from the host name
    out = tmp_path / "out.jsonl"
    before, after = records(events(300, seed=1)), records(events(300, seed=2))
    produce(kafka_bootstrap, topic, before)
    first = SinkProcess("file", env, f"path={out}", log_dir=tmp_path)
    procs.append(first)
    wait_for(lambda: {r.event_id for r in before} <= set(file_ids(out)), 60, what="first instance consumed")
    first.kill()  # SIGKILL: no LeaveGroup; the broker keeps its member until the session times out
    produce(kafka_bootstrap, topic, after)
    restarted_at = time.monotonic()
    second = SinkProcess("file", env, f"path={out}", log_dir=tmp_path)
    procs.append(second)
    wanted = {r.event_id for r in after}
    wait_for(lambda: wanted & set(file_ids(out)), RESUME_BOUND_S, interval=0.02,
             what=f"a record consumed after the restart, well before session.timeout.ms={SESSION_TIMEOUT_MS}")  # fmt: skip
    first_record_s = time.monotonic() - restarted_at
    wait_for(lambda: wanted <= set(file_ids(out)), 60, what="every record after the restart")
    print(f"\nSIGKILL + restart -> first record consumed in {first_record_s:.2f} s "
          f"(session.timeout.ms {SESSION_TIMEOUT_MS})")  # fmt: skip
    assert second.terminate() == 0


def test_a_stopped_static_member_leaves_at_once(
    kafka_bootstrap: str, new_topic: Callable[..., str], procs: list[SinkProcess], tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    env = static_env(kafka_bootstrap, topic, GOVBUS_SINK__INSTANCE="pair")
    a = SinkProcess("file", {**env, "GOVBUS_SINK__GROUP_INSTANCE_ID": "pair-a"}, f"path={tmp_path / 'a'}",
                    log_dir=tmp_path)  # fmt: skip
    b = SinkProcess("file", {**env, "GOVBUS_SINK__GROUP_INSTANCE_ID": "pair-b"}, f"path={tmp_path / 'b'}",
                    log_dir=tmp_path)  # fmt: skip
    procs += [a, b]

    def assigned(p: SinkProcess) -> list[str]:
        return [x for x in p.status().get("assigned", []) if x.startswith(topic + "[")]

    wait_for(lambda: assigned(a) and assigned(b) and len(assigned(a)) + len(assigned(b)) == 4, 60,
             what="both instances share the partitions")  # fmt: skip
    stopped_at = time.monotonic()
    assert a.terminate() == 0  # a static member's close() alone would not leave: b would wait 45 s
    wait_for(lambda: len(assigned(b)) == 4, RESUME_BOUND_S, what="b took over at once after a stopped")
    print(f"\nstatic member stopped -> the other took over in {time.monotonic() - stopped_at:.2f} s")
    assert b.terminate() == 0


def test_two_live_processes_with_one_instance_id_fail_with_a_clear_error(
    kafka_bootstrap: str, new_topic: Callable[..., str], procs: list[SinkProcess], tmp_path: Path
) -> None:
    topic = new_topic(partitions=2)
    env = env_for(kafka_bootstrap, topic, GOVBUS_SINK__GROUP_INSTANCE_ID="same-id")
    a = SinkProcess("file", env, f"path={tmp_path / 'a'}", log_dir=tmp_path)
    procs.append(a)
    a.wait_ready()
    b = SinkProcess("file", env, f"path={tmp_path / 'b'}", log_dir=tmp_path)
    procs.append(b)
    # The newer member takes the seat; the older one is fenced: a fatal error, exit code 2.
    assert a.proc.wait(60) == 2
    assert "GOVBUS_SINK__GROUP_INSTANCE_ID" in a.log(), a.log()[-2000:]
    assert "same-id" in a.log()
    b.wait_ready()
    assert b.terminate() == 0
