//! The intake of a whole consumed batch in one call: the records' accessors read once, the size
//! check, the signature check and the decode + render, with the GIL released for the last two.
//!
//! It takes the `confluent_kafka.Message` objects themselves, so each record's headers become
//! Rust slices once (the separate `SignatureChecker.check` and `RecordRenderer.render` calls
//! each extracted them again from Python tuples). Records it does not take (a consumer error,
//! the replay topic, no value, oversize, other framings, odd headers) come back as None and go
//! the per-record Python path, which words their outcome.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::pyevent::{self, BatchCache, EventBuilder};
use crate::record::{self, Decoded, Header, Outcome, Verdict};
use crate::verify::Authentic;
use crate::{probe_hit, RecordRenderer, SignatureChecker};

const TIMESTAMP_NOT_AVAILABLE: i64 = 0;
const TIMESTAMP_LOG_APPEND_TIME: i64 = 2;

/// One record the native intake takes: the Python objects handed back, and views of their bytes.
struct Taken<'py> {
    topic: Bound<'py, PyAny>,
    partition: i64,
    offset: Bound<'py, PyAny>,
    key_obj: Bound<'py, PyAny>,
    value_obj: Bound<'py, PyAny>,
    headers_obj: Bound<'py, PyAny>,
    timestamp_ms: Option<i64>,
    broker_time_ms: Option<i64>,
    size: usize,
    value: PyBackedBytes,
    key: Option<PyBackedBytes>,
    headers: Vec<(PyBackedStr, Option<PyBackedBytes>)>,
}

fn opt_bytes(o: &Bound<'_, PyAny>) -> PyResult<Option<PyBackedBytes>> {
    if o.is_none() {
        Ok(None)
    } else {
        Ok(Some(o.extract()?))
    }
}

/// Ok(None): the record goes the Python path.
fn take<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    max_record_bytes: usize,
    replay_topic: Option<&str>,
) -> PyResult<Option<Taken<'py>>> {
    // A test double may lack error(); a real Message always has it.
    if let Ok(err) = m.call_method0(intern!(py, "error")) {
        if !err.is_none() {
            return Ok(None);
        }
    }
    let topic = m.call_method0(intern!(py, "topic"))?;
    if let Some(replay) = replay_topic {
        if topic.extract::<PyBackedStr>().map(|t| &*t == replay).unwrap_or(true) {
            return Ok(None);
        }
    }
    let value_obj = m.call_method0(intern!(py, "value"))?;
    let Ok(value) = value_obj.extract::<PyBackedBytes>() else { return Ok(None) };
    if value.len() > max_record_bytes || value.len() < 2 || value[0] != 0xc3 || value[1] != 0x01 {
        return Ok(None);
    }
    let partition: i64 = m.call_method0(intern!(py, "partition"))?.extract()?;
    if partition < 0 || partition > i64::from(u32::MAX) {
        return Ok(None);
    }
    let offset = m.call_method0(intern!(py, "offset"))?;
    let key_obj = m.call_method0(intern!(py, "key"))?;
    let key = opt_bytes(&key_obj)?;
    let mut headers_obj = m.call_method0(intern!(py, "headers"))?;
    let mut headers = Vec::new();
    let mut size = value.len() + key.as_ref().map_or(0, |k| k.len());
    if headers_obj.is_none() || !headers_obj.is_truthy()? {
        headers_obj = PyList::empty(py).into_any(); // `msg.headers() or []`
    } else {
        // confluent-kafka hands a list of (str, bytes | None) pairs; anything else goes the Python path.
        let list = headers_obj.downcast::<PyList>()?;
        headers.reserve_exact(list.len());
        for h in list.iter() {
            let h = h.downcast::<PyTuple>()?;
            if h.len() != 2 {
                return Ok(None);
            }
            let v = opt_bytes(&h.get_item(1)?)?;
            size += v.as_ref().map_or(0, |b| b.len());
            headers.push((h.get_item(0)?.extract()?, v));
        }
    }
    let (ts_type, ts): (i64, i64) = m.call_method0(intern!(py, "timestamp"))?.extract()?;
    Ok(Some(Taken {
        topic,
        partition,
        offset,
        key_obj,
        value_obj,
        headers_obj,
        timestamp_ms: if ts_type == TIMESTAMP_NOT_AVAILABLE { None } else { Some(ts) },
        broker_time_ms: if ts_type == TIMESTAMP_LOG_APPEND_TIME { Some(ts) } else { None },
        size,
        value,
        key,
        headers,
    }))
}

type Auth = (Vec<u8>, Vec<u8>, u64, u64, Option<Vec<u8>>);

enum Rendered<'a> {
    Outcome(Outcome, Option<Box<Decoded<'a>>>),
    Panic,
    NotTried,
}

/// Per message, None (the Python path takes it) or `(topic, partition, offset, key, value, headers,
/// timestamp_ms, broker_time_ms, size, authentic, rendered)`. `authentic` is what
/// `SignatureChecker.check` answers (None without a checker); `rendered` is what
/// `RecordRenderer.render` answers for the verdict `verdict` (rendered only when there is no
/// checker or the record is authentic; None otherwise). With `events` (a sink that reads the
/// event), a rendered line comes with the record's Python event and CloudEvents attributes built
/// from the same decode: `(line, event_id, legacy, event, attributes)` (None, None: not built).
#[pyfunction]
#[pyo3(signature = (renderer, checker, messages, max_record_bytes, replay_topic, verdict, events=None))]
#[allow(clippy::too_many_arguments)]
pub fn intake_batch<'py>(
    py: Python<'py>,
    renderer: PyRef<'py, RecordRenderer>,
    checker: Option<PyRefMut<'py, SignatureChecker>>,
    messages: &Bound<'py, PyList>,
    max_record_bytes: usize,
    replay_topic: Option<PyBackedStr>,
    verdict: PyBackedStr,
    events: Option<PyRef<'py, EventBuilder>>,
) -> PyResult<Bound<'py, PyList>> {
    let replay = replay_topic.as_deref();
    let mut taken: Vec<Option<Taken<'py>>> = Vec::with_capacity(messages.len());
    for m in messages.iter() {
        taken.push(take(py, &m, max_record_bytes, replay).unwrap_or(None));
    }
    // The byte work, without the GIL: only plain slices cross into the closure.
    struct Job<'a> {
        value: &'a [u8],
        key: Option<&'a [u8]>,
        headers: Vec<Header<'a>>,
        partition: u32,
    }
    let jobs: Vec<Option<Job<'_>>> = taken
        .iter()
        .map(|t| {
            t.as_ref().map(|t| Job {
                value: &t.value,
                key: t.key.as_deref(),
                headers: t.headers.iter().map(|(n, v)| (&**n, v.as_deref())).collect(),
                partition: t.partition as u32,
            })
        })
        .collect();
    let schemas = &renderer.schemas;
    let mut checker = checker;
    let inner = checker.as_mut().map(|c| &mut c.inner);
    let code: &str = &verdict;
    let keep = events.is_some(); // what the decode read is kept only to build events from it
    let outs: Vec<Option<(Option<Auth>, Rendered)>> = py.allow_threads(move || {
        let mut inner = inner;
        jobs.iter()
            .map(|job| {
                let job = job.as_ref()?;
                let auth: Option<Auth> = match inner.as_mut() {
                    None => None,
                    Some(c) => catch_unwind(AssertUnwindSafe(|| {
                        c.check(Some(job.value), job.key, &job.headers, job.partition).map(|a: Authentic<'_>| {
                            (a.kid.to_vec(), a.stream.to_vec(), a.sequence, a.signed_at, a.ce_id.map(|c| c.to_vec()))
                        })
                    }))
                    .ok()
                    .flatten(),
                };
                let rendered = if inner.is_some() && auth.is_none() {
                    Rendered::NotTried
                } else {
                    let v = Verdict { code, detail: "", flagged: false };
                    match catch_unwind(AssertUnwindSafe(|| {
                        if probe_hit(job.value) {
                            panic!("govbus._native panic probe");
                        }
                        if keep {
                            record::process_keep(job.value, &job.headers, &v, schemas)
                        } else {
                            (record::process(job.value, &job.headers, &v, schemas), None)
                        }
                    })) {
                        Ok((o, d)) => Rendered::Outcome(o, d),
                        Err(_) => Rendered::Panic,
                    }
                };
                Some((auth, rendered))
            })
            .collect()
    });
    let result = PyList::empty(py);
    let mut cache = BatchCache::default();
    for (t, out) in taken.iter().zip(outs) {
        let (Some(t), Some((auth, rendered))) = (t, out) else {
            result.append(py.None())?;
            continue;
        };
        let auth: PyObject = match auth {
            Some((kid, stream, seq, at, ce_id)) => (
                PyBytes::new(py, &kid),
                PyBytes::new(py, &stream),
                seq,
                at,
                ce_id.map(|c| PyBytes::new(py, &c)),
            )
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            None => py.None(),
        };
        let rendered: PyObject = match rendered {
            Rendered::Outcome(Outcome::Line(line, id, legacy), decoded) => {
                let id = pyo3::types::PyString::new(py, &id);
                match (&events, decoded) {
                    (Some(b), Some(d)) => {
                        let built = b.try_build(py, &t.value, &d, &id, schemas, &mut cache);
                        let row = (PyBytes::new(py, &line).into_any(), id, legacy);
                        pyevent::extend_row(py, row, built)?.into_any().unbind()
                    }
                    _ => (PyBytes::new(py, &line), id, legacy).into_pyobject(py)?.into_any().unbind(),
                }
            }
            Rendered::Outcome(Outcome::Error(reason), _) => reason.into_pyobject(py)?.into_any().unbind(),
            Rendered::Outcome(Outcome::Defer, _) | Rendered::NotTried => py.None(),
            Rendered::Panic => "internal-error".into_pyobject(py)?.into_any().unbind(),
        };
        let row = PyTuple::new(
            py,
            [
                t.topic.clone().unbind(),
                t.partition.into_pyobject(py)?.into_any().unbind(),
                t.offset.clone().unbind(),
                t.key_obj.clone().unbind(),
                t.value_obj.clone().unbind(),
                t.headers_obj.clone().unbind(),
                t.timestamp_ms.into_pyobject(py)?.into_any().unbind(),
                t.broker_time_ms.into_pyobject(py)?.into_any().unbind(),
                t.size.into_pyobject(py)?.into_any().unbind(),
                auth,
                rendered,
            ],
        )?;
        result.append(row)?;
    }
    Ok(result)
}
