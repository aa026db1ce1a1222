//! A governance event record body (contract v1 layout, optionally the three v2 fields) read
//! with the writer's schema, checked like `govbus.event.decoded_event`, rendered as JSON.

use std::collections::HashMap;

use crate::avro::{Corrupt, Reader, R};
use crate::civil::format_time;
use crate::json;

/// One writer schema the decoder accepts, prepared by Python from the shipped .avsc files.
#[derive(Clone)]
pub struct Writer {
    /// The three optional v2 fields follow contract_version.
    pub extras: bool,
    /// The rendered `kind` (EventKind value, after projection onto the reader) per enum index.
    pub kinds: Vec<String>,
    /// The reader version has the v2 fields too (else they read as None).
    pub reader_extras: bool,
}

pub enum Attr<'a> {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Json(&'a str),
}

pub struct Event<'a> {
    pub event_id: &'a str,
    pub occurred_at: i64,
    pub kind: usize,
    pub severity: &'a str,
    pub agent_id: &'a str,
    pub agent_did: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub action: &'a str,
    pub resource: Option<&'a str>,
    pub decision: &'a str,
    pub reason: &'a str,
    pub policy_name: Option<&'a str>,
    pub latency_ms: f64,
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub parent_span_id: Option<&'a str>,
    pub attributes: Vec<(&'a str, Attr<'a>)>,
    pub schema_version: &'a str,
    pub producer: [&'a str; 4],
    pub tenant_id: Option<&'a str>,
    pub policy_version: Option<&'a str>,
    pub risk_score: Option<f64>,
}

// datetime's range: 0001-01-01T00:00:00 to 9999-12-31T23:59:59.999999 (fastavro raises outside it).
const MIN_MICROS: i64 = -62_135_596_800_000_000;
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Reads the body that starts at `offset`; `Corrupt` where fastavro raises (or leaves trailing bytes).
pub fn read<'a>(value: &'a [u8], offset: usize, w: &Writer) -> R<Event<'a>> {
    let mut r = Reader::new(value, offset);
    let event_id = r.string()?;
    let occurred_at = r.long()?;
    if !(MIN_MICROS..=MAX_MICROS).contains(&occurred_at) {
        return Err(Corrupt);
    }
    let kind = r.index(w.kinds.len())?;
    let severity = r.string()?;
    let agent_id = r.string()?;
    let agent_did = r.optional_string()?;
    let session_id = r.optional_string()?;
    let action = r.string()?;
    let resource = r.optional_string()?;
    let decision = r.string()?;
    let reason = r.string()?;
    let policy_name = r.optional_string()?;
    let latency_ms = r.double()?;
    let trace_id = r.optional_string()?;
    let span_id = r.optional_string()?;
    let parent_span_id = r.optional_string()?;
    let mut attributes: Vec<(&str, Attr)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    r.map(|r| {
        let key = r.string()?;
        let v = match r.index(7)? {
            0 => Attr::Null,
            1 => Attr::Bool(r.boolean()?),
            2 => Attr::Long(r.long()?),
            3 => Attr::Double(r.double()?),
            4 => Attr::Str(r.string()?),
            5 => Attr::Bytes(r.bytes()?),
            _ => Attr::Json(r.string()?),
        };
        // A repeated key keeps its first place and takes the last value (a Python dict).
        if attributes.len() < 8 {
            if let Some(slot) = attributes.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = v;
                return Ok(());
            }
            attributes.push((key, v));
            if attributes.len() == 8 {
                index = attributes.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
            }
        } else if let Some(&at) = index.get(key) {
            attributes[at].1 = v;
        } else {
            index.insert(key, attributes.len());
            attributes.push((key, v));
        }
        Ok(())
    })?;
    let schema_version = r.string()?;
    let producer = [r.string()?, r.string()?, r.string()?, r.string()?];
    r.long()?; // contract_version
    let (mut tenant_id, mut policy_version, mut risk_score) = (None, None, None);
    if w.extras {
        tenant_id = r.optional_string()?;
        policy_version = r.optional_string()?;
        risk_score = r.optional_double()?;
        if !w.reader_extras {
            (tenant_id, policy_version, risk_score) = (None, None, None);
        }
    }
    if !r.at_end() {
        return Err(Corrupt); // trailing bytes after the Avro body
    }
    Ok(Event {
        event_id,
        occurred_at,
        kind,
        severity,
        agent_id,
        agent_did,
        session_id,
        action,
        resource,
        decision,
        reason,
        policy_name,
        latency_ms,
        trace_id,
        span_id,
        parent_span_id,
        attributes,
        schema_version,
        producer,
        tenant_id,
        policy_version,
        risk_score,
    })
}

const MAX_TEXT: usize = 64 * 1024;
const MAX_ID: usize = 256;

fn text(value: Option<&str>, limit: usize, required: bool) -> bool {
    let Some(v) = value else { return true };
    if required && v.is_empty() {
        return false;
    }
    // The limit counts code points; a string of at most `limit` bytes is within it.
    if v.len() > limit && v.chars().count() > limit {
        return false;
    }
    !v.as_bytes().contains(&0)
}

fn hex_id(value: Option<&str>, width: usize) -> bool {
    let Some(v) = value else { return true };
    v.len() == width && v.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) && v.bytes().any(|c| c != b'0')
}

/// The semantic rules Avro does not guarantee (`govbus.event.decoded_event`); false: invalid event.
pub fn valid(e: &Event) -> bool {
    text(Some(e.event_id), MAX_ID, true)
        && text(Some(e.agent_id), MAX_ID, true)
        && text(Some(e.severity), MAX_ID, true)
        && text(Some(e.schema_version), MAX_ID, true)
        && text(Some(e.action), MAX_TEXT, false)
        && text(Some(e.decision), MAX_TEXT, false)
        && text(Some(e.reason), MAX_TEXT, false)
        && text(e.agent_did, MAX_ID, true)
        && text(e.session_id, MAX_ID, true)
        && text(e.resource, MAX_TEXT, true)
        && text(e.policy_name, MAX_ID, true)
        && text(e.tenant_id, MAX_ID, true)
        && text(e.policy_version, MAX_ID, true)
        && e.latency_ms.is_finite()
        && e.latency_ms >= 0.0
        && e.risk_score.is_none_or(|s| (0.0..=1.0).contains(&s))
        && hex_id(e.trace_id, 32)
        && hex_id(e.span_id, 16)
        && hex_id(e.parent_span_id, 16)
}

fn opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => json::string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn key(out: &mut Vec<u8>, k: &[u8]) {
    out.extend_from_slice(k);
}

/// `_jsonl.event_data(event)` as JSON; Err: nested JSON the Python path must handle
/// (`Invalid`: from_datum refuses it; `Defer`: only Python reproduces the outcome).
pub fn render_data(out: &mut Vec<u8>, e: &Event, w: &Writer) -> Result<(), json::JsonError> {
    key(out, b"{\"event_id\":");
    json::string(out, e.event_id);
    key(out, b",\"occurred_at\":\"");
    format_time(out, e.occurred_at);
    key(out, b"\",\"kind\":");
    json::string(out, &w.kinds[e.kind]);
    key(out, b",\"severity\":");
    json::string(out, e.severity);
    key(out, b",\"agent_id\":");
    json::string(out, e.agent_id);
    key(out, b",\"agent_did\":");
    opt_str(out, e.agent_did);
    key(out, b",\"session_id\":");
    opt_str(out, e.session_id);
    key(out, b",\"action\":");
    json::string(out, e.action);
    key(out, b",\"resource\":");
    opt_str(out, e.resource);
    key(out, b",\"decision\":");
    json::string(out, e.decision);
    key(out, b",\"reason\":");
    json::string(out, e.reason);
    key(out, b",\"policy_name\":");
    opt_str(out, e.policy_name);
    key(out, b",\"latency_ms\":");
    json::float(out, e.latency_ms);
    key(out, b",\"trace_id\":");
    opt_str(out, e.trace_id);
    key(out, b",\"span_id\":");
    opt_str(out, e.span_id);
    key(out, b",\"parent_span_id\":");
    opt_str(out, e.parent_span_id);
    key(out, b",\"attributes\":{");
    for (i, (k, v)) in e.attributes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::string(out, k);
        out.push(b':');
        match v {
            Attr::Null => out.extend_from_slice(b"null"),
            Attr::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Attr::Long(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Attr::Double(x) => {
                if x.is_nan() {
                    out.extend_from_slice(b"\"nan\"");
                } else if x.is_infinite() {
                    out.extend_from_slice(if *x > 0.0 { b"\"inf\"" } else { b"\"-inf\"" });
                } else {
                    json::float(out, *x);
                }
            }
            Attr::Str(s) => json::string(out, s),
            Attr::Bytes(b) => {
                use base64::Engine;
                out.push(b'"');
                out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(b).as_bytes());
                out.push(b'"');
            }
            Attr::Json(t) => json::reencode(out, t)?,
        }
    }
    key(out, b"},\"schema_version\":");
    json::string(out, e.schema_version);
    key(out, b",\"tenant_id\":");
    opt_str(out, e.tenant_id);
    key(out, b",\"policy_version\":");
    opt_str(out, e.policy_version);
    key(out, b",\"risk_score\":");
    match e.risk_score {
        Some(x) => json::float(out, x),
        None => out.extend_from_slice(b"null"),
    }
    key(out, b",\"producer\":{\"name\":");
    json::string(out, e.producer[0]);
    key(out, b",\"instance_id\":");
    json::string(out, e.producer[1]);
    key(out, b",\"host\":");
    json::string(out, e.producer[2]);
    key(out, b",\"library\":");
    json::string(out, e.producer[3]);
    key(out, b"}}");
    Ok(())
}
