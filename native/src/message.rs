//! Reading a consumed `confluent_kafka.Message` without its accessors: the batch intake's way
//! past the largest per-record cost it had left.
//!
//! Why: `Message.headers()` turns the record's librdkafka headers into a new list of ~16
//! `(str, bytes)` tuples, and the intake then read each back into a Rust view: together ~2.5 µs
//! of the consume loop's ~12 µs per record (measured: `headers()` alone 1.2 µs per record on a
//! fresh batch), although the loop needs those Python objects only for the rare record it
//! dead-letters or hands to the Python verifier. Here the header bytes are read where librdkafka
//! keeps them (the list confluent-kafka detached from the message and owns until
//! `headers()` or the message's end), and the record's `headers` become a [`ConsumedHeaders`]:
//! the message itself, whose `headers()` is called the first time Python code looks (the audit
//! ledger's sealer reads them in place too: [`ConsumedHeaders::with_raw`], with the GIL held).
//!
//! How it stays safe: the fields are read at the offsets of confluent-kafka's `Message` struct,
//! and [`MessageReader::new`] proves them on a message it builds with known values (every field
//! the intake reads, at the offset it reads it from) before it is used; `c_headers` is the one
//! word between `headers` and `error`, both proven. The librdkafka functions come from the very
//! library confluent-kafka loaded (`dlopen(RTLD_NOLOAD)` of its path), checked by its version.
//! Anything else (another class, a layout that does not prove, headers already turned into a
//! list) reads through the accessors, as before. The intake's header views live only inside one
//! `intake_batch` call, on the thread that consumed the batch, while the caller's list holds the
//! messages: nothing else has them yet, so nothing can call `headers()` (which frees the
//! librdkafka list) meanwhile; the sealer's, only while it holds the GIL that call needs.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use crate::record::Header;

type HeaderCount = unsafe extern "C" fn(*const c_void) -> usize;
type HeaderGetAll = unsafe extern "C" fn(*const c_void, usize, *mut *const c_char, *mut *const c_void, *mut usize) -> c_int;
type Version = unsafe extern "C" fn() -> c_int;

/// The fields' offsets past the object header, in words (confluent-kafka >= 2.3's `Message`:
/// topic, value, key, headers, c_headers, error, then partition (int32), offset, leader_epoch
/// (int32), timestamp, tstype (enum)).
const TOPIC: isize = 0;
const VALUE: isize = 1;
const KEY: isize = 2;
const HEADERS: isize = 3;
const C_HEADERS: isize = 4;
const ERROR: isize = 5;
const PARTITION: isize = 6;
const OFFSET: isize = 7;
const TIMESTAMP: isize = 9;
const TSTYPE: isize = 10;

/// One consumed record's fields, read in place (borrowed: valid while the message is).
pub(crate) struct Fields {
    pub error: bool,
    pub topic: *mut ffi::PyObject,
    pub value: *mut ffi::PyObject,
    pub key: *mut ffi::PyObject,
    /// The list `headers()` made already (null: not made).
    pub headers: *mut ffi::PyObject,
    /// librdkafka's headers, owned by the message (null: none, or turned into `headers`).
    pub c_headers: *const c_void,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub tstype: i32,
}

/// Reads `confluent_kafka.Message` objects in place (see the module's documentation).
#[pyclass(module = "govbus._native", frozen)]
pub struct MessageReader {
    message_type: Py<PyType>,
    count: HeaderCount,
    get_all: HeaderGetAll,
}

// SAFETY: the function pointers are into a library that stays loaded (confluent-kafka's).
unsafe impl Send for MessageReader {}
unsafe impl Sync for MessageReader {}

fn word_at<T: Copy>(object: *mut ffi::PyObject, word: isize) -> T {
    let head = std::mem::size_of::<ffi::PyObject>() as isize;
    let at = head + word * std::mem::size_of::<*mut ffi::PyObject>() as isize;
    // SAFETY: callers pass a `Message` (checked by exact type) and a word within its fields.
    unsafe { *object.cast::<u8>().offset(at).cast::<T>() }
}

#[cfg(unix)]
fn symbol(lib: *mut c_void, name: &str) -> PyResult<*mut c_void> {
    let c = CString::new(name).expect("no NUL in a symbol name");
    // SAFETY: `lib` is a live handle from dlopen.
    let p = unsafe { libc::dlsym(lib, c.as_ptr()) };
    if p.is_null() {
        return Err(PyValueError::new_err(format!("librdkafka has no {name}")));
    }
    Ok(p)
}

/// The already loaded library at `path` (RTLD_NOLOAD loads nothing new; the handle is never
/// closed: the library stays loaded with confluent-kafka's module).
#[cfg(unix)]
fn loaded(path: &CString) -> *mut c_void {
    // SAFETY: a NUL-terminated path; dlopen with RTLD_NOLOAD has no other effect.
    unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) }
}

#[cfg(not(unix))]
fn loaded(_path: &CString) -> *mut c_void {
    std::ptr::null_mut()
}

#[cfg(not(unix))]
fn symbol(_lib: *mut c_void, name: &str) -> PyResult<*mut c_void> {
    Err(PyValueError::new_err(format!("{name}: no dlsym on this platform")))
}

#[pymethods]
impl MessageReader {
    /// `message_type`: `confluent_kafka.Message`; `librdkafka`: the path of the librdkafka this
    /// process loaded for it, whose `rd_kafka_version()` must be `version`. Raises ValueError
    /// (saying why) when the layout does not prove or the library is not that one.
    #[new]
    fn new(py: Python<'_>, message_type: Bound<'_, PyType>, librdkafka: &str, version: i64) -> PyResult<Self> {
        let path = CString::new(librdkafka).map_err(|_| PyValueError::new_err("a NUL in the librdkafka path"))?;
        let lib = loaded(&path);
        if lib.is_null() {
            return Err(PyValueError::new_err(format!("{librdkafka} is not loaded in this process")));
        }
        // SAFETY: the symbols are librdkafka's public functions of these signatures (rdkafka.h).
        let (count, get_all, lib_version) = unsafe {
            (
                std::mem::transmute::<*mut c_void, HeaderCount>(symbol(lib, "rd_kafka_header_cnt")?),
                std::mem::transmute::<*mut c_void, HeaderGetAll>(symbol(lib, "rd_kafka_header_get_all")?),
                std::mem::transmute::<*mut c_void, Version>(symbol(lib, "rd_kafka_version")?),
            )
        };
        // SAFETY: a function of no arguments.
        let found = i64::from(unsafe { lib_version() });
        if found != version {
            return Err(PyValueError::new_err(format!(
                "{librdkafka} is version {found:#x}, confluent-kafka uses {version:#x}"
            )));
        }
        let reader = Self { message_type: message_type.clone().unbind(), count, get_all };
        reader.prove(py, &message_type)?;
        Ok(reader)
    }
}

impl MessageReader {
    /// Builds messages of known fields and requires each read field where this module reads it.
    fn prove(&self, py: Python<'_>, cls: &Bound<'_, PyType>) -> PyResult<()> {
        let refuse = |what: &str| PyValueError::new_err(format!("confluent_kafka.Message does not keep {what} where expected"));
        // Every word read must lie within the instance (a smaller object is another class).
        let basic: isize = cls.getattr("__basicsize__")?.extract()?;
        let head = std::mem::size_of::<ffi::PyObject>() as isize;
        if basic < head + (TSTYPE + 1) * std::mem::size_of::<*mut ffi::PyObject>() as isize {
            return Err(refuse("its fields (its instances are too small)"));
        }
        for (tstype, partition, offset, timestamp) in
            [(1i32, 0x1234_5678i32, 0x0102_0304_0506_0708i64, 0x0a0b_0c0d_0e0f_1011i64), (2, 7, 42, 0x7fff_0000_1234)]
        {
            let topic = pyo3::types::PyString::new(py, "govbus-probe-topic");
            let value = pyo3::types::PyBytes::new(py, b"govbus-probe-value");
            let key = pyo3::types::PyBytes::new(py, b"govbus-probe-key");
            let headers = PyList::new(py, [PyTuple::new(py, [topic.as_any(), value.as_any()])?])?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("topic", &topic)?;
            kwargs.set_item("partition", partition)?;
            kwargs.set_item("offset", offset)?;
            kwargs.set_item("key", &key)?;
            kwargs.set_item("value", &value)?;
            kwargs.set_item("headers", &headers)?;
            kwargs.set_item("error", py.None())?;
            kwargs.set_item("timestamp", (tstype, timestamp))?;
            kwargs.set_item("leader_epoch", 0x2468_ace0)?;
            let m = cls
                .call((), Some(&kwargs))
                .map_err(|e| PyValueError::new_err(format!("cannot build a probe confluent_kafka.Message: {e}")))?;
            let Some(f) = self.fields(&m) else { return Err(refuse("its type")) };
            let checks = [
                (f.topic == topic.as_ptr(), "topic"),
                (f.value == value.as_ptr(), "value"),
                (f.key == key.as_ptr(), "key"),
                (f.headers == headers.as_ptr(), "headers"),
                (f.c_headers.is_null(), "c_headers"),
                (!f.error, "error"),
                (f.partition == partition, "partition"),
                (f.offset == offset, "offset"),
                (f.timestamp == timestamp, "timestamp"),
                (f.tstype == tstype, "the timestamp type"),
            ];
            if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
                return Err(refuse(what));
            }
            // And the other way: what the accessors answer is what was read.
            let answered: (i32, i64) = (m.call_method0("partition")?.extract()?, m.call_method0("offset")?.extract()?);
            if answered != (partition, offset) {
                return Err(refuse("partition and offset"));
            }
        }
        Ok(())
    }

    /// The fields of `m`, or None when it is not exactly a `confluent_kafka.Message`.
    pub(crate) fn fields(&self, m: &Bound<'_, PyAny>) -> Option<Fields> {
        if !m.get_type().is(self.message_type.bind(m.py())) {
            return None;
        }
        let o = m.as_ptr();
        let error: *mut ffi::PyObject = word_at(o, ERROR);
        // SAFETY: reading the address of the None singleton.
        let none = unsafe { ffi::Py_None() };
        Some(Fields {
            error: !error.is_null() && error != none,
            topic: word_at(o, TOPIC),
            value: word_at(o, VALUE),
            key: word_at(o, KEY),
            headers: word_at(o, HEADERS),
            c_headers: word_at(o, C_HEADERS),
            partition: word_at(o, PARTITION),
            offset: word_at(o, OFFSET),
            timestamp: word_at(o, TIMESTAMP),
            tstype: word_at(o, TSTYPE),
        })
    }

    /// librdkafka's headers as raw (name, value) parts; None when one cannot be read or its name
    /// is not UTF-8 (the accessors then decide, as before).
    ///
    /// # Safety
    /// `hdrs` is a live `rd_kafka_headers_t` that outlives the returned pointers' use.
    pub(crate) unsafe fn headers(&self, hdrs: *const c_void) -> Option<Vec<RawHeader>> {
        let n = (self.count)(hdrs);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut name: *const c_char = std::ptr::null();
            let mut value: *const c_void = std::ptr::null();
            let mut size = 0usize;
            if (self.get_all)(hdrs, i, &mut name, &mut value, &mut size) != 0 || name.is_null() {
                return None;
            }
            let name = CStr::from_ptr(name).to_bytes();
            std::str::from_utf8(name).ok()?;
            out.push(RawHeader {
                name: (name.as_ptr(), name.len()),
                value: if value.is_null() { None } else { Some((value.cast::<u8>(), size)) },
            });
        }
        Some(out)
    }
}

/// A header read in place: pointers and lengths into librdkafka's (or a Python object's) memory.
#[derive(Clone, Copy)]
pub(crate) struct RawHeader {
    pub name: (*const u8, usize),
    pub value: Option<(*const u8, usize)>,
}

/// Raw headers as `(name, value)` slices.
///
/// # Safety
/// Each `RawHeader`'s pointers are live for the returned lifetime, its name UTF-8 (as
/// [`MessageReader::headers`] checks).
pub(crate) unsafe fn as_headers(raw: &[RawHeader]) -> Vec<Header<'_>> {
    raw.iter()
        .map(|h| {
            let name = std::str::from_utf8_unchecked(std::slice::from_raw_parts(h.name.0, h.name.1));
            (name, h.value.map(|(p, n)| std::slice::from_raw_parts(p, n)))
        })
        .collect()
}

/// A consumed record's headers, as `msg.headers() or []` gives them, made from the message the
/// first time they are read (most records are delivered without anyone reading them); native
/// readers (the audit ledger's sealer) read them in place instead (`with_raw`).
#[pyclass(module = "govbus._native", frozen, sequence)]
pub struct ConsumedHeaders {
    message: Py<PyAny>,
    reader: Py<MessageReader>,
}

impl ConsumedHeaders {
    pub(crate) fn new(message: Py<PyAny>, reader: Py<MessageReader>) -> Self {
        Self { message, reader }
    }

    /// `f` of the headers read in place from librdkafka's list, or None when the message has
    /// none to read in place (its `headers()` was called: read the list).
    ///
    /// The views are valid during `f` only: the GIL is held throughout, and `f` must run no
    /// Python code (which could call the message's `headers()`, freeing librdkafka's list).
    pub(crate) fn with_raw<R>(&self, py: Python<'_>, f: impl FnOnce(&[Header<'_>]) -> R) -> Option<R> {
        let reader = self.reader.get();
        let fields = reader.fields(self.message.bind(py))?;
        if !fields.headers.is_null() {
            return None;
        }
        let raw = if fields.c_headers.is_null() {
            Vec::new()
        } else {
            // SAFETY: the message owns its librdkafka headers until its headers() (which needs
            // the GIL we hold) or its end (it is held by `self`).
            unsafe { reader.headers(fields.c_headers)? }
        };
        // SAFETY: as above, for the duration of `f`.
        Some(f(&unsafe { as_headers(&raw) }))
    }

    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let h = self.message.bind(py).call_method0(pyo3::intern!(py, "headers"))?;
        if h.is_none() {
            return Ok(PyList::empty(py));
        }
        Ok(h.downcast_into::<PyList>()?)
    }
}

#[pymethods]
impl ConsumedHeaders {
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.list(py)?.len())
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.list(py)?.as_any().get_item(index)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.list(py)?.as_any().try_iter()?.into_any())
    }

    fn __contains__(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.list(py)?.contains(item)
    }

    fn __bool__(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(!self.list(py)?.is_empty())
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let mine = self.list(py)?;
        match other.downcast::<ConsumedHeaders>() {
            Ok(o) => mine.eq(o.get().list(py)?),
            Err(_) => mine.eq(other),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(self.list(py)?.repr()?.to_string())
    }

    /// Whether the headers were turned into Python objects (`headers()` was called) yet.
    #[getter]
    fn materialized(&self, py: Python<'_>) -> bool {
        self.reader.get().fields(self.message.bind(py)).is_none_or(|f| !f.headers.is_null())
    }
}
