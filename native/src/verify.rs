//! Suite `ed25519-merkle-v1` on the consumer side (docs/signing.md): canonical event bytes, leaf
//! hash, inclusion proof up to the batch root, and the batch's Ed25519 signature, checked once
//! per batch and remembered (a bounded cache keyed by the signature, holding the verified root).
//!
//! Only authenticity is decided here, and only the answer "authentic" is final: anything else
//! (a missing or malformed header, an unknown kid, a proof that does not fit, a signature that does
//! not verify) goes back to the Python verifier, which words the verdict. Key validity in time,
//! revocation and sequence tracking stay in Python.

use std::collections::{HashMap, VecDeque};

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

const H_KID: &str = "govbus_sig_kid";
const H_ALG: &str = "govbus_sig_alg";
const H_STREAM: &str = "govbus_sig_stream";
const H_SEQ: &str = "govbus_sig_seq";
const H_PROOF: &str = "govbus_sig_proof";
const H_SIG: &str = "govbus_sig";
const CE_ID: &str = "ce_id";
const CE_TYPE: &str = "ce_type";
const CE_SOURCE: &str = "ce_source";
const CE_TIME: &str = "ce_time";
const WATCHED: [&str; 10] = [H_KID, H_ALG, H_STREAM, H_SEQ, H_PROOF, H_SIG, CE_ID, CE_TYPE, CE_SOURCE, CE_TIME];

const ALG: &[u8] = b"ed25519-merkle-v1";
const EVENT_TAG: &[u8] = b"govbus/v1/event\x00";
const BATCH_TAG: &[u8] = b"govbus/v1/batch\x00";
const NULL_LENGTH: u32 = 0xFFFF_FFFF;
const MAX_STREAM_ID: usize = 64;
const MAX_TREE_SIZE: u32 = 1 << 16;
const HASH: usize = 32;
const PROOF_HEAD: usize = 16; // signed_at_ms u64, tree_size u32, leaf_index u32
const PROOF_MAX: usize = PROOF_HEAD + 16 * HASH;

/// What an authentic record tells the Python side (which checks the key's validity and the sequence).
pub struct Authentic<'a> {
    pub kid: &'a [u8],
    pub stream: &'a [u8],
    pub sequence: u64,
    pub signed_at: u64,
    pub ce_id: Option<&'a [u8]>,
}

struct Verified {
    kid: Vec<u8>,
    signed_at: u64,
    size: u32,
    root: [u8; 32],
}

pub struct Checker {
    keys: HashMap<Vec<u8>, VerifyingKey>,
    cache: HashMap<[u8; 64], Verified>,
    order: VecDeque<[u8; 64]>,
    capacity: usize,
    memo: NodeMemo,
    pub signature_checks: u64,
}

fn leaf_hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    for p in parts {
        h.update(p);
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

/// RFC 6962 inclusion proof from `leaf` at `index` of `size`; None when the proof does not fit exactly.
pub fn climb(leaf: [u8; 32], index: u32, size: u32, path: &[u8]) -> Option<[u8; 32]> {
    climb_with(leaf, index, size, path, |_, _, l, r| node(l, r))
}

fn climb_with(
    leaf: [u8; 32],
    index: u32,
    size: u32,
    path: &[u8],
    mut parent: impl FnMut(u32, u32, &[u8], &[u8]) -> [u8; 32],
) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut j, mut m, mut r, mut pos, mut level) = (index, size, leaf, 0usize, 0u32);
    while m > 1 {
        if (j ^ 1) < m {
            let p = path.get(pos..pos + HASH)?;
            r = if j & 1 == 1 { parent(level, j >> 1, p, &r) } else { parent(level, j >> 1, &r, p) };
            pos += HASH;
        }
        j >>= 1;
        m = (m + 1) >> 1;
        level += 1;
    }
    (pos == path.len()).then_some(r)
}

const MEMO_SLOTS: usize = 1 << 13;

/// A direct-mapped cache of the Merkle node function: (left, right) -> SHA-256(0x01 || left || right).
///
/// The records of one signed batch share the upper part of their inclusion paths, so most of a
/// record's ~8 node hashes were computed already for its neighbours. An entry is used only when
/// both children are byte-equal to the ones it was computed from, so the answer is always the
/// node function's own: the cache cannot change a verdict, only skip recomputing it. The slot is
/// chosen by the batch (a few bytes of its signature), level and position, where the same node
/// recurs.
struct NodeMemo {
    slots: Vec<Option<([u8; 32], [u8; 32], [u8; 32])>>,
}

impl NodeMemo {
    fn parent(&mut self, salt: u64, level: u32, at: u32, left: &[u8], right: &[u8]) -> [u8; 32] {
        if self.slots.is_empty() {
            self.slots = vec![None; MEMO_SLOTS];
        }
        let key = salt ^ (u64::from(level) << 32 | u64::from(at));
        let slot = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 51) as usize & (MEMO_SLOTS - 1);
        if let Some((l, r, p)) = &self.slots[slot] {
            if l[..] == *left && r[..] == *right {
                return *p;
            }
        }
        let p = node(left, right);
        if let (Ok(l), Ok(r)) = (left.try_into(), right.try_into()) {
            self.slots[slot] = Some((l, r, p));
        }
        p
    }
}

fn len32(v: Option<&[u8]>) -> u32 {
    v.map_or(NULL_LENGTH, |b| b.len() as u32)
}

impl Checker {
    pub fn new(capacity: usize) -> Self {
        Checker {
            keys: HashMap::new(),
            cache: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            memo: NodeMemo { slots: Vec::new() },
            signature_checks: 0,
        }
    }

    /// Replaces the trusted keys (a reloaded or mutated keyring); forgets every verified batch.
    pub fn set_keys(&mut self, keys: HashMap<Vec<u8>, VerifyingKey>) {
        self.keys = keys;
        self.cache.clear();
        self.order.clear();
    }

    /// Some when the record is authentic; None: let the Python verifier judge it.
    pub fn check<'a>(
        &mut self,
        value: Option<&'a [u8]>,
        key: Option<&'a [u8]>,
        headers: &[(&'a str, Option<&'a [u8]>)],
        partition: u32,
    ) -> Option<Authentic<'a>> {
        if headers.is_empty() {
            return None;
        }
        // dict(headers) as the Python verifier reads it: only the watched names matter, and a
        // repeated one is malformed (so each has at most one value). A scan of ~16 pairs against
        // 10 names costs less than hashing them into a map per record.
        let mut found: [Option<Option<&[u8]>>; WATCHED.len()] = [None; WATCHED.len()];
        for (name, v) in headers {
            if let Some(i) = WATCHED.iter().position(|w| w == name) {
                if found[i].replace(*v).is_some() {
                    return None;
                }
            }
        }
        let h = |i: usize| found[i].flatten();
        let (kid, alg, stream, seq, proof, sig) = (h(0)?, h(1)?, h(2)?, h(3)?, h(4)?, h(5)?);
        let value = value?;
        if alg != ALG {
            return None;
        }
        let vk = self.keys.get(kid)?;
        let plen = proof.len();
        if seq.len() != 12
            || sig.len() != 64
            || !(PROOF_HEAD..=PROOF_MAX).contains(&plen)
            || (plen - PROOF_HEAD) % HASH != 0
            || stream.is_empty()
            || stream.len() > MAX_STREAM_ID
        {
            return None;
        }
        let signed_partition = u32::from_be_bytes(seq[0..4].try_into().ok()?);
        let sequence = u64::from_be_bytes(seq[4..12].try_into().ok()?);
        if signed_partition != partition {
            return None;
        }
        let signed_at = u64::from_be_bytes(proof[0..8].try_into().ok()?);
        let size = u32::from_be_bytes(proof[8..12].try_into().ok()?);
        let index = u32::from_be_bytes(proof[12..16].try_into().ok()?);
        let (ce_id, ce_type, ce_source, ce_time) = (h(6), h(7), h(8), h(9));
        let mut head = [0u8; 44];
        head[0..4].copy_from_slice(&partition.to_be_bytes());
        head[4..12].copy_from_slice(&sequence.to_be_bytes());
        let lens = [
            kid.len() as u32,
            stream.len() as u32,
            len32(ce_id),
            len32(ce_type),
            len32(ce_source),
            len32(ce_time),
            len32(key),
            value.len() as u32,
        ];
        for (i, l) in lens.iter().enumerate() {
            head[12 + 4 * i..16 + 4 * i].copy_from_slice(&l.to_be_bytes());
        }
        let e: &[u8] = b"";
        let leaf = leaf_hash(&[
            EVENT_TAG,
            &head,
            kid,
            stream,
            ce_id.unwrap_or(e),
            ce_type.unwrap_or(e),
            ce_source.unwrap_or(e),
            ce_time.unwrap_or(e),
            key.unwrap_or(e),
            value,
        ]);
        if size > MAX_TREE_SIZE {
            return None;
        }
        let sig: [u8; 64] = sig.try_into().ok()?;
        let salt = u64::from_le_bytes(sig[..8].try_into().ok()?);
        let memo = &mut self.memo;
        let root = climb_with(leaf, index, size, &proof[PROOF_HEAD..], |level, at, l, r| memo.parent(salt, level, at, l, r))?;
        let hit = self
            .cache
            .get(&sig)
            .is_some_and(|v| v.kid == kid && v.signed_at == signed_at && v.size == size && v.root == root);
        if !hit {
            self.signature_checks += 1;
            let mut message = Vec::with_capacity(BATCH_TAG.len() + 20 + ALG.len() + kid.len() + 32);
            message.extend_from_slice(BATCH_TAG);
            message.extend_from_slice(&signed_at.to_be_bytes());
            message.extend_from_slice(&size.to_be_bytes());
            message.extend_from_slice(&(ALG.len() as u32).to_be_bytes());
            message.extend_from_slice(&(kid.len() as u32).to_be_bytes());
            message.extend_from_slice(ALG);
            message.extend_from_slice(kid);
            message.extend_from_slice(&root);
            // Strict: canonical encodings, no small-order points. What it accepts OpenSSL accepts
            // too; whatever it refuses, the Python verifier (OpenSSL) judges.
            vk.verify_strict(&message, &Signature::from_bytes(&sig)).ok()?;
            if size > 1 && self.capacity > 0 {
                if self.cache.insert(sig, Verified { kid: kid.to_vec(), signed_at, size, root }).is_none() {
                    self.order.push_back(sig);
                }
                while self.cache.len() > self.capacity {
                    match self.order.pop_front() {
                        Some(old) => {
                            self.cache.remove(&old);
                        }
                        None => break,
                    }
                }
            }
        }
        Some(Authentic { kid, stream, sequence, signed_at, ce_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(leaves: &[[u8; 32]]) -> Vec<Vec<[u8; 32]>> {
        // RFC 6962 levels: an odd last node is carried up unchanged.
        let mut levels = vec![leaves.to_vec()];
        while levels.last().map_or(0, |l| l.len()) > 1 {
            let prev = levels.last().unwrap();
            let next = prev.chunks(2).map(|c| if c.len() == 2 { node(&c[0], &c[1]) } else { c[0] }).collect();
            levels.push(next);
        }
        levels
    }

    fn path(levels: &[Vec<[u8; 32]>], index: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut j = index;
        for level in &levels[..levels.len() - 1] {
            if let Some(sib) = level.get(j ^ 1) {
                out.extend_from_slice(sib);
            }
            j >>= 1;
        }
        out
    }

    #[test]
    fn memoised_climb_equals_the_node_function_on_valid_and_tampered_paths() {
        let mut memo = NodeMemo { slots: Vec::new() };
        for size in [1usize, 2, 3, 5, 8, 13, 64, 100, 256] {
            let leaves: Vec<[u8; 32]> = (0..size).map(|i| leaf_hash(&[&(size * 1000 + i).to_be_bytes()])).collect();
            let levels = tree(&leaves);
            let root = levels.last().unwrap()[0];
            for salt in [0u64, 7] {
                for (i, leaf) in leaves.iter().enumerate() {
                    let p = path(&levels, i);
                    let with = |p: &[u8], memo: &mut NodeMemo| {
                        climb_with(*leaf, i as u32, size as u32, p, |lv, at, l, r| memo.parent(salt, lv, at, l, r))
                    };
                    assert_eq!(climb(*leaf, i as u32, size as u32, &p), Some(root));
                    assert_eq!(with(&p, &mut memo), Some(root));
                    // A tampered sibling, after the memo holds the true nodes: the memo must not
                    // answer the true root for it.
                    for at in (0..p.len()).step_by(32) {
                        let mut bad = p.clone();
                        bad[at] ^= 1;
                        assert_eq!(with(&bad, &mut memo), climb(*leaf, i as u32, size as u32, &bad));
                        assert_ne!(with(&bad, &mut memo), Some(root));
                    }
                }
            }
        }
    }
}
