//! govbus._native: the compiled hot path of govbus (see docs/native.md).
//!
//! Every entry point takes a whole batch, releases the GIL while it works, and isolates each
//! record: a panic while handling one record becomes that record's `internal-error` outcome
//! instead of failing the batch (or the process).

pub mod avro;
pub mod batch_encoder;
pub mod civil;
pub mod consumed;
pub mod encode;
pub mod event;
pub(crate) mod extract;
pub mod fuzzing;
pub mod intake;
pub mod json;
pub mod ledger;
pub mod ledger_draft;
pub mod message;
pub mod otlp;
pub mod otlp_draft;
pub mod otlp_map;
pub mod partition;
pub mod pyevent;
pub mod record;
pub mod sign;
pub(crate) mod slots;
pub mod verify;
pub mod works;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyList, PyTuple};

use event::Writer;

/// The extension's Rust allocations (the batch passes' buffers, headers and decode trees) come
/// from mimalloc's per-thread heaps. With glibc's malloc the consume loop's pass, run with the GIL
/// released beside librdkafka's threads that share its arena, spent ~8% of its time waking
/// waiters of the arena lock (`__lll_lock_wake_private` under `malloc`, py-spy). Only the
/// extension module: `cargo test` and the fuzz drivers keep the system allocator.
#[cfg(feature = "extension-module")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use record::{Header, Outcome, Schemas, Verdict};

/// A record value that makes the decoder panic, for the tests of the panic path (None: off).
static PANIC_PROBE: Mutex<Option<Vec<u8>>> = Mutex::new(None);
static PANIC_PROBE_SET: AtomicBool = AtomicBool::new(false);

pub(crate) fn probe_hit(value: &[u8]) -> bool {
    PANIC_PROBE_SET.load(Ordering::Relaxed) && PANIC_PROBE.lock().map(|p| p.as_deref() == Some(value)).unwrap_or(false)
}

/// Makes the decoder panic on records whose value is exactly `value` (None turns it off). Tests only.
#[pyfunction]
#[pyo3(signature = (value))]
fn _set_panic_probe(value: Option<Vec<u8>>) {
    PANIC_PROBE_SET.store(value.is_some(), Ordering::Relaxed);
    if let Ok(mut p) = PANIC_PROBE.lock() {
        *p = value;
    }
}

struct Input {
    value: PyBackedBytes,
    headers: Vec<(PyBackedStr, Option<PyBackedBytes>)>,
    verdict: PyBackedStr,
    detail: PyBackedStr,
    flagged: bool,
}

fn extract(item: &Bound<'_, PyAny>) -> PyResult<Input> {
    let t = item.downcast::<PyTuple>()?;
    let raw_headers = t.get_item(1)?;
    let mut headers = Vec::new();
    if !raw_headers.is_none() {
        for h in raw_headers.try_iter()? {
            let h = h?;
            let h = h.downcast::<PyTuple>()?;
            let v = h.get_item(1)?;
            headers.push((h.get_item(0)?.extract()?, if v.is_none() { None } else { Some(v.extract()?) }));
        }
    }
    Ok(Input {
        value: t.get_item(0)?.extract()?,
        headers,
        verdict: t.get_item(2)?.extract()?,
        detail: t.get_item(3)?.extract()?,
        flagged: t.get_item(4)?.extract()?,
    })
}

enum Out<'a> {
    Outcome(Outcome, Option<Box<record::Decoded<'a>>>),
    Panic,
}

/// Decodes and renders consumed records (single-object framing) without building Python events.
#[pyclass(module = "govbus._native", frozen)]
pub struct RecordRenderer {
    // Shared with the intake's background pass (intake.rs), which renders without the GIL.
    pub(crate) schemas: Arc<Schemas>,
}

#[pymethods]
impl RecordRenderer {
    /// `writers`: (fingerprint, legacy fingerprint or None, has the v2 fields, rendered kind per
    /// enum index, the reader has the v2 fields) for each shipped writer schema.
    #[new]
    fn new(writers: Vec<(Vec<u8>, Option<Vec<u8>>, bool, Vec<String>, bool)>) -> PyResult<Self> {
        let mut schemas = Schemas { by_fingerprint: HashMap::new(), by_legacy: HashMap::new(), writers: Vec::new() };
        for (i, (fp, legacy, extras, kinds, reader_extras)) in writers.into_iter().enumerate() {
            let fp: [u8; 8] =
                fp.try_into().map_err(|_| pyo3::exceptions::PyValueError::new_err("a fingerprint is 8 bytes"))?;
            schemas.by_fingerprint.insert(fp, i);
            if let Some(l) = legacy {
                let l: [u8; 8] =
                    l.try_into().map_err(|_| pyo3::exceptions::PyValueError::new_err("a fingerprint is 8 bytes"))?;
                schemas.by_legacy.insert(l, i);
            }
            schemas.writers.push(Writer { extras, kinds, reader_extras });
        }
        Ok(RecordRenderer { schemas: Arc::new(schemas) })
    }

    /// One outcome per record `(value, headers, verdict, verdict_detail, flagged)`:
    /// `(line, event_id, legacy)`; a DecodeError reason (str); `"internal-error"` when the
    /// native code failed on it; None when only the Python path can judge it. With `events`, a
    /// line comes as `(line, event_id, legacy, event, attributes)` (None, None: not built).
    #[pyo3(signature = (records, events=None))]
    fn render<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyList>,
        events: Option<PyRef<'py, pyevent::EventBuilder>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let inputs: Vec<Option<Input>> = records.iter().map(|item| extract(&item).ok()).collect();
        let schemas = &self.schemas;
        let keep = events.is_some();
        let outs: Vec<Out> = py.allow_threads(|| {
            inputs
                .iter()
                .map(|input| match input {
                    None => Out::Outcome(Outcome::Defer, None),
                    Some(i) => {
                        let headers: Vec<Header> =
                            i.headers.iter().map(|(n, v)| (&**n, v.as_ref().map(|b| &**b))).collect();
                        let verdict = Verdict { code: &i.verdict, detail: &i.detail, flagged: i.flagged };
                        match catch_unwind(AssertUnwindSafe(|| {
                            if probe_hit(&i.value) {
                                panic!("govbus._native panic probe");
                            }
                            if keep {
                                record::process_keep(&i.value, &headers, &verdict, schemas)
                            } else {
                                (record::process(&i.value, &headers, &verdict, schemas), None)
                            }
                        })) {
                            Ok((o, d)) => Out::Outcome(o, d),
                            Err(_) => Out::Panic,
                        }
                    }
                })
                .collect()
        });
        let result = PyList::empty(py);
        let mut cache = pyevent::BatchCache::default();
        for (out, input) in outs.into_iter().zip(&inputs) {
            match out {
                Out::Outcome(Outcome::Line(line, id, legacy), decoded) => {
                    let id = pyo3::types::PyString::new(py, &id);
                    match (&events, decoded, input) {
                        (Some(b), Some(d), Some(i)) => {
                            let built = b.try_build(py, &i.value, &d, &id, schemas, &mut cache);
                            let row = (PyBytes::new(py, &line).into_any(), id, legacy);
                            result.append(pyevent::extend_row(py, row, built)?)?;
                        }
                        _ => result.append((PyBytes::new(py, &line), id, legacy))?,
                    }
                }
                Out::Outcome(Outcome::Error(reason), _) => result.append(reason)?,
                Out::Outcome(Outcome::Defer, _) => result.append(py.None())?,
                Out::Panic => result.append("internal-error")?,
            }
        }
        Ok(result)
    }
}

struct SigInput {
    value: Option<PyBackedBytes>,
    key: Option<PyBackedBytes>,
    headers: Vec<(PyBackedStr, Option<PyBackedBytes>)>,
    partition: u32,
}

fn extract_sig(item: &Bound<'_, PyAny>) -> PyResult<SigInput> {
    let t = item.downcast::<PyTuple>()?;
    let opt = |o: Bound<'_, PyAny>| -> PyResult<Option<PyBackedBytes>> {
        if o.is_none() {
            Ok(None)
        } else {
            Ok(Some(o.extract()?))
        }
    };
    let raw_headers = t.get_item(2)?;
    let mut headers = Vec::new();
    if !raw_headers.is_none() {
        for h in raw_headers.try_iter()? {
            let h = h?;
            let h = h.downcast::<PyTuple>()?;
            if h.len() != 2 {
                return Err(pyo3::exceptions::PyValueError::new_err("a header is a pair"));
            }
            headers.push((h.get_item(0)?.extract()?, opt(h.get_item(1)?)?));
        }
    }
    Ok(SigInput { value: opt(t.get_item(0)?)?, key: opt(t.get_item(1)?)?, headers, partition: t.get_item(3)?.extract()? })
}

/// Batch signature checks (suite ed25519-merkle-v1) with a cache of verified batch roots.
#[pyclass(module = "govbus._native")]
pub struct SignatureChecker {
    // Behind a lock: the intake's background pass (intake.rs) checks a batch on its own thread.
    pub(crate) inner: Arc<Mutex<verify::Checker>>,
    // Counts set_keys calls, readable without waiting for the lock a pass may hold.
    pub(crate) generation: Arc<AtomicU64>,
}

impl SignatureChecker {
    /// The checker; a lock poisoned by a panic is taken over (the checker's state is only a cache
    /// and the keys, both whole after any panic inside a check).
    pub(crate) fn lock(&self) -> MutexGuard<'_, verify::Checker> {
        lock(&self.inner)
    }
}

pub(crate) fn lock(m: &Mutex<verify::Checker>) -> MutexGuard<'_, verify::Checker> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[pymethods]
impl SignatureChecker {
    #[new]
    fn new(cache_size: usize) -> Self {
        SignatureChecker {
            inner: Arc::new(Mutex::new(verify::Checker::new(cache_size))),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The trusted keys, kid (UTF-8 bytes) -> raw 32-byte Ed25519 public key; empties the cache.
    fn set_keys(&mut self, py: Python<'_>, keys: HashMap<Vec<u8>, Vec<u8>>) {
        let parsed = keys
            .into_iter()
            .filter_map(|(kid, raw)| {
                let raw: [u8; 32] = raw.try_into().ok()?;
                Some((kid, ed25519_dalek::VerifyingKey::from_bytes(&raw).ok()?))
            })
            .collect();
        // A background pass may hold the lock for a batch: wait for it without the GIL.
        py.allow_threads(|| {
            let mut checker = self.lock();
            checker.set_keys(parsed);
            self.generation.fetch_add(1, Ordering::SeqCst);
        });
    }

    #[getter]
    fn signature_checks(&self, py: Python<'_>) -> u64 {
        py.allow_threads(|| self.lock().signature_checks)
    }

    /// Per record `(value, key, headers, partition)`: `(kid, stream, sequence, signed_at_ms, ce_id)`
    /// when it is authentic, None when the Python verifier must judge it.
    fn check<'py>(&mut self, py: Python<'py>, records: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
        let inputs: Vec<Option<SigInput>> = records.iter().map(|item| extract_sig(&item).ok()).collect();
        let checker = &self.inner;
        type Auth = Option<(Vec<u8>, Vec<u8>, u64, u64, Option<Vec<u8>>)>;
        let outs: Vec<Auth> = py.allow_threads(|| {
            let mut checker = lock(checker);
            inputs
                .iter()
                .map(|input| {
                    let i = input.as_ref()?;
                    let headers: Vec<(&str, Option<&[u8]>)> =
                        i.headers.iter().map(|(n, v)| (&**n, v.as_ref().map(|b| &**b))).collect();
                    catch_unwind(AssertUnwindSafe(|| {
                        checker.check(i.value.as_deref(), i.key.as_deref(), &headers, i.partition).map(|a| {
                            (a.kid.to_vec(), a.stream.to_vec(), a.sequence, a.signed_at, a.ce_id.map(|c| c.to_vec()))
                        })
                    }))
                    .ok()
                    .flatten()
                })
                .collect()
        });
        let result = PyList::empty(py);
        for out in outs {
            match out {
                Some((kid, stream, seq, at, ce_id)) => result.append((
                    PyBytes::new(py, &kid),
                    PyBytes::new(py, &stream),
                    seq,
                    at,
                    ce_id.map(|c| PyBytes::new(py, &c)),
                ))?,
                None => result.append(py.None())?,
            }
        }
        Ok(result)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<RecordRenderer>()?;
    m.add_class::<SignatureChecker>()?;
    m.add_function(wrap_pyfunction!(_set_panic_probe, m)?)?;
    m.add_function(wrap_pyfunction!(otlp::otlp_logs_request, m)?)?;
    m.add_function(wrap_pyfunction!(intake::intake_batch, m)?)?;
    m.add_function(wrap_pyfunction!(intake::intake_start, m)?)?;
    m.add_class::<intake::PendingIntake>()?;
    m.add_class::<works::WorkBuilder>()?;
    m.add_class::<message::MessageReader>()?;
    m.add_class::<message::ConsumedHeaders>()?;
    batch_encoder::register(m)?;
    pyevent::register(m)?;
    ledger::register(m)?;
    ledger_draft::register(m)?;
    otlp_map::register(m)?;
    otlp_draft::register(m)?;
    Ok(())
}
