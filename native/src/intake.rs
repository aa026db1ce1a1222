//! The intake of a whole consumed batch in one call: the records' accessors read once, the size
//! check, the signature check and the decode + render, with the GIL released for the last two.
//!
//! It takes the `confluent_kafka.Message` objects themselves, so each record's headers become
//! Rust slices once (the separate `SignatureChecker.check` and `RecordRenderer.render` calls
//! each extracted them again from Python tuples). Records it does not take (a consumer error,
//! the replay topic, no value, oversize, other framings, odd headers) come back as None and go
//! the per-record Python path, which words their outcome.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyBytes, PyList, PyString, PyTuple};

use crate::ledger_draft::{self, LedgerDraft, LedgerFormat, Spec};
use crate::otlp_draft::{self, LogFormat, OtlpDraft, OtlpLogFormat};
use crate::consumed::{take_all, Held, Job};
use crate::message::MessageReader;
use crate::pyevent::{self, BatchCache, EventBuilder};
use crate::record::{self, Decoded, Header, Outcome, Schemas, Source, Verdict};
use crate::verify::{Authentic, Checker};
use crate::works::{Parts, WorkBuilder};
use crate::{lock, probe_hit, RecordRenderer, SignatureChecker};

/// An authentic record: the indices of the headers holding its kid, stream and ce_id (handed back
/// as the very bytes objects they are), its sequence number and signing time.
type Auth = (usize, usize, u64, u64, Option<usize>);

enum Rendered {
    /// The line is `text[start..mid]`, the event id `text[mid..end]`, of the batch's one buffer;
    /// with `Drafted`, the "line" is the record's draft instead (`ledger_draft.rs`, `otlp_draft.rs`).
    Line(usize, usize, usize, bool, Option<Drafted>),
    Error(&'static str),
    Defer,
    Panic,
    NotTried,
}

type Answer = Option<(Option<Auth>, Rendered)>;

/// What a sink has drafted for it at intake instead of the record's line: the audit ledger's
/// entries or the otlp sink's log records.
#[derive(Clone)]
pub(crate) enum DraftFor {
    Ledger(Arc<Spec>),
    Otlp(Arc<LogFormat>),
}

impl DraftFor {
    /// `LedgerFormat` or `OtlpLogFormat`, as the intake is handed it.
    fn of(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(l) = obj.downcast::<LedgerFormat>() {
            Ok(DraftFor::Ledger(Arc::clone(&l.get().spec)))
        } else if let Ok(o) = obj.downcast::<OtlpLogFormat>() {
            Ok(DraftFor::Otlp(Arc::clone(&o.get().format)))
        } else {
            Err(pyo3::exceptions::PyTypeError::new_err("draft: a LedgerFormat or an OtlpLogFormat"))
        }
    }
}

/// A drafted record: the audit ledger entry's holes (prev, seq), or an otlp log record.
#[derive(Clone, Copy)]
enum Drafted {
    Ledger(usize, usize),
    Otlp,
}

/// What the pass answers for a batch. The rendered text of every record goes into one buffer, so
/// the consume loop frees one allocation per batch instead of two per record made on another thread.
struct Answers {
    text: Vec<u8>,
    outs: Vec<Answer>,
}

/// Which header's value `part` is (a view into it, as the checker returns them).
fn header_at(headers: &[Header<'_>], part: &[u8]) -> Option<usize> {
    headers.iter().position(|(_, v)| v.is_some_and(|v| std::ptr::eq(v.as_ptr(), part.as_ptr()) && v.len() == part.len()))
}

/// What the decode read, per record, kept to build its Python event (`keep`; None otherwise).
type Kept<'a> = Vec<Option<Box<Decoded<'a>>>>;

/// The byte work (no Python objects touched): signature check, then decode + render of each
/// authentic record (of every record without a checker); with `keep`, what each decode read, for
/// the sinks that read events.
fn work<'a>(
    jobs: &'a [Option<Job>],
    schemas: &Schemas,
    mut checker: Option<&mut Checker>,
    code: &str,
    keep: bool,
    draft: Option<&DraftFor>,
) -> (Answers, Kept<'a>) {
    let mut text = Vec::with_capacity(jobs.len() * 512);
    let mut kept: Kept<'a> = Vec::new();
    if keep {
        kept.resize_with(jobs.len(), || None);
    }
    let outs = jobs
        .iter()
        .enumerate()
        .map(|(at, job)| {
            let job = job.as_ref()?;
            let headers: Vec<Header<'_>> = job.headers();
            let key = job.key.as_deref();
            let auth: Option<Auth> = match checker.as_mut() {
                None => None,
                Some(c) => catch_unwind(AssertUnwindSafe(|| {
                    c.check(Some(&job.value), key, &headers, job.partition).and_then(|a: Authentic<'_>| {
                        let ce_id = match a.ce_id {
                            Some(id) => Some(header_at(&headers, id)?),
                            None => None,
                        };
                        Some((header_at(&headers, a.kid)?, header_at(&headers, a.stream)?, a.sequence, a.signed_at, ce_id))
                    })
                }))
                .ok()
                .flatten(),
            };
            let rendered = if checker.is_some() && auth.is_none() {
                Rendered::NotTried
            } else {
                let v = Verdict { code, detail: "", flagged: false };
                match catch_unwind(AssertUnwindSafe(|| {
                    if probe_hit(&job.value) {
                        panic!("govbus._native panic probe");
                    }
                    if !keep && draft.is_none() {
                        return (record::process(&job.value, &headers, &v, schemas), None, None);
                    }
                    let (outcome, decoded) = record::process_keep(&job.value, &headers, &v, schemas);
                    let drafted = match (draft, &outcome, &decoded, &job.origin) {
                        (Some(draft), Outcome::Line(..), Some(d), Some((topic, offset, timestamp_ms))) => {
                            let src = Source {
                                topic,
                                partition: job.partition,
                                offset: *offset,
                                timestamp_ms: *timestamp_ms,
                                key,
                                value: &job.value,
                                headers: &headers,
                            };
                            let w = &schemas.writers[d.writer];
                            // A panic here leaves the record undrafted, not undelivered: the sink
                            // maps it from its Python event.
                            catch_unwind(AssertUnwindSafe(|| match draft {
                                DraftFor::Ledger(spec) => ledger_draft::draft(d, w, &src, code, spec)
                                    .map(|(body, prev_at, seq_at)| (body, Drafted::Ledger(prev_at, seq_at))),
                                DraftFor::Otlp(format) => otlp_draft::draft(format, d, w, &src, code).map(|r| (r, Drafted::Otlp)),
                            }))
                            .ok()
                            .flatten()
                        }
                        _ => None,
                    };
                    (outcome, decoded.filter(|_| keep), drafted)
                })) {
                    Ok((outcome, decoded, drafted)) => {
                        if let Some(slot) = kept.get_mut(at) {
                            *slot = decoded;
                        }
                        match outcome {
                            Outcome::Line(line, id, legacy) => {
                                let start = text.len();
                                // A draft takes the place of the line the sink does not write.
                                text.extend_from_slice(drafted.as_ref().map_or(&line[..], |(body, _)| &body[..]));
                                let mid = text.len();
                                text.extend_from_slice(id.as_bytes());
                                Rendered::Line(start, mid, text.len(), legacy, drafted.map(|(_, how)| how))
                            }
                            Outcome::Error(reason) => Rendered::Error(reason),
                            Outcome::Defer => Rendered::Defer,
                        }
                    }
                    Err(_) => Rendered::Panic,
                }
            };
            Some((auth, rendered))
        })
        .collect();
    (Answers { text, outs }, kept)
}

/// The rows `intake_batch` returns, from what `take_all` read and `work` answered (with `events`,
/// each rendered record's Python event and attributes built from what its decode kept; with
/// `works`, each rendered record's `Work` and `NativeRecord` of that verdict code; with `draft`,
/// a drafted record's draft in it instead of its line).
#[allow(clippy::too_many_arguments)]
fn rows<'a, 'py>(
    py: Python<'py>,
    held: Vec<Option<Held>>,
    jobs: &[Option<Job>],
    answers: Answers,
    kept: &Kept<'a>,
    events: Option<(&EventBuilder, &Schemas)>,
    works: Option<(&WorkBuilder, &str)>,
    draft: Option<&DraftFor>,
) -> PyResult<Bound<'py, PyList>> {
    let result = PyList::empty(py);
    let works = works.map(|(b, code)| (b, PyString::intern(py, code)));
    let Answers { text, outs } = answers;
    let text = &text;
    let mut cache: BatchCache<'a, 'py> = BatchCache::default();
    for (at, ((t, job), out)) in held.into_iter().zip(jobs).zip(outs).enumerate() {
        let (Some(t), Some(job), Some((auth, rendered))) = (t, job, out) else {
            result.append(py.None())?;
            continue;
        };
        let header = |i: usize| -> PyObject { job.value_object(py, i) };
        let auth: PyObject = match auth {
            Some((kid, stream, seq, at, ce_id)) => {
                (header(kid), header(stream), seq, at, ce_id.map(header)).into_pyobject(py)?.into_any().unbind()
            }
            None => py.None(),
        };
        let rendered: PyObject = match rendered {
            Rendered::Line(start, mid, end, legacy, drafted) if works.is_some() => {
                // The record's Work and NativeRecord, built here: the row is (work, authentic,
                // broker_time_ms, legacy).
                let (builder, verdict) = works.as_ref().expect("checked by the guard");
                let id = PyString::new(py, std::str::from_utf8(&text[mid..end]).unwrap_or_default());
                let (event, attrs) = match (events, kept.get(at).and_then(|d| d.as_deref())) {
                    (Some((eb, schemas)), Some(d)) => eb.try_build(py, &job.value, d, &id, schemas, &mut cache).unzip(),
                    _ => (None, None),
                };
                let none = || py.None().into_bound(py);
                let body = || text[start..mid].to_vec();
                let (line, draft) = match (drafted, draft) {
                    (None, _) => (PyBytes::new(py, &text[start..mid]).into_any(), none()),
                    (Some(Drafted::Ledger(prev_at, seq_at)), _) => {
                        let d = LedgerDraft { body: body(), prev_at, seq_at, verdict: verdict.to_string() };
                        (none(), Bound::new(py, d)?.into_any())
                    }
                    (Some(Drafted::Otlp), Some(DraftFor::Otlp(format))) => {
                        let d = OtlpDraft { record: body(), verdict: verdict.to_string(), format: Arc::clone(format) };
                        (none(), Bound::new(py, d)?.into_any())
                    }
                    // Not made (only the otlp format drafts log records): neither line nor draft.
                    (Some(Drafted::Otlp), _) => (none(), none()),
                };
                let parts = Parts {
                    topic: t.topic.into_bound(py),
                    partition: t.partition.into_pyobject(py)?.into_any(),
                    offset: t.offset.into_bound(py),
                    size: t.size.into_pyobject(py)?.into_any(),
                    key: t.key_obj.into_bound(py),
                    value: t.value_obj.into_bound(py),
                    headers: t.headers_obj.into_bound(py),
                    timestamp_ms: t.timestamp_ms.into_pyobject(py)?.into_any(),
                    line,
                    draft,
                    event_id: id.into_any(),
                    event: event.unwrap_or_else(none),
                    attrs: attrs.unwrap_or_else(none),
                };
                let work = builder.build(py, parts, verdict)?;
                let broker = t.broker_time_ms.into_pyobject(py)?.into_any();
                let legacy = PyBool::new(py, legacy).to_owned().into_any();
                result.append(PyTuple::new(py, [work, auth.into_bound(py), broker, legacy])?)?;
                continue;
            }
            // No drafts without `works` (intake_batch drafts only for the records it builds).
            Rendered::Line(start, mid, end, legacy, _) => {
                let id = PyString::new(py, std::str::from_utf8(&text[mid..end]).unwrap_or_default());
                let line = PyBytes::new(py, &text[start..mid]);
                match (events, kept.get(at).and_then(|d| d.as_deref())) {
                    (Some((builder, schemas)), Some(d)) => {
                        let built = builder.try_build(py, &job.value, d, &id, schemas, &mut cache);
                        pyevent::extend_row(py, (line.into_any(), id, legacy), built)?.into_any().unbind()
                    }
                    _ => (line, id, legacy).into_pyobject(py)?.into_any().unbind(),
                }
            }
            Rendered::Error(reason) => reason.into_pyobject(py)?.into_any().unbind(),
            Rendered::Defer | Rendered::NotTried => py.None(),
            Rendered::Panic => "internal-error".into_pyobject(py)?.into_any().unbind(),
        };
        let row = PyTuple::new(
            py,
            [
                t.topic,
                t.partition.into_pyobject(py)?.into_any().unbind(),
                t.offset,
                t.key_obj,
                t.value_obj,
                t.headers_obj,
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

/// Per message, None (the Python path takes it) or `(topic, partition, offset, key, value, headers,
/// timestamp_ms, broker_time_ms, size, authentic, rendered)`. `authentic` is what
/// `SignatureChecker.check` answers (None without a checker); `rendered` is what
/// `RecordRenderer.render` answers for the verdict `verdict` (rendered only when there is no
/// checker or the record is authentic; None otherwise). With `events` (a sink that reads the
/// event), a rendered line comes with the record's Python event and CloudEvents attributes built
/// from the same decode: `(line, event_id, legacy, event, attributes)` (None, None: not built).
/// With `works` (a `WorkBuilder`), a rendered record's row is instead `(work, authentic,
/// broker_time_ms, legacy)`: its `Work` (epoch 0) delivering its `NativeRecord` of verdict
/// `verdict` (with `events`, the event and attributes in it; None when not built).
#[pyfunction]
#[pyo3(signature = (renderer, checker, messages, max_record_bytes, replay_topic, verdict, events=None, works=None, reader=None, draft=None))]
#[allow(clippy::too_many_arguments)]
pub fn intake_batch<'py>(
    py: Python<'py>,
    renderer: PyRef<'py, RecordRenderer>,
    checker: Option<PyRef<'py, SignatureChecker>>,
    messages: &Bound<'py, PyList>,
    max_record_bytes: usize,
    replay_topic: Option<PyBackedStr>,
    verdict: PyBackedStr,
    events: Option<PyRef<'py, EventBuilder>>,
    works: Option<PyRef<'py, WorkBuilder>>,
    reader: Option<Py<MessageReader>>,
    draft: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let (held, jobs) = take_all(py, messages, max_record_bytes, replay_topic.as_deref(), reader.as_ref());
    let schemas: &Schemas = &renderer.schemas;
    let shared = checker.as_ref().map(|c| &c.inner);
    let code: &str = &verdict;
    let keep = events.is_some(); // what the decode read is kept only to build events from it
    // Drafts go into the NativeRecords `works` builds, only.
    let draft = draft.filter(|_| works.is_some()).map(|d| DraftFor::of(&d)).transpose()?;
    let (answers, kept) = py.allow_threads(|| {
        let mut guard = shared.map(|m| lock(m));
        work(&jobs, schemas, guard.as_deref_mut(), code, keep, draft.as_ref())
    });
    let events = events.as_deref().map(|b| (b, schemas));
    rows(py, held, &jobs, answers, &kept, events, works.as_deref().map(|w| (w, code)), draft.as_ref())
}

type Pass = (Vec<Option<Job>>, Answers);

/// A batch whose byte work runs on a thread of its own (`intake_start`); `finish` gives its rows.
#[pyclass(module = "govbus._native")]
pub struct PendingIntake {
    held: Option<Vec<Option<Held>>>,
    pass: Option<JoinHandle<Pass>>,
    // The checker's key generation when the batch was started.
    keys: Option<(Arc<AtomicU64>, u64)>,
    // Builds the rendered records' Work objects, of this verdict ("valid" / "unverified").
    works: Option<(Py<WorkBuilder>, String)>,
    // What the sink has drafted for it.
    draft: Option<DraftFor>,
}

#[pymethods]
impl PendingIntake {
    /// Whether the byte work is done (`finish` would not wait).
    #[getter]
    fn ready(&self) -> bool {
        self.pass.as_ref().is_none_or(|p| p.is_finished())
    }

    /// The rows, as `intake_batch` returns them (waits for the byte work, without the GIL). Once.
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let (Some(held), Some(pass)) = (self.held.take(), self.pass.take()) else {
            return Err(pyo3::exceptions::PyRuntimeError::new_err("this intake was finished already"));
        };
        let joined = py.allow_threads(|| pass.join());
        // The pass catches panics per record; one outside them fails the whole batch, which
        // the caller then judges on the per-record path.
        let (jobs, mut answers) = joined
            .map_err(|_| pyo3::exceptions::PyRuntimeError::new_err("the native intake pass failed on this batch"))?;
        if let Some((generation, at_start)) = &self.keys {
            if generation.load(Ordering::SeqCst) != *at_start {
                // The keys changed since the batch was started: whatever the pass authenticated
                // with the old ones, the Python verifier judges with the new ones.
                for out in answers.outs.iter_mut().flatten() {
                    *out = (None, Rendered::NotTried);
                }
            }
        }
        let works = self.works.as_ref().map(|(b, code)| (b.get(), code.as_str()));
        rows(py, held, &jobs, answers, &Vec::new(), None, works, self.draft.as_ref())
    }
}

impl Drop for PendingIntake {
    fn drop(&mut self) {
        // Never finished (the consume loop dropped the batch): wait for the pass, so no view of
        // a Python object outlives it on another thread. Dropped with the GIL held, as pyclasses are.
        if let Some(pass) = self.pass.take() {
            drop(pass.join());
        }
    }
}

/// `intake_batch` in two steps: reads the accessors now, checks and renders on another thread
/// (for sinks that do not read events: an event is built with the GIL, from what the decode kept).
#[pyfunction]
#[pyo3(signature = (renderer, checker, messages, max_record_bytes, replay_topic, verdict, works=None, draft=None))]
#[allow(clippy::too_many_arguments)]
pub fn intake_start(
    py: Python<'_>,
    renderer: PyRef<'_, RecordRenderer>,
    checker: Option<PyRef<'_, SignatureChecker>>,
    messages: &Bound<'_, PyList>,
    max_record_bytes: usize,
    replay_topic: Option<PyBackedStr>,
    verdict: PyBackedStr,
    works: Option<Py<WorkBuilder>>,
    draft: Option<Bound<'_, PyAny>>,
) -> PyResult<PendingIntake> {
    // Through the accessors: this pass runs on a thread of its own, past this call (message.rs).
    let (held, jobs) = take_all(py, messages, max_record_bytes, replay_topic.as_deref(), None);
    let schemas: Arc<Schemas> = Arc::clone(&renderer.schemas);
    let shared: Option<(Arc<Mutex<Checker>>, Arc<AtomicU64>)> =
        checker.as_ref().map(|c| (Arc::clone(&c.inner), Arc::clone(&c.generation)));
    // The keys this batch is checked with: a keyring change between now and the pass (which
    // takes the checker's lock only when it runs) sends the batch to the Python verifier.
    // Read without the lock, which the previous batch's pass may hold.
    let generation = shared.as_ref().map(|(_, g)| g.load(Ordering::SeqCst));
    let keys = shared.as_ref().zip(generation).map(|((_, g), at)| (Arc::clone(g), at));
    let code = verdict.to_string();
    let draft = draft.filter(|_| works.is_some()).map(|d| DraftFor::of(&d)).transpose()?;
    let for_pass = draft.clone();
    let works = works.map(|w| (w, code.clone()));
    let pass = std::thread::Builder::new()
        .name("govbus-intake".into())
        .spawn(move || {
            let mut guard = shared.as_ref().map(|(m, _)| lock(m));
            let current = shared.as_ref().map(|(_, g)| g.load(Ordering::SeqCst));
            let answers = if current == generation {
                work(&jobs, &schemas, guard.as_deref_mut(), &code, false, for_pass.as_ref()).0
            } else {
                drop(guard);
                let outs = jobs.iter().map(|j| j.as_ref().map(|_| (None, Rendered::NotTried))).collect();
                Answers { text: Vec::new(), outs }
            };
            (jobs, answers)
        })
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start the intake pass: {e}")))?;
    Ok(PendingIntake { held: Some(held), pass: Some(pass), keys, works, draft })
}
