//! Reading a micro-batch's Python events into the fields `encode.rs` writes (GIL held). What it
//! cannot read exactly as the Python path would (a type it does not know exactly, a lone
//! surrogate, an integer beyond 64 bits, a traced event) is None: the Python path encodes it.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString, PyType};

use crate::batch_encoder::BatchEncoder;
use crate::civil::days_from_civil;
use crate::encode::{Attr, Fields};
use crate::slots::{index_of, Slots};

pub(crate) type PyFields = Fields<PyBackedStr>;

/// The `GovernanceEvent` fields [`extract`] reads, read from their slots when the class is the
/// slotted dataclass it is (crate::slots).
pub(crate) const EVENT_FIELDS: [&str; 19] = [
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

pub(crate) type EventSlots = Slots<19>;

/// Reads one event's fields (GIL held); None: the Python path encodes it. `slots`: where the
/// fields of the batch's event class live (getattr for an event of another class).
pub(crate) fn extract<'py>(
    enc: &BatchEncoder,
    py: Python<'py>,
    e: &Bound<'py, PyAny>,
    slots: Option<&EventSlots>,
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
