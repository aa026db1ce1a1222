//! The fuzz targets' input formats, shared by the fuzz driver (`examples/fuzz.rs`) and the corpus
//! replay test (`tests/corpus.rs`). Each target returns a short outcome label (used to keep
//! inputs that reach a new outcome); a panic is the finding.

use std::collections::HashMap;

use crate::event::Writer;
use crate::{ledger_draft, otlp_draft};
use crate::record::{self, Outcome, Schemas, Verdict};
use crate::verify::Checker;

/// The shipped v2 schema's fingerprint (wire order) and v1's, with their kind tables.
pub fn schemas() -> Schemas {
    let kinds_v1: Vec<String> = [
        "unknown", "policy_check", "policy_violation", "tool_call_blocked", "prompt_injection_detected",
        "identity_verified", "identity_rejected", "resource_access", "escalation_requested", "checkpoint_created",
        "anomaly_detected", "mcp_tool_poisoning", "content_violation",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut kinds_v2 = kinds_v1.clone();
    kinds_v2.push("data_exfiltration_detected".into());
    let v2: [u8; 8] = [0x43, 0xea, 0x7b, 0xca, 0x40, 0xc8, 0x06, 0x52];
    let v1: [u8; 8] = V1_FINGERPRINT;
    let mut by_fingerprint = HashMap::new();
    let mut by_legacy = HashMap::new();
    by_fingerprint.insert(v1, 0);
    by_fingerprint.insert(v2, 1);
    let (mut l1, mut l2) = (v1, v2);
    l1.reverse();
    l2.reverse();
    by_legacy.insert(l1, 0);
    by_legacy.insert(l2, 1);
    Schemas {
        by_fingerprint,
        by_legacy,
        writers: vec![
            Writer { extras: false, kinds: kinds_v1, reader_extras: true },
            Writer { extras: true, kinds: kinds_v2, reader_extras: true },
        ],
    }
}

/// `govbus._contract.schema_version(1).fingerprint` (tests/unit/test_native_fuzz.py checks both).
pub const V1_FINGERPRINT: [u8; 8] = [0xfd, 0xc3, 0x0c, 0xe9, 0x37, 0x52, 0xf2, 0x61];

const HEADERS: [(&str, &[u8]); 4] =
    [("ce_specversion", b"1.0"), ("ce_id", b"e1"), ("ce_source", b"/agent-os/agent/a"), ("ce_type", b"t")];

fn bits(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

/// Decode target: the input is a record value; the headers are a fixed valid set (ce_id "e1").
/// A rendered record's audit ledger entry and OTLP log record are drafted too (`ledger_draft.rs`,
/// `otlp_draft.rs`).
pub fn decode(input: &[u8], schemas: &Schemas) -> String {
    let headers: Vec<(&str, Option<&[u8]>)> = HEADERS.iter().map(|(n, v)| (*n, Some(*v))).collect();
    let verdict = Verdict { code: "valid", detail: "", flagged: false };
    match record::process_keep(input, &headers, &verdict, schemas) {
        (Outcome::Line(line, _, legacy), decoded) => {
            // The line must be valid UTF-8 JSON-ish text ending in a newline.
            assert!(std::str::from_utf8(&line).is_ok() && line.ends_with(b"}\n"));
            let d = decoded.expect("a rendered line keeps its decode");
            let spec = ledger_draft::Spec {
                sig_headers: NAMES[..6].iter().map(|n| n.to_string()).collect(),
                own_attributes: ["data", "datacontenttype", "id", "source", "specversion", "subject", "time", "type"]
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
                spec_version: "1.0".into(),
            };
            let src = crate::record::Source { topic: "t", partition: 0, offset: Some(0), timestamp_ms: Some(1_700_000_000_000), key: None, value: input, headers: &headers };
            let drafted = ledger_draft::draft(&d, &schemas.writers[d.writer], &src, "valid", &spec);
            if let Some((body, prev_at, seq_at)) = &drafted {
                assert!(std::str::from_utf8(body).is_ok() && body.starts_with(b"{\"event\":{") && body.ends_with(b"}"));
                assert!(body[..*prev_at].ends_with(b",\"prev\":\"") && body[..*seq_at].ends_with(b",\"seq\":"));
            }
            let format = otlp_draft::LogFormat::for_tests(32);
            let logged = otlp_draft::draft(&format, &d, &schemas.writers[d.writer], &src, "valid");
            format!("line:{legacy}:{}:{}:{}", drafted.is_some(), logged.is_some(), bits(line.len()))
        }
        (Outcome::Error(reason), _) => format!("error:{reason}:{}", bits(input.len())),
        (Outcome::Defer, _) => "defer".into(),
    }
}

const NAMES: [&str; 13] = [
    "govbus_sig_kid", "govbus_sig_alg", "govbus_sig_stream", "govbus_sig_seq", "govbus_sig_proof", "govbus_sig",
    "ce_id", "ce_type", "ce_source", "ce_time", "ce_specversion", "traceparent", "other",
];

/// Verify target: `partition u8, n u8, n × (name index u8, None flag u8, len u8, bytes), key flag u8, value`.
pub fn parse_verify(input: &[u8]) -> Option<(u32, Vec<(&'static str, Option<&[u8]>)>, Option<&[u8]>, &[u8])> {
    let (&partition, rest) = input.split_first()?;
    let (&n, mut rest) = rest.split_first()?;
    let mut headers = Vec::new();
    for _ in 0..n {
        let (&name, r) = rest.split_first()?;
        let (&none, r) = r.split_first()?;
        let (&len, r) = r.split_first()?;
        let len = len as usize;
        if r.len() < len {
            return None;
        }
        headers.push((NAMES[name as usize % NAMES.len()], if none & 1 == 1 { None } else { Some(&r[..len]) }));
        rest = &r[len..];
    }
    let (&keyed, value) = rest.split_first()?;
    let (key, value) = if keyed & 1 == 1 && !value.is_empty() {
        let k = (value[0] as usize).min(value.len() - 1);
        (Some(&value[1..1 + k]), &value[1 + k..])
    } else {
        (None, value)
    };
    Some((partition as u32 % 4, headers, key, value))
}

/// A checker trusting kid "k1" with `public_key` (the corpus seeds' signer: `corpus/verify.pub`).
pub fn checker(public_key: &[u8]) -> Checker {
    let mut c = Checker::new(16);
    let mut keys = HashMap::new();
    if let Ok(raw) = <[u8; 32]>::try_from(public_key) {
        if let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&raw) {
            keys.insert(b"k1".to_vec(), vk);
        }
    }
    c.set_keys(keys);
    c
}

pub fn verify(input: &[u8], checker: &mut Checker) -> String {
    match parse_verify(input) {
        None => "unparsed".into(),
        Some((partition, headers, key, value)) => match checker.check(Some(value), key, &headers, partition) {
            Some(a) => format!("authentic:{}", a.sequence.min(1)),
            None => format!("python:{}:{}", headers.len(), bits(value.len())),
        },
    }
}
