"""The file sink: CloudEvents JSON Lines, de-duplication across restarts, torn-line repair."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest
from _sinks import FakeMessage, events, records

from govbus._contract import Decoder
from govbus.consumers import Batch, DeliveredRecord, SinkContext
from govbus.consumers._intake import Intake
from govbus.consumers._metrics import SinkMetrics
from govbus.consumers.sinks import _file as file_module
from govbus.consumers.sinks._file import FileSink, FileSinkOptions
from govbus.consumers.sinks._jsonl import encode_line, line_id
from govbus.consumers.sinks._stdout import StdoutSink
from govbus.errors import ConfigError


def delivered(n: int, **event_changes: object) -> list[DeliveredRecord]:
    evs = [e.replace(**event_changes) for e in events(n)] if event_changes else events(n)
    stage = Intake(Decoder())
    out = []
    for i, r in enumerate(records(evs)):
        w = stage(FakeMessage(r.value, r.headers, key=r.key, offset=i), 1)
        assert w.record is not None, w.failure
        out.append(w.record)
    return out


def context() -> SinkContext:
    return SinkContext("file", "govbus.sink.file", "t", SinkMetrics("file", readers=[]).meter, logging.getLogger("t"))


def opened(path: Path, **options: str) -> FileSink:
    sink = FileSink(str(path), **options)  # type: ignore[arg-type]
    sink.open(context())
    return sink


def test_lines_are_structured_cloudevents(tmp_path: Path) -> None:
    recs = delivered(3)
    sink = opened(tmp_path / "out.jsonl")
    sink.write(Batch(recs))
    sink.close()
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert lines[0].startswith('{"id":"')
    assert first["specversion"] == "1.0"
    assert first["id"] == recs[0].event.event_id
    assert first["type"] == recs[0].event.ce_type
    assert first["source"] == recs[0].attributes.source
    assert first["datacontenttype"] == "application/json"
    assert first["traceparent"].startswith("00-abab")
    assert first["data"]["agent_id"] == recs[0].event.agent_id
    assert first["data"]["kind"] == recs[0].event.kind.value
    assert first["data"]["occurred_at"].endswith("Z")
    assert first["data"]["producer"]["name"] == "sink-tests"
    assert "govbusverdict" not in first


def test_odd_attribute_values_still_make_valid_json(tmp_path: Path) -> None:
    recs = delivered(1, attributes={"blob": b"\x00\xff", "nan": math.nan, "inf": -math.inf, "nested": {"a": [1]}})
    line = encode_line(recs[0])
    data = json.loads(line)["data"]["attributes"]
    assert data == {"blob": "AP8=", "nan": "nan", "inf": "-inf", "nested": {"a": [1]}}


def test_line_id_fast_path_and_escaped_ids() -> None:
    assert line_id(b'{"id":"abc","x":1}') == "abc"
    assert line_id(json.dumps({"id": 'a"b\\c'}).encode()) == 'a"b\\c'
    assert line_id(b"not json") is None
    recs = delivered(1, event_id='we"ird\\id')
    assert line_id(encode_line(recs[0]).rstrip(b"\n")) == 'we"ird\\id'


def test_dedup_within_a_batch_and_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    recs = delivered(10)
    sink = opened(path, dedup_window="100")
    sink.write(Batch(recs[:6] + recs[:2]))
    sink.close()
    assert sink.duplicates == 2
    again = opened(path, dedup_window="100")  # a restart: redelivery of 4..9
    again.write(Batch(recs[4:]))
    again.close()
    ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
    assert ids == [r.event.event_id for r in recs]
    assert again.duplicates == 2


def test_dedup_window_is_bounded(tmp_path: Path) -> None:
    recs = delivered(6)
    sink = opened(tmp_path / "o.jsonl", dedup_window="3")
    sink.write(Batch(recs))
    assert sink._seen == {r.event_id for r in recs[3:]}  # the newest ones, remembered per batch
    assert list(sink._order) == [r.event_id for r in recs[3:]]
    sink.write(Batch(recs[:1]))  # forgotten: written again (a miss, never a false drop)
    assert sink.duplicates == 0
    sink.close()


def test_torn_last_line_is_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    recs = delivered(3)
    good = encode_line(recs[0]) + encode_line(recs[1])
    path.write_bytes(good + encode_line(recs[2])[:40])
    sink = opened(path)
    assert path.read_bytes() == good
    sink.write(Batch(recs[2:]))
    sink.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == [r.event.event_id for r in recs]


def test_a_failed_write_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "o.jsonl"
    recs = delivered(4)
    sink = opened(path)
    sink.write(Batch(recs[:1]))
    real_write = os.write
    calls = {"n": 0}

    def flaky(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:17])  # a short write...
        raise OSError(28, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(file_module.os, "write", flaky)
    with pytest.raises(OSError, match="No space"):
        sink.write(Batch(recs[1:]))
    monkeypatch.setattr(file_module.os, "write", real_write)
    sink.write(Batch(recs[1:]))  # the runtime's retry
    sink.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == [r.event.event_id for r in recs]


@pytest.mark.parametrize("policy", ["batch", "commit", "never"])
def test_fsync_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    synced: list[int] = []
    monkeypatch.setattr(file_module.os, "fsync", lambda fd: synced.append(fd))
    sink = opened(tmp_path / "o.jsonl", fsync=policy)
    sink.write(Batch(delivered(2)))
    after_write = len(synced)
    sink.flush(1.0)
    sink.flush(1.0)  # nothing new: no second fsync
    expected = {"batch": (1, 2), "commit": (0, 1), "never": (0, 0)}[policy]
    assert (after_write, len(synced)) == expected
    sink.close()


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({}, "GOVBUS_SINK__OPTIONS__PATH"),
        ({"path": ""}, "GOVBUS_SINK__OPTIONS__PATH"),
        ({"path": "/x/{sink}-{pdi}.jsonl"}, "GOVBUS_SINK__OPTIONS__PATH"),
        ({"path": "/x", "fsync": "sometimes"}, "GOVBUS_SINK__OPTIONS__FSYNC"),
        ({"path": "/x", "dedup_window": "lots"}, "GOVBUS_SINK__OPTIONS__DEDUP_WINDOW"),
        ({"path": "/x", "dedup_window": "-1"}, "GOVBUS_SINK__OPTIONS__DEDUP_WINDOW"),
        ({"path": "/x", "fsnyc": "batch"}, "GOVBUS_SINK__OPTIONS__FSNYC"),
    ],
)
def test_a_bad_option_names_its_setting(options: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as err:
        FileSink(**options)
    assert err.value.setting == setting


def test_options_parse_from_strings_and_keep_the_positional_path(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "x", fsync="batch", dedup_window="7")
    assert (sink.options.path, sink.fsync, sink.dedup_window) == (str(tmp_path / "x"), "batch", 7)
    assert FileSink(FileSinkOptions(path="y")).options.path == "y"
    with pytest.raises(TypeError):
        FileSink(tmp_path / "x", path="y")
    with pytest.raises(TypeError):
        FileSink(FileSinkOptions(path="y"), fsync="never")


def test_path_placeholders(tmp_path: Path) -> None:
    sink = opened(tmp_path / "{sink}-{pid}.jsonl")
    assert sink.path == tmp_path / f"file-{os.getpid()}.jsonl"
    sink.close()


def test_stdout_sink_writes_the_same_lines(tmp_path: Path) -> None:
    out = (tmp_path / "stdout").open("wb")
    sink = StdoutSink(out)
    recs = delivered(2)
    sink.write(Batch(recs))
    out.close()
    assert (tmp_path / "stdout").read_bytes() == b"".join(encode_line(r) for r in recs)


def test_v2_fields_are_written() -> None:
    from govbus.consumers.sinks._jsonl import event_data
    from govbus.event import GovernanceEvent

    data = event_data(GovernanceEvent(agent_id="a", tenant_id="acme", policy_version="7", risk_score=0.25))
    assert (data["tenant_id"], data["policy_version"], data["risk_score"]) == ("acme", "7", 0.25)
