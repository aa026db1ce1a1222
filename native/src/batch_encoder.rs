//! The producer's batch step as a Python class (`govbus._native.BatchEncoder`): a micro-batch's
//! events read (`extract.rs`), encoded (`encode.rs`, GIL released), routed and signed (`sign.rs`),
//! and handed back as header lists and `OutgoingRecord`s made at their final size.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple, PyType};

use crate::encode::{encode_event, Encoded, Plan};
use crate::extract::{extract, EventSlots, PyFields, EVENT_FIELDS};
use crate::partition::partition_for;
use crate::sign::{merkle, ToSign};

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

/// The compiled batch step of the producer: see the module documentation.
#[pyclass(module = "govbus._native", frozen)]
pub struct BatchEncoder {
    pub(crate) plan: Plan,
    pub(crate) empty_context: PyObject,
    pub(crate) utc: PyObject,
    pub(crate) datetime: Py<PyType>,
    pub(crate) list: Py<PyType>,
    pub(crate) tuple: Py<PyType>,
    pub(crate) dict: Py<PyType>,
    pub(crate) frozen_list: Py<PyType>,
    pub(crate) frozen_dict: Py<PyType>,
    /// The event class last seen first in a batch, and where its fields live (None: read by
    /// name): looked up once per class, not once per batch (a kernel emitting one event at a
    /// time makes batches of one).
    event_slots: Mutex<Option<(Py<PyType>, Option<Arc<EventSlots>>)>>,
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
            event_slots: Mutex::new(None),
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
            headers.push(untracked(
                (&seq_name, PyBytes::new(py, &seq)).into_pyobject(py)?,
            ));
            headers.push(untracked(
                (&proof_name, PyBytes::new(py, &proof)).into_pyobject(py)?,
            ));
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
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
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
            Ok(untracked(
                (name, PyBytes::new(py, value)).into_pyobject(py)?,
            ))
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
    /// Where the fields of `cls` live, from the cache when `cls` is the class it holds.
    fn event_slots(&self, cls: &Bound<'_, PyType>) -> PyResult<Option<Arc<EventSlots>>> {
        // Poisoned only by a panic while the GIL-holding caller held it: the entry is whole.
        let mut cached = self.event_slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, slots)) = cached.as_ref() {
            if cls.is(seen) {
                return Ok(slots.clone());
            }
        }
        let slots = EventSlots::of(cls, &EVENT_FIELDS)?.map(Arc::new);
        *cached = Some((cls.clone().unbind(), slots.clone()));
        Ok(slots)
    }

    fn fields(
        &self,
        py: Python<'_>,
        events: &Bound<'_, PyList>,
        contexts: &Bound<'_, PyList>,
    ) -> PyResult<Vec<Option<PyFields>>> {
        let empty = self.empty_context.bind(py);
        let mut fields: Vec<Option<PyFields>> = Vec::with_capacity(events.len());
        let slots = match events.iter().next() {
            Some(first) => self.event_slots(&first.get_type())?,
            None => None,
        };
        for (e, c) in events.iter().zip(contexts.iter()) {
            fields.push(if c.is_none() || c.is(empty) {
                extract(self, py, &e, slots.as_deref())?
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
