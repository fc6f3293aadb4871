//! Compliance replay. `verify` rebuilds state from the recorded input journal
//! in a fresh store, with the settings recorded at the start, and checks that
//! the state hash and every output byte (orders, audit records, dead letters)
//! are identical to what the engine recorded. On a difference it names the
//! first differing record.

pub mod audit;
pub mod export;

use overlay_core::fold::Input;
use overlay_store::{codec, keys, load_meta, records_after, state_hash, Folder, MemStore, Store, StoreError};

/// Inputs folded between commits of the replay's own (in-memory) store.
const REPLAY_BATCH_INPUTS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the journal is empty: nothing to replay")]
    EmptyJournal,
    #[error("{stream} differ at seq {seq}:\n  recorded: {recorded}\n  replayed: {replayed}")]
    OutputMismatch { stream: &'static str, seq: u64, recorded: String, replayed: String },
    #[error("state differs after replay: recorded hash {recorded}, replayed hash {replayed}; first differing record: {first_difference}")]
    StateMismatch { recorded: String, replayed: String, first_difference: String },
    #[error("journal record {seq}: {message}")]
    BadJournal { seq: u64, message: String },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub inputs: u64,
    pub orders: u64,
    pub audit: u64,
    pub dead_letters: u64,
    pub state_hash: String,
}

/// Re-folds the whole journal of `recorded` into a fresh in-memory store.
/// `progress` is called with (inputs done, inputs total).
pub fn rebuild(recorded: &dyn Store, progress: &mut dyn FnMut(u64, u64)) -> Result<Folder, ReplayError> {
    let meta = load_meta(recorded)?;
    let (settings, total) = (meta.settings, meta.applied);
    if total == 0 {
        return Err(ReplayError::EmptyJournal);
    }
    let mut folder = Folder::open(Box::new(MemStore::new()), settings)?;
    let mut done = 0u64;
    for r in records_after(recorded, keys::JOURNAL, 0) {
        let (seq, value) = r?;
        let (source, raw) = codec::decode_journal(&value)?;
        if seq != done + 1 {
            return Err(ReplayError::BadJournal { seq, message: format!("expected journal record {}", done + 1) });
        }
        let position = source.rsplit_once('/').and_then(|(key, off)| off.parse::<u64>().ok().map(|o| (key, o + 1)));
        let decoded = overlay_proto::decode_envelope(raw);
        let input = match &decoded {
            Ok(env) => Input::Event(env),
            Err(e) => Input::Undecodable(e),
        };
        folder.fold(source, position, raw, input);
        done += 1;
        if folder.uncommitted() >= REPLAY_BATCH_INPUTS {
            folder.commit()?;
            progress(done, total);
        }
    }
    folder.commit()?;
    progress(done, total);
    Ok(folder)
}

/// Replays the journal and compares everything the engine recorded.
pub fn verify(recorded: &dyn Store, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, ReplayError> {
    let folder = rebuild(recorded, progress)?;
    let replayed = folder.store();
    let mut report = VerifyReport { inputs: folder.state().meta.applied, ..VerifyReport::default() };
    report.orders = compare_stream(recorded, replayed, keys::ORDERS, "orders")?;
    report.audit = compare_stream(recorded, replayed, keys::AUDIT, "audit records")?;
    report.dead_letters = compare_stream(recorded, replayed, keys::DEAD_LETTERS, "dead letters")?;
    let (a, b) = (state_hash(recorded)?, state_hash(replayed)?);
    if a != b {
        return Err(ReplayError::StateMismatch {
            recorded: a,
            replayed: b,
            first_difference: first_state_difference(recorded, replayed)?,
        });
    }
    report.state_hash = a;
    Ok(report)
}

fn show(v: Option<&[u8]>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(b) => {
            let s = String::from_utf8_lossy(b);
            if s.len() > 600 {
                format!("{}…", &s[..s.floor_char_boundary(600)])
            } else {
                s.into_owned()
            }
        }
    }
}

fn compare_stream(
    recorded: &dyn Store,
    replayed: &dyn Store,
    prefix: &'static [u8],
    stream: &'static str,
) -> Result<u64, ReplayError> {
    let mut a = records_after(recorded, prefix, 0);
    let mut b = records_after(replayed, prefix, 0);
    let mut n = 0;
    loop {
        match (a.next().transpose()?, b.next().transpose()?) {
            (None, None) => return Ok(n),
            (Some((sa, va)), Some((sb, vb))) if sa == sb && va == vb => n += 1,
            (ra, rb) => {
                let seq = ra.as_ref().map(|r| r.0).or(rb.as_ref().map(|r| r.0)).unwrap_or(0);
                return Err(ReplayError::OutputMismatch {
                    stream,
                    seq,
                    recorded: show(ra.as_ref().map(|r| r.1.as_slice())),
                    replayed: show(rb.as_ref().map(|r| r.1.as_slice())),
                });
            }
        }
    }
}

fn first_state_difference(recorded: &dyn Store, replayed: &dyn Store) -> Result<String, ReplayError> {
    let mut a = recorded.scan(keys::STATE, None);
    let mut b = replayed.scan(keys::STATE, None);
    loop {
        match (a.next().transpose()?, b.next().transpose()?) {
            (None, None) => return Ok("none found".into()),
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                let key =
                    |r: &Option<(Vec<u8>, Vec<u8>)>| r.as_ref().map(|(k, _)| String::from_utf8_lossy(k).into_owned());
                return Ok(format!(
                    "recorded {} = {}, replayed {} = {}",
                    key(&x).unwrap_or_default(),
                    show(x.as_ref().map(|r| r.1.as_slice())),
                    key(&y).unwrap_or_default(),
                    show(y.as_ref().map(|r| r.1.as_slice()))
                ));
            }
        }
    }
}
