"""Writes the seed inputs of the compiled core's fuzz targets (native/fuzz/corpus/).

decode: record values (v1 and v2 writers, event id "e1", attributes of every branch, nested JSON).
verify: signed records in the verify target's format (native/src/fuzzing.rs), signed by a fresh
key whose public half goes to corpus/verify.pub (kid "k1").
Run from the repository root: .venv/bin/python tools/native_fuzz_seeds.py
"""

from __future__ import annotations

from pathlib import Path

from govbus._contract import Encoder
from govbus._record import to_record
from govbus.event import EventKind, GovernanceEvent, ProducerInfo
from govbus.signing import KeyEntry, Keyring, Signer, SigningKey, SignInput

ROOT = Path(__file__).resolve().parents[1] / "native" / "fuzz" / "corpus"
PRODUCER = ProducerInfo("kernel", "i-1", "host", "govbus-python/0.2.0")
NAMES = [
    "govbus_sig_kid", "govbus_sig_alg", "govbus_sig_stream", "govbus_sig_seq", "govbus_sig_proof", "govbus_sig",
    "ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion", "traceparent", "other",
]  # fmt: skip


def _events() -> list[GovernanceEvent]:
    attrs = {"n": 1, "f": 0.5, "s": "\u00e9", "b": b"\x00\xff", "t": True, "z": None, "j": {"a": [1, 2.5, "x"]}}
    return [
        GovernanceEvent(agent_id="a", event_id="e1"),
        GovernanceEvent(agent_id="a", event_id="e1", attributes=attrs, session_id="s", resource="r"),
        GovernanceEvent(
            agent_id="a",
            event_id="e1",
            kind=EventKind.DATA_EXFILTRATION_DETECTED,
            tenant_id="t",
            policy_version="v",
            risk_score=0.25,
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            parent_span_id="00f067aa0ba902b7",
            agent_did="did:x",
            policy_name="p",
        ),
    ]


def main() -> None:
    decode = ROOT / "decode"
    verify = ROOT / "verify"
    decode.mkdir(parents=True, exist_ok=True)
    verify.mkdir(parents=True, exist_ok=True)
    n = 0
    for version in (1, 2):
        for e in _events():
            encoder = Encoder(version)
            if encoder.restricted and e.kind not in {k for k in EventKind if k.name in encoder.schema.kinds}:
                continue  # v1 cannot carry this kind
            if encoder.restricted and e.tenant_id is not None:
                continue
            value = encoder.encode(e, PRODUCER)
            for variant in (value, value[:2] + value[2:10][::-1] + value[10:], value[:-3], value + b"\x00"):
                (decode / f"seed-{n:02d}").write_bytes(variant)
                n += 1
    key = SigningKey.generate("k1")
    (ROOT / "verify.pub").write_bytes(Keyring([KeyEntry(key.kid, key.public_bytes)])["k1"].public_key)
    signer = Signer(key)
    recs = [to_record(e.replace(event_id=f"e{i}"), PRODUCER, Encoder()) for i, e in enumerate(_events() * 4)]
    inputs = []
    for i, r in enumerate(recs):
        h = dict(r.headers)
        inputs.append(
            SignInput(
                r.value,
                r.key,
                h["ce_id"].decode(),
                h["ce_type"].decode(),
                h["ce_source"].decode(),
                h["ce_time"].decode(),
                i % 4,
            )
        )
    for i, (r, extra) in enumerate(zip(recs, signer.sign_batch(inputs), strict=True)):
        headers = [(name, v) for name, v in [*r.headers, *extra] if name in NAMES]
        out = bytearray([i % 4, len(headers)])
        for name, v in headers:
            out += bytes([NAMES.index(name), 0, len(v)]) + v
        key_bytes = r.key or b""
        out += bytes([1, len(key_bytes)]) + key_bytes + r.value
        (verify / f"seed-{i:02d}").write_bytes(bytes(out))


if __name__ == "__main__":
    main()
