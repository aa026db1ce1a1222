//! The producer's batch step, compiled: Avro values (schema v1/v2 layout), CloudEvents headers and
//! record keys for a micro-batch of events (`BatchEncoder.encode`). Signing the batch is `sign.rs`.
//!
//! The pure-Python reference is `govbus._contract._encode_fast` + `govbus._cloudevents.headers_for`
//! (values, headers) and `govbus.signing.Signer._hash` + `govbus.signing._merkle.build` (leaves,
//! paths). Everything the compiled code is not sure to reproduce byte for byte (a type it does not
//! know exactly, a lone surrogate, an integer beyond 64 bits, a year before 1000, a writer schema
//! that lacks the event's kind or v2 fields, a traced event) comes back as None and is encoded on
//! the Python path, which also words any refusal; the differential tests hold the two to the same
//! bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use crate::civil::{self, civil, days_from_civil};
use crate::partition::partition_for;
use crate::sign::{merkle, ToSign};
use crate::slots::{index_of, Slots};

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

// ---- the Python binding ----------------------------------------------------------------------------

/// Batches from this size on are worked on with the GIL released. Smaller ones (a kernel emitting
/// a few events at a time) keep it: their work takes a few microseconds, while getting the GIL
/// back from a busy thread can take a switch interval (5 ms) and would delay the batch's delivery.
const RELEASE_GIL_FROM: usize = 32;

pub(crate) fn unlocked<T: Send, F: FnOnce() -> T + Send + pyo3::marker::Ungil>(
    py: Python<'_>,
    n: usize,
    f: F,
) -> T {
    if n >= RELEASE_GIL_FROM {
        py.allow_threads(f)
    } else {
        f()
    }
}

type PyFields = Fields<PyBackedStr>;

/// The `GovernanceEvent` fields [`extract`] reads, read from their slots when the class is the
/// slotted dataclass it is (crate::slots).
const EVENT_FIELDS: [&str; 19] = [
    "trace_id",
    "kind",
    "occurred_at",
    "attributes",
    "risk_score",
    "latency_ms",
    "event_id",
    "severity",
    "agent_id",
    "agent_did",
    "session_id",
    "action",
    "resource",
    "decision",
    "reason",
    "policy_name",
    "schema_version",
    "tenant_id",
    "policy_version",
];

type EventSlots<'py> = Slots<'py, 19>;

/// Reads one event's fields (GIL held); None: the Python path encodes it. `slots`: where the
/// fields of the batch's event class live (getattr for an event of another class).
fn extract<'py>(
    enc: &BatchEncoder,
    py: Python<'py>,
    e: &Bound<'py, PyAny>,
    slots: Option<&EventSlots<'py>>,
) -> PyResult<Option<PyFields>> {
    let direct = slots.filter(|s| s.fit(e));
    macro_rules! attr {
        ($name:literal) => {{
            const I: usize = index_of(&EVENT_FIELDS, $name);
            let value = match direct {
                Some(s) => s.get(e, I),
                None => e.getattr(pyo3::intern!(py, $name)).ok(),
            };
            match value {
                Some(v) => v,
                // An unset slot, a failing attribute: the Python path says what is wrong.
                None => return Ok(None),
            }
        }};
    }
    fn text(o: &Bound<'_, PyAny>) -> Option<PyBackedStr> {
        if o.is_exact_instance_of::<PyString>() {
            o.extract::<PyBackedStr>().ok() // a lone surrogate fails here: the Python path decides
        } else {
            None
        }
    }
    fn opt_text(o: &Bound<'_, PyAny>) -> Option<Option<PyBackedStr>> {
        if o.is_none() {
            Some(None)
        } else {
            text(o).map(Some)
        }
    }
    fn float(o: &Bound<'_, PyAny>) -> Option<f64> {
        o.downcast_exact::<PyFloat>().ok().map(|f| f.value())
    }
    if !attr!("trace_id").is_none() {
        return Ok(None); // traced: the Python path adds traceparent
    }
    let kind = attr!("kind");
    let Ok(kind_value) = kind.extract::<PyBackedStr>() else {
        return Ok(None);
    };
    let Some(kind) = enc
        .plan
        .kinds
        .iter()
        .position(|(k, _, _)| k.as_str() == &*kind_value)
    else {
        return Ok(None);
    };
    let occurred = attr!("occurred_at");
    if !occurred.get_type().is(enc.datetime.bind(py)) {
        return Ok(None); // a datetime subclass (e.g. with nanoseconds): the Python path
    }
    let Some(micros) = micros(py, &occurred, enc.utc.bind(py))? else {
        return Ok(None);
    };
    let attributes = attr!("attributes");
    let Ok(attributes) = attributes.downcast::<PyDict>() else {
        return Ok(None);
    };
    let mut attrs = Vec::with_capacity(attributes.len());
    for (k, value) in attributes.iter() {
        let Some(k) = text(&k) else { return Ok(None) };
        let Some(a) = attr_value(enc, &value) else {
            return Ok(None);
        };
        attrs.push((k, a));
    }
    let risk = attr!("risk_score");
    let risk_score = if risk.is_none() {
        None
    } else {
        match float(&risk) {
            Some(x) => Some(x),
            None => return Ok(None),
        }
    };
    macro_rules! req {
        ($name:literal) => {
            match text(&attr!($name)) {
                Some(s) => s,
                None => return Ok(None),
            }
        };
    }
    macro_rules! opt {
        ($name:literal) => {
            match opt_text(&attr!($name)) {
                Some(s) => s,
                None => return Ok(None),
            }
        };
    }
    let Some(latency_ms) = float(&attr!("latency_ms")) else {
        return Ok(None);
    };
    Ok(Some(Fields {
        event_id: req!("event_id"),
        micros,
        kind,
        severity: req!("severity"),
        agent_id: req!("agent_id"),
        agent_did: opt!("agent_did"),
        session_id: opt!("session_id"),
        action: req!("action"),
        resource: opt!("resource"),
        decision: req!("decision"),
        reason: req!("reason"),
        policy_name: opt!("policy_name"),
        latency_ms,
        attributes: attrs,
        schema_version: req!("schema_version"),
        tenant_id: opt!("tenant_id"),
        policy_version: opt!("policy_version"),
        risk_score,
    }))
}

/// Microseconds since the epoch of an aware datetime (`occurred_at - EPOCH`), read from its
/// fields and `utcoffset()` (the stable ABI has no datetime C API); None: not a plain datetime.
fn micros(py: Python<'_>, dt: &Bound<'_, PyAny>, utc: &Bound<'_, PyAny>) -> PyResult<Option<i64>> {
    let int = |name: &Bound<'_, PyString>, o: &Bound<'_, PyAny>| -> PyResult<i64> {
        o.getattr(name)?.extract()
    };
    // datetime.UTC's offset is zero: one call fewer for the common case.
    let tz = dt.getattr(pyo3::intern!(py, "tzinfo"))?;
    let offset = if tz.is(utc) {
        None
    } else {
        Some(dt.call_method0(pyo3::intern!(py, "utcoffset"))?)
    };
    if offset.as_ref().is_some_and(|o| o.is_none()) {
        return Ok(None);
    }
    let days = days_from_civil(
        int(pyo3::intern!(py, "year"), dt)?,
        int(pyo3::intern!(py, "month"), dt)?,
        int(pyo3::intern!(py, "day"), dt)?,
    );
    let local = ((days * 24 + int(pyo3::intern!(py, "hour"), dt)?) * 60
        + int(pyo3::intern!(py, "minute"), dt)?)
        * 60
        + int(pyo3::intern!(py, "second"), dt)?;
    let off = match offset {
        None => 0,
        Some(offset) => {
            (int(pyo3::intern!(py, "days"), &offset)? * 86_400
                + int(pyo3::intern!(py, "seconds"), &offset)?)
                * 1_000_000
                + int(pyo3::intern!(py, "microseconds"), &offset)?
        }
    };
    Ok(Some(
        local * 1_000_000 + int(pyo3::intern!(py, "microsecond"), dt)? - off,
    ))
}

/// An attribute value's union branch, as `_encode_fast` chooses it; None: the Python path decides.
fn attr_value(enc: &BatchEncoder, v: &Bound<'_, PyAny>) -> Option<Attr<PyBackedStr>> {
    if v.is_none() {
        Some(Attr::Null)
    } else if let Ok(x) = v.downcast_exact::<PyBool>() {
        Some(Attr::Bool(x.is_true()))
    } else if v.is_exact_instance_of::<PyInt>() {
        v.extract::<i64>().ok().map(Attr::Long)
    } else if let Ok(x) = v.downcast_exact::<PyFloat>() {
        Some(Attr::Double(x.value()))
    } else if v.is_exact_instance_of::<PyString>() {
        v.extract::<PyBackedStr>().ok().map(Attr::Str)
    } else if v.is_exact_instance_of::<PyBytes>() {
        v.downcast_exact::<PyBytes>()
            .ok()
            .map(|x| Attr::Bytes(x.as_bytes().to_vec()))
    } else {
        let mut out = Vec::with_capacity(64);
        json_value(enc, v, &mut out, 0)?;
        Some(Attr::Json(out))
    }
}

/// A nested attribute as CPython's C JSON encoder writes it with `ensure_ascii=False`, compact
/// separators and `allow_nan=False`; None for anything not of an exact JSON type.
fn json_value(
    enc: &BatchEncoder,
    v: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Option<()> {
    if depth > 64 {
        return None;
    }
    if v.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(x) = v.downcast_exact::<PyBool>() {
        out.extend_from_slice(if x.is_true() { b"true" } else { b"false" });
    } else if v.is_exact_instance_of::<PyInt>() {
        out.extend_from_slice(v.extract::<i64>().ok()?.to_string().as_bytes());
    } else if let Ok(x) = v.downcast_exact::<PyFloat>() {
        let x = x.value();
        if !x.is_finite() {
            return None;
        }
        crate::json::float(out, x);
    } else if v.is_exact_instance_of::<PyString>() {
        crate::json::string(out, &v.extract::<PyBackedStr>().ok()?);
    } else {
        let t = v.get_type();
        let is = |other: &Py<PyType>| t.is(other.bind(v.py()));
        if is(&enc.list) || is(&enc.frozen_list) || is(&enc.tuple) {
            out.push(b'[');
            for (i, item) in v.try_iter().ok()?.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_value(enc, &item.ok()?, out, depth + 1)?;
            }
            out.push(b']');
        } else if is(&enc.dict) || is(&enc.frozen_dict) {
            out.push(b'{');
            let d = v.downcast::<PyDict>().ok()?;
            for (i, (k, item)) in d.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !k.is_exact_instance_of::<PyString>() {
                    return None; // the C encoder converts int/float/bool keys: the Python path does it
                }
                crate::json::string(out, &k.extract::<PyBackedStr>().ok()?);
                out.push(b':');
                json_value(enc, &item, out, depth + 1)?;
            }
            out.push(b'}');
        } else {
            return None;
        }
    }
    Some(())
}

/// The compiled batch step of the producer: see the module documentation.
#[pyclass(module = "govbus._native", frozen)]
pub struct BatchEncoder {
    plan: Plan,
    empty_context: PyObject,
    utc: PyObject,
    datetime: Py<PyType>,
    list: Py<PyType>,
    tuple: Py<PyType>,
    dict: Py<PyType>,
    frozen_list: Py<PyType>,
    frozen_dict: Py<PyType>,
}

const NAMES: [&str; 9] = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "content-type",
    "ce_dataschema",
    "ce_sessionid",
];

#[pymethods]
impl BatchEncoder {
    /// `kinds`: (EventKind value, encoded Avro enum index, ce_type) for each kind the writer schema
    /// has; `types`: (FrozenList, FrozenDict); `empty_context`: the trace context of no span.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        prefix: Vec<u8>,
        extras: bool,
        kinds: Vec<(String, Vec<u8>, String)>,
        content_type: String,
        dataschema: String,
        source: Option<String>,
        key_by_session: bool,
        empty_context: PyObject,
        types: (Py<PyType>, Py<PyType>),
    ) -> PyResult<Self> {
        let module = py.import("datetime")?;
        let utc = module.getattr("timezone")?.getattr("utc")?.unbind();
        let datetime = module
            .getattr("datetime")?
            .downcast_into::<PyType>()?
            .unbind();
        Ok(BatchEncoder {
            plan: Plan {
                prefix,
                extras,
                kinds: kinds
                    .into_iter()
                    .map(|(k, i, t)| (k, i, t.into_bytes()))
                    .collect(),
                content_type: content_type.into_bytes(),
                dataschema: dataschema.into_bytes(),
                source: source.filter(|s| !s.is_empty()).map(String::into_bytes),
                key_by_session,
            },
            empty_context,
            utc,
            datetime,
            list: py.get_type::<PyList>().unbind(),
            tuple: py.get_type::<PyTuple>().unbind(),
            dict: py.get_type::<PyDict>().unbind(),
            frozen_list: types.0,
            frozen_dict: types.1,
        })
    }

    /// Per event, `(key, value, headers)`, or None when the Python path must encode it (traced,
    /// or anything the compiled writer does not reproduce exactly). `tail`: the encoded producer
    /// record and contract version (`Encoder._producer_tail`).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyList>,
        contexts: &Bound<'py, PyList>,
        tail: &[u8],
    ) -> PyResult<Bound<'py, PyList>> {
        let fields = self.fields(py, events, contexts)?;
        let plan = &self.plan;
        let encoded: Vec<Option<Encoded>> =
            unlocked(py, fields.len(), || encode_all(plan, &fields, tail));
        self.rows(py, encoded, &fields)
    }

    /// The batch step and the signing step in one call, for the producer's own signing hook
    /// (docs/native.md "Producer batch encode and sign"): encodes the events as `encode` does,
    /// routes each record (`partition_for` of its key among `partitions`), numbers, hashes and
    /// builds the Merkle tree as `sign_records` does (from `counters`, the signer's next sequence
    /// per partition), has `sign(root, tree size)` sign the batch, and makes each record
    /// `make(seq, key, value, headers, keep, None, report, partition, True)` with its CloudEvents
    /// and signature headers in one list (`first_seq` numbers them). Returns `(records, counters
    /// after)`; when any event needs the Python path (or the signing step declines or panics)
    /// nothing is signed and it returns `(what encode returns, None)`.
    #[allow(clippy::too_many_arguments)]
    fn encode_signed<'py>(
        &self,
        py: Python<'py>,
        events: &Bound<'py, PyList>,
        contexts: &Bound<'py, PyList>,
        tail: &[u8],
        partitions: u32,
        signing: (Vec<u8>, Vec<u8>, HashMap<u32, u64>, u64),
        fixed: (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>),
        sign: Bound<'py, PyAny>,
        make: (Bound<'py, PyAny>, u64, bool, Bound<'py, PyAny>),
    ) -> PyResult<(Bound<'py, PyList>, Option<HashMap<u32, u64>>)> {
        let (kid, stream, counters, signed_at) = signing;
        let fields = self.fields(py, events, contexts)?;
        let plan = &self.plan;
        let plain = fields.is_empty() || partitions == 0 || fields.len() > 1 << 16;
        let (encoded, signed) = unlocked(py, fields.len(), || {
            let encoded = encode_all(plan, &fields, tail);
            if plain || encoded.iter().any(Option::is_none) {
                return (encoded, None);
            }
            let mut counters = counters;
            let signed = catch_unwind(AssertUnwindSafe(|| {
                let records: Vec<ToSign<'_>> = encoded
                    .iter()
                    .zip(&fields)
                    .map(|(r, f)| {
                        let (r, f) = (r.as_ref()?, f.as_ref()?);
                        if crate::probe_hit(&r.value) {
                            panic!("govbus._native panic probe");
                        }
                        Some(ToSign {
                            value: &r.value,
                            key: Some(&r.key),
                            ce: [
                                Some(&r.id),
                                Some(&plan.kinds[f.kind].2),
                                Some(&r.source),
                                Some(&r.time),
                            ],
                            partition: partition_for(&r.key, partitions),
                        })
                    })
                    .collect::<Option<_>>()?;
                let (root, out) = merkle(&kid, &stream, &mut counters, &records, signed_at)?;
                let parts: Vec<u32> = records.iter().map(|r| r.partition).collect();
                Some((root, out, parts))
            }))
            .ok()
            .flatten();
            (encoded, signed.map(|s| (s, counters)))
        });
        let Some(((root, out, parts), after)) = signed else {
            return Ok((self.rows(py, encoded, &fields)?, None));
        };
        let sig = (
            PyString::intern(py, "govbus_sig"),
            sign.call1((PyBytes::new(py, &root), parts.len()))?,
        )
            .into_pyobject(py)?;
        let seq_name = PyString::intern(py, "govbus_sig_seq");
        let proof_name = PyString::intern(py, "govbus_sig_proof");
        let (kid_h, alg_h, stream_h) = fixed;
        let (cls, first_seq, keep, report) = make;
        let c = self.constants(py)?;
        let (none, keep) = (py.None(), PyBool::new(py, keep).to_owned());
        let signed = PyBool::new(py, true).to_owned();
        let slots = RecordSlots::of(&cls)?;
        let zero = 0u32.into_pyobject(py)?.into_any();
        let result = PyList::empty(py);
        for (i, (((r, f), (seq, proof)), partition)) in encoded
            .into_iter()
            .zip(&fields)
            .zip(out)
            .zip(parts)
            .enumerate()
        {
            let (Some(r), Some(f)) = (r, f) else {
                unreachable!("every event was encoded")
            };
            let mut headers = c.headers(py, &r, f, 6)?;
            headers.push(kid_h.clone());
            headers.push(alg_h.clone());
            headers.push(stream_h.clone());
            headers.push(untracked((&seq_name, PyBytes::new(py, &seq)).into_pyobject(py)?));
            headers.push(untracked((&proof_name, PyBytes::new(py, &proof)).into_pyobject(py)?));
            headers.push(sig.clone().into_any());
            let headers = PyList::new(py, headers)?;
            // SAFETY: a live list of untracked (str, bytes) pairs that goes straight to produce() (no
            // hook sees a fused-signed record): no cycle can pass through it, and an untracked list
            // is freed as any other. Thousands are in flight at once; each collection walked them.
            unsafe { pyo3::ffi::PyObject_GC_UnTrack(headers.as_ptr().cast()) };
            let seq = (first_seq + i as u64).into_pyobject(py)?.into_any();
            let key = PyBytes::new(py, &r.key).into_any();
            let value = PyBytes::new(py, &r.value).into_any();
            let partition = partition.into_pyobject(py)?.into_any();
            let record = match &slots {
                // What OutgoingRecord.__init__ sets for a signed record, without its frame.
                Some(slots) => slots.make(
                    &cls,
                    [
                        &seq,
                        &key,
                        &value,
                        headers.as_any(),
                        keep.as_any(),
                        none.bind(py),
                        &report,
                        &partition,
                        none.bind(py),
                        &zero,
                    ],
                )?,
                None => cls.call1(PyTuple::new(
                    py,
                    [
                        seq,
                        key,
                        value,
                        headers.into_any(),
                        keep.clone().into_any(),
                        none.bind(py).clone(),
                        report.clone(),
                        partition,
                        signed.clone().into_any(),
                    ],
                )?)?,
            };
            result.append(record)?;
        }
        Ok((result, Some(after)))
    }
}

/// The slots `OutgoingRecord.__init__` sets, in the order `make` takes their values: a record is
/// made by allocating the instance and setting each slot through its member descriptor (what
/// `__init__`'s attribute stores do) rather than by calling the class (a tuple of arguments and a
/// Python frame per record; docs/native.md).
const RECORD_SLOTS: [&str; 10] = [
    "seq",
    "key",
    "value",
    "headers",
    "_keep",
    "_publication",
    "_report",
    "partition",
    "_base",
    "_size_retries",
];

struct RecordSlots<'py> {
    setters: Vec<(Bound<'py, PyAny>, pyo3::ffi::descrsetfunc)>,
}

impl<'py> RecordSlots<'py> {
    /// The member descriptors of `cls`'s slots; None (the class is called instead) unless the
    /// class itself (not a base) defines `__init__` and `__slots__`, exactly RECORD_SLOTS, each a
    /// plain member descriptor: OutgoingRecord, whose `__init__` sets just these.
    fn of(cls: &Bound<'py, PyAny>) -> PyResult<Option<Self>> {
        let py = cls.py();
        if !cls.is_instance_of::<PyType>() {
            return Ok(None);
        }
        let own = cls.getattr(pyo3::intern!(py, "__dict__"))?;
        if !own.contains("__init__")? {
            return Ok(None);
        }
        let Ok(declared) = own
            .get_item("__slots__")
            .and_then(|s| s.extract::<Vec<String>>())
        else {
            return Ok(None);
        };
        let mut wanted: Vec<&str> = RECORD_SLOTS.to_vec();
        let mut declared: Vec<&str> = declared.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        declared.sort_unstable();
        if wanted != declared {
            return Ok(None);
        }
        let mut setters = Vec::with_capacity(RECORD_SLOTS.len());
        for name in RECORD_SLOTS {
            let descr = cls.getattr(name)?;
            let kind = descr.get_type();
            if kind.name()?.to_str()? != "member_descriptor" {
                return Ok(None);
            }
            // SAFETY: `kind` is a live type object; PyType_GetSlot accepts static types (3.10+).
            let slot = unsafe {
                pyo3::ffi::PyType_GetSlot(kind.as_ptr().cast(), pyo3::ffi::Py_tp_descr_set)
            };
            if slot.is_null() {
                return Ok(None);
            }
            // SAFETY: the Py_tp_descr_set slot of a type is a descrsetfunc.
            let set: pyo3::ffi::descrsetfunc = unsafe { std::mem::transmute(slot) };
            setters.push((descr, set));
        }
        Ok(Some(RecordSlots { setters }))
    }

    fn make(
        &self,
        cls: &Bound<'py, PyAny>,
        values: [&Bound<'py, PyAny>; 10],
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        // SAFETY: `cls` is a type (checked in `of`) whose instances are plain slotted objects.
        let record = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                pyo3::ffi::PyType_GenericAlloc(cls.as_ptr().cast(), 0),
            )?
        };
        for ((descr, set), value) in self.setters.iter().zip(values) {
            // SAFETY: a member descriptor's setter, given its own descriptor, an instance of the
            // class it belongs to and a live object (it takes its own reference).
            if unsafe { set(descr.as_ptr(), record.as_ptr(), value.as_ptr()) } != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(record)
    }
}

/// A (str, bytes) header pair the cyclic GC need not watch: CPython's collector untracks such
/// tuples itself (`_PyTuple_MaybeUntrack`: only atoms inside, no cycle possible), but only when it
/// next walks them; the records' headers stay in flight for milliseconds, thousands at a time.
fn untracked<'py>(pair: Bound<'py, PyTuple>) -> Bound<'py, PyAny> {
    // SAFETY: `pair` is a live tuple of a str and a bytes object, which hold no references; an
    // untracked tuple is freed as any other (tuple dealloc untracks only what is tracked).
    unsafe { pyo3::ffi::PyObject_GC_UnTrack(pair.as_ptr().cast()) };
    pair.into_any()
}

/// The header constants of one call (interned names, the tuples every record shares), and the
/// pairs its records share per agent or session (`ce_source`, `ce_subject`, `ce_sessionid`): one
/// immutable tuple each instead of one per record.
struct Constants<'py> {
    names: Vec<Bound<'py, PyString>>,
    spec: Bound<'py, PyTuple>,
    content: Bound<'py, PyTuple>,
    schema: Bound<'py, PyTuple>,
    ce_types: Vec<Bound<'py, PyTuple>>,
    shared: RefCell<[HashMap<Vec<u8>, Bound<'py, PyAny>, BuildHasherDefault<Fnv>>; 3]>,
}

/// FNV-1a for the shared-pair maps: their keys are short ids from one batch, hashed a few times per
/// record; SipHash's resistance to chosen collisions buys nothing within a call of 256 records.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

impl<'py> Constants<'py> {
    /// The CloudEvents headers of one encoded record (`govbus._cloudevents.headers_for`), in a
    /// vector with room for `more` (the list is then made at its final size: no regrowth).
    fn headers(
        &self,
        py: Python<'py>,
        r: &Encoded,
        f: &PyFields,
        more: usize,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let names = &self.names;
        let pair = |name: &Bound<'py, PyString>, value: &[u8]| -> PyResult<Bound<'py, PyAny>> {
            Ok(untracked((name, PyBytes::new(py, value)).into_pyobject(py)?))
        };
        let mut shared = self.shared.borrow_mut();
        let mut same = |slot: usize, name: usize, value: &[u8]| -> PyResult<Bound<'py, PyAny>> {
            if let Some(t) = shared[slot].get(value) {
                return Ok(t.clone());
            }
            let t = pair(&names[name], value)?;
            shared[slot].insert(value.to_vec(), t.clone());
            Ok(t)
        };
        let mut headers = Vec::with_capacity(9 + more);
        headers.push(self.spec.clone().into_any());
        headers.push(pair(&names[1], &r.id)?);
        headers.push(same(0, 2, &r.source)?);
        headers.push(self.ce_types[f.kind].clone().into_any());
        headers.push(pair(&names[4], &r.time)?);
        headers.push(same(1, 5, f.agent_id.as_bytes())?);
        headers.push(self.content.clone().into_any());
        headers.push(self.schema.clone().into_any());
        if let Some(s) = &r.session {
            headers.push(same(2, 8, s)?);
        }
        Ok(headers)
    }
}

impl BatchEncoder {
    /// Each event's fields (GIL held); None for those the Python path encodes (a traced context).
    fn fields(
        &self,
        py: Python<'_>,
        events: &Bound<'_, PyList>,
        contexts: &Bound<'_, PyList>,
    ) -> PyResult<Vec<Option<PyFields>>> {
        let empty = self.empty_context.bind(py);
        let mut fields: Vec<Option<PyFields>> = Vec::with_capacity(events.len());
        let slots = match events.iter().next() {
            Some(first) => EventSlots::of(&first.get_type(), &EVENT_FIELDS)?,
            None => None,
        };
        for (e, c) in events.iter().zip(contexts.iter()) {
            fields.push(if c.is_none() || c.is(empty) {
                extract(self, py, &e, slots.as_ref())?
            } else {
                None
            });
        }
        Ok(fields)
    }

    fn constants<'py>(&self, py: Python<'py>) -> PyResult<Constants<'py>> {
        let plan = &self.plan;
        let names: Vec<Bound<'py, PyString>> =
            NAMES.iter().map(|n| PyString::intern(py, n)).collect();
        let spec = (names[0].clone(), PyBytes::new(py, b"1.0")).into_pyobject(py)?;
        let content = (names[6].clone(), PyBytes::new(py, &plan.content_type)).into_pyobject(py)?;
        let schema = (names[7].clone(), PyBytes::new(py, &plan.dataschema)).into_pyobject(py)?;
        let ce_types: Vec<Bound<'py, PyTuple>> = plan
            .kinds
            .iter()
            .map(|(_, _, t)| (names[3].clone(), PyBytes::new(py, t)).into_pyobject(py))
            .collect::<Result<_, _>>()?;
        Ok(Constants {
            names,
            spec,
            content,
            schema,
            ce_types,
            shared: RefCell::new(Default::default()),
        })
    }

    /// `encode`'s result: per event `(key, value, headers)` or None.
    fn rows<'py>(
        &self,
        py: Python<'py>,
        encoded: Vec<Option<Encoded>>,
        fields: &[Option<PyFields>],
    ) -> PyResult<Bound<'py, PyList>> {
        let c = self.constants(py)?;
        let result = PyList::empty(py);
        for (out, f) in encoded.into_iter().zip(fields.iter()) {
            let (Some(r), Some(f)) = (out, f) else {
                result.append(py.None())?;
                continue;
            };
            let headers = PyList::new(py, c.headers(py, &r, f, 0)?)?;
            result.append((
                PyBytes::new(py, &r.key),
                PyBytes::new(py, &r.value),
                headers,
            ))?;
        }
        Ok(result)
    }
}

/// Encodes every extracted event (GIL released for a large batch); a panic is None for that event.
fn encode_all(plan: &Plan, fields: &[Option<PyFields>], tail: &[u8]) -> Vec<Option<Encoded>> {
    fields
        .iter()
        .map(|f| {
            let f = f.as_ref()?;
            catch_unwind(AssertUnwindSafe(|| encode_event(plan, f, tail)))
                .ok()
                .flatten()
        })
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BatchEncoder>()?;
    crate::sign::register(m)?;
    crate::partition::register(m)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
