//! The otlp sink's mapping, compiled: delivered records straight to one `ExportLogsServiceRequest`
//! (`otlp.rs` writes it), without a Python row or attribute dict per event.
//!
//! The reference is `consumers/sinks/_otlp.py` (`_row`, `log_attributes`, `_trace_ids`) feeding
//! `_otlp_request.RequestEncoder.encode`; the mapping's tables (event field → attribute key, the
//! producer's, the prefix of the event's own attributes) come from there once per sink, and the
//! severity number from its `severity()` (called once per distinct word in a batch). Anything the
//! reference might map differently — a value that is not exactly a type the event model produces,
//! an integer beyond 64 bits, a negative time, a trace id that is not 32 hex digits, nesting
//! deeper than 100 — raises TypeError, and the sink maps that batch on the Python path.
//! `tests/unit/test_sink_otlp_native.py` holds the two to the same bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::ledger::{header_pair, write as write_json, J};
use crate::otlp::{request, Log, Row, Value};
use crate::otlp_draft::{LogFormat, OtlpDraft, OtlpLogFormat};

const MAX_DEPTH: usize = 100;

fn defer(what: &str) -> PyErr {
    PyTypeError::new_err(format!("otlp mapping: {what} is left to the Python path"))
}

fn text(o: &Bound<'_, PyAny>) -> PyResult<String> {
    let s = o.downcast_exact::<PyString>().map_err(|_| defer("a text that is not exactly a str"))?;
    s.to_str().map(str::to_owned).map_err(|_| defer("a lone surrogate"))
}

/// Python's `str.isspace()`: what `str.strip()` removes.
pub(crate) fn py_space(c: char) -> bool {
    matches!(c, '\t'..='\r' | '\x1c'..='\x20' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}'
        | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
}

/// An attribute value as `_otlp_request` types it (bool before int: a Python bool is an int).
fn scalar(v: &Bound<'_, PyAny>) -> PyResult<Option<Value>> {
    Ok(Some(if v.is_instance_of::<PyBool>() {
        Value::Bool(v.extract()?)
    } else if v.is_instance_of::<PyString>() {
        Value::Str(v.downcast::<PyString>()?.to_str().map_err(|_| defer("a lone surrogate"))?.to_owned())
    } else if v.is_instance_of::<PyInt>() {
        Value::Int(v.extract().map_err(|_| defer("an integer beyond 64 bits"))?)
    } else if v.is_instance_of::<PyFloat>() {
        Value::Double(v.extract()?)
    } else if v.is_instance_of::<PyBytes>() {
        Value::Bytes(v.downcast::<PyBytes>()?.as_bytes().to_vec())
    } else {
        return Ok(None);
    }))
}

/// The W3C traceparent `_otlp._parse_traceparent` accepts: (trace id, span id, flags) as hex text.
pub(crate) fn parse_traceparent(raw: &[u8]) -> Option<(&str, &str, u32)> {
    if !raw.is_ascii() {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?.trim_matches(py_space);
    let b = text.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    // ([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?, fullmatch ('.' is not '\n')
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace, span, flags) = (&b[..2], &b[3..35], &b[36..52], &b[53..55]);
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) {
        return None;
    }
    let rest = &b[55..];
    if !rest.is_empty() && (rest[0] != b'-' || rest.contains(&b'\n')) {
        return None;
    }
    if version == b"ff" || (version == b"00" && !rest.is_empty()) {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || span.iter().all(|&c| c == b'0') {
        return None;
    }
    let flags = u32::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()? & 0xff;
    Some((&text[3..35], &text[36..52], flags))
}

/// A trace or span id of `digits` lowercase hex digits, as a number (None: anything else).
pub(crate) fn hex<T>(s: &str, digits: usize, parse: fn(&str, u32) -> Result<T, std::num::ParseIntError>) -> Option<T> {
    if s.len() == digits && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        parse(s, 16).ok()
    } else {
        None
    }
}

fn hex_id<T>(s: &str, digits: usize, parse: fn(&str, u32) -> Result<T, std::num::ParseIntError>) -> PyResult<T> {
    hex(s, digits, parse).ok_or_else(|| defer("a trace or span id that is not lowercase hex of its length"))
}

/// Maps delivered records to OTLP log records and writes the request; built once per sink.
#[pyclass(module = "govbus._native", frozen)]
pub struct OtlpMapper {
    resource: Vec<u8>,
    resource_schema_url: String,
    scope: Vec<u8>,
    scope_schema_url: String,
    max_attributes: usize,
    event_attributes: Vec<(Py<PyString>, String)>,
    producer_attributes: Vec<(Py<PyString>, String)>,
    prefix: String,
    severity: Py<PyAny>,
    frozen_dict: Py<PyType>,
    frozen_list: Py<PyType>,
    /// The mapping records were drafted for at intake (their log records are taken as drafted).
    log_format: Option<Arc<LogFormat>>,
}

struct Ctx<'a, 'py> {
    m: &'a OtlpMapper,
    frozen_dict: Bound<'py, PyType>,
    frozen_list: Bound<'py, PyType>,
    severities: HashMap<String, i32>,
    now_ns: u64,
}

impl<'a, 'py> Ctx<'a, 'py> {
    /// `json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))` as a tree.
    fn json(&self, o: &Bound<'py, PyAny>, depth: usize) -> PyResult<J> {
        if depth > MAX_DEPTH {
            return Err(defer("nesting deeper than 100"));
        }
        if o.is_none() {
            return Ok(J::Null);
        }
        if let Ok(b) = o.downcast_exact::<PyBool>() {
            return Ok(J::Bool(b.is_true()));
        }
        if o.is_exact_instance_of::<PyString>() {
            return Ok(J::Str(text(o)?.into()));
        }
        if o.is_exact_instance_of::<PyInt>() {
            return o.extract::<i64>().map(J::Int).map_err(|_| defer("an integer beyond 64 bits"));
        }
        if let Ok(f) = o.downcast_exact::<PyFloat>() {
            let x = f.value();
            return if x.is_finite() { Ok(J::Float(x)) } else { Err(defer("a non-finite float")) };
        }
        let t = o.get_type();
        if t.is(&self.frozen_dict) || o.is_exact_instance_of::<PyDict>() {
            let d = o.downcast::<PyDict>()?;
            let mut members = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                members.push((text(&k)?.into(), self.json(&v, depth + 1)?));
            }
            return Ok(J::Obj(members));
        }
        if t.is(&self.frozen_list) || o.is_exact_instance_of::<PyList>() {
            let l = o.downcast::<PyList>()?;
            return l.iter().map(|v| self.json(&v, depth + 1)).collect::<PyResult<Vec<J>>>().map(J::Arr);
        }
        if let Ok(t) = o.downcast_exact::<PyTuple>() {
            return t.iter().map(|v| self.json(&v, depth + 1)).collect::<PyResult<Vec<J>>>().map(J::Arr);
        }
        Err(defer("a value of another type"))
    }

    /// `_otlp._row` of one record.
    fn row(&mut self, py: Python<'py>, record: &Bound<'py, PyAny>) -> PyResult<Row<'a>> {
        let m: &'a OtlpMapper = self.m;
        let e = record.getattr(intern!(py, "event"))?;
        let a = record.getattr(intern!(py, "attributes"))?;
        let mut attrs: Vec<(Cow<'a, str>, Value)> = Vec::with_capacity(40);
        let put = |attrs: &mut Vec<(Cow<'a, str>, Value)>, key: &'a str, v: &Bound<'py, PyAny>| -> PyResult<()> {
            match scalar(v)? {
                Some(v) => attrs.push((Cow::Borrowed(key), v)),
                None => return Err(defer("an attribute value of another type")),
            }
            Ok(())
        };
        put(&mut attrs, "cloudevents.event_id", &a.getattr(intern!(py, "id"))?)?;
        put(&mut attrs, "cloudevents.event_source", &a.getattr(intern!(py, "source"))?)?;
        let event_name = a.getattr(intern!(py, "type"))?;
        put(&mut attrs, "cloudevents.event_type", &event_name)?;
        put(&mut attrs, "cloudevents.event_spec_version", &a.getattr(intern!(py, "specversion"))?)?;
        let subject = a.getattr(intern!(py, "subject"))?;
        if !subject.is_none() {
            put(&mut attrs, "cloudevents.event_subject", &subject)?;
        }
        for (name, key) in &m.event_attributes {
            let v = e.getattr(name.bind(py))?;
            if !v.is_none() {
                put(&mut attrs, key, &v)?;
            }
        }
        let kind = e.getattr(intern!(py, "kind"))?.getattr(intern!(py, "value"))?;
        put(&mut attrs, "governance.kind", &kind)?;
        put(&mut attrs, "governance.verdict", &record.getattr(intern!(py, "verdict"))?)?;
        attrs.push(("messaging.system".into(), Value::Str("kafka".into())));
        put(&mut attrs, "messaging.destination.name", &record.getattr(intern!(py, "topic"))?)?;
        let partition = record.getattr(intern!(py, "partition"))?;
        if !partition.is_exact_instance_of::<PyInt>() {
            return Err(defer("a partition that is not exactly an int"));
        }
        attrs.push(("messaging.destination.partition.id".into(), Value::Str(partition.str()?.to_str()?.to_owned())));
        put(&mut attrs, "messaging.kafka.offset", &record.getattr(intern!(py, "offset"))?)?;
        if record.getattr(intern!(py, "flagged"))?.is_truthy()? {
            attrs.push(("governance.flagged".into(), Value::Bool(true)));
            let detail = record.getattr(intern!(py, "verdict_detail"))?;
            if detail.is_truthy()? {
                put(&mut attrs, "governance.verdict_detail", &detail)?;
            }
        }
        let producer = e.getattr(intern!(py, "producer"))?;
        if !producer.is_none() {
            for (name, key) in &m.producer_attributes {
                put(&mut attrs, key, &producer.getattr(name.bind(py))?)?;
            }
        }
        let own = e.getattr(intern!(py, "attributes"))?;
        let own = own.downcast::<PyDict>().map_err(|_| defer("event attributes that are not a dict"))?;
        for (k, v) in own.iter() {
            if v.is_none() {
                continue;
            }
            let key = format!("{}{}", self.m.prefix, text(&k)?);
            let value = match scalar(&v)? {
                Some(s) => s,
                None => {
                    let mut out = Vec::new();
                    write_json(&mut out, &self.json(&v, 0)?);
                    Value::Str(String::from_utf8(out).map_err(|_| defer("JSON text"))?)
                }
            };
            attrs.push((Cow::Owned(key), value));
        }

        // time: int(occurred_at.timestamp()) * 10**9 + microsecond * 1000 (`_otlp._ns`)
        let moment = e.getattr(intern!(py, "occurred_at"))?;
        let seconds: f64 = moment.call_method0(intern!(py, "timestamp"))?.extract()?;
        let micro: i64 = moment.getattr(intern!(py, "microsecond"))?.extract()?;
        if !seconds.is_finite() || seconds.abs() > 1e15 {
            return Err(defer("a time out of range"));
        }
        let time_ns = u64::try_from((seconds.trunc() as i128) * 1_000_000_000 + i128::from(micro) * 1_000)
            .map_err(|_| defer("a time outside fixed64 (before 1970 or past 2554)"))?;
        let ts = record.getattr(intern!(py, "timestamp_ms"))?;
        let observed = if ts.is_none() {
            self.now_ns
        } else {
            if !ts.is_exact_instance_of::<PyInt>() {
                return Err(defer("a Kafka timestamp that is not exactly an int"));
            }
            let ms: i64 = ts.extract().map_err(|_| defer("a timestamp beyond 64 bits"))?;
            u64::try_from(i128::from(ms) * 1_000_000).map_err(|_| defer("a Kafka timestamp out of range"))?
        };

        // trace ids (`_otlp._trace_ids`): the event's own, else the record's traceparent
        let mut raw_tp: Option<Bound<'py, PyAny>> = None;
        for pair in record.getattr(intern!(py, "headers"))?.try_iter()? {
            let pair = pair?;
            let (name, value) = header_pair(&pair)?;
            if let Ok(n) = name.downcast::<PyString>() {
                if n.to_str().is_ok_and(|n| n == "traceparent") {
                    raw_tp = Some(value);
                }
            }
        }
        let raw_tp = match raw_tp {
            Some(r) if !r.is_none() => {
                Some(r.downcast_exact::<PyBytes>().map_err(|_| defer("a traceparent that is not bytes"))?.clone())
            }
            _ => None,
        };
        let parsed = raw_tp.as_ref().and_then(|r| parse_traceparent(r.as_bytes()));
        let trace = e.getattr(intern!(py, "trace_id"))?;
        let (trace_id, span_id, flags) = if !trace.is_none() {
            let trace = text(&trace)?;
            let span = e.getattr(intern!(py, "span_id"))?;
            let span = if span.is_truthy()? { hex_id(&text(&span)?, 16, u64::from_str_radix)? } else { 0 };
            let flags = match parsed {
                Some((t, _, f)) if t == trace => f,
                _ => 0,
            };
            (hex_id(&trace, 32, u128::from_str_radix)?, span, flags)
        } else if let Some((t, s, f)) = parsed {
            (hex_id(t, 32, u128::from_str_radix)?, hex_id(s, 16, u64::from_str_radix)?, f)
        } else {
            (0, 0, 0)
        };

        let sev = e.getattr(intern!(py, "severity"))?;
        let sev_text = text(&sev)?;
        let severity_number = match self.severities.get(&sev_text) {
            Some(n) => *n,
            None => {
                let n: i32 = self.m.severity.bind(py).call1((&sev,))?.extract()?;
                self.severities.insert(sev_text.clone(), n);
                n
            }
        };
        let reason = text(&e.getattr(intern!(py, "reason"))?)?;
        let body = if reason.is_empty() {
            let action = text(&e.getattr(intern!(py, "action"))?)?;
            let decision = text(&e.getattr(intern!(py, "decision"))?)?;
            format!("{} {action} {decision}", text(&kind)?).trim_matches(py_space).to_owned()
        } else {
            reason
        };
        Ok(Row {
            time_unix_nano: time_ns,
            observed_time_unix_nano: observed,
            trace_id,
            span_id,
            flags,
            severity_number,
            severity_text: sev_text,
            body,
            event_name: text(&event_name)?,
            attributes: attrs,
        })
    }
}

#[pymethods]
impl OtlpMapper {
    /// `event_attributes` / `producer_attributes`: (field name, attribute key) in the mapping's
    /// order; `severity`: the OTel severity number of a severity word.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (resource, resource_schema_url, scope, scope_schema_url, max_attributes, event_attributes,
                        producer_attributes, prefix, severity, frozen_types, log_format=None))]
    fn new(
        resource: Vec<u8>,
        resource_schema_url: String,
        scope: Vec<u8>,
        scope_schema_url: String,
        max_attributes: usize,
        event_attributes: Vec<(Py<PyString>, String)>,
        producer_attributes: Vec<(Py<PyString>, String)>,
        prefix: String,
        severity: Py<PyAny>,
        frozen_types: (Py<PyType>, Py<PyType>),
        log_format: Option<PyRef<'_, OtlpLogFormat>>,
    ) -> PyResult<Self> {
        // The mapping pushes attributes without looking for an earlier one of the same key: the
        // fixed keys must be distinct and none may start with the prefix of the event's own.
        let mut fixed: Vec<&str> = vec![
            "cloudevents.event_id",
            "cloudevents.event_source",
            "cloudevents.event_type",
            "cloudevents.event_spec_version",
            "cloudevents.event_subject",
            "governance.kind",
            "governance.verdict",
            "messaging.system",
            "messaging.destination.name",
            "messaging.destination.partition.id",
            "messaging.kafka.offset",
            "governance.flagged",
            "governance.verdict_detail",
        ];
        fixed.extend(event_attributes.iter().map(|(_, k)| k.as_str()));
        fixed.extend(producer_attributes.iter().map(|(_, k)| k.as_str()));
        let mut seen = std::collections::HashSet::new();
        if prefix.is_empty() || !fixed.iter().all(|k| seen.insert(*k) && !k.starts_with(&prefix)) {
            return Err(PyValueError::new_err("otlp mapping: attribute keys overlap"));
        }
        Ok(OtlpMapper {
            resource,
            resource_schema_url,
            scope,
            scope_schema_url,
            max_attributes,
            event_attributes,
            producer_attributes,
            prefix,
            severity,
            frozen_dict: frozen_types.0,
            frozen_list: frozen_types.1,
            log_format: log_format.map(|f| Arc::clone(&f.format)),
        })
    }

    /// The serialized request of `records` (delivered records); `now_ns`: the observed time of
    /// records without a Kafka timestamp. TypeError: a batch left to the Python path.
    fn encode<'py>(&self, py: Python<'py>, records: &Bound<'py, PyList>, now_ns: u64) -> PyResult<Bound<'py, PyBytes>> {
        let mut ctx = Ctx {
            m: self,
            frozen_dict: self.frozen_dict.bind(py).clone(),
            frozen_list: self.frozen_list.bind(py).clone(),
            severities: HashMap::new(),
            now_ns,
        };
        // A record drafted for this mapping is taken as drafted; the drafts are held (as Python
        // objects) while the request is written without the GIL.
        let mut drafts: Vec<Option<Bound<'py, OtlpDraft>>> = Vec::with_capacity(records.len());
        let mut mapped = Vec::with_capacity(records.len());
        for record in records.iter() {
            let draft = self.drafted(py, &record)?;
            mapped.push(if draft.is_some() { None } else { Some(ctx.row(py, &record)?) });
            drafts.push(draft);
        }
        let rows: Vec<Log<'_>> = mapped
            .into_iter()
            .zip(&drafts)
            .map(|(row, draft)| match (row, draft) {
                (Some(row), _) => Log::Row(row),
                (None, Some(d)) => Log::Encoded(&d.get().record),
                (None, None) => unreachable!("a record is either mapped or drafted"),
            })
            .collect();
        let encoded = py.allow_threads(|| {
            catch_unwind(AssertUnwindSafe(|| {
                request(
                    &self.resource,
                    &self.resource_schema_url,
                    &self.scope,
                    &self.scope_schema_url,
                    &rows,
                    self.max_attributes,
                )
            }))
        });
        match encoded {
            Ok(bytes) => Ok(PyBytes::new(py, &bytes)),
            Err(_) => Err(PyRuntimeError::new_err("otlp request encoding panicked")),
        }
    }
}

impl OtlpMapper {
    /// The log record drafted for `record` at intake (`NativeRecord._draft`), if it is for this
    /// mapping and still applies: the record's verdict is the drafted one and it is not flagged.
    fn drafted<'py>(&self, py: Python<'py>, record: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, OtlpDraft>>> {
        let Some(format) = &self.log_format else { return Ok(None) };
        let Ok(draft) = record.getattr(intern!(py, "_draft")) else { return Ok(None) };
        let Ok(draft) = draft.downcast_into_exact::<OtlpDraft>() else { return Ok(None) };
        let d = draft.get();
        if !Arc::ptr_eq(&d.format, format) || record.getattr(intern!(py, "flagged"))?.is_truthy()? {
            return Ok(None);
        }
        let verdict = record.getattr(intern!(py, "verdict"))?;
        let same = verdict.downcast::<PyString>().is_ok_and(|v| v.to_str().is_ok_and(|v| v == d.verdict));
        Ok(same.then_some(draft))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<OtlpMapper>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        let tp = format!("00-{}-{}-01", "ab".repeat(16), "cd".repeat(8));
        assert_eq!(parse_traceparent(tp.as_bytes()), Some((&*"ab".repeat(16), &*"cd".repeat(8), 1)));
        assert_eq!(parse_traceparent(format!(" \x1c{tp}\t").as_bytes()).map(|p| p.2), Some(1));
        assert_eq!(parse_traceparent(format!("{tp}-x").as_bytes()), None); // version 00 has no tail
        let v1 = format!("01{}-x", &tp[2..]);
        assert_eq!(parse_traceparent(v1.as_bytes()).map(|p| p.2), Some(1));
        assert_eq!(parse_traceparent(format!("{v1}\ny").as_bytes()), None);
        assert_eq!(parse_traceparent(format!("ff{}", &tp[2..]).as_bytes()), None);
        assert_eq!(parse_traceparent(tp.to_uppercase().as_bytes()), None);
    }
}
