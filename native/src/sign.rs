//! The producer's signing step, compiled: per-partition stream sequences, leaf hashes of the
//! canonical event bytes, the RFC 6962 Merkle tree and inclusion paths of a batch of records
//! (docs/signing.md §3-§6). The reference is `govbus.signing.Signer._hash` +
//! `govbus.signing._merkle.build`; the root is signed in Python (`Signer.sign_in_place`).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::batch_encoder::unlocked;

pub const EVENT_TAG: &[u8] = b"govbus/v1/event\x00";
pub const NULL_LENGTH: u32 = 0xFFFF_FFFF;

/// One record to sign: value, key, the signed CloudEvents header values (ce_id, ce_type,
/// ce_source, ce_time; None = absent), and the partition.
pub struct ToSign<'a> {
    pub value: &'a [u8],
    pub key: Option<&'a [u8]>,
    pub ce: [Option<&'a [u8]>; 4],
    pub partition: u32,
}

/// The leaf hash of one record's canonical bytes (docs/signing.md §3).
pub fn leaf(kid: &[u8], stream: &[u8], r: &ToSign<'_>, seq: u64) -> [u8; 32] {
    let len = |x: Option<&[u8]>| x.map_or(NULL_LENGTH, |v| v.len() as u32);
    // ce_id, ce_type and ce_source are "" when absent (the producer's SignInput); ce_time is null.
    let [id, ty, src, time] = r.ce;
    let (id, ty, src) = (id.unwrap_or(b""), ty.unwrap_or(b""), src.unwrap_or(b""));
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(EVENT_TAG);
    h.update(r.partition.to_be_bytes());
    h.update(seq.to_be_bytes());
    for n in [
        kid.len() as u32,
        stream.len() as u32,
        id.len() as u32,
        ty.len() as u32,
        src.len() as u32,
        len(time),
        len(r.key),
    ] {
        h.update(n.to_be_bytes());
    }
    h.update((r.value.len() as u32).to_be_bytes());
    for part in [
        kid,
        stream,
        id,
        ty,
        src,
        time.unwrap_or(b""),
        r.key.unwrap_or(b""),
        r.value,
    ] {
        h.update(part);
    }
    h.finalize().into()
}

fn node(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// `govbus.signing._merkle.build`: the root and, per leaf, its inclusion path (bottom-up).
pub fn build(leaves: &[[u8; 32]]) -> ([u8; 32], Vec<Vec<u8>>) {
    assert!(!leaves.is_empty());
    let mut levels: Vec<Vec<[u8; 32]>> = vec![leaves.to_vec()];
    while levels.last().map_or(0, |l| l.len()) > 1 {
        let level = levels.last().unwrap_or_else(|| unreachable!());
        let m = level.len();
        let mut parents: Vec<[u8; 32]> = (0..m - 1)
            .step_by(2)
            .map(|j| node(&level[j], &level[j + 1]))
            .collect();
        if m & 1 == 1 {
            parents.push(level[m - 1]);
        }
        levels.push(parents);
    }
    let root = levels[levels.len() - 1][0];
    let mut suffix: Vec<Vec<u8>> = vec![Vec::new()];
    for level in levels[..levels.len() - 1].iter().rev() {
        let m = level.len();
        let paired = m - (m & 1);
        let mut below: Vec<Vec<u8>> = Vec::with_capacity(m);
        for j in 0..paired {
            let mut p = Vec::with_capacity(32 + suffix[j >> 1].len());
            p.extend_from_slice(&level[j ^ 1]);
            p.extend_from_slice(&suffix[j >> 1]);
            below.push(p);
        }
        if m & 1 == 1 {
            below.push(suffix[(m - 1) >> 1].clone());
        }
        suffix = below;
    }
    (root, suffix)
}

/// Numbers (per partition, from `counters`), hashes and builds the tree of one batch; returns the
/// root and per record (sequence header value, proof header value).
pub fn merkle(
    kid: &[u8],
    stream: &[u8],
    counters: &mut HashMap<u32, u64>,
    records: &[ToSign<'_>],
    signed_at: u64,
) -> Option<([u8; 32], Vec<([u8; 12], Vec<u8>)>)> {
    let mut seqs = Vec::with_capacity(records.len());
    let leaves: Vec<[u8; 32]> = records
        .iter()
        .map(|r| {
            let c = counters.entry(r.partition).or_insert(0);
            let seq = *c;
            *c = seq.checked_add(1)?; // past 2**64 - 1: the Python signer refuses it
            let mut s = [0u8; 12];
            s[..4].copy_from_slice(&r.partition.to_be_bytes());
            s[4..].copy_from_slice(&seq.to_be_bytes());
            seqs.push(s);
            Some(leaf(kid, stream, r, seq))
        })
        .collect::<Option<_>>()?;
    let n = leaves.len() as u32;
    let (root, paths) = build(&leaves);
    let out = seqs
        .into_iter()
        .zip(paths)
        .enumerate()
        .map(|(i, (s, path))| {
            let mut proof = Vec::with_capacity(16 + path.len());
            proof.extend_from_slice(&signed_at.to_be_bytes());
            proof.extend_from_slice(&n.to_be_bytes());
            proof.extend_from_slice(&(i as u32).to_be_bytes());
            proof.extend_from_slice(&path);
            (s, proof)
        })
        .collect();
    Some((root, out))
}

type Input = (
    PyBackedBytes,
    Option<PyBackedBytes>,
    [Option<PyBackedBytes>; 4],
    u32,
);

/// [`merkle`] over what [`to_sign`] read, with the GIL released for a large batch; a panic is
/// None (the Python signer then judges the batch).
fn merkle_unlocked(
    py: Python<'_>,
    kid: &[u8],
    stream: &[u8],
    counters: &mut HashMap<u32, u64>,
    inputs: &[Input],
    signed_at: u64,
) -> Option<([u8; 32], Vec<([u8; 12], Vec<u8>)>)> {
    unlocked(py, inputs.len(), || {
        let view: Vec<ToSign<'_>> = inputs
            .iter()
            .map(|(value, key, ce, partition)| ToSign {
                value,
                key: key.as_deref(),
                ce: [
                    ce[0].as_deref(),
                    ce[1].as_deref(),
                    ce[2].as_deref(),
                    ce[3].as_deref(),
                ],
                partition: *partition,
            })
            .collect();
        catch_unwind(AssertUnwindSafe(|| {
            merkle(kid, stream, counters, &view, signed_at)
        }))
        .ok()
        .flatten()
    })
}

fn to_sign(item: &Bound<'_, PyAny>) -> Option<Input> {
    let t = item.downcast::<PyTuple>().ok()?;
    let value: PyBackedBytes = t
        .get_item(0)
        .ok()?
        .downcast_exact::<PyBytes>()
        .ok()?
        .clone()
        .into();
    let key = t.get_item(1).ok()?;
    let key: Option<PyBackedBytes> = if key.is_none() {
        None
    } else {
        Some(key.downcast_exact::<PyBytes>().ok()?.clone().into())
    };
    let mut ce: [Option<PyBackedBytes>; 4] = [None, None, None, None];
    for h in t.get_item(2).ok()?.try_iter().ok()? {
        let h = h.ok()?;
        let h = h.downcast::<PyTuple>().ok()?;
        let name = h.get_item(0).ok()?;
        let name = name.downcast::<PyString>().ok()?.to_str().ok()?;
        let slot = match name {
            "ce_id" => 0,
            "ce_type" => 1,
            "ce_source" => 2,
            "ce_time" => 3,
            _ => continue,
        };
        let raw: PyBackedBytes = h
            .get_item(1)
            .ok()?
            .downcast_exact::<PyBytes>()
            .ok()?
            .clone()
            .into();
        std::str::from_utf8(&raw).ok()?; // the reference decodes it (and raises on bad UTF-8)
        ce[slot] = Some(raw); // the last one wins, as in sign_input
    }
    let partition: i64 = t.get_item(3).ok()?.extract().ok()?;
    if !(0..=0x7FFF_FFFF).contains(&partition) {
        return None;
    }
    Some((value, key, ce, partition as u32))
}

/// Numbers, hashes and builds the Merkle tree of one batch of records `(value, key, headers,
/// partition)` for stream (`kid`, `stream`) from the next sequence per partition `counters`.
/// Returns `(root, [(seq header value, proof header value)], counters after)`, or None when a
/// record is not plain enough for it (the Python signer then judges the batch).
#[pyfunction]
fn merkle_batch<'py>(
    py: Python<'py>,
    kid: &[u8],
    stream: &[u8],
    counters: HashMap<u32, u64>,
    records: &Bound<'py, PyList>,
    signed_at: u64,
) -> PyResult<Option<(Bound<'py, PyBytes>, Bound<'py, PyList>, HashMap<u32, u64>)>> {
    if records.is_empty() || records.len() > 1 << 16 {
        return Ok(None);
    }
    let mut inputs = Vec::with_capacity(records.len());
    for item in records.iter() {
        match to_sign(&item) {
            Some(i) => inputs.push(i),
            None => return Ok(None),
        }
    }
    let mut counters = counters;
    let done = merkle_unlocked(py, kid, stream, &mut counters, &inputs, signed_at);
    let Some((root, out)) = done else {
        return Ok(None);
    };
    let seq_name = PyString::intern(py, "govbus_sig_seq");
    let proof_name = PyString::intern(py, "govbus_sig_proof");
    let list = PyList::empty(py);
    for (seq, proof) in out {
        list.append((
            (&seq_name, PyBytes::new(py, &seq)),
            (&proof_name, PyBytes::new(py, &proof)),
        ))?;
    }
    Ok(Some((PyBytes::new(py, &root), list, counters)))
}

/// `merkle_batch` for the signing hook, on the records themselves (objects with `value`, `key`,
/// `headers`, `partition`): numbers, hashes and builds the tree, has `sign(root)` (Python: the
/// Ed25519 signature of the batch message) sign the root, and sets each record's `headers` to its
/// headers followed by the six signature headers. Returns the next sequences, or None (nothing
/// changed) when a record is not plain enough for it.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn sign_records<'py>(
    py: Python<'py>,
    kid: &[u8],
    stream: &[u8],
    counters: HashMap<u32, u64>,
    records: &Bound<'py, PyList>,
    signed_at: u64,
    fixed: (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>),
    sign: Bound<'py, PyAny>,
) -> PyResult<Option<HashMap<u32, u64>>> {
    if records.is_empty() || records.len() > 1 << 16 {
        return Ok(None);
    }
    let (value_n, key_n, headers_n, partition_n) = (
        pyo3::intern!(py, "value"),
        pyo3::intern!(py, "key"),
        pyo3::intern!(py, "headers"),
        pyo3::intern!(py, "partition"),
    );
    let mut inputs = Vec::with_capacity(records.len());
    let mut bases = Vec::with_capacity(records.len());
    for r in records.iter() {
        let headers = r.getattr(headers_n)?;
        let item = (
            r.getattr(value_n)?,
            r.getattr(key_n)?,
            &headers,
            r.getattr(partition_n)?,
        )
            .into_pyobject(py)?;
        match to_sign(item.as_any()) {
            Some(i) => inputs.push(i),
            None => return Ok(None),
        }
        let Ok(list) = headers.downcast_into::<PyList>() else {
            return Ok(None);
        };
        bases.push(list);
    }
    let mut counters = counters;
    let done = merkle_unlocked(py, kid, stream, &mut counters, &inputs, signed_at);
    let Some((root, out)) = done else {
        return Ok(None);
    };
    let sig = (
        PyString::intern(py, "govbus_sig"),
        sign.call1((PyBytes::new(py, &root),))?,
    )
        .into_pyobject(py)?;
    let seq_name = PyString::intern(py, "govbus_sig_seq");
    let proof_name = PyString::intern(py, "govbus_sig_proof");
    let (kid_h, alg_h, stream_h) = fixed;
    for ((r, base), (seq, proof)) in records.iter().zip(bases).zip(out) {
        let headers = PyList::empty(py);
        for h in base.iter() {
            headers.append(h)?;
        }
        headers.append(&kid_h)?;
        headers.append(&alg_h)?;
        headers.append(&stream_h)?;
        headers.append((&seq_name, PyBytes::new(py, &seq)))?;
        headers.append((&proof_name, PyBytes::new(py, &proof)))?;
        headers.append(&sig)?;
        r.setattr(headers_n, headers)?;
    }
    Ok(Some(counters))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(merkle_batch, m)?)?;
    m.add_function(wrap_pyfunction!(sign_records, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_of_three() {
        let l: Vec<[u8; 32]> = (0..3u8).map(|i| [i; 32]).collect();
        let (root, paths) = build(&l);
        assert_eq!(root, node(&node(&l[0], &l[1]), &l[2]));
        assert_eq!(paths[0], [l[1].as_slice(), &l[2]].concat());
        assert_eq!(paths[2], node(&l[0], &l[1]).to_vec());
    }
}
