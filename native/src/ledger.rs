//! The audit ledger's event entries, compiled: for a run of delivered records, each entry's
//! canonical JSON (keys sorted by code point, no whitespace, UTF-8), its SHA-256 and the hash chain
//! (`prev` is the previous entry's hash), as `consumers/sinks/_ledger.py`'s `seal(event_fields(…))`
//! writes them (ledger format 1, docs/audit-ledger.md).
//!
//! The records' Python objects are read once, with the GIL held, into a JSON tree; the trees are
//! then serialized, hashed and chained with the GIL released. Anything the reference might write
//! differently — a value that is not exactly a JSON type the event model produces (subclasses
//! other than the event's read-only dict and list, non-string keys, integers beyond 64 bits),
//! a lone surrogate, nesting deeper than 100 — raises `Defer`, and the Python writer seals that
//! run instead (it also raises whatever the reference raises). `tests/unit/test_ledger_native.py`
//! holds the two to the same bytes.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::Engine;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use sha2::{Digest, Sha256};

use crate::json;
use crate::ledger_draft::LedgerDraft;
use crate::message::ConsumedHeaders;

const MAX_DEPTH: usize = 100;

/// Text of a tree: the entry's own keys and constants are borrowed, the records' copied.
pub type Text = Cow<'static, str>;

/// A JSON value; objects keep their members unsorted (sorted when written).
pub enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64), // finite
    Str(Text),
    B64(String), // base64 text: never needs an escape
    Arr(Vec<J>),
    Obj(Vec<(Text, J)>),
}

/// Appends `j` as canonical JSON: `json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
pub fn write(out: &mut Vec<u8>, j: &J) {
    match j {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(true) => out.extend_from_slice(b"true"),
        J::Bool(false) => out.extend_from_slice(b"false"),
        J::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        J::Float(x) => json::float(out, *x),
        J::Str(s) => string(out, s),
        J::B64(s) => {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        J::Arr(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        J::Obj(members) => {
            // UTF-8 byte order is code-point order, which is how Python sorts str keys. The
            // entry's fixed objects are built in that order already: only check them.
            let mut sorted: Vec<&(Text, J)> = members.iter().collect();
            if !sorted.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()) {
                sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            }
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k);
                out.push(b':');
                write(out, v);
            }
            out.push(b'}');
        }
    }
}

/// `json::string`, with a fast path for the common string that needs no escape (ids, base64).
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        json::string(out, s);
    }
}

/// One sealed line (with its newline) of an entry, and its hash (hex): `_ledger.seal`.
pub fn seal(entry: &J) -> (Vec<u8>, String) {
    let mut body = Vec::with_capacity(4096);
    write(&mut body, entry);
    let digest = hex(&Sha256::digest(&body));
    close(&mut body, &digest);
    (body, digest)
}

/// Appends the hash member to an entry's canonical JSON (its closing brace goes after it).
fn close(body: &mut Vec<u8>, digest: &str) {
    body.pop();
    body.extend_from_slice(b",\"hash\":\"");
    body.extend_from_slice(digest.as_bytes());
    body.extend_from_slice(b"\"}\n");
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Seals `entries` in order from `seq`/`prev` (each entry's `prev` member is set here): the
/// joined lines and the new head.
pub fn chain(entries: &mut [J], prev: &str) -> (Vec<u8>, String) {
    let mut out = Vec::with_capacity(entries.len() * 3072);
    let mut head = prev.to_owned();
    for entry in entries.iter_mut() {
        head = seal_tree(&mut out, entry, head);
    }
    (out, head)
}

fn seal_tree(out: &mut Vec<u8>, entry: &mut J, prev: String) -> String {
    if let J::Obj(members) = entry {
        for (k, v) in members.iter_mut() {
            if k.as_ref() == "prev" {
                *v = J::Str(prev.clone().into());
            }
        }
    }
    let (line, digest) = seal(entry);
    out.extend_from_slice(&line);
    digest
}

/// An entry to seal: built here from the record's Python objects, or drafted at intake
/// (`ledger_draft.rs`) and numbered `seq`.
enum Entry {
    Tree(J),
    Draft(Py<LedgerDraft>, u64),
}

fn chain_entries(entries: &mut [Entry], prev: &str) -> (Vec<u8>, String) {
    let mut out = Vec::with_capacity(entries.len() * 3072);
    let mut head = prev.to_owned();
    let mut body = Vec::with_capacity(4096);
    for entry in entries.iter_mut() {
        head = match entry {
            Entry::Tree(j) => seal_tree(&mut out, j, head),
            Entry::Draft(d, seq) => {
                body.clear();
                d.get().fill(&mut body, *seq, &head);
                let digest = hex(&Sha256::digest(&body));
                close(&mut body, &digest);
                out.extend_from_slice(&body);
                digest
            }
        };
    }
    (out, head)
}

fn defer(what: &str) -> PyErr {
    PyTypeError::new_err(format!("ledger entry: {what} is left to the Python writer"))
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Reads the record-side Python objects; holds the GIL.
struct Reader<'py> {
    frozen_dict: Bound<'py, PyType>,
    frozen_list: Bound<'py, PyType>,
    sig_headers: Vec<String>,
    own_attributes: Vec<String>,
    v2_fields: Vec<Bound<'py, PyString>>,
    spec_version: String,
    format_time: Bound<'py, PyAny>,
}

fn text(o: &Bound<'_, PyAny>) -> PyResult<Text> {
    if o.is_exact_instance_of::<PyString>() {
        // A lone surrogate fails here, as it fails the reference's UTF-8 encode.
        let s = o.downcast_exact::<PyString>()?;
        s.to_str().map(|t| Cow::Owned(t.to_owned())).map_err(|_| defer("a lone surrogate"))
    } else {
        Err(defer("a text member that is not exactly a str"))
    }
}

fn opt_text(o: &Bound<'_, PyAny>) -> PyResult<J> {
    if o.is_none() {
        Ok(J::Null)
    } else {
        Ok(J::Str(text(o)?))
    }
}

fn int(o: &Bound<'_, PyAny>) -> PyResult<J> {
    if o.is_exact_instance_of::<PyInt>() {
        o.extract::<i64>().map(J::Int).map_err(|_| defer("an integer beyond 64 bits"))
    } else {
        Err(defer("a number that is not exactly an int"))
    }
}

fn opt_int(o: &Bound<'_, PyAny>) -> PyResult<J> {
    if o.is_none() {
        Ok(J::Null)
    } else {
        int(o)
    }
}

fn opt_b64(o: &Bound<'_, PyAny>) -> PyResult<J> {
    if o.is_none() {
        Ok(J::Null)
    } else if let Ok(b) = o.downcast_exact::<PyBytes>() {
        Ok(J::B64(b64(b.as_bytes())))
    } else {
        Err(defer("bytes that are not exactly bytes"))
    }
}

impl<'py> Reader<'py> {
    /// `_ledger._json_value`: the strict-JSON form of an event value.
    fn json_value(&self, o: &Bound<'py, PyAny>, depth: usize) -> PyResult<J> {
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
            return Ok(J::Str(text(o)?));
        }
        if o.is_exact_instance_of::<PyInt>() {
            return int(o);
        }
        if let Ok(f) = o.downcast_exact::<PyFloat>() {
            let x = f.value();
            return Ok(if x.is_finite() {
                J::Float(x)
            } else if x.is_nan() {
                J::Str("NaN".into())
            } else if x > 0.0 {
                J::Str("Infinity".into())
            } else {
                J::Str("-Infinity".into())
            });
        }
        if let Ok(b) = o.downcast_exact::<PyBytes>() {
            return Ok(J::Obj(vec![("base64".into(), J::B64(b64(b.as_bytes())))]));
        }
        let t = o.get_type();
        if t.is(&self.frozen_dict) || o.is_exact_instance_of::<PyDict>() {
            let d = o.downcast::<PyDict>()?;
            let mut members = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                members.push((text(&k)?, self.json_value(&v, depth + 1)?));
            }
            return Ok(J::Obj(members));
        }
        if t.is(&self.frozen_list) || o.is_exact_instance_of::<PyList>() {
            let l = o.downcast::<PyList>()?;
            return l.iter().map(|v| self.json_value(&v, depth + 1)).collect::<PyResult<Vec<J>>>().map(J::Arr);
        }
        if let Ok(t) = o.downcast_exact::<PyTuple>() {
            return t.iter().map(|v| self.json_value(&v, depth + 1)).collect::<PyResult<Vec<J>>>().map(J::Arr);
        }
        Err(defer("a value of another type"))
    }

    /// `_ledger._event_data` (members pushed in sorted order, the v2 fields last).
    fn event_data(&self, py: Python<'py>, e: &Bound<'py, PyAny>) -> PyResult<J> {
        let get = |name: &Bound<'py, PyString>| e.getattr(name);
        let mut data: Vec<(Text, J)> = Vec::with_capacity(20);
        let texts = |data: &mut Vec<(Text, J)>, names: &[(&'static str, &Bound<'py, PyString>)]| -> PyResult<()> {
            for (key, name) in names {
                data.push((Cow::Borrowed(*key), opt_text(&get(name)?)?));
            }
            Ok(())
        };
        texts(&mut data, &[("action", intern!(py, "action")), ("agent_did", intern!(py, "agent_did")), ("agent_id", intern!(py, "agent_id"))])?;
        data.push(("attributes".into(), self.json_value(&get(intern!(py, "attributes"))?, 0)?));
        texts(&mut data, &[("decision", intern!(py, "decision"))])?;
        let kind = get(intern!(py, "kind"))?.getattr(intern!(py, "value"))?;
        data.push(("kind".into(), J::Str(text(&kind)?)));
        data.push(("latency_ms".into(), self.json_value(&get(intern!(py, "latency_ms"))?, 0)?));
        texts(&mut data, &[("parent_span_id", intern!(py, "parent_span_id")), ("policy_name", intern!(py, "policy_name"))])?;
        let producer = get(intern!(py, "producer"))?;
        let producer = if producer.is_none() {
            J::Null
        } else {
            let mut p = Vec::with_capacity(4);
            for (key, name) in [
                ("host", intern!(py, "host")),
                ("instance_id", intern!(py, "instance_id")),
                ("library", intern!(py, "library")),
                ("name", intern!(py, "name")),
            ] {
                p.push((Cow::Borrowed(key), opt_text(&producer.getattr(name)?)?));
            }
            J::Obj(p)
        };
        data.push(("producer".into(), producer));
        texts(&mut data, &[("reason", intern!(py, "reason")), ("resource", intern!(py, "resource")), ("schema_version", intern!(py, "schema_version")), ("session_id", intern!(py, "session_id")), ("severity", intern!(py, "severity")), ("span_id", intern!(py, "span_id")), ("trace_id", intern!(py, "trace_id"))])?;
        for name in &self.v2_fields {
            let value = get(name)?;
            if !value.is_none() {
                data.push((Cow::Owned(name.to_str()?.to_owned()), self.json_value(&value, 0)?));
            }
        }
        Ok(J::Obj(data))
    }

    /// `_ledger.event_fields` with `prev` left to `chain`.
    fn entry(&self, py: Python<'py>, seq: u64, record: &Bound<'py, PyAny>) -> PyResult<J> {
        let mut headers = Vec::new();
        let mut sig: Vec<(Text, J)> = Vec::new();
        let mut traceparent: Option<Bound<'py, PyAny>> = None;
        let mut tracestate: Option<Bound<'py, PyAny>> = None;
        let mut file = |name: Text, value: J| {
            if self.sig_headers.iter().any(|h| h == name.as_ref()) {
                set(&mut sig, name, value); // a repeated one: the last wins, as in a dict
            } else {
                headers.push(J::Arr(vec![J::Str(name), value]));
            }
        };
        let all = record.getattr(intern!(py, "headers"))?;
        // A consumed record's headers read where librdkafka keeps them (message.rs): no Python
        // tuple per header. Trace context values are copied out, as Python bytes made after.
        type InPlace = (Vec<(Text, J)>, [Option<Option<Vec<u8>>>; 2]);
        let in_place: Option<InPlace> = all.downcast::<ConsumedHeaders>().ok().and_then(|c| {
            c.get().with_raw(py, |hs| {
                let mut trace = [None, None];
                let pairs = hs
                    .iter()
                    .map(|&(name, value)| {
                        match name {
                            "traceparent" => trace[0] = Some(value.map(<[u8]>::to_vec)),
                            "tracestate" => trace[1] = Some(value.map(<[u8]>::to_vec)),
                            _ => {}
                        }
                        (Cow::Owned(name.to_owned()), value.map_or(J::Null, |v| J::B64(b64(v))))
                    })
                    .collect();
                (pairs, trace)
            })
        });
        if let Some((pairs, [parent, state])) = in_place {
            let object = |v: Option<Vec<u8>>| v.map_or_else(|| py.None().into_bound(py), |b| PyBytes::new(py, &b).into_any());
            traceparent = parent.map(object);
            tracestate = state.map(object);
            for (name, value) in pairs {
                file(name, value);
            }
        } else {
            for pair in all.try_iter()? {
                let pair = pair?;
                let (name, raw) = header_pair(&pair)?;
                let name = text(&name)?;
                let value = opt_b64(&raw)?;
                if name == "traceparent" {
                    traceparent = Some(raw);
                } else if name == "tracestate" {
                    tracestate = Some(raw);
                }
                file(name, value);
            }
        }
        let event = record.getattr(intern!(py, "event"))?;
        let attributes = record.getattr(intern!(py, "attributes"))?;
        let rendered = self.render_event(py, &event, &attributes, traceparent, tracestate)?;
        // Members in sorted order (write() then only checks it).
        let rec = J::Obj(vec![
            ("headers".into(), J::Arr(headers)),
            ("key".into(), opt_b64(&record.getattr(intern!(py, "key"))?)?),
            ("offset".into(), int(&record.getattr(intern!(py, "offset"))?)?),
            ("partition".into(), int(&record.getattr(intern!(py, "partition"))?)?),
            ("timestamp_ms".into(), opt_int(&record.getattr(intern!(py, "timestamp_ms"))?)?),
            ("topic".into(), J::Str(text(&record.getattr(intern!(py, "topic"))?)?)),
            ("value".into(), opt_b64(&record.getattr(intern!(py, "value"))?)?),
        ]);
        Ok(J::Obj(vec![
            ("event".into(), rendered),
            ("prev".into(), J::Null), // set by chain()
            ("record".into(), rec),
            ("seq".into(), J::Int(i64::try_from(seq).map_err(|_| defer("a seq beyond 64 bits"))?)),
            ("sig".into(), if sig.is_empty() { J::Null } else { J::Obj(sig) }),
            ("type".into(), J::Str("event".into())),
            ("v".into(), J::Int(1)),
            ("verdict".into(), J::Str(text(&record.getattr(intern!(py, "verdict"))?)?)),
            ("verdict_detail".into(), J::Str(text(&record.getattr(intern!(py, "verdict_detail"))?)?)),
        ]))
    }

    /// `_ledger.render_event`.
    fn render_event(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
        attributes: &Bound<'py, PyAny>,
        traceparent: Option<Bound<'py, PyAny>>,
        tracestate: Option<Bound<'py, PyAny>>,
    ) -> PyResult<J> {
        let mut out: Vec<(Text, J)> = Vec::with_capacity(12);
        out.push(("specversion".into(), J::Str(self.spec_version.clone().into())));
        out.push(("id".into(), J::Str(text(&attributes.getattr(intern!(py, "id"))?)?)));
        out.push(("source".into(), J::Str(text(&attributes.getattr(intern!(py, "source"))?)?)));
        out.push(("type".into(), J::Str(text(&attributes.getattr(intern!(py, "type"))?)?)));
        let time = attributes.getattr(intern!(py, "time"))?;
        let time = if time.is_truthy()? {
            time
        } else {
            self.format_time.call1((event.getattr(intern!(py, "occurred_at"))?,))?
        };
        out.push(("time".into(), J::Str(text(&time)?)));
        let subject = attributes.getattr(intern!(py, "subject"))?;
        if !subject.is_none() {
            out.push(("subject".into(), J::Str(text(&subject)?)));
        }
        out.push(("datacontenttype".into(), J::Str("application/json".into())));
        let extensions = attributes.getattr(intern!(py, "extensions"))?;
        let extensions = extensions.downcast_exact::<PyDict>().map_err(|_| defer("extensions that are not a dict"))?;
        for (k, v) in extensions.iter() {
            let k = text(&k)?;
            if !self.own_attributes.iter().any(|a| a == k.as_ref()) {
                // ext's own keys are unique and never an own attribute: a plain push.
                out.push((k, opt_text(&v)?));
            }
        }
        if let Some(tp) = utf8(traceparent.as_ref())? {
            if !tp.is_empty() {
                set(&mut out, "traceparent".into(), J::Str(tp.into()));
                if let Some(ts) = utf8(tracestate.as_ref())? {
                    if !ts.is_empty() {
                        set(&mut out, "tracestate".into(), J::Str(ts.into()));
                    }
                }
            }
        }
        out.push(("data".into(), self.event_data(py, event)?));
        Ok(J::Obj(out))
    }
}

/// A header `(name, value)`: an exact tuple or list of two, as confluent-kafka and the sinks'
/// tests hand them over (anything else is left to the Python path, which unpacks any iterable).
pub fn header_pair<'py>(pair: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = pair.downcast_exact::<PyTuple>() {
        if t.len() == 2 {
            return Ok((t.get_item(0)?, t.get_item(1)?));
        }
    } else if let Ok(l) = pair.downcast_exact::<PyList>() {
        if l.len() == 2 {
            return Ok((l.get_item(0)?, l.get_item(1)?));
        }
    }
    Err(defer("a header that is not a pair"))
}

/// `_ledger._text`: the header's UTF-8 text, None when absent or not UTF-8.
fn utf8(raw: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    match raw {
        None => Ok(None),
        Some(r) if r.is_none() => Ok(None),
        Some(r) => {
            let b = r.downcast_exact::<PyBytes>().map_err(|_| defer("a header value that is not bytes"))?;
            Ok(std::str::from_utf8(b.as_bytes()).ok().map(str::to_owned))
        }
    }
}

/// A dict's `d[key] = value`: replaces in place when present, else appends.
fn set(members: &mut Vec<(Text, J)>, key: Text, value: J) {
    match members.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => members.push((key, value)),
    }
}

/// Seals the event entries of ledger format 1; constants come from `_ledger` once per writer.
#[pyclass(module = "govbus._native", frozen)]
pub struct LedgerSealer {
    frozen_dict: Py<PyType>,
    frozen_list: Py<PyType>,
    sig_headers: Vec<String>,
    own_attributes: Vec<String>,
    v2_fields: Vec<Py<PyString>>,
    spec_version: String,
    format_time: Py<PyAny>,
}

#[pymethods]
impl LedgerSealer {
    #[new]
    #[pyo3(signature = (frozen_types, sig_headers, own_attributes, v2_fields, spec_version, format_time))]
    fn new(
        frozen_types: (Py<PyType>, Py<PyType>),
        sig_headers: Vec<String>,
        own_attributes: Vec<String>,
        v2_fields: Vec<Py<PyString>>,
        spec_version: String,
        format_time: Py<PyAny>,
    ) -> Self {
        LedgerSealer {
            frozen_dict: frozen_types.0,
            frozen_list: frozen_types.1,
            sig_headers,
            own_attributes,
            v2_fields,
            spec_version,
            format_time,
        }
    }

    /// The entries of `records` (delivered records, in order) numbered from `seq` and chained from
    /// `prev`: `(the lines joined, the new head)`. TypeError: a value left to the Python writer.
    fn seal_events<'py>(
        &self,
        py: Python<'py>,
        seq: u64,
        prev: &str,
        records: &Bound<'py, PyList>,
    ) -> PyResult<(Bound<'py, PyBytes>, String)> {
        let reader = Reader {
            frozen_dict: self.frozen_dict.bind(py).clone(),
            frozen_list: self.frozen_list.bind(py).clone(),
            sig_headers: self.sig_headers.clone(),
            own_attributes: self.own_attributes.clone(),
            v2_fields: self.v2_fields.iter().map(|f| f.bind(py).clone()).collect(),
            spec_version: self.spec_version.clone(),
            format_time: self.format_time.bind(py).clone(),
        };
        let mut entries = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let seq = seq + i as u64;
            entries.push(match drafted(py, &record)? {
                Some(draft) => Entry::Draft(draft, seq),
                None => Entry::Tree(reader.entry(py, seq, &record)?),
            });
        }
        let prev = prev.to_owned();
        let sealed = py.allow_threads(|| catch_unwind(AssertUnwindSafe(|| chain_entries(&mut entries, &prev))));
        match sealed {
            Ok((lines, head)) => Ok((PyBytes::new(py, &lines), head)),
            Err(_) => Err(PyRuntimeError::new_err("ledger sealing panicked")),
        }
    }
}

/// The entry drafted for `record` at intake (`NativeRecord._draft`), if it still applies: the
/// record's verdict is the one it was drafted with and no detail came with it since.
fn drafted(py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<Option<Py<LedgerDraft>>> {
    let Ok(draft) = record.getattr(intern!(py, "_draft")) else { return Ok(None) };
    let Ok(draft) = draft.downcast_into_exact::<LedgerDraft>() else { return Ok(None) };
    let verdict = record.getattr(intern!(py, "verdict"))?;
    let detail = record.getattr(intern!(py, "verdict_detail"))?;
    let same = verdict.downcast::<PyString>().is_ok_and(|v| v.to_str().is_ok_and(|v| v == draft.get().verdict))
        && detail.downcast::<PyString>().is_ok_and(|d| d.to_str().is_ok_and(str::is_empty));
    Ok(same.then(|| draft.unbind()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LedgerSealer>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_chain() {
        let mut entries = vec![
            J::Obj(vec![("seq".into(), J::Int(0)), ("prev".into(), J::Null), ("a".into(), J::Float(0.5))]),
            J::Obj(vec![("seq".into(), J::Int(1)), ("prev".into(), J::Null), ("é".into(), J::Str("\n".into()))]),
        ];
        let (lines, head) = chain(&mut entries, &"0".repeat(64));
        let text = String::from_utf8(lines).unwrap();
        let first = format!("{{\"a\":0.5,\"prev\":\"{}\",\"seq\":0}}", "0".repeat(64));
        let h0 = hex(&Sha256::digest(first.as_bytes()));
        assert!(text.starts_with(&format!("{},\"hash\":\"{}\"}}\n", &first[..first.len() - 1], h0)));
        let second = format!("{{\"prev\":\"{h0}\",\"seq\":1,\"é\":\"\\n\"}}");
        assert_eq!(head, hex(&Sha256::digest(second.as_bytes())));
    }
}
