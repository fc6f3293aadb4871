//! On-disk record framing.
//!
//! ```text
//! frame  = body_len:u32le  crc:u32le  body
//! body   = magic:u8(=1)  attributes:u8  offset:u64le  timestamp_ms:u64le
//!          key_len:u32le  key[key_len]  value[..]
//! ```
//!
//! `crc` is CRC-32 (IEEE, as `crc32fast`) over `body`. `attributes` bit 0
//! says whether the record has a key (so `Some(vec![])` and `None` differ);
//! every other bit must be zero. The value runs to the end of the body.

use crate::{MAX_KEY_BYTES, MAX_RECORD_BYTES};

/// `body_len` + `crc`.
pub(crate) const HEADER_LEN: usize = 8;
/// magic + attributes + offset + timestamp + key_len.
pub(crate) const BODY_FIXED_LEN: usize = 1 + 1 + 8 + 8 + 4;
/// Bytes a record occupies on disk beyond its key and value.
pub const RECORD_OVERHEAD: usize = HEADER_LEN + BODY_FIXED_LEN;

const MAGIC: u8 = 1;
const ATTR_HAS_KEY: u8 = 0x01;

/// Size of the encoded frame for a record with this key and value.
pub(crate) fn encoded_len(key: Option<&[u8]>, value: &[u8]) -> usize {
    RECORD_OVERHEAD + key.map_or(0, <[u8]>::len) + value.len()
}

/// Appends one frame to `buf`. The caller has checked the size bounds.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, timestamp_ms: u64, key: Option<&[u8]>, value: &[u8]) {
    let key_bytes = key.unwrap_or(&[]);
    let body_len = BODY_FIXED_LEN + key_bytes.len() + value.len();
    debug_assert!(HEADER_LEN + body_len <= MAX_RECORD_BYTES);
    debug_assert!(key_bytes.len() <= MAX_KEY_BYTES);
    buf.reserve(HEADER_LEN + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    let crc_at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let body_at = buf.len();
    buf.push(MAGIC);
    buf.push(if key.is_some() { ATTR_HAS_KEY } else { 0 });
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&(key_bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(key_bytes);
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[body_at..]);
    buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded frame borrowing from the read buffer.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    /// Encoded size of the whole frame.
    pub len: usize,
    pub offset: u64,
    pub timestamp_ms: u64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

/// The outcome of decoding the frame at the start of a buffer.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    Record(Frame<'a>),
    /// The buffer holds fewer than `needed` bytes of this frame.
    Incomplete {
        needed: usize,
    },
    /// The length field is outside the possible range (cannot come from a
    /// torn write of a valid frame, unless the bytes are zero fill).
    BadLength {
        body_len: u32,
    },
    /// The frame is complete but its CRC does not match.
    BadCrc {
        len: usize,
        stored: u32,
        computed: u32,
    },
    /// CRC matches but the body does not make sense.
    Malformed {
        reason: String,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes the frame at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return Decoded::Incomplete { needed: HEADER_LEN };
    }
    let body_len = u32_at(buf, 0);
    if (body_len as usize) < BODY_FIXED_LEN || body_len as usize > MAX_RECORD_BYTES - HEADER_LEN {
        return Decoded::BadLength { body_len };
    }
    let len = HEADER_LEN + body_len as usize;
    if buf.len() < len {
        return Decoded::Incomplete { needed: len };
    }
    let stored = u32_at(buf, 4);
    let body = &buf[HEADER_LEN..len];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Decoded::BadCrc { len, stored, computed };
    }
    if body[0] != MAGIC {
        return Decoded::Malformed { reason: format!("unknown record format version {}", body[0]) };
    }
    let attributes = body[1];
    if attributes & !ATTR_HAS_KEY != 0 {
        return Decoded::Malformed { reason: format!("unknown attribute bits {attributes:#04x}") };
    }
    let offset = u64_at(body, 2);
    let timestamp_ms = u64_at(body, 10);
    let key_len = u32_at(body, 18) as usize;
    let rest = &body[BODY_FIXED_LEN..];
    let has_key = attributes & ATTR_HAS_KEY != 0;
    if key_len > rest.len() || key_len > MAX_KEY_BYTES || (!has_key && key_len != 0) {
        return Decoded::Malformed { reason: format!("key length {key_len} does not fit a {body_len}-byte body") };
    }
    let (key, value) = rest.split_at(key_len);
    Decoded::Record(Frame { len, offset, timestamp_ms, key: has_key.then_some(key), value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_distinguish_empty_key_from_no_key() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 1_700_000_000_000, Some(b""), b"v1");
        encode(&mut buf, 8, 5, None, b"");
        encode(&mut buf, 9, 6, Some(b"key"), b"value");
        assert_eq!(buf.len(), 3 * RECORD_OVERHEAD + 2 + 3 + 5);

        let mut at = 0;
        let mut seen = Vec::new();
        while at < buf.len() {
            match decode(&buf[at..]) {
                Decoded::Record(f) => {
                    seen.push((f.offset, f.timestamp_ms, f.key.map(<[u8]>::to_vec), f.value.to_vec()));
                    at += f.len;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            seen,
            vec![
                (7, 1_700_000_000_000, Some(vec![]), b"v1".to_vec()),
                (8, 5, None, vec![]),
                (9, 6, Some(b"key".to_vec()), b"value".to_vec()),
            ]
        );
    }

    #[test]
    fn short_bad_and_flipped_frames_are_classified() {
        let mut buf = Vec::new();
        encode(&mut buf, 0, 0, Some(b"k"), b"hello");
        for cut in 0..buf.len() {
            assert!(matches!(decode(&buf[..cut]), Decoded::Incomplete { .. }), "cut at {cut}");
        }
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert!(matches!(decode(&flipped), Decoded::BadCrc { .. }));
        assert!(matches!(decode(&[0u8; 16]), Decoded::BadLength { body_len: 0 }));
        assert!(matches!(decode(&[0xff; 16]), Decoded::BadLength { .. }));
    }
}
