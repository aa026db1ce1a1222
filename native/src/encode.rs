//! The producer's batch step, compiled: Avro values (schema v1/v2 layout), CloudEvents headers and
//! record keys for a micro-batch of events (`BatchEncoder.encode`). This module is the bytes of one
//! event (no Python objects); reading the Python events is `extract.rs`, the Python class and the
//! records it makes `batch_encoder.rs`, signing the batch `sign.rs`.
//!
//! The pure-Python reference is `govbus._contract._encode_fast` + `govbus._cloudevents.headers_for`
//! (values, headers) and `govbus.signing.Signer._hash` + `govbus.signing._merkle.build` (leaves,
//! paths). Everything the compiled code is not sure to reproduce byte for byte (a type it does not
//! know exactly, a lone surrogate, an integer beyond 64 bits, a year before 1000, a writer schema
//! that lacks the event's kind or v2 fields, a traced event) comes back as None and is encoded on
//! the Python path, which also words any refusal; the differential tests hold the two to the same
//! bytes.

use crate::civil::{self, civil};

// ---- Avro primitives (writer side) ----------------------------------------------------------------

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n > 0x7f {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub fn long(out: &mut Vec<u8>, n: i64) {
    varint(out, ((n << 1) ^ (n >> 63)) as u64);
}

pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    long(out, s.len() as i64);
    out.extend_from_slice(s);
}

fn opt_string(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(2);
            string(out, s);
        }
    }
}

/// `govbus._cloudevents.format_time` of the UTC instant `micros` since the epoch; None for years
/// outside 1000-9999 (glibc's unpadded `%Y` below 1000, overflow above: the Python path decides).
pub fn format_time(micros: i64) -> Option<String> {
    let (y, ..) = civil(micros);
    if !(1000..=9999).contains(&y) {
        return None;
    }
    let mut out = Vec::with_capacity(27);
    civil::format_time(&mut out, micros);
    String::from_utf8(out).ok()
}

/// `urllib.parse.quote(text, safe='')`: everything but ASCII letters, digits and `_.-~` as %XX.
pub fn quote(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

// ---- one event -------------------------------------------------------------------------------------

/// An attribute value as the writer's union branches see it.
pub enum Attr<S: AsRef<[u8]>> {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(S),
    Bytes(Vec<u8>),
    Json(Vec<u8>),
}

/// What the writer reads of one event (strings as UTF-8).
pub struct Fields<S: AsRef<[u8]>> {
    pub event_id: S,
    pub micros: i64,
    pub kind: usize, // index into Plan::kinds
    pub severity: S,
    pub agent_id: S,
    pub agent_did: Option<S>,
    pub session_id: Option<S>,
    pub action: S,
    pub resource: Option<S>,
    pub decision: S,
    pub reason: S,
    pub policy_name: Option<S>,
    pub latency_ms: f64,
    pub attributes: Vec<(S, Attr<S>)>,
    pub schema_version: S,
    pub tenant_id: Option<S>,
    pub policy_version: Option<S>,
    pub risk_score: Option<f64>,
}

/// The writer's fixed configuration: framing prefix, layout, kinds, and the headers' constants.
pub struct Plan {
    pub prefix: Vec<u8>,
    pub extras: bool,
    pub kinds: Vec<(String, Vec<u8>, Vec<u8>)>, // (EventKind value, Avro enum index, ce_type) per kind the schema has
    pub content_type: Vec<u8>,
    pub dataschema: Vec<u8>,
    pub source: Option<Vec<u8>>,
    pub key_by_session: bool,
}

/// One encoded record: key, value, and the header values in `HEADERS` order (session id last, if any).
pub struct Encoded {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub id: Vec<u8>,
    pub source: Vec<u8>,
    pub time: Vec<u8>,
    pub session: Option<Vec<u8>>,
}

fn b<S: AsRef<[u8]>>(s: &S) -> &[u8] {
    s.as_ref()
}

/// The record of one event, or None when the Python path must encode it.
pub fn encode_event<S: AsRef<[u8]>>(plan: &Plan, f: &Fields<S>, tail: &[u8]) -> Option<Encoded> {
    let v2 = f.tenant_id.is_some() || f.policy_version.is_some() || f.risk_score.is_some();
    if v2 && !plan.extras {
        return None; // a v1 writer cannot carry them: the Python path refuses with the reason
    }
    let time = format_time(f.micros)?;
    let (_, kind_index, _) = plan.kinds.get(f.kind)?;
    // The value's size, bounded from above (a string's length prefix takes at most 10 bytes):
    // one allocation, where growing from a guess reallocated most values once or twice.
    let text = |s: &S| b(s).len() + 10;
    let opt = |s: &Option<S>| s.as_ref().map_or(1, |s| b(s).len() + 11);
    let attrs: usize = f
        .attributes
        .iter()
        .map(|(k, a)| {
            text(k)
                + 11
                + match a {
                    Attr::Str(s) => b(s).len(),
                    Attr::Bytes(s) | Attr::Json(s) => s.len(),
                    _ => 0,
                }
        })
        .sum();
    let size = plan.prefix.len()
        + tail.len()
        + 64
        + text(&f.event_id)
        + text(&f.severity)
        + text(&f.agent_id)
        + opt(&f.agent_did)
        + opt(&f.session_id)
        + text(&f.action)
        + opt(&f.resource)
        + text(&f.decision)
        + text(&f.reason)
        + opt(&f.policy_name)
        + attrs
        + text(&f.schema_version)
        + opt(&f.tenant_id)
        + opt(&f.policy_version);
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(&plan.prefix);
    string(&mut v, b(&f.event_id));
    long(&mut v, f.micros);
    v.extend_from_slice(kind_index);
    string(&mut v, b(&f.severity));
    string(&mut v, b(&f.agent_id));
    opt_string(&mut v, f.agent_did.as_ref().map(b));
    opt_string(&mut v, f.session_id.as_ref().map(b));
    string(&mut v, b(&f.action));
    opt_string(&mut v, f.resource.as_ref().map(b));
    string(&mut v, b(&f.decision));
    string(&mut v, b(&f.reason));
    opt_string(&mut v, f.policy_name.as_ref().map(b));
    v.extend_from_slice(&f.latency_ms.to_le_bytes());
    v.extend_from_slice(&[0, 0, 0]); // trace_id, span_id, parent_span_id: only untraced events come here
    if !f.attributes.is_empty() {
        long(&mut v, f.attributes.len() as i64);
        for (key, value) in &f.attributes {
            string(&mut v, b(key));
            match value {
                Attr::Null => v.push(0),
                Attr::Bool(x) => v.extend_from_slice(&[2, *x as u8]),
                Attr::Long(n) => {
                    v.push(4);
                    long(&mut v, *n);
                }
                Attr::Double(x) => {
                    v.push(6);
                    v.extend_from_slice(&x.to_le_bytes());
                }
                Attr::Str(s) => {
                    v.push(8);
                    string(&mut v, b(s));
                }
                Attr::Bytes(s) => {
                    v.push(10);
                    string(&mut v, s);
                }
                Attr::Json(text) => {
                    v.push(12);
                    string(&mut v, text);
                }
            }
        }
    }
    v.push(0);
    string(&mut v, b(&f.schema_version));
    v.extend_from_slice(tail);
    if plan.extras {
        opt_string(&mut v, f.tenant_id.as_ref().map(b));
        opt_string(&mut v, f.policy_version.as_ref().map(b));
        match f.risk_score {
            None => v.push(0),
            Some(x) => {
                v.push(2);
                v.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    let source = match (&plan.source, &f.agent_did) {
        (Some(s), _) => s.clone(),
        (None, Some(did)) if !b(did).is_empty() => b(did).to_vec(),
        (None, _) => {
            let mut s = b"/agent-os/agent/".to_vec();
            quote(&mut s, b(&f.agent_id));
            s
        }
    };
    let session = f.session_id.as_ref().map(b).filter(|s| !s.is_empty());
    let key = match session {
        Some(s) if plan.key_by_session => s.to_vec(),
        _ => b(&f.agent_id).to_vec(),
    };
    Some(Encoded {
        key,
        value: v,
        id: b(&f.event_id).to_vec(),
        source,
        time: time.into_bytes(),
        session: session.map(|s| s.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::civil::days_from_civil;

    #[test]
    fn time_round_trip() {
        assert_eq!(
            format_time(0).as_deref(),
            Some("1970-01-01T00:00:00.000000Z")
        );
        assert_eq!(
            format_time(-1).as_deref(),
            Some("1969-12-31T23:59:59.999999Z")
        );
        assert_eq!(
            format_time(951_782_400_000_001).as_deref(),
            Some("2000-02-29T00:00:00.000001Z")
        );
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(civil::civil_from_days(11_016), (2000, 2, 29));
        assert!(format_time(days_from_civil(999, 12, 31) * 86_400_000_000).is_none());
    }

    #[test]
    fn quote_like_urllib() {
        let mut out = Vec::new();
        quote(&mut out, "a b/é~_.-".as_bytes());
        assert_eq!(out, b"a%20b%2F%C3%A9~_.-");
    }
}
