"""The audit ledger sink and ``govbus audit verify``: chain, de-duplication, checkpoints, tampering."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _sink_receivers import delivered, signed_batch
from _sinks import signing_pair
from opentelemetry.metrics import get_meter

from govbus._cli import main
from govbus._sample import sample_events
from govbus.consumers._spi import OK, Batch, DeliveredRecord, Rejected, SinkContext
from govbus.consumers.sinks import _ledger
from govbus.consumers.sinks._audit import AuditSink
from govbus.consumers.sinks._ledger import LedgerError, seal, unseal, verify_ledger
from govbus.errors import ConfigError
from govbus.signing import SIGNATURE_HEADERS, KeyEntry, Keyring, SigningKey, write_private_key

CTX = SinkContext("audit", "govbus.sink.audit", "govbus.events", get_meter("test"), logging.getLogger("test"))


@pytest.fixture
def checkpoint_key(tmp_path: Path) -> tuple[Path, SigningKey]:
    key = SigningKey.generate("audit-sink-1")
    path = write_private_key(key, tmp_path / "audit-sink-1.pem")
    return path, key


@pytest.fixture
def open_sink(tmp_path: Path, checkpoint_key: tuple[Path, SigningKey]) -> Iterator[Callable[..., AuditSink]]:
    opened: list[AuditSink] = []

    def make(**options: Any) -> AuditSink:
        options.setdefault("path", str(tmp_path / "ledger.jsonl"))
        options.setdefault("checkpoint_key", str(checkpoint_key[0]))
        sink = AuditSink(**options)
        sink.open(CTX)
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


@pytest.fixture
def ledger(tmp_path: Path, open_sink: Callable[..., AuditSink], checkpoint_key: tuple[Path, SigningKey]) -> Any:
    """A closed ledger of 12 signed events with checkpoints, and the keyring that verifies it all."""
    records, keyring = signed_batch(12)
    keyring.add(KeyEntry(checkpoint_key[1].kid, checkpoint_key[1].public_bytes))
    sink = open_sink(checkpoint_every="5")
    assert sink.write(Batch(records[:7])) is OK
    assert sink.write(Batch(records[7:])) is OK
    sink.close()
    path = tmp_path / "ledger.jsonl"
    return path, keyring, records


def _events(path: Path) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, path.read_bytes().splitlines()) if e["type"] == "event"]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _crash(sink: AuditSink) -> None:
    """What SIGKILL leaves behind: the file as written, no final checkpoint, the lock released."""
    ledger = sink._ledger
    assert ledger is not None
    assert ledger._fd is not None
    os.close(ledger._fd)
    ledger._fd = None
    sink._ledger = None


# -- the sink ---------------------------------------------------------------------------------


def test_entries_chain_and_checkpoints_sign_the_head(ledger: Any) -> None:
    path, keyring, records = ledger
    entries = [json.loads(line) for line in _lines(path)]
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    assert [e["type"] for e in entries].count("checkpoint") == 3  # after 5, after 10, at close
    prev = "0" * 64
    for line in _lines(path):
        fields, digest = unseal(line)
        assert fields["prev"] == prev
        prev = digest
    assert [e["event"]["id"] for e in _events(path)] == [r.event.event_id for r in records]
    report = verify_ledger(path, keyring=keyring)
    assert report.ok, report.problem
    assert (report.events, report.checkpoints) == (12, 3)
    assert report.signatures_verified == 12
    assert report.checkpoints_verified == 3
    assert report.unsealed == 0


def test_entry_holds_event_record_and_signature_material(ledger: Any) -> None:
    path, _, records = ledger
    first = _events(path)[0]
    r: DeliveredRecord = records[0]
    assert first["event"]["specversion"] == "1.0"
    assert first["event"]["data"]["decision"] == r.event.decision
    assert first["record"]["partition"] == r.partition
    assert first["record"]["offset"] == r.offset
    assert set(first["sig"]) == {
        "govbus_sig_kid", "govbus_sig_alg", "govbus_sig_stream", "govbus_sig_seq", "govbus_sig_proof", "govbus_sig",
    }  # fmt: skip
    assert first["verdict"] == "valid"


def test_a_ledger_of_legacy_fingerprint_values_still_verifies(
    tmp_path: Path, open_sink: Callable[..., AuditSink], checkpoint_key: tuple[Path, SigningKey]
) -> None:
    # Ledgers keep record values forever: those govbus 0.1.0 wrote (byte-reversed fingerprint) must
    # still decode, or verify would call every such entry edited.
    signer, keyring = signing_pair("k1")
    keyring.add(KeyEntry(checkpoint_key[1].kid, checkpoint_key[1].public_bytes))
    records = delivered(6, signer=signer, legacy_fingerprint=True)
    sink = open_sink(checkpoint_every="5")
    assert sink.write(Batch(records)) is OK
    sink.close()
    report = verify_ledger(tmp_path / "ledger.jsonl", keyring=keyring)
    assert report.ok, report.problem
    assert (report.events, report.signatures_verified, report.events_undecodable) == (6, 6, 0)


def test_restart_in_the_middle_writes_no_duplicates(
    tmp_path: Path, open_sink: Callable[..., AuditSink], checkpoint_key: tuple[Path, SigningKey]
) -> None:
    records, keyring = signed_batch(20)
    keyring.add(KeyEntry(checkpoint_key[1].kid, checkpoint_key[1].public_bytes))
    sink = open_sink()
    assert sink.write(Batch(records[:8])) is OK
    _crash(sink)  # offsets of those 8 were never committed: the runtime redelivers them
    sink = open_sink()
    assert sink.write(Batch(records[:12])) is OK  # 8 redelivered + 4 new
    assert sink.write(Batch(records[4:20])) is OK  # overlapping again
    sink.close()
    ids = [e["event"]["id"] for e in _events(tmp_path / "ledger.jsonl")]
    assert ids == [r.event.event_id for r in records]
    assert verify_ledger(tmp_path / "ledger.jsonl", keyring=keyring).ok


def test_same_id_with_other_content_is_rejected_not_ledgered(
    tmp_path: Path, open_sink: Callable[..., AuditSink]
) -> None:
    records = delivered(3)
    sink = open_sink()
    assert sink.write(Batch(records)) is OK
    forged = delivered(evs=[records[1].event.replace(decision="allow-everything")])[0]
    result = sink.write(Batch([delivered(1)[0], forged]))
    assert isinstance(result, Rejected)
    assert set(result.failures) == {1}
    assert "already in the ledger with different content" in result.failures[1]
    sink.close()
    assert len(_events(tmp_path / "ledger.jsonl")) == 4


def test_torn_last_line_from_a_crash_is_dropped_at_open(tmp_path: Path, open_sink: Callable[..., AuditSink]) -> None:
    records = delivered(6)
    sink = open_sink()
    assert sink.write(Batch(records[:3])) is OK
    _crash(sink)
    path = tmp_path / "ledger.jsonl"
    with path.open("ab") as f:
        f.write(_lines(path)[0][:50])  # half an entry, no newline: an interrupted append
    sink = open_sink()
    assert sink.write(Batch(records)) is OK
    sink.close()
    assert [e["event"]["id"] for e in _events(path)] == [r.event.event_id for r in records]
    assert verify_ledger(path).ok


def test_damaged_last_entry_refuses_to_open(tmp_path: Path, open_sink: Callable[..., AuditSink]) -> None:
    sink = open_sink()
    assert sink.write(Batch(delivered(2))) is OK
    sink.close()
    path = tmp_path / "ledger.jsonl"
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(LedgerError, match="last entry is damaged"):
        open_sink()


def test_one_writer_per_ledger(open_sink: Callable[..., AuditSink]) -> None:
    open_sink()
    with pytest.raises(LedgerError, match="in use by another process"):
        open_sink()


def test_time_based_checkpoint_on_flush(tmp_path: Path, open_sink: Callable[..., AuditSink]) -> None:
    sink = open_sink(checkpoint_interval_s="0.001", checkpoint_every="1000")
    assert sink.write(Batch(delivered(2))) is OK
    assert sink._ledger is not None
    sink._ledger._checkpoint_at -= 1  # as if the interval had passed, without sleeping
    sink.flush(1.0)
    types = [json.loads(line)["type"] for line in _lines(tmp_path / "ledger.jsonl")]
    assert types[-1] == "checkpoint"
    sink.flush(1.0)  # nothing new since: no empty checkpoint
    assert [json.loads(line)["type"] for line in _lines(tmp_path / "ledger.jsonl")] == types


def test_checkpoint_key_file_must_be_private(tmp_path: Path, checkpoint_key: tuple[Path, SigningKey]) -> None:
    checkpoint_key[0].chmod(0o644)
    sink = AuditSink(path=str(tmp_path / "l.jsonl"), checkpoint_key=str(checkpoint_key[0]))
    with pytest.raises(ConfigError, match=r"GOVBUS_SINK__OPTIONS__CHECKPOINT_KEY.*chmod 600"):
        sink.open(CTX)


# -- verify: tampering is named -----------------------------------------------------------------


def _rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_editing_one_byte_is_named(ledger: Any) -> None:
    path, keyring, _ = ledger
    lines = _lines(path)
    lines[3] = lines[3].replace(b'"decision":"', b'"decision":"X', 1)
    _rewrite(path, lines)
    problem = verify_ledger(path, keyring=keyring).problem
    assert problem is not None
    assert (problem.line, problem.seq, problem.kind) == (4, 3, "edited")


def test_flipping_any_single_byte_is_detected_at_its_line(ledger: Any) -> None:
    path, keyring, _ = ledger
    original = _lines(path)
    for offset in (0, 40, 200, len(original[2]) - 30, len(original[2]) - 3):
        lines = list(original)
        data = bytearray(lines[2])
        data[offset] = ord("#") if data[offset] != ord("#") else ord("$")
        lines[2] = bytes(data)
        _rewrite(path, lines)
        problem = verify_ledger(path, keyring=keyring).problem
        assert problem is not None, offset
        assert problem.line == 3, (offset, problem)
        assert problem.kind in ("edited", "malformed"), (offset, problem)


def test_deleting_one_line_is_named(ledger: Any) -> None:
    path, keyring, _ = ledger
    lines = _lines(path)
    del lines[4]
    _rewrite(path, lines)
    problem = verify_ledger(path, keyring=keyring).problem
    assert problem is not None
    assert (problem.line, problem.seq, problem.kind) == (5, 5, "deleted")
    assert "seq 4" in problem.detail


def test_swapping_two_lines_is_named(ledger: Any) -> None:
    path, keyring, _ = ledger
    lines = _lines(path)
    lines[6], lines[7] = lines[7], lines[6]
    _rewrite(path, lines)
    problem = verify_ledger(path, keyring=keyring).problem
    assert problem is not None
    assert (problem.line, problem.seq, problem.kind) == (7, 7, "reordered")
    assert "line 8" in problem.detail


def test_rehashed_edit_breaks_the_next_link(ledger: Any) -> None:
    path, keyring, _ = ledger
    lines = _lines(path)
    fields, _ = unseal(lines[2])
    fields["verdict"] = "unverified"
    lines[2] = seal(fields)[0]  # a forger who recomputes the entry's own hash
    _rewrite(path, lines)
    problem = verify_ledger(path, keyring=keyring).problem
    assert problem is not None
    assert (problem.line, problem.seq, problem.kind) == (4, 3, "relinked")


def test_rewritten_chain_fails_at_the_checkpoint(ledger: Any) -> None:
    path, keyring, _ = ledger
    lines = _lines(path)
    # Re-seal everything after an edit to event 1: only the checkpoint signatures can tell.
    prev = "0" * 64
    out = []
    for i, line in enumerate(lines):
        fields, _ = unseal(line)
        fields["prev"] = prev
        if i == 1:
            fields["verdict_detail"] = "nothing to see"
        sealed, prev = seal(fields)
        out.append(sealed)
    _rewrite(path, out)
    assert verify_ledger(path).ok  # without the keyring the chain alone looks fine
    problem = verify_ledger(path, keyring=keyring).problem
    assert problem is not None
    assert (problem.line, problem.kind) == (6, "bad-checkpoint")


def test_event_that_no_longer_matches_its_record_is_named(ledger: Any) -> None:
    path, keyring, _ = ledger
    lines = _lines(path)
    fields, _ = unseal(lines[-2])
    fields["event"]["data"]["decision"] = "allow-all"
    lines[-2] = seal(fields)[0]
    _rewrite(path, lines[:-1])  # drop the last checkpoint too: a rewrite of the unsealed tail
    problem = verify_ledger(path, keyring=keyring).problem
    assert problem is not None
    assert (problem.line, problem.kind) == (len(lines) - 1, "edited")
    assert "does not match the record" in problem.detail


def test_signatures_are_checked_against_the_keyring(ledger: Any) -> None:
    path, _, _ = ledger
    stranger = SigningKey.generate("k1")  # same kid, other key
    problem = verify_ledger(path, keyring=Keyring([KeyEntry(stranger.kid, stranger.public_bytes)])).problem
    assert problem is not None
    assert (problem.line, problem.kind) == (1, "bad-signature")


def test_unsigned_events_fail_only_when_signatures_are_required(
    tmp_path: Path, open_sink: Callable[..., AuditSink]
) -> None:
    sink = open_sink()
    assert sink.write(Batch(delivered(2))) is OK
    sink.close()
    path = tmp_path / "ledger.jsonl"
    keyring = Keyring([])
    problem = verify_ledger(path, keyring=keyring).problem
    assert problem is not None
    assert problem.kind == "unsigned"
    assert verify_ledger(path, keyring=keyring, allow_unsigned=True).problem is not None  # checkpoint kid unknown
    assert verify_ledger(path).ok


def test_duplicate_and_truncated_entries_are_named(ledger: Any) -> None:
    path, _, _ = ledger
    lines = _lines(path)
    _rewrite(path, [*lines, lines[0][:-10]])
    problem = verify_ledger(path).problem
    assert problem is not None
    assert (problem.line, problem.kind) == (len(lines) + 1, "truncated")


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_ok_and_broken(ledger: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, keyring, _ = ledger
    keyring.save(tmp_path / "keyring.json")
    assert main(["audit", "verify", str(path), "--keyring", str(tmp_path / "keyring.json")]) == 0
    out = capsys.readouterr().out
    assert "OK, 15 entries (12 events, 3 checkpoints)" in out
    assert "event signatures verified: 12" in out

    lines = _lines(path)
    del lines[9]
    _rewrite(path, lines)
    assert main(["audit", "verify", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["problem"]["line"] == 10
    assert report["problem"]["kind"] == "deleted"
    assert main(["audit", "verify", str(path)]) == 1
    assert "BROKEN at line 10 (seq 10): deleted" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            lambda ls: [*ls[:6], ls[6].replace(b'"offset":', b'"offset":1', 1), *ls[7:]],
            "BROKEN at line 7 (seq 6): edited",
        ),
        (lambda ls: ls[:2] + ls[3:], "BROKEN at line 3 (seq 3): deleted"),
        (lambda ls: [*ls[:8], ls[9], ls[8], *ls[10:]], "BROKEN at line 9 (seq 9): reordered"),
    ],
    ids=["edit", "delete", "swap"],
)
def test_cli_names_the_tampered_entry(
    ledger: Any, tamper: Callable[[list[bytes]], list[bytes]], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = ledger
    _rewrite(path, tamper(_lines(path)))
    assert main(["audit", "verify", str(path)]) == 1
    assert expected in capsys.readouterr().out


def test_cli_unreadable_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(tmp_path / "missing.jsonl")]) == 2
    (tmp_path / "l.jsonl").write_text("")
    (tmp_path / "bad.json").write_text("{")
    assert main(["audit", "verify", str(tmp_path / "l.jsonl"), "--keyring", str(tmp_path / "bad.json")]) == 2
    assert "--keyring" in capsys.readouterr().err


def test_v2_fields_are_in_the_hash_chain_and_v1_entries_render_as_before() -> None:
    """Contract v2 fields are covered by the ledger; a v1 event's rendering is unchanged by v2."""
    from govbus.consumers.sinks._ledger import _event_data
    from govbus.event import GovernanceEvent

    v1_like = GovernanceEvent(agent_id="a")
    assert not {"tenant_id", "policy_version", "risk_score"} & _event_data(v1_like).keys()
    v2 = GovernanceEvent(agent_id="a", tenant_id="acme", policy_version="7", risk_score=0.5)
    data = _event_data(v2)
    assert (data["tenant_id"], data["policy_version"], data["risk_score"]) == ("acme", "7", 0.5)


# -- the per-record fast paths against the plain library calls ---------------------------------


def _reference_json_value(value: Any) -> Any:
    """The ledger's strict-JSON form, written plainly (isinstance chain, base64 module)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(k): _reference_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_json_value(v) for v in value]
    return str(value)


def _reference_fields(seq: int, prev: str, record: DeliveredRecord) -> dict[str, Any]:
    def b64(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode("ascii")

    def text(raw: bytes | None) -> str | None:
        try:
            return None if raw is None else raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    sig_names = set(SIGNATURE_HEADERS)
    event = _ledger.render_event(
        record.event,
        record.attributes,
        traceparent=text(record.header("traceparent")),
        tracestate=text(record.header("tracestate")),
    )
    e = record.event
    event["data"]["attributes"] = _reference_json_value(e.attributes)
    event["data"]["latency_ms"] = _reference_json_value(e.latency_ms)
    return {
        "v": 1, "seq": seq, "type": "event", "prev": prev, "event": event,
        "record": {
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "timestamp_ms": record.timestamp_ms, "key": b64(record.key), "value": b64(record.value),
            "headers": [[n, b64(v)] for n, v in record.headers if n not in sig_names],
        },
        "sig": {n: b64(v) for n, v in record.headers if n in sig_names} or None,
        "verdict": record.verdict, "verdict_detail": record.verdict_detail,
    }  # fmt: skip


def test_entries_equal_the_plain_rendering_byte_for_byte() -> None:
    signer, _ = signing_pair("k-fast")
    evs = []
    for i, e in enumerate(sample_events(24, seed=9)):
        attrs: dict[str, Any] = {
            "raw": bytes([i, 255]), "nan": math.nan, "inf": -math.inf if i % 2 else math.inf, "n": i, "f": 0.5,
            "nested": {"b": [1, "x", None, 2.5, True, {"deep": [False]}], "a": 1.5}, "ü": "ünï", "none": None,
        }  # fmt: skip
        evs.append(e.replace(attributes=attrs, latency_ms=0.0 if i % 3 == 0 else 1.25))
    tp = f"00-{'ab' * 16}-{'cd' * 8}-01"
    records = delivered(evs=evs, signer=signer, traceparent=tp)
    odd_headers = (("traceparent", tp.encode()), ("tracestate", b"k=v"), ("traceparent", tp[::-1].encode()),
                   ("traceparent", b"\xff"), ("x", b""), ("traceparent", None))  # fmt: skip
    records += [dataclasses.replace(r, headers=(*r.headers, *odd_headers[: i + 1])) for i, r in enumerate(delivered(6))]
    prev = _ledger.GENESIS
    for i, record in enumerate(records):
        line, digest = seal(_ledger.event_fields(i, prev, record))
        assert line == seal(_reference_fields(i, prev, record))[0], i
        prev = digest
