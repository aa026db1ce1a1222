//! OTLP logs: one `ExportLogsServiceRequest` (protobuf wire format) per batch, for the otlp sink.
//!
//! Written out by hand rather than with prost: the request needs six message types, all of whose
//! fields are scalars, strings or nested messages, so the writer is a few varint/length helpers;
//! prost would need the .proto files and protoc at build time. The Python side
//! (`consumers/sinks/_otlp_request.py`) keeps the opentelemetry-proto generated-class encoding
//! as the reference and fallback, and `tests/unit/test_sink_otlp_request.py` decodes both with
//! opentelemetry-proto and requires equal messages.
//!
//! Field numbers: opentelemetry-proto `collector/logs/v1`, `logs/v1`, `common/v1`.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// An attribute value (`AnyValue`); the sink's attributes are only ever these scalars.
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
}

/// One log record, as the sink maps an event.
pub struct Row<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub trace_id: u128, // 0: none
    pub span_id: u64,   // 0: none
    pub flags: u32,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: String,
    pub event_name: String,
    pub attributes: Vec<(Cow<'a, str>, Value)>, // keys: the mapping's own, borrowed
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

// proto3 scalars without presence are left out when they hold their default.
fn str_field(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(buf, field, s.as_bytes());
    }
}

fn fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32_field(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

/// `AnyValue`: a oneof, so the member is written even when it holds its default.
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Str(s) => bytes_field(buf, 1, s.as_bytes()),
        Value::Bool(b) => {
            tag(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        Value::Int(i) => {
            tag(buf, 3, VARINT);
            varint(buf, *i as u64); // int64: negatives as their two's complement, 10 bytes
        }
        Value::Double(d) => {
            tag(buf, 4, FIXED64);
            buf.extend_from_slice(&d.to_le_bytes());
        }
        Value::Bytes(b) => bytes_field(buf, 7, b),
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// The encoded length of an `AnyValue` (`any_value` writes it).
fn any_value_len(value: &Value) -> usize {
    let len_field = |n: usize| 1 + varint_len(n as u64) + n;
    match value {
        Value::Str(s) => len_field(s.len()),
        Value::Bool(_) => 2,
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Double(_) => 9,
        Value::Bytes(b) => len_field(b.len()),
    }
}

/// A `KeyValue` attribute, its length computed rather than written to a scratch buffer first
/// (two nested messages per attribute: their allocations were most of the writer's time).
fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    let value_len = any_value_len(value);
    let key_len = if key.is_empty() { 0 } else { 1 + varint_len(key.len() as u64) + key.len() };
    tag(buf, field, LEN);
    varint(buf, (key_len + 1 + varint_len(value_len as u64) + value_len) as u64);
    str_field(buf, 1, key);
    tag(buf, 2, LEN);
    varint(buf, value_len as u64);
    any_value(buf, value);
}

pub(crate) fn log_record(buf: &mut Vec<u8>, row: &Row<'_>, max_attributes: usize) {
    fixed64_field(buf, 1, row.time_unix_nano);
    varint_field(buf, 2, row.severity_number as u64);
    str_field(buf, 3, &row.severity_text);
    // body: AnyValue{string_value}
    tag(buf, 5, LEN);
    varint(buf, (1 + varint_len(row.body.len() as u64) + row.body.len()) as u64);
    bytes_field(buf, 1, row.body.as_bytes());
    for (key, value) in row.attributes.iter().take(max_attributes) {
        key_value(buf, 6, key, value);
    }
    varint_field(
        buf,
        7,
        row.attributes.len().saturating_sub(max_attributes) as u64,
    );
    fixed32_field(buf, 8, row.flags);
    if row.trace_id != 0 {
        bytes_field(buf, 9, &row.trace_id.to_be_bytes());
    }
    if row.span_id != 0 {
        bytes_field(buf, 10, &row.span_id.to_be_bytes());
    }
    fixed64_field(buf, 11, row.observed_time_unix_nano);
    str_field(buf, 12, &row.event_name);
}

/// A log record of a request: mapped here, or encoded already (drafted at intake, `otlp_draft.rs`).
pub enum Log<'a> {
    Row(Row<'a>),
    Encoded(&'a [u8]),
}

/// The serialized request: one ResourceLogs (`resource`, an encoded `Resource`) holding one
/// ScopeLogs (`scope`, an encoded `InstrumentationScope`) with every row's log record.
pub fn request(
    resource: &[u8],
    resource_schema_url: &str,
    scope: &[u8],
    scope_schema_url: &str,
    rows: &[Log<'_>],
    max_attributes: usize,
) -> Vec<u8> {
    // The log records first (each through one reused scratch buffer for its length), then the
    // two enclosing messages around them, their lengths known: no copy of the whole batch.
    let mut records = Vec::with_capacity(rows.len() * 1536);
    let mut scratch = Vec::with_capacity(4096);
    for row in rows {
        match row {
            Log::Row(row) => {
                scratch.clear();
                log_record(&mut scratch, row, max_attributes);
                bytes_field(&mut records, 2, &scratch);
            }
            Log::Encoded(encoded) => bytes_field(&mut records, 2, encoded),
        }
    }
    let len_field = |n: usize| 1 + varint_len(n as u64) + n;
    let opt_str = |s: &str| if s.is_empty() { 0 } else { len_field(s.len()) };
    let scope_logs = len_field(scope.len()) + records.len() + opt_str(scope_schema_url);
    let resource_logs = len_field(resource.len()) + len_field(scope_logs) + opt_str(resource_schema_url);
    let mut out = Vec::with_capacity(len_field(resource_logs));
    tag(&mut out, 1, LEN);
    varint(&mut out, resource_logs as u64);
    bytes_field(&mut out, 1, resource);
    tag(&mut out, 2, LEN);
    varint(&mut out, scope_logs as u64);
    bytes_field(&mut out, 1, scope);
    out.extend_from_slice(&records);
    str_field(&mut out, 3, scope_schema_url);
    str_field(&mut out, 3, resource_schema_url);
    debug_assert_eq!(out.len(), len_field(resource_logs));
    out
}

fn extract_value(v: &Bound<'_, PyAny>) -> PyResult<Value> {
    // bool before int: a Python bool is an int.
    if v.is_instance_of::<PyBool>() {
        Ok(Value::Bool(v.extract()?))
    } else if v.is_instance_of::<PyString>() {
        Ok(Value::Str(v.extract()?))
    } else if v.is_instance_of::<PyInt>() {
        Ok(Value::Int(v.extract()?))
    } else if v.is_instance_of::<PyFloat>() {
        Ok(Value::Double(v.extract()?))
    } else if v.is_instance_of::<PyBytes>() {
        Ok(Value::Bytes(v.extract()?))
    } else {
        Err(PyTypeError::new_err(format!(
            "an OTLP attribute value cannot be a {}",
            v.get_type().name()?
        )))
    }
}

fn extract_row(item: &Bound<'_, PyAny>) -> PyResult<Row<'static>> {
    let t = item.downcast::<PyTuple>()?;
    let attrs = t.get_item(9)?;
    let attrs = attrs.downcast::<PyDict>()?;
    let mut attributes = Vec::with_capacity(attrs.len());
    for (k, v) in attrs.iter() {
        attributes.push((Cow::Owned(k.extract::<String>()?), extract_value(&v)?));
    }
    Ok(Row {
        time_unix_nano: t.get_item(0)?.extract()?,
        observed_time_unix_nano: t.get_item(1)?.extract()?,
        trace_id: t.get_item(2)?.extract()?,
        span_id: t.get_item(3)?.extract()?,
        flags: t.get_item(4)?.extract()?,
        severity_number: t.get_item(5)?.extract()?,
        severity_text: t.get_item(6)?.extract()?,
        body: t.get_item(7)?.extract()?,
        event_name: t.get_item(8)?.extract()?,
        attributes,
    })
}

/// The serialized `ExportLogsServiceRequest` of `rows` (tuples as `_otlp_request.Row`). A value
/// of another type raises TypeError, so the caller can take its reference path for the batch.
#[pyfunction]
#[pyo3(signature = (resource, resource_schema_url, scope, scope_schema_url, rows, max_attributes))]
pub fn otlp_logs_request<'py>(
    py: Python<'py>,
    resource: &[u8],
    resource_schema_url: &str,
    scope: &[u8],
    scope_schema_url: &str,
    rows: &Bound<'py, PyList>,
    max_attributes: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let rows = rows
        .iter()
        .map(|r| extract_row(&r).map(Log::Row))
        .collect::<PyResult<Vec<Log>>>()?;
    let encoded = py.allow_threads(|| {
        catch_unwind(AssertUnwindSafe(|| {
            request(
                resource,
                resource_schema_url,
                scope,
                scope_schema_url,
                &rows,
                max_attributes,
            )
        }))
    });
    match encoded {
        Ok(bytes) => Ok(PyBytes::new(py, &bytes)),
        Err(_) => Err(PyRuntimeError::new_err("otlp request encoding panicked")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_defaults() {
        let mut b = Vec::new();
        varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        let mut b = Vec::new();
        str_field(&mut b, 3, "");
        fixed64_field(&mut b, 1, 0);
        assert!(b.is_empty());
        let mut b = Vec::new();
        any_value(&mut b, &Value::Int(-1));
        assert_eq!(b.len(), 11); // tag + ten-byte varint
    }
}
