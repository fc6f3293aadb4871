//! Kafka's default key partitioner: `murmur2`, exactly as the Java client's
//! `org.apache.kafka.common.utils.Utils.murmur2`.

/// MurmurHash2 (32-bit, seed `0x9747b28c`) with the Java client's exact byte
/// handling; returns the same signed value as `Utils.murmur2(byte[])`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java: `int h = seed ^ length` (byte arrays are shorter than 2^31).
    let mut h: u32 = SEED ^ (data.len() as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java's fall-through `switch (length % 4)`.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's default partition for a keyed record:
/// `Utils.toPositive(Utils.murmur2(key)) % partitions`, where `toPositive`
/// is `n & 0x7fffffff` (not `abs`).
///
/// # Panics
/// If `partitions` is zero.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) as u32) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    // Kafka's own test vectors are checked, with partitioning, in tests/embedded_log.rs.

    /// Given a negative hash, when partitioned, then the sign bit is masked
    /// (Kafka's `toPositive`), not negated.
    #[test]
    fn partition_masks_the_sign_bit() {
        let h = murmur2(b"21"); // -973932308
        assert!(h < 0);
        let expected = ((h as u32) & 0x7fff_ffff) % 7;
        assert_eq!(partition_for_key(b"21", 7), expected);
        // (-973932308 & 0x7fffffff) = 1173551340; 1173551340 % 7 = 4
        assert_eq!(expected, 1_173_551_340 % 7);
        assert_eq!(partition_for_key(b"abc", 1), 0);
    }
}
