//! The Python event of a decoded record, built from the native decode (`record::Decoded`) for
//! sinks that read `record.event` / `record.attributes`: a `govbus.event.GovernanceEvent` equal,
//! field by field and type by type, to what `govbus._record.from_record(...).event` gives (the
//! reference: fastavro, `_contract.from_datum`, `event.decoded_event`), and the
//! `govbus._cloudevents.CloudEventAttributes` of `parse_headers`, without decoding the record again.
//!
//! The decode already applied the model's semantic checks, so the frozen dataclasses are filled
//! through their slots (`object.__new__` + `PyObject_GenericSetAttr`, what `decoded_event` does with
//! the slots' setters). Nested JSON attributes become what the reference's `json.JSONDecoder` makes
//! of them (plain `dict` and `list`, `int` of any size, `float`, `str`, `bool`, None): the text
//! reaching here was already parsed by `json::reencode` while rendering, which sends everything
//! only CPython reproduces (lone surrogates, overflowing floats, 4300+-digit integers, deep
//! nesting) to the Python path, so the grammar below can be CPython's without its corner cases.
//! A failure or panic while building leaves the event unbuilt: the record's `event` then decodes
//! on the Python path, as before.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyString, PyTuple, PyType};

use crate::civil::civil;
use crate::event::{Attr, Event};
use crate::json;
use crate::record::{Decoded, Schemas, KNOWN};

/// The model's fields in declaration order (`govbus.event.FIELDS`); the builder refuses a model
/// whose fields differ (a field added in Python must be added here too).
const EVENT_FIELDS: [&str; 22] = [
    "agent_id",
    "kind",
    "severity",
    "action",
    "decision",
    "reason",
    "event_id",
    "occurred_at",
    "agent_did",
    "session_id",
    "resource",
    "policy_name",
    "latency_ms",
    "trace_id",
    "span_id",
    "parent_span_id",
    "attributes",
    "schema_version",
    "producer",
    "tenant_id",
    "policy_version",
    "risk_score",
];
const ATTRS_FIELDS: [&str; 9] =
    ["specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema", "extensions"];

/// A record value whose event build panics, for the tests of the fallback (None: off).
static PROBE: Mutex<Option<Vec<u8>>> = Mutex::new(None);
static PROBE_SET: AtomicBool = AtomicBool::new(false);

fn probe_hit(value: &[u8]) -> bool {
    PROBE_SET.load(Ordering::Relaxed) && PROBE.lock().map(|p| p.as_deref() == Some(value)).unwrap_or(false)
}

/// Makes the event build panic on records whose value is exactly `value` (None turns it off). Tests only.
#[pyfunction]
#[pyo3(signature = (value))]
fn _set_event_panic_probe(value: Option<Vec<u8>>) {
    PROBE_SET.store(value.is_some(), Ordering::Relaxed);
    if let Ok(mut p) = PROBE.lock() {
        *p = value;
    }
}

/// Builds the Python `GovernanceEvent` and `CloudEventAttributes` of natively decoded records.
#[pyclass(module = "govbus._native", frozen)]
pub struct EventBuilder {
    event_type: Py<PyType>,
    producer_type: Py<PyAny>,
    attrs_type: Py<PyType>,
    datetime: Py<PyAny>,
    utc: Py<PyAny>,
    int_type: Py<PyAny>,
    /// EventKind member by value.
    kinds: HashMap<String, Py<PyAny>>,
    event_names: Vec<Py<PyString>>,
    attrs_names: Vec<Py<PyString>>,
    failures: AtomicU64,
}

#[pymethods]
impl EventBuilder {
    /// `event_fields` / `attrs_fields`: the dataclasses' field names, which must be the ones this
    /// builder fills; `kinds`: EventKind value -> member.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        event_type: Py<PyType>,
        event_fields: Vec<String>,
        producer_type: Py<PyAny>,
        attrs_type: Py<PyType>,
        attrs_fields: Vec<String>,
        datetime: Py<PyAny>,
        utc: Py<PyAny>,
        kinds: HashMap<String, Py<PyAny>>,
    ) -> PyResult<Self> {
        if event_fields != EVENT_FIELDS || attrs_fields != ATTRS_FIELDS {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "the event model's fields are not the ones the compiled event builder knows",
            ));
        }
        // Filled through slots only: a class with its own __new__ or a base with state would not be.
        let object = py.import("builtins")?.getattr("object")?;
        for cls in [&event_type, &attrs_type] {
            let cls = cls.bind(py);
            if !cls.getattr("__new__")?.is(&object.getattr("__new__")?) || !cls.getattr("__base__")?.is(&object) {
                return Err(pyo3::exceptions::PyValueError::new_err("an event class the builder cannot fill"));
            }
        }
        let intern = |names: &[&str]| names.iter().map(|n| PyString::intern(py, n).unbind()).collect();
        Ok(EventBuilder {
            event_type,
            producer_type,
            attrs_type,
            datetime,
            utc,
            int_type: py.import("builtins")?.getattr("int")?.unbind(),
            kinds,
            event_names: intern(&EVENT_FIELDS),
            attrs_names: intern(&ATTRS_FIELDS),
            failures: AtomicU64::new(0),
        })
    }

    /// Records whose event could not be built here (each then decoded on the Python path).
    #[getter]
    fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// Per-batch memory: consecutive events of one producer share its (immutable) `ProducerInfo`.
#[derive(Default)]
pub struct BatchCache<'a, 'py> {
    producer: Option<([&'a str; 4], Bound<'py, PyAny>)>,
}

/// `object.__new__(cls)` for a class of plain Python slots (what `object_new` does: `tp_alloc`).
fn alloc<'py>(py: Python<'py>, cls: &Py<PyType>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `cls` is a live type object; PyType_GenericAlloc is the tp_alloc of classes defined in
    // Python (the dataclasses here), returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(cls.as_ptr().cast(), 0)) }
}

fn set(obj: &Bound<'_, PyAny>, name: &Py<PyString>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: three live objects held by the caller; GenericSetAttr is object.__setattr__, which
    // fills a slot of a frozen dataclass without its refusing __setattr__ (as decoded_event does).
    let rc = unsafe { ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) };
    if rc < 0 {
        Err(PyErr::fetch(obj.py()))
    } else {
        Ok(())
    }
}

fn text<'py>(py: Python<'py>, s: &str) -> Bound<'py, PyAny> {
    PyString::new(py, s).into_any()
}

fn opt_text<'py>(py: Python<'py>, s: Option<&str>) -> Bound<'py, PyAny> {
    match s {
        Some(s) => text(py, s),
        None => py.None().into_bound(py),
    }
}

impl EventBuilder {
    /// `(event, attributes)`, or None when it could not be built (counted in `failures`; the
    /// record's event then decodes on the Python path).
    pub(crate) fn try_build<'a, 'py>(
        &self,
        py: Python<'py>,
        value: &[u8],
        d: &Decoded<'a>,
        id: &Bound<'py, PyString>,
        schemas: &Schemas,
        cache: &mut BatchCache<'a, 'py>,
    ) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let built = catch_unwind(AssertUnwindSafe(|| {
            if probe_hit(value) {
                panic!("govbus._native event build probe");
            }
            self.build(py, d, id, schemas, cache)
        }));
        match built {
            Ok(Ok(pair)) => Some(pair),
            _ => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn build<'a, 'py>(
        &self,
        py: Python<'py>,
        d: &Decoded<'a>,
        id: &Bound<'py, PyString>,
        schemas: &Schemas,
        cache: &mut BatchCache<'a, 'py>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let e: &Event<'a> = &d.event;
        let kind_value = schemas
            .writers
            .get(d.writer)
            .and_then(|w| w.kinds.get(e.kind))
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("kind index"))?;
        let kind = self
            .kinds
            .get(kind_value.as_str())
            .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("unknown kind value"))?
            .bind(py);
        let (y, mo, day, h, mi, s, us) = civil(e.occurred_at);
        let occurred = self.datetime.bind(py).call1((y, mo, day, h, mi, s, us, self.utc.bind(py)))?;
        let producer = match &cache.producer {
            Some((key, p)) if *key == e.producer => p.clone(),
            _ => {
                let [name, instance, host, library] = e.producer;
                let p = self.producer_type.bind(py).call1((name, instance, host, library))?;
                cache.producer = Some((e.producer, p.clone()));
                p
            }
        };
        let attributes = PyDict::new(py);
        for (k, v) in &e.attributes {
            let v: Bound<'py, PyAny> = match v {
                Attr::Null => py.None().into_bound(py),
                Attr::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
                Attr::Long(n) => n.into_pyobject(py)?.into_any(),
                Attr::Double(x) => PyFloat::new(py, *x).into_any(),
                Attr::Str(s) => text(py, s),
                Attr::Bytes(b) => PyBytes::new(py, b).into_any(),
                Attr::Json(t) => Json { py, p: json::Parser::new(t.as_bytes()), int_type: self.int_type.bind(py) }.document()?,
            };
            attributes.set_item(PyString::new(py, k), v)?;
        }
        let none = py.None().into_bound(py);
        let event = alloc(py, &self.event_type)?;
        let n = &self.event_names;
        let id_any = id.as_any();
        set(&event, &n[0], &text(py, e.agent_id))?;
        set(&event, &n[1], kind)?;
        set(&event, &n[2], &text(py, e.severity))?;
        set(&event, &n[3], &text(py, e.action))?;
        set(&event, &n[4], &text(py, e.decision))?;
        set(&event, &n[5], &text(py, e.reason))?;
        set(&event, &n[6], id_any)?;
        set(&event, &n[7], &occurred)?;
        set(&event, &n[8], &opt_text(py, e.agent_did))?;
        set(&event, &n[9], &opt_text(py, e.session_id))?;
        set(&event, &n[10], &opt_text(py, e.resource))?;
        set(&event, &n[11], &opt_text(py, e.policy_name))?;
        set(&event, &n[12], PyFloat::new(py, e.latency_ms).as_any())?;
        set(&event, &n[13], &opt_text(py, e.trace_id))?;
        set(&event, &n[14], &opt_text(py, e.span_id))?;
        set(&event, &n[15], &opt_text(py, e.parent_span_id))?;
        set(&event, &n[16], attributes.as_any())?;
        set(&event, &n[17], &text(py, e.schema_version))?;
        set(&event, &n[18], &producer)?;
        set(&event, &n[19], &opt_text(py, e.tenant_id))?;
        set(&event, &n[20], &opt_text(py, e.policy_version))?;
        match e.risk_score {
            Some(x) => set(&event, &n[21], PyFloat::new(py, x).as_any())?,
            None => set(&event, &n[21], &none)?,
        }

        // parse_headers: the required four are there (the decode checked), the rest may be absent.
        let get = |k: &str| d.ce.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let extensions = PyDict::new(py);
        for (k, v) in &d.ce {
            if !KNOWN.contains(k) {
                extensions.set_item(PyString::new(py, k), PyString::new(py, v))?;
            }
        }
        let attrs = alloc(py, &self.attrs_type)?;
        let a = &self.attrs_names;
        set(&attrs, &a[0], &opt_text(py, get("specversion")))?;
        // ce_id equals event_id (the decode checked): one string for both.
        set(&attrs, &a[1], id_any)?;
        set(&attrs, &a[2], &opt_text(py, get("source")))?;
        set(&attrs, &a[3], &opt_text(py, get("type")))?;
        set(&attrs, &a[4], &opt_text(py, get("time")))?;
        set(&attrs, &a[5], &opt_text(py, get("subject")))?;
        set(&attrs, &a[6], &opt_text(py, d.content_type))?;
        set(&attrs, &a[7], &opt_text(py, get("dataschema")))?;
        set(&attrs, &a[8], extensions.as_any())?;
        Ok((event, attrs))
    }
}

fn not_json() -> PyErr {
    pyo3::exceptions::PyValueError::new_err("nested JSON the native builder does not take")
}

/// JSON text to Python objects as `json.JSONDecoder` makes them (input already checked by
/// `json::reencode`; lexed by its parser's steps).
struct Json<'a, 'py, 'b> {
    py: Python<'py>,
    p: json::Parser<'a>,
    int_type: &'b Bound<'py, PyAny>,
}

impl<'py> Json<'_, 'py, '_> {
    fn document(mut self) -> PyResult<Bound<'py, PyAny>> {
        self.p.ws();
        let v = self.value(0)?;
        self.p.ws();
        if self.p.i != self.p.s.len() {
            return Err(not_json());
        }
        Ok(v)
    }

    fn peek(&self) -> Option<u8> {
        self.p.s.get(self.p.i).copied()
    }

    fn string(&mut self) -> PyResult<Bound<'py, PyString>> {
        let text = self.p.string().map_err(|_| not_json())?; // a lone surrogate: the Python path's
        Ok(PyString::new(self.py, &text))
    }

    fn value(&mut self, depth: usize) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        if depth > 100 {
            return Err(not_json());
        }
        match self.peek() {
            Some(b'"') => Ok(self.string()?.into_any()),
            Some(b'{') => {
                self.p.i += 1;
                let d = PyDict::new(py);
                self.p.ws();
                if self.peek() == Some(b'}') {
                    self.p.i += 1;
                    return Ok(d.into_any());
                }
                loop {
                    self.p.ws();
                    if self.peek() != Some(b'"') {
                        return Err(not_json());
                    }
                    let k = self.string()?;
                    self.p.ws();
                    if self.peek() != Some(b':') {
                        return Err(not_json());
                    }
                    self.p.i += 1;
                    self.p.ws();
                    // A repeated key keeps its first place and takes the last value (dict(pairs)).
                    d.set_item(k, self.value(depth + 1)?)?;
                    self.p.ws();
                    match self.peek() {
                        Some(b',') => self.p.i += 1,
                        Some(b'}') => {
                            self.p.i += 1;
                            return Ok(d.into_any());
                        }
                        _ => return Err(not_json()),
                    }
                }
            }
            Some(b'[') => {
                self.p.i += 1;
                let l = pyo3::types::PyList::empty(py);
                self.p.ws();
                if self.peek() == Some(b']') {
                    self.p.i += 1;
                    return Ok(l.into_any());
                }
                loop {
                    self.p.ws();
                    l.append(self.value(depth + 1)?)?;
                    self.p.ws();
                    match self.peek() {
                        Some(b',') => self.p.i += 1,
                        Some(b']') => {
                            self.p.i += 1;
                            return Ok(l.into_any());
                        }
                        _ => return Err(not_json()),
                    }
                }
            }
            Some(b'n') => self.literal(b"null", py.None().into_bound(py)),
            Some(b't') => self.literal(b"true", PyBool::new(py, true).to_owned().into_any()),
            Some(b'f') => self.literal(b"false", PyBool::new(py, false).to_owned().into_any()),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(not_json()),
        }
    }

    fn literal(&mut self, word: &[u8], v: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if !self.p.s[self.p.i..].starts_with(word) {
            return Err(not_json());
        }
        self.p.i += word.len();
        Ok(v)
    }

    /// int() of the integer part alone, else float() of the whole.
    fn number(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let (start, _, is_float) = self.p.number_span().map_err(|_| not_json())?;
        let lit = std::str::from_utf8(&self.p.s[start..self.p.i]).map_err(|_| not_json())?;
        if is_float {
            let x: f64 = lit.parse().map_err(|_| not_json())?;
            if !x.is_finite() {
                return Err(not_json());
            }
            return Ok(PyFloat::new(self.py, x).into_any());
        }
        match lit.parse::<i64>() {
            Ok(n) => Ok(n.into_pyobject(self.py)?.into_any()),
            Err(_) => self.int_type.call1((lit,)), // beyond 64 bits: Python's int() of the digits
        }
    }
}

/// Builds the events of records rendered by `RecordRenderer.render` (one tuple per record:
/// `(line, event_id, legacy)`), appending `(event, attributes)` or `(None, None)` to each.
pub(crate) fn extend_row<'py>(
    py: Python<'py>,
    row: (Bound<'py, PyAny>, Bound<'py, PyString>, bool),
    built: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (line, id, legacy) = row;
    let (event, attrs) = match built {
        Some((e, a)) => (e, a),
        None => (py.None().into_bound(py), py.None().into_bound(py)),
    };
    PyTuple::new(py, [line, id.into_any(), PyBool::new(py, legacy).to_owned().into_any(), event, attrs])
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<EventBuilder>()?;
    m.add_function(wrap_pyfunction!(_set_event_panic_probe, m)?)?;
    Ok(())
}
