//! The producer's delivery reports in memory mode (`govbus.producer._delivery`): a record
//! delivered while the broker is known reachable is counted here, without running the Python
//! `Delivery.on_delivery` frame per report; every other report (an error, a spooled record whose
//! delivery moves the spool's watermark, the first delivery after an outage) goes to it as before.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use pyo3::prelude::*;
use pyo3::types::PyBool;
use pyo3::{PyTraverseError, PyVisit};

/// A record's delivery report (`report(record, err, msg)`, as `OutgoingRecord.__call__` calls it).
/// `delivered` counts the reports taken here; when it reaches `wake_at` (set by the tracker from
/// the lowest flush target), `wake()` runs so that a flush waiting for it returns. The counters
/// are atomics so that the setters take `&self`: `report` sets `fast` while a call is running.
/// `report` and `wake` are bound methods of the Delivery that holds this object: the cyclic GC
/// sees them (`__traverse__`), or a closed Bus would never be freed.
#[pyclass(module = "govbus._native")]
pub struct DeliveryCounter {
    delivered: AtomicU64,
    wake_at: AtomicU64,
    fast: AtomicBool,
    report: Option<Py<PyAny>>,
    wake: Option<Py<PyAny>>,
}

#[pymethods]
impl DeliveryCounter {
    #[new]
    fn new(report: Py<PyAny>, wake: Py<PyAny>) -> Self {
        DeliveryCounter {
            delivered: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            fast: AtomicBool::new(false),
            report: Some(report),
            wake: Some(wake),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(report) = &self.report {
            visit.call(report)?;
        }
        if let Some(wake) = &self.wake {
            visit.call(wake)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.report = None;
        self.wake = None;
    }

    /// The reports counted here (not through `report`).
    #[getter]
    fn delivered(&self) -> u64 {
        self.delivered.load(Relaxed)
    }

    #[getter]
    fn wake_at(&self) -> u64 {
        self.wake_at.load(Relaxed)
    }

    #[setter]
    fn set_wake_at(&self, value: u64) {
        self.wake_at.store(value, Relaxed);
    }

    /// False: every report goes to `report` (the broker not known reachable yet).
    #[getter]
    fn fast(&self) -> bool {
        self.fast.load(Relaxed)
    }

    #[setter]
    fn set_fast(&self, value: bool) {
        self.fast.store(value, Relaxed);
    }

    fn __call__(
        &self,
        py: Python<'_>,
        record: &Bound<'_, PyAny>,
        err: &Bound<'_, PyAny>,
        msg: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if err.is_none() && self.fast.load(Relaxed) {
            // Only a record that exists in memory alone: a spooled one moves the watermark.
            let keep = record.getattr(pyo3::intern!(py, "_keep"))?;
            if keep.is(&PyBool::new(py, true)) {
                let n = self.delivered.fetch_add(1, Relaxed) + 1;
                if n >= self.wake_at.load(Relaxed) {
                    if let Some(wake) = &self.wake {
                        wake.call0(py)?;
                    }
                }
                return Ok(());
            }
        }
        match &self.report {
            Some(report) => report.call1(py, (record, err, msg)).map(drop),
            None => Ok(()), // cleared by the cyclic GC: its Delivery is gone
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DeliveryCounter>()
}
