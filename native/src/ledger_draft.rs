//! The audit ledger's event entry drafted from the native decode (`record::Decoded`), in the
//! intake's pass without the GIL: every member `_ledger.event_fields` gives a record but `seq` and
//! `prev`, which only the writer knows (it de-duplicates and chains). The sealer (`ledger.rs`) then
//! writes the draft's bytes around those two and hashes the line, so the audit sink neither builds
//! a Python event per record nor reads one back.
//!
//! A draft is the entry's canonical JSON (ledger format 1: keys sorted by code point, no
//! whitespace, UTF-8) with two holes: `{"event":…,"prev":"` ‸ `","record":…,"seq":` ‸ `,"sig":…}`.
//! The event is `_ledger.render_event` of what the decode read (the attributes `parse_headers`
//! gives, the data `_ledger._event_data` gives); nested JSON attributes are the text the JSON Lines
//! rendering already parsed, re-encoded with sorted keys. `tests/unit/test_ledger_draft.py` holds
//! the sealed drafts to the Python writer over generated records, byte for byte.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use pyo3::prelude::*;

use crate::civil::format_time;
use crate::event::{Attr, Event, Writer};
use crate::json;
use crate::record::{Decoded, Header, Source, KNOWN};

/// The constants of ledger format 1 the draft needs, from `_ledger` (`native_ledger_format`).
#[pyclass(module = "govbus._native", frozen)]
pub struct LedgerFormat {
    pub(crate) spec: Arc<Spec>,
}

pub struct Spec {
    /// The signature headers, filed under `sig` instead of `record.headers`.
    pub sig_headers: Vec<String>,
    /// `_OWN_ATTRIBUTES`: CloudEvents attributes never taken from the extensions.
    pub own_attributes: Vec<String>,
    /// `SPEC_VERSION`.
    pub spec_version: String,
}

#[pymethods]
impl LedgerFormat {
    #[new]
    fn new(sig_headers: Vec<String>, own_attributes: Vec<String>, spec_version: String) -> Self {
        LedgerFormat { spec: Arc::new(Spec { sig_headers, own_attributes, spec_version }) }
    }
}

/// An entry drafted at intake: `body` with the `prev` hash to go at `prev_at` and the `seq` at
/// `seq_at`; `verdict` is the verdict it was drafted with (the record's must still be it).
#[pyclass(module = "govbus._native", frozen)]
pub struct LedgerDraft {
    pub body: Vec<u8>,
    pub prev_at: usize,
    pub seq_at: usize,
    pub verdict: String,
}

impl LedgerDraft {
    /// The entry's line without its hash member (`_ledger.canonical(event_fields(seq, prev, …))`).
    pub fn fill(&self, out: &mut Vec<u8>, seq: u64, prev: &str) {
        out.extend_from_slice(&self.body[..self.prev_at]);
        out.extend_from_slice(prev.as_bytes());
        out.extend_from_slice(&self.body[self.prev_at..self.seq_at]);
        out.extend_from_slice(seq.to_string().as_bytes());
        out.extend_from_slice(&self.body[self.seq_at..]);
    }
}

/// A record value whose draft panics, for the tests of the fallback (None: off).
static PROBE: Mutex<Option<Vec<u8>>> = Mutex::new(None);
static PROBE_SET: AtomicBool = AtomicBool::new(false);

/// Makes drafting panic on records whose value is exactly `value` (None turns it off). Tests only.
#[pyfunction]
#[pyo3(signature = (value))]
fn _set_draft_panic_probe(value: Option<Vec<u8>>) {
    PROBE_SET.store(value.is_some(), Ordering::Relaxed);
    if let Ok(mut p) = PROBE.lock() {
        *p = value;
    }
}

/// The draft of a record the decode rendered: `(body, prev_at, seq_at)`. None: a nested JSON
/// value the JSON Lines rendering accepted and this one does not (not expected; the record is then
/// sealed from its Python event).
pub fn draft(d: &Decoded<'_>, w: &Writer, src: &Source<'_>, verdict: &str, spec: &Spec) -> Option<(Vec<u8>, usize, usize)> {
    if PROBE_SET.load(Ordering::Relaxed) && PROBE.lock().map(|p| p.as_deref() == Some(src.value)).unwrap_or(false) {
        panic!("govbus._native ledger draft panic probe");
    }
    let mut out = Vec::with_capacity(src.value.len() * 3 + 1024);
    out.extend_from_slice(b"{\"event\":");
    event(&mut out, d, w, src.headers, spec)?;
    out.extend_from_slice(b",\"prev\":\"");
    let prev_at = out.len();
    out.extend_from_slice(b"\",\"record\":{\"headers\":[");
    let mut sig: Vec<(&str, Option<&[u8]>)> = Vec::new();
    let mut first = true;
    for &(name, value) in src.headers {
        if spec.sig_headers.iter().any(|h| h == name) {
            match sig.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = value, // a repeated one: the last wins, as in a dict
                None => sig.push((name, value)),
            }
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'[');
        json::string(&mut out, name);
        out.push(b',');
        b64_or_null(&mut out, value);
        out.push(b']');
    }
    out.extend_from_slice(b"],\"key\":");
    b64_or_null(&mut out, src.key);
    out.extend_from_slice(b",\"offset\":");
    int_or_null(&mut out, src.offset);
    out.extend_from_slice(b",\"partition\":");
    out.extend_from_slice(src.partition.to_string().as_bytes());
    out.extend_from_slice(b",\"timestamp_ms\":");
    int_or_null(&mut out, src.timestamp_ms);
    out.extend_from_slice(b",\"topic\":");
    json::string(&mut out, src.topic);
    out.extend_from_slice(b",\"value\":");
    b64_or_null(&mut out, Some(src.value));
    out.extend_from_slice(b"},\"seq\":");
    let seq_at = out.len();
    out.extend_from_slice(b",\"sig\":");
    if sig.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        sig.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        object(&mut out, sig, |out, value| {
            b64_or_null(out, value);
            Some(())
        })?;
    }
    out.extend_from_slice(b",\"type\":\"event\",\"v\":1,\"verdict\":");
    json::string(&mut out, verdict);
    out.extend_from_slice(b",\"verdict_detail\":\"\"}");
    Some((out, prev_at, seq_at))
}

fn b64_or_null(out: &mut Vec<u8>, raw: Option<&[u8]>) {
    match raw {
        None => out.extend_from_slice(b"null"),
        Some(raw) => {
            out.push(b'"');
            let at = out.len();
            out.resize(at + raw.len().div_ceil(3) * 4, 0);
            let n = base64::engine::general_purpose::STANDARD.encode_slice(raw, &mut out[at..]).unwrap_or(0);
            out.truncate(at + n);
            out.push(b'"');
        }
    }
}

fn int_or_null(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        None => out.extend_from_slice(b"null"),
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
    }
}

fn str_or_null(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(b"null"),
        Some(s) => json::string(out, s),
    }
}

fn rendered(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    json::string(&mut v, s);
    v
}

/// `_ledger.render_event(event, attributes, traceparent=…, tracestate=…)`, sorted.
fn event(out: &mut Vec<u8>, d: &Decoded<'_>, w: &Writer, headers: &[Header<'_>], spec: &Spec) -> Option<()> {
    let ce = |k: &str| d.ce.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let mut members: Vec<(&str, Vec<u8>)> = Vec::with_capacity(12);
    members.push(("specversion", rendered(&spec.spec_version)));
    members.push(("id", rendered(ce("id")?)));
    members.push(("source", rendered(ce("source")?)));
    members.push(("type", rendered(ce("type")?)));
    let time = match ce("time") {
        Some(t) if !t.is_empty() => rendered(t),
        _ => {
            let mut t = vec![b'"'];
            format_time(&mut t, d.event.occurred_at);
            t.push(b'"');
            t
        }
    };
    members.push(("time", time));
    if let Some(subject) = ce("subject") {
        members.push(("subject", rendered(subject)));
    }
    members.push(("datacontenttype", rendered("application/json")));
    // The extensions: `parse_headers` leaves out its known attributes, render_event its own.
    for &(k, v) in &d.ce {
        if !KNOWN.contains(&k) && !spec.own_attributes.iter().any(|a| a == k) {
            members.push((k, rendered(v)));
        }
    }
    // The last traceparent / tracestate header, as UTF-8 text (`_ledger._text`).
    let last = |name: &str| headers.iter().rev().find(|(n, _)| *n == name).and_then(|(_, v)| *v).and_then(|v| std::str::from_utf8(v).ok());
    if let Some(tp) = last("traceparent").filter(|t| !t.is_empty()) {
        set(&mut members, "traceparent", rendered(tp));
        if let Some(ts) = last("tracestate").filter(|t| !t.is_empty()) {
            set(&mut members, "tracestate", rendered(ts));
        }
    }
    let mut data = Vec::with_capacity(1024);
    event_data(&mut data, &d.event, w)?;
    members.push(("data", data));
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    object(out, members, |out, v| {
        out.extend_from_slice(&v);
        Some(())
    })
}

/// Writes `{"k":v,…}`, each value by `value`, in the order given.
fn object<T>(out: &mut Vec<u8>, items: Vec<(&str, T)>, mut value: impl FnMut(&mut Vec<u8>, T) -> Option<()>) -> Option<()> {
    out.push(b'{');
    for (i, (k, v)) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::string(out, k);
        out.push(b':');
        value(out, v)?;
    }
    out.push(b'}');
    Some(())
}

/// A dict's `d[key] = value`.
fn set<'a>(members: &mut Vec<(&'a str, Vec<u8>)>, key: &'a str, value: Vec<u8>) {
    match members.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => members.push((key, value)),
    }
}

/// `_ledger._event_data(event)`: members in sorted order, the v2 fields among them when set.
fn event_data(out: &mut Vec<u8>, e: &Event<'_>, w: &Writer) -> Option<()> {
    out.extend_from_slice(b"{\"action\":");
    json::string(out, e.action);
    out.extend_from_slice(b",\"agent_did\":");
    str_or_null(out, e.agent_did);
    out.extend_from_slice(b",\"agent_id\":");
    json::string(out, e.agent_id);
    out.extend_from_slice(b",\"attributes\":");
    let mut attributes: Vec<(&str, &Attr<'_>)> = e.attributes.iter().map(|(k, v)| (*k, v)).collect();
    attributes.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    object(out, attributes, attribute)?;
    out.extend_from_slice(b",\"decision\":");
    json::string(out, e.decision);
    out.extend_from_slice(b",\"kind\":");
    json::string(out, &w.kinds[e.kind]);
    out.extend_from_slice(b",\"latency_ms\":");
    json::float(out, e.latency_ms); // finite: the decode checked it
    out.extend_from_slice(b",\"parent_span_id\":");
    str_or_null(out, e.parent_span_id);
    out.extend_from_slice(b",\"policy_name\":");
    str_or_null(out, e.policy_name);
    if let Some(v) = e.policy_version {
        out.extend_from_slice(b",\"policy_version\":");
        json::string(out, v);
    }
    let [name, instance_id, host, library] = e.producer;
    out.extend_from_slice(b",\"producer\":{\"host\":");
    json::string(out, host);
    out.extend_from_slice(b",\"instance_id\":");
    json::string(out, instance_id);
    out.extend_from_slice(b",\"library\":");
    json::string(out, library);
    out.extend_from_slice(b",\"name\":");
    json::string(out, name);
    out.extend_from_slice(b"},\"reason\":");
    json::string(out, e.reason);
    out.extend_from_slice(b",\"resource\":");
    str_or_null(out, e.resource);
    if let Some(x) = e.risk_score {
        out.extend_from_slice(b",\"risk_score\":");
        json::float(out, x); // within [0, 1]: the decode checked it
    }
    out.extend_from_slice(b",\"schema_version\":");
    json::string(out, e.schema_version);
    out.extend_from_slice(b",\"session_id\":");
    str_or_null(out, e.session_id);
    out.extend_from_slice(b",\"severity\":");
    json::string(out, e.severity);
    out.extend_from_slice(b",\"span_id\":");
    str_or_null(out, e.span_id);
    if let Some(t) = e.tenant_id {
        out.extend_from_slice(b",\"tenant_id\":");
        json::string(out, t);
    }
    out.extend_from_slice(b",\"trace_id\":");
    str_or_null(out, e.trace_id);
    out.push(b'}');
    Some(())
}

/// `_ledger._json_value` of an attribute value as the Python decode makes it.
fn attribute(out: &mut Vec<u8>, v: &Attr<'_>) -> Option<()> {
    match v {
        Attr::Null => out.extend_from_slice(b"null"),
        Attr::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Attr::Long(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Attr::Double(x) if x.is_nan() => out.extend_from_slice(b"\"NaN\""),
        Attr::Double(x) if x.is_infinite() => out.extend_from_slice(if *x > 0.0 { b"\"Infinity\"" } else { b"\"-Infinity\"" }),
        Attr::Double(x) => json::float(out, *x),
        Attr::Str(s) => json::string(out, s),
        Attr::Bytes(b) => {
            out.extend_from_slice(b"{\"base64\":");
            b64_or_null(out, Some(b));
            out.push(b'}');
        }
        Attr::Json(t) => json::reencode_sorted(out, t).ok()?,
    }
    Some(())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LedgerFormat>()?;
    m.add_function(wrap_pyfunction!(_set_draft_panic_probe, m)?)?;
    m.add_class::<LedgerDraft>()
}
