"""The Bus without a broker (its bootstrap address refuses connections): spooling, the spool-full
policies, close() keeping everything, fatal errors, the caller's API, settings and health."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _await import closed_port, until
from confluent_kafka import KafkaError

from govbus._sample import sample_events
from govbus._settings import load_settings
from govbus.errors import ConfigError
from govbus.event import GovernanceEvent, ProducerInfo
from govbus.producer import (
    Bus,
    BusClosedError,
    ProducerFatalError,
    ProducerSettings,
    SpoolFullError,
    SpoolLockedError,
)
from govbus.producer._bus import producer_config
from govbus.producer._spool import Spool

KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def make_bus(tmp_path: Path) -> Iterator[Callable[..., Bus]]:
    buses: list[Bus] = []

    def make(spool_dir: Path | None = None, **producer: Any) -> Bus:
        bus = Bus(
            topic="govbus.test",
            kafka={"bootstrap_servers": closed_port()},
            producer={"spool_dir": str(spool_dir or tmp_path / "spool"), **producer},
        )
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close(0.1)


def big_event(i: int) -> GovernanceEvent:
    return GovernanceEvent(agent_id=f"agent-{i % 4}", reason="x" * 2000)


def emit_until_refused(
    bus: Bus, start: int = 0, pace: Callable[[int], None] | None = None
) -> tuple[int, SpoolFullError]:
    """Emit ~2 KB events until the bus refuses one: (how many were accepted, the refusal)."""
    for i in range(start, start + 100_000):
        try:
            bus.emit(big_event(i))
        except SpoolFullError as refusal:
            return i - start, refusal
        if pace is not None:
            pace(i)
    raise AssertionError("the bus never refused an event")


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_unreachable_broker_means_everything_is_spooled(make_bus: Callable[..., Bus], durability: str) -> None:
    bus = make_bus(durability=durability)
    for event in sample_events(200):
        bus.emit(event)
    until(lambda: bus.counters().spooled == 200 and bus.health().state == "spooling")
    health = bus.health()
    assert health.ok, health.reason
    assert health.broker_reachable is False
    assert "spooling" in health.reason
    assert health.spool_bytes > 0
    assert bus.counters().submitted == 200
    assert bus.counters().delivered == 0
    assert not bus.flush(0.05)


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_close_keeps_every_undelivered_event_for_the_next_bus(
    make_bus: Callable[..., Bus], tmp_path: Path, durability: str
) -> None:
    bus = make_bus(durability=durability)
    for event in sample_events(300):
        bus.emit(event)
    bus.close(0.2)
    assert bus.health().state == "closed"
    again = make_bus(durability=durability)  # same spool directory, the first one is closed
    assert again.counters().recovered == 300


def test_memory_mode_close_rescues_what_only_existed_in_memory(make_bus: Callable[..., Bus]) -> None:
    # A queue the sender cannot drain (tiny spool, broker away) so events are still in memory at close.
    bus = make_bus(spool_max_bytes=1 * MIB, segment_bytes=256 * KIB, queue_max_events=100_000)
    events = [big_event(i) for i in range(1500)]  # ~3.3 MB: far more than the spool holds
    for event in events:
        bus.emit(event)
    bus.close(0.1)
    again = make_bus()
    assert again.counters().recovered == 1500  # written anyway: accepted events are never dropped


def test_reject_policy_refuses_with_a_typed_error(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(durability="disk", spool_max_bytes=1 * MIB, segment_bytes=256 * KIB, on_spool_full="reject")
    accepted, refusal = emit_until_refused(bus)
    assert refusal.policy == "reject"
    assert refusal.limit == 1 * MIB
    assert 300 < accepted < 520
    counters = bus.counters()
    assert (counters.submitted, counters.rejected) == (accepted, 1)
    health = bus.health()
    assert not health.ok
    assert "spool full" in health.reason
    assert health.admission_blocked is False  # only deny-admission blocks admission


def test_block_policy_waits_then_refuses(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(
        durability="disk", spool_max_bytes=1 * MIB, segment_bytes=256 * KIB, on_spool_full="block", block_timeout_ms=300
    )
    while not bus._spool.refusing:
        try:
            bus.emit(big_event(0))
        except SpoolFullError:
            break
    started = time.monotonic()
    with pytest.raises(SpoolFullError):
        bus.emit(big_event(1))
    waited = time.monotonic() - started
    assert 0.29 <= waited < 2.0
    assert bus.counters().rejected >= 1


def test_block_policy_resumes_when_space_is_freed(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(
        durability="disk",
        spool_max_bytes=1 * MIB,
        segment_bytes=256 * KIB,
        on_spool_full="block",
        block_timeout_ms=5000,
    )
    i = 0
    spool = bus._spool
    while spool.used + 2200 < spool.max_bytes:
        bus.emit(big_event(i))
        i += 1
    # As if the broker acknowledged everything so far: the sealed segments become deletable.
    releaser = threading.Timer(0.2, lambda: spool.release(spool.next_seq))
    releaser.start()
    started = time.monotonic()
    for j in range(10):
        bus.emit(big_event(i + j))  # blocks until the release, then goes through
    releaser.join()
    assert 0.15 < time.monotonic() - started < 4.0
    assert bus.counters().rejected == 0


def test_deny_admission_blocks_the_gate_before_refusing(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(durability="disk", spool_max_bytes=1 * MIB, segment_bytes=256 * KIB, on_spool_full="deny-admission")
    i = 0
    while bus._spool.used < 0.85 * MIB:
        bus.emit(big_event(i))
        i += 1
    assert bus.health().admission_blocked is False
    while bus._spool.used < 0.92 * MIB:
        bus.emit(big_event(i))
        i += 1
    health = bus.health()
    assert health.admission_blocked is True  # the gate denies new work from here on
    assert not health.ok
    _, refusal = emit_until_refused(bus, i)
    assert refusal.policy == "deny-admission"
    # Space comes back (as after deliveries): admission reopens once 10 % below the high-water mark.
    bus._spool.release(bus._spool.next_seq)
    assert bus.health().admission_blocked is False


def test_memory_mode_full_queue_applies_the_policy(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(spool_max_bytes=1 * MIB, segment_bytes=256 * KIB, queue_max_events=64, on_spool_full="reject")
    until(lambda: bus.health().state == "spooling")

    def pace(i: int) -> None:  # below the queue's size: only a full spool can stop the sender
        if i % 32 == 31:
            until(lambda: not bus._queue or bus._spool.refusing)

    _, refusal = emit_until_refused(bus, pace=pace)
    assert refusal.what == "hand-off queue"
    counters = bus.counters()
    assert counters.rejected == 1
    assert counters.spooled > 300  # the spool filled first, then the queue


def test_fatal_error_surfaces_as_typed_exception_and_in_health(make_bus: Callable[..., Bus], tmp_path: Path) -> None:
    bus = make_bus(durability="disk")
    for event in sample_events(10):
        bus.emit(event)
    # librdkafka reports fatal errors through the error callback (e.g. a fenced idempotent producer).
    bus._delivery.on_error(KafkaError(KafkaError._FENCED, "producer fenced by a newer instance", fatal=True))
    with pytest.raises(ProducerFatalError, match="_FENCED"):
        bus.emit(next(iter(sample_events(1))))
    with pytest.raises(ProducerFatalError):
        bus.flush(1)
    health = bus.health()
    assert health.state == "failed"
    assert not health.ok
    assert health.fatal_error is not None
    assert "fenced" in health.fatal_error
    bus.close(0.1)
    assert make_bus(durability="disk").counters().recovered == 10  # kept for the next Bus


def test_emit_rejects_non_events_and_closed_buses(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    with pytest.raises(TypeError, match="GovernanceEvent"):
        bus.emit({"agent_id": "a"})  # type: ignore[arg-type]
    bus.close(0.1)
    with pytest.raises(BusClosedError):
        bus.emit(GovernanceEvent(agent_id="a"))
    with pytest.raises(BusClosedError):
        bus.flush(0.1)
    bus.close()  # idempotent


def test_two_buses_cannot_share_a_spool(make_bus: Callable[..., Bus]) -> None:
    make_bus()
    with pytest.raises(SpoolLockedError):
        make_bus()


def test_context_manager_closes(tmp_path: Path) -> None:
    settings = load_settings(
        topic="t",
        kafka={"bootstrap_servers": closed_port()},
        producer={"spool_dir": str(tmp_path), "close_timeout_ms": 100},
    )
    with Bus(settings) as bus:
        bus.emit(GovernanceEvent(agent_id="a"))
    assert bus.health().state == "closed"
    Spool(tmp_path, max_bytes=MIB, segment_bytes=64 * KIB, producer=bus.producer_info).close()  # lock released


def test_emit_is_thread_safe(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    events = list(sample_events(4000))

    def emit_part(part: list[GovernanceEvent]) -> None:
        for event in part:
            bus.emit(event)

    threads = [threading.Thread(target=emit_part, args=(events[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bus.counters().submitted == 4000
    until(lambda: bus.counters().spooled == 4000)


def test_health_file_for_out_of_process_probes(make_bus: Callable[..., Bus], tmp_path: Path) -> None:
    import json

    bus = make_bus()
    path = tmp_path / "spool" / "health.json"
    until(lambda: path.exists())
    data = json.loads(path.read_text())
    assert {"ok", "reason", "written_at", "state", "spool_bytes", "admission_blocked"} <= set(data)
    assert data["ok"] is True
    bus.close(0.1)
    assert json.loads(path.read_text())["state"] == "closed"


# -- settings ----------------------------------------------------------------------------------


def test_producer_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_PRODUCER__DURABILITY", "disk")
    monkeypatch.setenv("GOVBUS_PRODUCER__KEY_BY", "session_id")
    monkeypatch.setenv("GOVBUS_PRODUCER__SPOOL_MAX_BYTES", str(8 * MIB))
    monkeypatch.setenv("GOVBUS_PRODUCER__SEGMENT_BYTES", str(1 * MIB))
    monkeypatch.setenv("GOVBUS_PRODUCER__ON_SPOOL_FULL", "deny-admission")
    monkeypatch.setenv("GOVBUS_PRODUCER__SPOOL_DIR", "~/spool-here")
    settings = load_settings()
    p = settings.producer
    assert (p.durability, p.key_by, p.spool_max_bytes, p.on_spool_full) == (
        "disk",
        "session_id",
        8 * MIB,
        "deny-admission",
    )
    assert p.spool_dir == Path("~/spool-here").expanduser()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GOVBUS_PRODUCER__DURABILITY", "sometimes"),
        ("GOVBUS_PRODUCER__ON_SPOOL_FULL", "drop"),
        ("GOVBUS_PRODUCER__SEGMENT_BYTES", str(600 * MIB)),  # more than a quarter of the spool
        ("GOVBUS_PRODUCER__FSYNC_INTERVAL_MS", "-1"),
        ("GOVBUS_PRODUCER__COMPRESSION", "brotli"),
        ("GOVBUS_PRODUCER__LIBRDKAFKA", '{"acks": "1"}'),  # the guarantees are not negotiable
    ],
)
def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert error.value.setting == variable


def test_librdkafka_configuration_keeps_the_guarantees_and_passes_security_through() -> None:
    settings = load_settings(
        kafka={
            "bootstrap_servers": "b1:9093,b2:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "kernel",
            "sasl_password": "s3cret",
            "ssl_ca_location": "/etc/ca.pem",
        },
        producer={"compression": "zstd", "linger_ms": 20, "librdkafka": {"socket.nagle.disable": True}},
    )
    conf = producer_config(settings)
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["message.timeout.ms"] == 0
    assert (conf["compression.type"], conf["linger.ms"], conf["socket.nagle.disable"]) == ("zstd", 20, True)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("kernel", "s3cret")
    assert conf["ssl.ca.location"] == "/etc/ca.pem"


def test_defaults() -> None:
    p = ProducerSettings()
    assert (p.durability, p.on_spool_full, p.key_by, p.compression) == ("memory", "block", "agent_id", "lz4")
    assert p.spool_dir.parts[-2:] == ("govbus", "spool")


def test_interpreter_exit_without_close_keeps_the_events(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        from govbus.event import GovernanceEvent
        from govbus.producer import Bus
        bus = Bus(topic="t", kafka={{"bootstrap_servers": "{closed_port()}"}},
                  producer={{"spool_dir": "{tmp_path}", "close_timeout_ms": 100}})
        for i in range(50):
            bus.emit(GovernanceEvent(agent_id="a"))
        # no close(): the kernel just exits
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, capture_output=True)
    spool = Spool(tmp_path, max_bytes=MIB, segment_bytes=64 * KIB, producer=ProducerInfo("t", "t", "t", "t"))
    assert spool.recovered == 50
    spool.close()


def test_a_writer_pinned_to_an_older_contract_refuses_what_it_cannot_carry(make_bus: Callable[..., Bus]) -> None:
    from govbus._contract import schema_versions
    from govbus.errors import InvalidEventError
    from govbus.event import EventKind

    if len(schema_versions()) < 2 or "tenant_id" not in GovernanceEvent.__dataclass_fields__:
        pytest.skip("only one contract version is shipped")
    newer_kinds = [k for k in EventKind if k.name not in schema_versions()[0].schema["fields"][2]["type"]["symbols"]]
    bus = make_bus(schema_version=1)
    with pytest.raises(InvalidEventError, match="kind"):
        bus.emit(GovernanceEvent(agent_id="a", kind=newer_kinds[0]))
    with pytest.raises(InvalidEventError, match="tenant_id"):
        bus.emit(GovernanceEvent(agent_id="a", tenant_id="t-1"))
    bus.emit(GovernanceEvent(agent_id="a"))
    assert bus.counters().submitted == 1


def test_an_unknown_schema_version_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOVBUS_PRODUCER__SCHEMA_VERSION", "99")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert error.value.setting == "GOVBUS_PRODUCER__SCHEMA_VERSION"


def test_an_event_the_encoder_refuses_is_counted_and_kept_not_fatal(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    from govbus.errors import InvalidEventError

    bus = make_bus()
    real = bus._encoder.encode

    def encode(event: GovernanceEvent, producer: ProducerInfo) -> bytes:
        if event.agent_id == "poison":
            raise InvalidEventError("attributes", "cannot be encoded (test)")
        return real(event, producer)

    bus._encoder.encode = encode  # type: ignore[method-assign]
    # Traced: the compiled batch encoder (docs/native.md) hands it to the Encoder refusing it.
    poison = GovernanceEvent(agent_id="poison", trace_id="0af7651916cd43dd8448eb211c80319c")
    for i in range(20):
        bus.emit(poison if i == 7 else GovernanceEvent(agent_id="ok"))
    until(lambda: bus.counters().spooled == 19 and bus.counters().failed == 1)
    health = bus.health()
    assert health.state == "spooling"  # the sender thread goes on
    assert health.last_error is not None
    assert "cannot be encoded" in health.last_error
    assert list((tmp_path / "spool" / "dead").glob("*.seg"))


def test_lowered_message_max_bytes_is_checked_in_emit(make_bus: Callable[..., Bus]) -> None:
    from govbus.errors import InvalidEventError

    bus = make_bus(librdkafka={"message.max.bytes": 300_000})
    bus.emit(GovernanceEvent(agent_id="a", attributes={"s": "x" * 60_000}))
    with pytest.raises(InvalidEventError) as info:
        bus.emit(GovernanceEvent(agent_id="a", attributes={f"s{i}": "x" * 60_000 for i in range(4)}))
    assert info.value.field == "<event>"
    assert "message.max.bytes=300000" in str(info.value)
    assert "200000" in str(info.value)
    assert bus.counters().submitted == 1
    with pytest.raises(ConfigError, match=r"message\.max\.bytes"):
        make_bus(librdkafka={"message.max.bytes": 50_000})


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_attributes_cannot_be_changed_after_construction(make_bus: Callable[..., Bus], durability: str) -> None:
    # Was: the mutation succeeded; memory mode then lost the event (not even in dead/), disk mode
    # raised a bare ValueError ("unmarshallable object") from emit().
    bus = make_bus(durability=durability)
    event = GovernanceEvent(agent_id="a", attributes={"x": 1, "nested": {"l": [1]}})
    with pytest.raises(TypeError, match="read-only"):
        event.attributes["x"] = object()  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        event.attributes["nested"]["l"].append(object())
    bus.emit(event)
    until(lambda: bus.counters().spooled == 1)
    assert bus.counters().failed == 0


@pytest.mark.parametrize("durability", ["memory", "disk"])
def test_an_event_read_from_the_bus_and_changed_is_validated_again(
    make_bus: Callable[..., Bus], durability: str
) -> None:
    from govbus._contract import Decoder, Encoder
    from govbus.errors import InvalidEventError

    bus = make_bus(durability=durability)
    original = GovernanceEvent(agent_id="a", attributes={"x": 1})
    decoded = Decoder().decode(Encoder().encode(original, bus.producer_info))
    decoded.attributes["x"] = object()  # type: ignore[index]  # decoded: a plain dict, not re-validated
    with pytest.raises(InvalidEventError) as info:
        bus.emit(decoded)  # was: accepted, then lost (memory) or a bare ValueError (disk)
    assert info.value.field == "attributes.x"
    fine = Decoder().decode(Encoder().encode(original, bus.producer_info))
    bus.emit(fine)
    until(lambda: bus.counters().spooled == 1)
    assert bus.counters().failed == 0


def test_a_librdkafka_refusal_names_the_variable_and_releases_the_spool(
    monkeypatch: pytest.MonkeyPatch, make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    # The Bus builds its producer with govbus._librdkafka.new_producer, like every other client.
    monkeypatch.setenv("GOVBUS_PRODUCER__LIBRDKAFKA", '{"no.such.prop": 1}')
    with pytest.raises(ConfigError) as error:
        Bus(
            topic="govbus.test", kafka={"bootstrap_servers": closed_port()}, producer={"spool_dir": str(tmp_path / "s")}
        )
    assert error.value.setting == "GOVBUS_PRODUCER__LIBRDKAFKA"
    assert "no.such.prop" in error.value.message
    monkeypatch.delenv("GOVBUS_PRODUCER__LIBRDKAFKA")
    make_bus(tmp_path / "s")  # the spool's lock was released: a corrected Bus opens it


@pytest.fixture
def restored_gc() -> Iterator[None]:
    import gc

    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_the_gc_threshold_is_raised_only_when_asked_and_never_lowered(
    make_bus: Callable[..., Bus], tmp_path: Path
) -> None:
    import gc

    gc.set_threshold(700, 10, 10)
    make_bus(tmp_path / "a")
    assert gc.get_threshold() == (700, 10, 10)  # default: the kernel's collector is left alone
    make_bus(tmp_path / "b", gc_gen0_threshold=50_000)
    assert gc.get_threshold() == (50_000, 10, 10)
    make_bus(tmp_path / "c", gc_gen0_threshold=20_000)
    assert gc.get_threshold() == (50_000, 10, 10)
