//! Key -> partition as the producer routes records (`govbus.producer._partition.partition_for`:
//! Kafka's murmur2, as the Java client's default partitioner and librdkafka's `murmur2`).

use pyo3::prelude::*;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`) as an unsigned 32-bit int.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5BD1_E995;
    let mut h: u32 = 0x9747_B28C ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() == 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `partitions` (> 0).
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7FFF_FFFF) % partitions
}

/// `partition_for` for the differential tests.
#[pyfunction]
#[pyo3(name = "partition_for")]
fn py_partition_for(key: &[u8], partitions: u32) -> PyResult<u32> {
    if partitions == 0 {
        return Err(pyo3::exceptions::PyValueError::new_err("partitions must be > 0"));
    }
    Ok(partition_for(key, partitions))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_partition_for, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2 (as unsigned ints).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
