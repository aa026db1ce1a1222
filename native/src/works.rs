//! The consume loop's per-record Python objects, built by the batch intake: for a record it
//! rendered (authentic, or unverified), the `consumers._pipeline.Work` and its
//! `consumers._native_record.NativeRecord` (verdict "valid" / "unverified"), as
//! `NativeRecord.create` and `Work(...)` would build them in Python.
//!
//! Both classes are plain Python classes with `__slots__`: each slot's offset is read once, from
//! its member descriptor, when the builder is made (which refuses a class whose slots are not
//! plain object slots, or whose `__new__` is not `object.__new__`: the caller then builds them in
//! Python); a record's objects are then `tp_alloc` plus one pointer store per slot.

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString, PyType};

/// `Work`'s slots, in the order `WorkBuilder::build` fills them.
const WORK_SLOTS: [&str; 13] = [
    "topic",
    "partition",
    "offset",
    "epoch",
    "size",
    "key",
    "value",
    "headers",
    "timestamp_ms",
    "record",
    "failure",
    "skip",
    "replayed",
];

/// `NativeRecord`'s slots (its own and `DeliveredRecord`'s but `event`/`attributes`, which its
/// properties shadow and `NativeRecord.create` leaves unset), in the order `build` fills them.
const RECORD_SLOTS: [&str; 16] = [
    "topic",
    "partition",
    "offset",
    "timestamp_ms",
    "key",
    "value",
    "headers",
    "verdict",
    "verdict_detail",
    "flagged",
    "line",
    "event_id",
    "_decoder",
    "_event",
    "_attrs",
    "_draft",
];

/// What `rows` hands a rendered record's objects from.
pub(crate) struct Parts<'py> {
    pub topic: Bound<'py, PyAny>,
    pub partition: Bound<'py, PyAny>,
    pub offset: Bound<'py, PyAny>,
    pub size: Bound<'py, PyAny>,
    pub key: Bound<'py, PyAny>,
    pub value: Bound<'py, PyAny>,
    pub headers: Bound<'py, PyAny>,
    pub timestamp_ms: Bound<'py, PyAny>,
    pub line: Bound<'py, PyAny>,
    /// What the record's sink has drafted for it at intake (`LedgerDraft`, `OtlpDraft`) or None.
    pub draft: Bound<'py, PyAny>,
    pub event_id: Bound<'py, PyAny>,
    pub event: Bound<'py, PyAny>,
    pub attrs: Bound<'py, PyAny>,
}

/// Builds `Work` + `NativeRecord` pairs for one intake (its lazy decoder goes in every record).
#[pyclass(module = "govbus._native", frozen)]
pub struct WorkBuilder {
    work_type: Py<PyType>,
    record_type: Py<PyType>,
    work: [isize; WORK_SLOTS.len()],
    record: [isize; RECORD_SLOTS.len()],
    decoder: Py<PyAny>,
    empty: Py<PyString>,
}

/// The offsets of `names` in instances of `cls`. The limited API does not show a member
/// descriptor's offset, so each is found by setting the slot of a probe instance through its
/// descriptor to a sentinel and finding that one pointer in the instance; then checked the other
/// way (a pointer stored there is what the descriptor reads).
fn offsets<const N: usize>(py: Python<'_>, cls: &Bound<'_, PyType>, names: [&str; N]) -> PyResult<[isize; N]> {
    let refuse = |why: String| PyValueError::new_err(format!("{}: {why}", cls.name().map(|n| n.to_string()).unwrap_or_default()));
    let object = py.import("builtins")?.getattr("object")?;
    if !cls.getattr("__new__")?.is(&object.getattr("__new__")?) {
        return Err(refuse("has its own __new__".into()));
    }
    if cls.getattr("__itemsize__")?.extract::<isize>()? != 0 || cls.hasattr("__dictoffset__")? && cls.getattr("__dictoffset__")?.extract::<isize>()? != 0 {
        return Err(refuse("is not a class of slots only".into()));
    }
    let basic: isize = cls.getattr("__basicsize__")?.extract()?;
    let word = std::mem::size_of::<*mut ffi::PyObject>() as isize;
    let head = std::mem::size_of::<ffi::PyObject>() as isize;
    let member = py.import("types")?.getattr("MemberDescriptorType")?;
    let cls_ref: Py<PyType> = cls.clone().unbind();
    let mut out = [0isize; N];
    for (slot, name) in out.iter_mut().zip(names) {
        let d = cls.getattr(name).map_err(|_| refuse(format!("has no slot {name}")))?;
        if !d.get_type().is(&member) {
            return Err(refuse(format!("{name} is not a slot")));
        }
        let probe = alloc(py, &cls_ref)?;
        // SAFETY: `probe` is a fresh instance, owned here.
        let probe = unsafe { Bound::from_owned_ptr(py, probe) };
        let sentinel = object.call0()?;
        d.call_method1("__set__", (&probe, &sentinel))?;
        let mut found = Vec::new();
        let mut at = head;
        while at + word <= basic {
            // SAFETY: within the instance's basic size, word-aligned from its start.
            let p = unsafe { *probe.as_ptr().cast::<u8>().offset(at).cast::<*mut ffi::PyObject>() };
            if p == sentinel.as_ptr() {
                found.push(at);
            }
            at += word;
        }
        let [offset] = found[..] else {
            return Err(refuse(format!("the slot {name} was not found in its instances")));
        };
        let check = alloc(py, &cls_ref)?;
        // SAFETY: fresh instance; `offset` is within it and holds its (unset) slot.
        let check = unsafe {
            fill(check, offset, sentinel.clone());
            Bound::from_owned_ptr(py, check)
        };
        if !d.call_method1("__get__", (&check, cls))?.is(&sentinel) {
            return Err(refuse(format!("the slot {name} is not a plain object slot")));
        }
        *slot = offset;
    }
    let mut sorted = out;
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(refuse("two slots share a place".into()));
    }
    Ok(out)
}

/// A new instance of `cls` (what `object.__new__(cls)` does), its slots all unset.
fn alloc(py: Python<'_>, cls: &Py<PyType>) -> PyResult<*mut ffi::PyObject> {
    // SAFETY: `cls` is a live type object; its tp_alloc (PyType_GenericAlloc for classes defined
    // in Python) gives a new reference, or NULL with an exception set.
    let obj = unsafe {
        let t = cls.as_ptr().cast::<ffi::PyTypeObject>();
        let slot = ffi::PyType_GetSlot(t, ffi::Py_tp_alloc);
        if slot.is_null() {
            ffi::PyType_GenericAlloc(t, 0)
        } else {
            let tp_alloc: ffi::allocfunc = std::mem::transmute(slot);
            tp_alloc(t, 0)
        }
    };
    if obj.is_null() {
        Err(PyErr::fetch(py))
    } else {
        Ok(obj)
    }
}

/// Fills the slot at `offset` of a fresh object (unset until now, so no reference to drop).
///
/// SAFETY: `obj` was just made by `alloc` for the class `offset` was checked against.
unsafe fn fill(obj: *mut ffi::PyObject, offset: isize, value: Bound<'_, PyAny>) {
    *obj.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>() = value.into_ptr();
}

#[pymethods]
impl WorkBuilder {
    /// `work_type` / `record_type`: `Work` and `NativeRecord`; `decoder`: the intake's lazy decoder.
    #[new]
    fn new(py: Python<'_>, work_type: Bound<'_, PyType>, record_type: Bound<'_, PyType>, decoder: Py<PyAny>) -> PyResult<Self> {
        Ok(WorkBuilder {
            work: offsets(py, &work_type, WORK_SLOTS)?,
            record: offsets(py, &record_type, RECORD_SLOTS)?,
            work_type: work_type.unbind(),
            record_type: record_type.unbind(),
            decoder,
            empty: PyString::intern(py, "").unbind(),
        })
    }
}

impl WorkBuilder {
    /// The `Work` (epoch 0: `Intake.take` sets it) delivering a `NativeRecord` of verdict `verdict`.
    pub(crate) fn build<'py>(&self, py: Python<'py>, p: Parts<'py>, verdict: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        let none = || py.None().into_bound(py);
        let no = || PyBool::new(py, false).to_owned().into_any();
        let record = alloc(py, &self.record_type)?;
        // SAFETY: `record` is fresh and owned here; it is wrapped before anything can fail.
        let record_obj = unsafe { Bound::from_owned_ptr(py, record) };
        let r = &self.record;
        // SAFETY: fresh object of the class the offsets were read from (and in `work` below).
        unsafe {
            fill(record, r[0], p.topic.clone());
            fill(record, r[1], p.partition.clone());
            fill(record, r[2], p.offset.clone());
            fill(record, r[3], p.timestamp_ms.clone());
            fill(record, r[4], p.key.clone());
            fill(record, r[5], p.value.clone());
            fill(record, r[6], p.headers.clone());
            fill(record, r[7], verdict.clone().into_any());
            fill(record, r[8], self.empty.bind(py).clone().into_any());
            fill(record, r[9], no());
            fill(record, r[10], p.line);
            fill(record, r[11], p.event_id);
            fill(record, r[12], self.decoder.bind(py).clone());
            fill(record, r[13], p.event);
            fill(record, r[14], p.attrs);
            fill(record, r[15], p.draft);
        }
        let work = alloc(py, &self.work_type)?;
        // SAFETY: as above.
        let work_obj = unsafe { Bound::from_owned_ptr(py, work) };
        let w = &self.work;
        unsafe {
            fill(work, w[0], p.topic);
            fill(work, w[1], p.partition);
            fill(work, w[2], p.offset);
            fill(work, w[3], 0i64.into_pyobject(py)?.into_any());
            fill(work, w[4], p.size);
            fill(work, w[5], p.key);
            fill(work, w[6], p.value);
            fill(work, w[7], p.headers);
            fill(work, w[8], p.timestamp_ms);
            fill(work, w[9], record_obj);
            fill(work, w[10], none());
            fill(work, w[11], none());
            fill(work, w[12], no());
        }
        Ok(work_obj)
    }
}
