//! The otlp sink's log record drafted from the native decode (`record::Decoded`), in the intake's
//! pass without the GIL, as the audit ledger's entries are (`ledger_draft.rs`): the encoded
//! `LogRecord` `_otlp._row` + `log_attributes` map a record to, so the sink neither builds a
//! Python event per record nor reads one back; its `OtlpMapper` puts the drafted records into the
//! request as they are.
//!
//! What the mapping needs besides the record is fixed per sink: its tables (event field and
//! producer field → attribute key), the prefix of the event's own attributes, `max_attributes` and
//! the severity table (`OtlpLogFormat`, made from `_otlp` once per sink). A record whose log record
//! depends on more than that is not drafted and the mapper maps it from its Python objects, as
//! before: no Kafka timestamp (the observed time is the batch's), a time before 1970 or past the
//! exact range of a double's microseconds, a severity word that is not ASCII, an event field the
//! tables name and this module does not know, a nested JSON integer beyond 64 bits.
//! `tests/unit/test_otlp_draft.py` holds requests of drafted records to the Python mapping, byte
//! for byte.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use pyo3::prelude::*;

use crate::event::{Attr, Event, Writer};
use crate::json;
use crate::otlp::{log_record, Row, Value};
use crate::otlp_map::{hex, parse_traceparent, py_space};
use crate::record::{Decoded, Source};

/// One otlp sink's mapping constants (`_otlp.native_log_format`).
#[pyclass(module = "govbus._native", frozen)]
pub struct OtlpLogFormat {
    pub(crate) format: Arc<LogFormat>,
}

pub struct LogFormat {
    max_attributes: usize,
    event_fields: Vec<(String, String)>,
    producer_fields: Vec<(String, String)>,
    prefix: String,
    /// Severity word (lowercase) → OTel severity number; `unknown` for any other word.
    severities: HashMap<String, i32>,
    unknown: i32,
}

#[pymethods]
impl OtlpLogFormat {
    #[new]
    fn new(
        max_attributes: usize,
        event_attributes: Vec<(String, String)>,
        producer_attributes: Vec<(String, String)>,
        prefix: String,
        severities: HashMap<String, i32>,
        unknown: i32,
    ) -> Self {
        let format = LogFormat { max_attributes, event_fields: event_attributes, producer_fields: producer_attributes, prefix, severities, unknown };
        OtlpLogFormat { format: Arc::new(format) }
    }
}

impl LogFormat {
    /// The otlp sink's tables (`_otlp._EVENT_ATTRIBUTES`, `_PRODUCER_ATTRIBUTES`) and severity
    /// words, for the fuzz target and the Rust tests.
    pub fn for_tests(max_attributes: usize) -> Self {
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        LogFormat {
            max_attributes,
            event_fields: pairs(&[
                ("agent_id", "gen_ai.agent.id"), ("severity", "governance.severity"), ("action", "governance.action"),
                ("decision", "governance.decision"), ("reason", "governance.reason"), ("agent_did", "governance.agent.did"),
                ("session_id", "session.id"), ("resource", "governance.resource"), ("policy_name", "governance.policy.name"),
                ("latency_ms", "governance.latency_ms"), ("parent_span_id", "governance.parent_span_id"),
                ("schema_version", "governance.schema_version"), ("tenant_id", "governance.tenant_id"),
                ("policy_version", "governance.policy.version"), ("risk_score", "governance.risk_score"),
            ]),
            producer_fields: pairs(&[
                ("name", "governance.producer.name"), ("instance_id", "governance.producer.instance_id"),
                ("host", "governance.producer.host"), ("library", "governance.producer.library"),
            ]),
            prefix: "governance.attributes.".into(),
            severities: [("info", 9), ("high", 17), ("critical", 21)].iter().map(|(w, n)| (w.to_string(), *n)).collect(),
            unknown: 0,
        }
    }
}

/// A record's drafted log record; `format`: the sink mapping it was drafted for, `verdict`: the
/// verdict it carries (the record's must still be it, unflagged).
#[pyclass(module = "govbus._native", frozen)]
pub struct OtlpDraft {
    pub record: Vec<u8>,
    pub verdict: String,
    pub format: Arc<LogFormat>,
}

/// The event field `name` as `log_attributes` puts it (None: the field is None; Err: a field this
/// module does not know).
fn field<'a>(e: &Event<'a>, name: &str) -> Result<Option<Value>, ()> {
    let s = |v: &str| Some(Value::Str(v.to_owned()));
    let o = |v: Option<&str>| v.map(|v| Value::Str(v.to_owned()));
    Ok(match name {
        "agent_id" => s(e.agent_id),
        "severity" => s(e.severity),
        "action" => s(e.action),
        "decision" => s(e.decision),
        "reason" => s(e.reason),
        "agent_did" => o(e.agent_did),
        "session_id" => o(e.session_id),
        "resource" => o(e.resource),
        "policy_name" => o(e.policy_name),
        "latency_ms" => Some(Value::Double(e.latency_ms)),
        "trace_id" => o(e.trace_id),
        "span_id" => o(e.span_id),
        "parent_span_id" => o(e.parent_span_id),
        "schema_version" => s(e.schema_version),
        "tenant_id" => o(e.tenant_id),
        "policy_version" => o(e.policy_version),
        "risk_score" => e.risk_score.map(Value::Double),
        _ => return Err(()),
    })
}

/// `_otlp._attribute_value` of an event attribute as the Python decode makes it (None: left out).
fn attribute(v: &Attr<'_>) -> Option<Option<Value>> {
    Some(match v {
        Attr::Null => None,
        Attr::Bool(b) => Some(Value::Bool(*b)),
        Attr::Long(n) => Some(Value::Int(*n)),
        Attr::Double(x) => Some(Value::Double(*x)),
        Attr::Str(s) => Some(Value::Str((*s).to_owned())),
        Attr::Bytes(b) => Some(Value::Bytes(b.to_vec())),
        Attr::Json(t) => {
            // json.loads, then a scalar as itself and anything else as sorted JSON text
            let mut text = Vec::with_capacity(t.len());
            json::reencode_sorted(&mut text, t).ok()?;
            match text.first()? {
                b'{' | b'[' => Some(Value::Str(String::from_utf8(text).ok()?)),
                b'n' => None,
                b't' => Some(Value::Bool(true)),
                b'f' => Some(Value::Bool(false)),
                b'"' => Some(Value::Str(json::Parser::new(&text).string().ok()?)),
                _ => {
                    let lit = std::str::from_utf8(&text).ok()?;
                    if lit.contains(['.', 'e', 'E']) {
                        Some(Value::Double(lit.parse().ok()?)) // float.__repr__ round-trips
                    } else {
                        Some(Value::Int(lit.parse().ok()?)) // beyond 64 bits: not drafted
                    }
                }
            }
        }
    })
}

/// `_otlp._ns(event)`: `int(occurred_at.timestamp()) * 10**9 + microsecond * 1000`. The
/// timestamp is the microseconds over 10**6, correctly rounded: a double division of the two
/// when the microseconds are exactly a double (below 2**53, the year 2255).
fn time_ns(micros: i64) -> Option<u64> {
    if !(0..(1i64 << 53)).contains(&micros) {
        return None;
    }
    let seconds = (micros as f64 / 1e6).trunc() as u64;
    seconds.checked_mul(1_000_000_000)?.checked_add((micros % 1_000_000) as u64 * 1_000)
}

/// The encoded `LogRecord` of a record the decode rendered; None: it is mapped from its Python
/// objects instead (see the module docs).
pub fn draft(f: &LogFormat, d: &Decoded<'_>, w: &Writer, src: &Source<'_>, verdict: &str) -> Option<Vec<u8>> {
    let e = &d.event;
    let ce = |k: &str| d.ce.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let text = |k: &'static str, v: &str| (Cow::Borrowed(k), Value::Str(v.to_owned()));
    let mut attrs: Vec<(Cow<'_, str>, Value)> = Vec::with_capacity(40);
    attrs.push(text("cloudevents.event_id", ce("id")?));
    attrs.push(text("cloudevents.event_source", ce("source")?));
    let event_name = ce("type")?;
    attrs.push(text("cloudevents.event_type", event_name));
    attrs.push(text("cloudevents.event_spec_version", ce("specversion")?));
    if let Some(subject) = ce("subject") {
        attrs.push(text("cloudevents.event_subject", subject));
    }
    for (name, key) in &f.event_fields {
        if let Some(v) = field(e, name).ok()? {
            attrs.push((Cow::Borrowed(key.as_str()), v));
        }
    }
    let kind = w.kinds[e.kind].as_str();
    attrs.push(text("governance.kind", kind));
    attrs.push(text("governance.verdict", verdict));
    attrs.push(text("messaging.system", "kafka"));
    attrs.push(text("messaging.destination.name", src.topic));
    attrs.push((Cow::Borrowed("messaging.destination.partition.id"), Value::Str(src.partition.to_string())));
    attrs.push((Cow::Borrowed("messaging.kafka.offset"), Value::Int(src.offset?)));
    // Not flagged (a drafted record's verdict is "valid" or "unverified"): no flag attributes.
    let [name, instance_id, host, library] = e.producer;
    for (field, key) in &f.producer_fields {
        let v = match field.as_str() {
            "name" => name,
            "instance_id" => instance_id,
            "host" => host,
            "library" => library,
            _ => return None,
        };
        attrs.push((Cow::Borrowed(key.as_str()), Value::Str(v.to_owned())));
    }
    for (k, v) in &e.attributes {
        if let Some(v) = attribute(v)? {
            attrs.push((Cow::Owned(format!("{}{k}", f.prefix)), v));
        }
    }

    // _otlp._trace_ids: the event's own ids, else the record's last traceparent header.
    let raw = src.headers.iter().rev().find(|(n, _)| *n == "traceparent").and_then(|(_, v)| *v);
    let parsed = raw.and_then(parse_traceparent);
    let (trace_id, span_id, flags) = match e.trace_id {
        Some(trace) => {
            let flags = match parsed {
                Some((t, _, f)) if t == trace => f,
                _ => 0,
            };
            let span = match e.span_id {
                Some(s) if !s.is_empty() => hex(s, 16, u64::from_str_radix)?,
                _ => 0,
            };
            (hex(trace, 32, u128::from_str_radix)?, span, flags)
        }
        None => match parsed {
            Some((t, s, f)) => (hex(t, 32, u128::from_str_radix)?, hex(s, 16, u64::from_str_radix)?, f),
            None => (0, 0, 0),
        },
    };

    // severity(text).otel: the table's entry for text.strip().lower()
    let word = e.severity.trim_matches(py_space);
    if !word.is_ascii() {
        return None; // str.lower() of other text is Python's own
    }
    let severity_number = *f.severities.get(&word.to_ascii_lowercase()).unwrap_or(&f.unknown);
    let body = if e.reason.is_empty() {
        format!("{kind} {} {}", e.action, e.decision).trim_matches(py_space).to_owned()
    } else {
        e.reason.to_owned()
    };
    let observed = u64::try_from(i128::from(src.timestamp_ms?) * 1_000_000).ok()?;
    let row = Row {
        time_unix_nano: time_ns(e.occurred_at)?,
        observed_time_unix_nano: observed,
        trace_id,
        span_id,
        flags,
        severity_number,
        severity_text: e.severity.to_owned(),
        body,
        event_name: event_name.to_owned(),
        attributes: attrs,
    };
    let mut out = Vec::with_capacity(src.value.len() * 2 + 512);
    log_record(&mut out, &row, f.max_attributes);
    Some(out)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OtlpLogFormat>()?;
    m.add_class::<OtlpDraft>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(time_ns(0), Some(0));
        assert_eq!(time_ns(1_500_000), Some(1_500_000_000));
        assert_eq!(time_ns(-1), None);
        assert_eq!(time_ns(1 << 53), None);
    }
}
