"""Through the sink runtime on the real broker: a sink that reads events (syslog, to Debian's
rsyslogd) gets them built by the compiled core in the decoding pass, equal to the Python decode;
a text sink (file) gets none built."""

from __future__ import annotations

import dataclasses
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _sink_receivers import rsyslog
from _sinks import events, produce, records, sign, signing_pair, wait_for

from govbus import _accel as native
from govbus._contract import Decoder
from govbus._record import from_record
from govbus._settings import load_settings
from govbus.consumers import Batch, SinkRuntime, WriteResult
from govbus.consumers._native_record import NativeRecord
from govbus.consumers.sinks._file import FileSink
from govbus.consumers.sinks._syslog import SyslogSink

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not native.active(), reason="the compiled core is not installed"),
    pytest.mark.skipif(
        not (shutil.which("rsyslogd") or Path("/usr/sbin/rsyslogd").exists()), reason="needs rsyslogd (rsyslog)"
    ),
]


class Keeping:
    """Keeps each delivered record (and whether its event was built before the sink read it)."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.built_before_write: list[bool] = []
        self.lock = threading.Lock()

    def keep(self, batch: Batch) -> None:
        with self.lock:
            for r in batch:
                self.built_before_write.append(isinstance(r, NativeRecord) and r._event is not None)
                self.records.append(r)


class KeepingSyslog(SyslogSink):
    def __init__(self, keeping: Keeping, **raw: Any) -> None:
        super().__init__(**raw)
        self.keeping = keeping

    def write(self, batch: Batch) -> WriteResult | None:
        self.keeping.keep(batch)
        return super().write(batch)


class KeepingFile(FileSink):
    def __init__(self, keeping: Keeping, path: str) -> None:
        super().__init__(path)
        self.keeping = keeping

    def write(self, batch: Batch) -> WriteResult | None:
        self.keeping.keep(batch)
        return super().write(batch)


def _run(sink: Any, bootstrap: str, topic: str, name: str, keyring: Path, until: Callable[[], bool]) -> SinkRuntime:
    settings = load_settings(
        kafka={"bootstrap_servers": bootstrap},
        topic=topic,
        sink={"health": {"enabled": False}, "batch": {"max_wait_ms": 5}, "verify": {"keyring": str(keyring)}},
    )
    runtime = SinkRuntime(sink, settings, name=name)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        wait_for(until, 60, what=f"{name}: every record delivered")
    finally:
        runtime.stop()
        thread.join(30)
    assert not thread.is_alive()
    return runtime


def _same(a: Any, b: Any) -> None:
    # Equal, and every field of the same type (repr tells the types of nested values apart).
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x == y, f.name
        assert type(x) is type(y), f.name
        assert repr(x) == repr(y), f.name


def test_a_syslog_sink_gets_native_built_events_and_a_file_sink_none(
    new_topic: Callable[..., str], kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    signer, keyring = signing_pair("native-events")
    keyring_path = tmp_path / "keyring.json"
    keyring.save(keyring_path)
    recs = sign(records(events(300)), signer, partitions=3)
    produce(kafka_bootstrap, topic, recs)

    keeping = Keeping()
    with rsyslog(tmp_path / "rsyslog") as server:
        sink = KeepingSyslog(keeping, host="127.0.0.1", port=str(server.port))
        runtime = _run(sink, kafka_bootstrap, topic, "it-native-syslog", keyring_path,
                       lambda: len(keeping.records) >= 300)  # fmt: skip
        assert len(server.wait_lines(300)) == 300
    assert runtime._intake.native_events
    assert sorted(r.event_id for r in keeping.records) == sorted(r.event_id for r in recs)
    assert all(keeping.built_before_write)  # built in the native pass, not decoded lazily
    assert {r.verdict for r in keeping.records} == {"valid"}
    decoder = Decoder()
    for r in keeping.records:
        ref = from_record(r.value, r.headers, decoder)
        _same(r.event, ref.event)
        _same(r.attributes, ref.attributes)
    assert runtime._intake.native_event_failures == 0

    text = Keeping()
    file_sink = KeepingFile(text, str(tmp_path / "out.jsonl"))
    runtime = _run(file_sink, kafka_bootstrap, topic, "it-native-file", keyring_path, lambda: len(text.records) >= 300)
    assert not runtime._intake.native_events
    assert not any(text.built_before_write)  # a text sink never pays for the event
