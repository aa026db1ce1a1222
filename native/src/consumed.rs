//! A consumed batch as the intake takes it (`intake.rs`): each `confluent_kafka.Message` read once,
//! in place (`message.rs`) or through its accessors, into what goes back to Python unchanged
//! (`Held`) and the bytes the pass without the GIL works on (`Job`). A message it does not take (a
//! consumer error, the replay topic, no value, oversize, other framings, odd headers) is None:
//! the per-record Python path judges it.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::message::{as_headers, ConsumedHeaders, Fields, MessageReader, RawHeader};
use crate::record::Header;

const TIMESTAMP_NOT_AVAILABLE: i64 = 0;
const TIMESTAMP_LOG_APPEND_TIME: i64 = 2;

/// What a taken record hands back to Python, unchanged.
pub(crate) struct Held {
    pub(crate) topic: PyObject,
    pub(crate) partition: i64,
    pub(crate) offset: PyObject,
    pub(crate) key_obj: PyObject,
    pub(crate) value_obj: PyObject,
    pub(crate) headers_obj: PyObject,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) broker_time_ms: Option<i64>,
    pub(crate) size: usize,
}

type OwnedHeaders = Vec<(PyBackedStr, Option<PyBackedBytes>)>;

/// A taken record's bytes, for the pass without the GIL (`PyBackedBytes` are views that keep
/// their Python objects alive and may cross threads).
pub(crate) struct Job {
    pub(crate) value: PyBackedBytes,
    pub(crate) key: Option<PyBackedBytes>,
    /// The headers as the accessors gave them (empty when read in place: `raw`).
    pub(crate) owned: OwnedHeaders,
    /// The headers read in place from the message's librdkafka list (message.rs): valid while the
    /// caller's batch holds the message, which `intake_batch` does for as long as it uses them.
    pub(crate) raw: Vec<RawHeader>,
    pub(crate) partition: u32,
    /// Topic, offset and timestamp as the delivered record holds them, for the audit ledger's
    /// draft (None: not plain values, so the record is sealed from its Python objects).
    pub(crate) origin: Option<(PyBackedStr, Option<i64>, Option<i64>)>,
}

// SAFETY: `raw` is only filled by `intake_batch`, whose jobs never leave its call (nor its
// thread but for the scoped pass without the GIL, while the batch holds the messages);
// `intake_start`, whose pass runs on a thread of its own, reads through the accessors only.
unsafe impl Send for Job {}
// SAFETY: as above; the pass without the GIL only reads them.
unsafe impl Sync for Job {}

impl Job {
    pub(crate) fn headers(&self) -> Vec<Header<'_>> {
        if self.raw.is_empty() {
            return self.owned.iter().map(|(n, v)| (&**n, v.as_deref())).collect();
        }
        // SAFETY: see `raw`.
        unsafe { as_headers(&self.raw) }
    }

    /// Header `i`'s value as a Python object (the very bytes object, when the accessors gave it).
    pub(crate) fn value_object(&self, py: Python<'_>, i: usize) -> PyObject {
        if self.raw.is_empty() {
            return match self.owned.get(i).and_then(|(_, v)| v.as_ref()) {
                Some(v) => v.into_pyobject(py).map_or_else(|e| match e {}, |b| b.into_any().unbind()),
                None => py.None(),
            };
        }
        match self.raw.get(i).and_then(|h| h.value) {
            // SAFETY: see `raw`.
            Some((p, n)) => PyBytes::new(py, unsafe { std::slice::from_raw_parts(p, n) }).into_any().unbind(),
            None => py.None(),
        }
    }
}

fn opt_bytes(o: &Bound<'_, PyAny>) -> PyResult<Option<PyBackedBytes>> {
    if o.is_none() {
        Ok(None)
    } else {
        Ok(Some(o.extract()?))
    }
}

/// A headers list as confluent-kafka hands it (`(str, bytes | None)` pairs) and the bytes of its
/// values; None: anything else, which goes the Python path.
fn list_headers(headers_obj: &Bound<'_, PyAny>) -> PyResult<Option<(OwnedHeaders, usize)>> {
    let list = headers_obj.downcast::<PyList>()?;
    let mut headers = Vec::with_capacity(list.len());
    let mut size = 0;
    for h in list.iter() {
        let h = h.downcast::<PyTuple>()?;
        if h.len() != 2 {
            return Ok(None);
        }
        let v = opt_bytes(&h.get_item(1)?)?;
        size += v.as_ref().map_or(0, |b| b.len());
        headers.push((h.get_item(0)?.extract()?, v));
    }
    Ok(Some((headers, size)))
}

fn takes_value(value: &[u8], max_record_bytes: usize) -> bool {
    value.len() <= max_record_bytes && value.len() >= 2 && value[0] == 0xc3 && value[1] == 0x01
}

fn is_replay(topic: &Bound<'_, PyAny>, replay_topic: Option<&str>) -> bool {
    replay_topic.is_some_and(|replay| topic.extract::<PyBackedStr>().map(|t| &*t == replay).unwrap_or(true))
}

/// `take`, reading the message's fields in place (message.rs) instead of through its accessors.
fn take_in_place<'py>(
    py: Python<'py>,
    reader: &Py<MessageReader>,
    m: &Bound<'py, PyAny>,
    f: Fields,
    max_record_bytes: usize,
    replay_topic: Option<&str>,
) -> PyResult<Option<(Held, Job)>> {
    if f.error || f.topic.is_null() || f.value.is_null() || f.partition < 0 {
        return Ok(None);
    }
    // SAFETY: the message holds these references, and the caller holds the message.
    let (topic, value_obj) = unsafe { (Bound::from_borrowed_ptr(py, f.topic), Bound::from_borrowed_ptr(py, f.value)) };
    if is_replay(&topic, replay_topic) {
        return Ok(None);
    }
    let Ok(topic_str) = topic.extract::<PyBackedStr>() else { return Ok(None) };
    let Ok(value) = value_obj.extract::<PyBackedBytes>() else { return Ok(None) };
    if !takes_value(&value, max_record_bytes) {
        return Ok(None);
    }
    // SAFETY: as above (null: no key).
    let key_obj = unsafe { Bound::from_borrowed_ptr_or_opt(py, f.key) }.unwrap_or_else(|| py.None().into_bound(py));
    let key = opt_bytes(&key_obj)?;
    let mut size = value.len() + key.as_ref().map_or(0, |k| k.len());
    let (owned, raw, headers_obj) = if !f.headers.is_null() {
        // Someone called headers() already: read its list.
        // SAFETY: as above.
        let list = unsafe { Bound::from_borrowed_ptr(py, f.headers) };
        let Some((owned, n)) = list_headers(&list)? else { return Ok(None) };
        size += n;
        (owned, Vec::new(), list)
    } else {
        let raw = if f.c_headers.is_null() {
            Vec::new()
        } else {
            // SAFETY: the message owns its librdkafka headers until headers() or its end; neither
            // can happen before this batch's call returns (see message.rs).
            let Some(raw) = (unsafe { reader.get().headers(f.c_headers) }) else { return Ok(None) };
            raw
        };
        size += raw.iter().map(|h| h.value.map_or(0, |(_, n)| n)).sum::<usize>();
        (Vec::new(), raw, Py::new(py, ConsumedHeaders::new(m.clone().unbind(), reader.clone_ref(py)))?.into_bound(py).into_any())
    };
    let held = Held {
        topic: topic.unbind(),
        partition: i64::from(f.partition),
        // As `offset()` answers: None below 0 (no offset).
        offset: if f.offset >= 0 { f.offset.into_pyobject(py)?.into_any().unbind() } else { py.None() },
        key_obj: key_obj.unbind(),
        value_obj: value_obj.unbind(),
        headers_obj: headers_obj.unbind(),
        timestamp_ms: if i64::from(f.tstype) == TIMESTAMP_NOT_AVAILABLE { None } else { Some(f.timestamp) },
        broker_time_ms: if i64::from(f.tstype) == TIMESTAMP_LOG_APPEND_TIME { Some(f.timestamp) } else { None },
        size,
    };
    let origin = Some((topic_str, (f.offset >= 0).then_some(f.offset), held.timestamp_ms));
    Ok(Some((held, Job { value, key, owned, raw, partition: f.partition as u32, origin })))
}

/// Ok(None): the record goes the Python path.
fn take<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyAny>,
    max_record_bytes: usize,
    replay_topic: Option<&str>,
) -> PyResult<Option<(Held, Job)>> {
    // A test double may lack error(); a real Message always has it.
    if let Ok(err) = m.call_method0(intern!(py, "error")) {
        if !err.is_none() {
            return Ok(None);
        }
    }
    let topic = m.call_method0(intern!(py, "topic"))?;
    if is_replay(&topic, replay_topic) {
        return Ok(None);
    }
    let value_obj = m.call_method0(intern!(py, "value"))?;
    let Ok(value) = value_obj.extract::<PyBackedBytes>() else { return Ok(None) };
    if !takes_value(&value, max_record_bytes) {
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
        let Some((owned, n)) = list_headers(&headers_obj)? else { return Ok(None) };
        size += n;
        headers = owned;
    }
    let (ts_type, ts): (i64, i64) = m.call_method0(intern!(py, "timestamp"))?.extract()?;
    let timestamp_ms = if ts_type == TIMESTAMP_NOT_AVAILABLE { None } else { Some(ts) };
    let origin = match (topic.extract::<PyBackedStr>(), offset.extract::<Option<i64>>()) {
        (Ok(t), Ok(o)) => Some((t, o, timestamp_ms)),
        _ => None,
    };
    let held = Held {
        topic: topic.unbind(),
        partition,
        offset: offset.unbind(),
        key_obj: key_obj.unbind(),
        value_obj: value_obj.unbind(),
        headers_obj: headers_obj.unbind(),
        timestamp_ms,
        broker_time_ms: if ts_type == TIMESTAMP_LOG_APPEND_TIME { Some(ts) } else { None },
        size,
    };
    Ok(Some((held, Job { value, key, owned: headers, raw: Vec::new(), partition: partition as u32, origin })))
}

/// Reads every message's accessors (with the GIL): what goes back to Python, and the bytes to work on.
pub(crate) fn take_all(
    py: Python<'_>,
    messages: &Bound<'_, PyList>,
    max_record_bytes: usize,
    replay: Option<&str>,
    reader: Option<&Py<MessageReader>>,
) -> (Vec<Option<Held>>, Vec<Option<Job>>) {
    let mut held = Vec::with_capacity(messages.len());
    let mut jobs = Vec::with_capacity(messages.len());
    for m in messages.iter() {
        let taken = match reader.and_then(|r| r.get().fields(&m).map(|f| (r, f))) {
            Some((r, f)) => take_in_place(py, r, &m, f, max_record_bytes, replay),
            None => take(py, &m, max_record_bytes, replay),
        };
        match taken.unwrap_or(None) {
            Some((h, j)) => {
                held.push(Some(h));
                jobs.push(Some(j));
            }
            None => {
                held.push(None);
                jobs.push(None);
            }
        }
    }
    (held, jobs)
}

