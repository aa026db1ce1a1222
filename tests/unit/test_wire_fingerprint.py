"""The single-object header's fingerprint, checked against the Avro specification (no broker).

The anchor is independent of this package and of fastavro: the CRC-64-AVRO algorithm as the Avro
specification gives it (re-implemented here in a few lines) and the fingerprints Apache Avro
publishes for primitive schemas in ``share/test/data/schema-tests.txt`` (signed 64-bit decimals).
The specification writes the fingerprint into the ``C3 01`` header as 8 bytes, little-endian.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint

from govbus._contract import Decoder, Encoder, schema_version, schema_versions
from govbus._sample import sample_events
from govbus.errors import DecodeError
from govbus.event import GovernanceEvent, ProducerInfo

ROOT = Path(__file__).resolve().parents[2]
PRODUCER = ProducerInfo("kernel", "inst-1", "host-a", "govbus-python/0.1.0")

# Apache Avro, share/test/data/schema-tests.txt: canonical form -> published fingerprint (signed long).
PUBLISHED = {
    '"null"': 7195948357588979594,  # 0x63dd24e7cc258f8a
    '"boolean"': -6970731678124411036,
    '"int"': 8247732601305521295,
}
_EMPTY = 0xC15D213AA4D7A795


def _table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    """The specification's 64-bit Rabin fingerprint, as an unsigned integer."""
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp


def header(canonical: str) -> bytes:
    """``C3 01`` + the fingerprint as the specification writes it: 8 bytes, little-endian."""
    return b"\xc3\x01" + struct.pack("<Q", crc64_avro(canonical.encode()))


@pytest.mark.parametrize(("canonical", "published"), sorted(PUBLISHED.items()))
def test_crc64_avro_reproduces_the_published_fingerprints(canonical: str, published: int) -> None:
    assert crc64_avro(canonical.encode()) == published & (2**64 - 1)
    # fastavro's hex is already the little-endian byte string: for "null", 8a8f25cce724dd63.
    assert fastavro_fingerprint(canonical, "CRC-64-AVRO") == struct.pack("<q", published).hex()


def test_null_schema_fingerprint_is_the_spec_example() -> None:
    assert header('"null"').hex() == "c3018a8f25cce724dd63"


def test_shipped_schemas_carry_the_little_endian_fingerprint() -> None:
    for v in schema_versions():
        assert v.prefix == header(v.canonical), f"v{v.version}"
        assert v.legacy_fingerprint == v.fingerprint[::-1]
    assert schema_version(2).prefix.hex() == "c30143ea7bca40c80652"
    assert schema_version(1).prefix.hex() == "c301fdc30ce93752f261"


def test_every_encoder_writes_the_spec_header() -> None:
    for v in schema_versions():
        value = Encoder(v.version).encode(GovernanceEvent(agent_id="a"), PRODUCER)
        assert value[:10] == header(v.canonical), f"v{v.version}"


def test_the_wire_contract_table_holds_the_spec_fingerprints() -> None:
    text = (ROOT / "docs" / "wire-contract.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| `([0-9a-f]{16})` \|", text, re.MULTILINE))
    assert table == {str(v.version): header(v.canonical)[2:].hex() for v in schema_versions()}


def test_legacy_byte_reversed_header_is_read_and_counted() -> None:
    decoder = Decoder()
    for v in schema_versions():
        for event in sample_events(5):
            if v.version == 1:
                event = event.replace(tenant_id=None, policy_version=None, risk_score=None)
                if event.kind.name not in v.kinds:
                    continue
            good = Encoder(v.version).encode(event, PRODUCER)
            legacy = good[:2] + good[2:10][::-1] + good[10:]
            assert legacy != good
            assert decoder.decode(legacy) == decoder.decode(good)
    counted = decoder.legacy_fingerprints
    assert counted > 0
    decoder.decode(Encoder().encode(GovernanceEvent(agent_id="a"), PRODUCER))
    assert decoder.legacy_fingerprints == counted  # the correct order is not counted


def test_an_unknown_fingerprint_is_still_refused() -> None:
    value = Encoder().encode(GovernanceEvent(agent_id="a"), PRODUCER)
    with pytest.raises(DecodeError) as err:
        Decoder().decode(value[:2] + b"\x11" * 8 + value[10:])
    assert err.value.reason == "unknown-fingerprint"
