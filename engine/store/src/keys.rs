//! The key space. One ordered keyspace holds everything, so one batch can
//! change state, record the input, queue the outputs and move the input
//! position atomically. Ids never contain '/' (checked when events decode).
//!
//! | prefix | record |
//! |---|---|
//! | `s:` | state: `s:sec:`, `s:mod:`, `s:px:`, `s:esg:`, `s:hh:`, `s:ac:H/A`, `s:lot:H/A/S`, `s:po:H/A/O`, `s:seen@`, `s:chain:`, `s:meta` |
//! | `j:` + u64 BE | the input journal: source and raw bytes of each applied input, one chunk per commit |
//! | `o:` + u64 BE | orders (JSON), one chunk per commit |
//! | `a:` + u64 BE | audit records (JSON), one chunk per commit |
//! | `d:` + u64 BE | dead letters (JSON), one chunk per commit |
//! | `p:` + source | input position: next offset to read, u64 BE |
//! | `c:` + output | publish cursor: last output seq published, u64 BE |
//! | `x:` + name | engine metadata that is not state: `x:format`, the store format, u64 BE |
//!
//! The state records (`s:`) are those of the last commit that wrote them
//! ([`crate::STATE_EVERY_COMMITS`]); the journal's inputs after it are
//! folded again when state is loaded ([`crate::load_state`]).
//!
//! The four streams (`j:`, `o:`, `a:`, `d:`) are stored as chunks
//! ([`crate::chunk`]): each commit writes one value per stream holding all
//! of that commit's records of the stream, keyed by the stream's prefix and
//! the chunk's LAST seq (u64 BE); the value is the chunk's first seq (u64
//! BE), then each record as a u32 BE length and its bytes. Read them through
//! [`crate::records_after`], [`crate::record_at`] and [`crate::last_seq`].
//!
//! The idempotency set (event id → the state version that applied it) is
//! stored as one record per commit too: `s:seen@` and the commit's last
//! state version (20 decimal digits), holding the ids the commit added
//! ([`crate::codec::encode_seen`]). A new key costs sled several times an
//! update, and an input with an event id adds one; as one key per id they
//! were over a third of a commit's new keys. The state's *logical*
//! records still have one key per id, `s:seen:` and the id, with the
//! version as u64 BE: that is what the state hash covers
//! ([`crate::state_records`]), so the hash does not depend on where
//! commits fell.
//!
//! Store format ([`crate::STORE_FORMAT`], in `x:format`): 3 is this layout,
//! written with a new store's first commit. Format 2 differs only in the
//! idempotency set, one `s:seen:` record per id; this engine reads it and
//! marks the store format 3 with its next commit. A store with records and
//! no `x:format` is format 1, one key per stream record, which this engine
//! refuses to open ([`crate::check_format`]).

pub const STATE: &[u8] = b"s:";
pub const JOURNAL: &[u8] = b"j:";
pub const ORDERS: &[u8] = b"o:";
pub const AUDIT: &[u8] = b"a:";
pub const DEAD_LETTERS: &[u8] = b"d:";
pub const POSITIONS: &[u8] = b"p:";
pub const CURSORS: &[u8] = b"c:";
pub const FORMAT: &[u8] = b"x:format";

pub const SECURITY: &str = "s:sec:";
pub const MODEL: &str = "s:mod:";
pub const PRICE: &str = "s:px:";
pub const ESG: &str = "s:esg:";
pub const HOUSEHOLD: &str = "s:hh:";
pub const ACCOUNT: &str = "s:ac:";
pub const LOTS: &str = "s:lot:";
pub const PENDING: &str = "s:po:";
/// A logical idempotency record (and format 2's stored one): `s:seen:` + event id.
pub const SEEN: &str = "s:seen:";
/// A commit's idempotency records: `s:seen@` + its last state version, 20 digits.
pub const SEEN_COMMIT: &str = "s:seen@";
pub const CHAIN: &str = "s:chain:";
pub const META: &str = "s:meta";

pub fn seq_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn seq_of(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub fn text_key(prefix: &str, parts: &[&str]) -> Vec<u8> {
    let mut k = String::with_capacity(prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.push_str(prefix);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push('/');
        }
        k.push_str(p);
    }
    k.into_bytes()
}

/// The key of the idempotency records of the commit that ends at state version `applied`.
pub fn seen_commit_key(applied: u64) -> Vec<u8> {
    format!("{SEEN_COMMIT}{applied:020}").into_bytes()
}

pub fn position_key(source: &str) -> Vec<u8> {
    let mut k = POSITIONS.to_vec();
    k.extend_from_slice(source.as_bytes());
    k
}

pub fn cursor_key(output: &str) -> Vec<u8> {
    let mut k = CURSORS.to_vec();
    k.extend_from_slice(output.as_bytes());
    k
}
