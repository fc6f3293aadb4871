//! State ↔ stored records. Writing: for each record an applied decision
//! touched, the current value from in-memory state (or a delete). Reading: the
//! whole `s:` range back into a `State`, then the indexes rebuilt.

use crate::keys::{self, text_key};
use crate::StoreError;
use overlay_core::fold::{rebuild_indexes, Touched};
use overlay_core::ids::{AccountId, HouseholdId, ModelId, OrderId, SecurityId};
use overlay_core::state::{
    Account, ChainHead, EngineSettings, EsgScore, Household, Lot, Meta, Model, PendingOrder, PriceState, State,
};
use serde::{Deserialize, Serialize};

/// The counters and settings of `Meta`; chains and the dedupe set have keys of their own.
#[derive(Debug, Serialize, Deserialize)]
struct MetaRecord {
    applied: u64,
    order_seq: u64,
    audit_seq: u64,
    dead_letter_seq: u64,
    settings: EngineSettings,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state records serialize")
}

/// The key and current value (None = deleted) of one touched record, as a
/// logical record: an idempotency record is `s:seen:` and its id here,
/// though a commit stores its ids together ([`encode_seen`]).
pub fn encode_touched(state: &State, t: &Touched) -> (Vec<u8>, Option<Vec<u8>>) {
    match t {
        Touched::Security(id) => (text_key(keys::SECURITY, &[id.as_str()]), state.securities.get(id).map(json)),
        Touched::Model(id) => (text_key(keys::MODEL, &[id.as_str()]), state.models.get(id).map(json)),
        Touched::Price(id) => (text_key(keys::PRICE, &[id.as_str()]), state.prices.get(id).map(json)),
        Touched::Esg(id) => (text_key(keys::ESG, &[id.as_str()]), state.esg.get(id).map(json)),
        Touched::Household(h) => (text_key(keys::HOUSEHOLD, &[h.as_str()]), state.households.get(h).map(json)),
        Touched::Account(h, a) => (
            text_key(keys::ACCOUNT, &[h.as_str(), a.as_str()]),
            state.households.get(h).and_then(|hh| hh.accounts.get(a)).map(json),
        ),
        Touched::Lots(h, a, s) => (
            text_key(keys::LOTS, &[h.as_str(), a.as_str(), s.as_str()]),
            state.households.get(h).and_then(|hh| hh.accounts.get(a)).and_then(|acc| acc.lots.get(s)).map(json),
        ),
        Touched::Pending(h, a, o) => (
            text_key(keys::PENDING, &[h.as_str(), a.as_str(), o.as_str()]),
            state.households.get(h).and_then(|hh| hh.accounts.get(a)).and_then(|acc| acc.pending.get(o)).map(json),
        ),
        Touched::Seen(id) => (text_key(keys::SEEN, &[id]), state.meta.seen.get(id).map(|v| v.to_be_bytes().to_vec())),
        Touched::Chain(stream) => (text_key(keys::CHAIN, &[stream]), state.meta.chains.get(stream.as_ref()).map(json)),
        Touched::Meta => {
            let m = &state.meta;
            let rec = MetaRecord {
                applied: m.applied,
                order_seq: m.order_seq,
                audit_seq: m.audit_seq,
                dead_letter_seq: m.dead_letter_seq,
                settings: m.settings.clone(),
            };
            (keys::META.as_bytes().to_vec(), Some(json(&rec)))
        }
    }
}

/// The stored value of one commit's idempotency records
/// ([`keys::SEEN_COMMIT`]): for each id, its length (u32 BE), its bytes and
/// the state version that applied it (u64 BE). Ids the state does not hold
/// are left out (an id is never removed, so there are none).
pub fn encode_seen<'a>(state: &State, ids: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut v = Vec::new();
    for id in ids {
        if let Some(at) = state.meta.seen.get(id) {
            v.extend_from_slice(&(id.len() as u32).to_be_bytes());
            v.extend_from_slice(id.as_bytes());
            v.extend_from_slice(&at.to_be_bytes());
        }
    }
    v
}

/// The (id, version) pairs of one commit's idempotency record, in stored order.
pub fn decode_seen(key: &[u8], value: &[u8]) -> Result<Vec<(String, u64)>, StoreError> {
    let bad = || StoreError::Corrupt(format!("bad idempotency record {}", String::from_utf8_lossy(key)));
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        let id = tail.get(..len).ok_or_else(bad)?;
        let id = std::str::from_utf8(id).map_err(|_| bad())?.to_string();
        let (at, tail) = tail[len..].split_first_chunk::<8>().ok_or_else(bad)?;
        out.push((id, u64::from_be_bytes(*at)));
        rest = tail;
    }
    Ok(out)
}

/// The counters and settings alone (no chains, no idempotency set), read
/// from the one `s:meta` record.
pub fn decode_meta(value: &[u8]) -> Result<Meta, StoreError> {
    let m: MetaRecord = parse(keys::META.as_bytes(), value)?;
    Ok(Meta {
        applied: m.applied,
        order_seq: m.order_seq,
        audit_seq: m.audit_seq,
        dead_letter_seq: m.dead_letter_seq,
        settings: m.settings,
        ..Meta::default()
    })
}

fn parse<'a, T: Deserialize<'a>>(key: &[u8], value: &'a [u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(key))))
}

/// Rebuilds state from the `s:` records, in key order.
pub fn decode_state<'a>(records: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Result<State, StoreError> {
    let mut state = State::default();
    // Accounts and lots may be read before their household record; gather and attach after.
    let mut accounts: Vec<(HouseholdId, Account)> = Vec::new();
    let mut lots: Vec<(HouseholdId, AccountId, SecurityId, Vec<Lot>)> = Vec::new();
    let mut pending: Vec<(HouseholdId, AccountId, OrderId, PendingOrder)> = Vec::new();
    for (k, v) in records {
        let key = std::str::from_utf8(k).map_err(|_| StoreError::Corrupt("state key is not UTF-8".into()))?;
        if let Some(id) = key.strip_prefix(keys::SECURITY) {
            state.securities.insert(SecurityId::new(id), parse(k, v)?);
        } else if let Some(id) = key.strip_prefix(keys::MODEL) {
            state.models.insert(ModelId::new(id), parse::<Model>(k, v)?);
        } else if let Some(id) = key.strip_prefix(keys::PRICE) {
            state.prices.insert(SecurityId::new(id), parse::<PriceState>(k, v)?);
        } else if let Some(id) = key.strip_prefix(keys::ESG) {
            state.esg.insert(SecurityId::new(id), parse::<EsgScore>(k, v)?);
        } else if let Some(id) = key.strip_prefix(keys::HOUSEHOLD) {
            let hh: Household = parse(k, v)?;
            state.households.insert(HouseholdId::new(id), hh);
        } else if let Some(rest) = key.strip_prefix(keys::ACCOUNT) {
            let (h, _) = split2(rest, key)?;
            accounts.push((HouseholdId::new(h), parse(k, v)?));
        } else if let Some(rest) = key.strip_prefix(keys::LOTS) {
            let mut parts = rest.splitn(3, '/');
            let (Some(h), Some(a), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(StoreError::Corrupt(format!("bad lots key {key}")));
            };
            lots.push((HouseholdId::new(h), AccountId::new(a), SecurityId::new(s), parse(k, v)?));
        } else if let Some(rest) = key.strip_prefix(keys::PENDING) {
            let mut parts = rest.splitn(3, '/');
            let (Some(h), Some(a), Some(o)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(StoreError::Corrupt(format!("bad pending-order key {key}")));
            };
            pending.push((HouseholdId::new(h), AccountId::new(a), OrderId::new(o), parse(k, v)?));
        } else if key.starts_with(keys::SEEN_COMMIT) {
            for (id, at) in decode_seen(k, v)? {
                state.meta.seen.insert(id, at);
            }
        } else if let Some(id) = key.strip_prefix(keys::SEEN) {
            let at: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt(format!("bad seen record {key}")))?;
            state.meta.seen.insert(id.to_string(), u64::from_be_bytes(at));
        } else if let Some(stream) = key.strip_prefix(keys::CHAIN) {
            state.meta.chains.insert(stream.to_string(), parse::<ChainHead>(k, v)?);
        } else if key == keys::META {
            let m: MetaRecord = parse(k, v)?;
            state.meta = Meta {
                applied: m.applied,
                order_seq: m.order_seq,
                audit_seq: m.audit_seq,
                dead_letter_seq: m.dead_letter_seq,
                settings: m.settings,
                chains: std::mem::take(&mut state.meta.chains),
                seen: std::mem::take(&mut state.meta.seen),
            };
        } else {
            return Err(StoreError::Corrupt(format!("unknown state key {key}")));
        }
    }
    for (h, a) in accounts {
        let hh = state
            .households
            .get_mut(&h)
            .ok_or_else(|| StoreError::Corrupt(format!("account {} of missing household {h}", a.id)))?;
        hh.accounts.insert(a.id.clone(), a);
    }
    for (h, a, s, l) in lots {
        let account = state
            .households
            .get_mut(&h)
            .and_then(|hh| hh.accounts.get_mut(&a))
            .ok_or_else(|| StoreError::Corrupt(format!("lots of missing account {h}/{a}")))?;
        account.lots.insert(s, l);
    }
    for (h, a, o, p) in pending {
        let account = state
            .households
            .get_mut(&h)
            .and_then(|hh| hh.accounts.get_mut(&a))
            .ok_or_else(|| StoreError::Corrupt(format!("open order of missing account {h}/{a}")))?;
        account.pending.insert(o, p);
    }
    rebuild_indexes(&mut state);
    Ok(state)
}

fn split2<'a>(rest: &'a str, key: &str) -> Result<(&'a str, &'a str), StoreError> {
    rest.split_once('/').ok_or_else(|| StoreError::Corrupt(format!("bad key {key}")))
}

/// A journal record: where the input came from and its raw bytes.
pub fn encode_journal(source: &str, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + source.len() + bytes.len());
    v.extend_from_slice(&(source.len() as u16).to_be_bytes());
    v.extend_from_slice(source.as_bytes());
    v.extend_from_slice(bytes);
    v
}

pub fn decode_journal(v: &[u8]) -> Result<(&str, &[u8]), StoreError> {
    let bad = || StoreError::Corrupt("journal record is truncated".into());
    let len = u16::from_be_bytes(v.get(..2).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let source = std::str::from_utf8(v.get(2..2 + len).ok_or_else(bad)?).map_err(|_| bad())?;
    Ok((source, &v[2 + len..]))
}
