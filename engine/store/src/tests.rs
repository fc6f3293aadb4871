//! The store keeps exactly what the fold changed: reloading gives back the
//! live state, and sled and memory hold the same bytes.

use crate::chunk::Chunk;
use crate::{
    check_format, keys, last_seq, load_state, position, record_at, records_after, state_hash, state_records, Folder,
    Format, MemStore, SledStore, Store, StoreError, WriteBatch, PREVIOUS_FORMAT, STORE_FORMAT,
};
use chrono::{TimeZone, Utc};
use overlay_core::event::*;
use overlay_core::fold::Input;
use overlay_core::state::EngineSettings;
use rust_decimal::Decimal;

fn events() -> Vec<Envelope> {
    let t = Utc.with_ymd_and_hms(2025, 1, 2, 21, 0, 0).unwrap();
    let env = |i: u32, payload| Envelope {
        event_id: format!("e{i}"),
        producer: "t".into(),
        event_time: t,
        schema_version: 1,
        payload,
    };
    let sec = |s: &str| {
        Payload::SecurityUpserted(SecurityUpserted {
            security: s.into(),
            name: String::new(),
            sector: "Tech".into(),
            sub_industry: String::new(),
            identical_group: None,
            substitutes: vec![],
            attributes: Default::default(),
        })
    };
    let px =
        |s: &str, p: i64| Payload::PriceTick(PriceTick { security: s.into(), price: Decimal::new(p, 0), as_of: t });
    vec![
        env(1, sec("AAPL")),
        env(2, sec("MSFT")),
        env(3, px("AAPL", 100)),
        env(4, px("MSFT", 200)),
        env(
            5,
            Payload::ModelPublished(ModelPublished {
                model: "m".into(),
                version: 1,
                kind: ModelKind::Standard,
                weights: vec![
                    ModelWeight { security: "AAPL".into(), weight: Decimal::new(5, 1) },
                    ModelWeight { security: "MSFT".into(), weight: Decimal::new(49, 2) },
                ],
            }),
        ),
        env(
            6,
            Payload::HouseholdUpserted(HouseholdUpserted {
                household: "H".into(),
                tax: TaxProfile::default(),
                accounts: vec![AccountSpec {
                    account: "A".into(),
                    kind: AccountKind::Taxable,
                    sleeves: vec![Sleeve { model: "m".into(), percent: Decimal::ONE }],
                    settings: AccountSettings::default(),
                    opening_cash: Decimal::new(100_000, 0),
                    opening_lots: vec![OpeningLot {
                        security: "AAPL".into(),
                        quantity: Decimal::new(10, 0),
                        cost_per_share: Decimal::new(90, 0),
                        acquired: chrono::NaiveDate::from_ymd_opt(2020, 1, 2).unwrap(),
                    }],
                }],
                restrictions: vec![],
            }),
        ),
    ]
}

fn fold_all(folder: &mut Folder) {
    for (i, e) in events().iter().enumerate() {
        let raw = overlay_proto::encode_envelope(e);
        folder.fold(&format!("t/0/{i}"), Some(("t/0", i as u64 + 1)), &raw, Input::Event(e));
        if i == 2 {
            folder.commit().unwrap();
        }
    }
    folder.commit().unwrap();
}

#[test]
fn reloading_a_store_gives_back_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let live = {
        let mut folder =
            Folder::open(Box::new(SledStore::open(dir.path()).unwrap()), EngineSettings::default()).unwrap();
        fold_all(&mut folder);
        assert!(!folder.state().households[&"H".into()].accounts[&"A".into()].pending.is_empty());
        folder.state().clone()
    };
    let store = SledStore::open(dir.path()).unwrap();
    let reloaded = load_state(&store).unwrap();
    assert_eq!(reloaded, live);
    assert_eq!(
        reloaded.households[&"H".into()].accounts[&"A".into()].pending,
        live.households[&"H".into()].accounts[&"A".into()].pending
    );
    assert_eq!(position(&store, "t/0").unwrap(), Some(6));
    assert_eq!(records_after(&store, keys::JOURNAL, 0).count(), 6);
}

#[test]
fn sled_and_memory_stores_hold_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut on_disk = Folder::open(Box::new(SledStore::open(dir.path()).unwrap()), EngineSettings::default()).unwrap();
    let mut in_memory = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    fold_all(&mut on_disk);
    fold_all(&mut in_memory);
    assert_eq!(state_hash(on_disk.store()).unwrap(), state_hash(in_memory.store()).unwrap());
    for prefix in [keys::ORDERS, keys::AUDIT, keys::JOURNAL] {
        let a: Vec<_> = records_after(on_disk.store(), prefix, 0).map(Result::unwrap).collect();
        let b: Vec<_> = records_after(in_memory.store(), prefix, 0).map(Result::unwrap).collect();
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }
    assert_eq!(crate::last_seq(on_disk.store(), keys::ORDERS).unwrap(), on_disk.state().meta.order_seq);
}

#[test]
fn a_store_keeps_the_settings_it_was_created_with() {
    let dir = tempfile::tempdir().unwrap();
    let first = EngineSettings { fractional_dp: 2, ..EngineSettings::default() };
    {
        let mut folder = Folder::open(Box::new(SledStore::open(dir.path()).unwrap()), first.clone()).unwrap();
        fold_all(&mut folder);
    }
    let folder = Folder::open(Box::new(SledStore::open(dir.path()).unwrap()), EngineSettings::default()).unwrap();
    assert_eq!(folder.state().meta.settings, first);
}

/// Every record of `store`, copied.
fn records_of(store: &dyn Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan(b"", None).map(Result::unwrap).collect()
}

#[test]
fn each_commit_writes_one_chunk_per_stream_and_the_streams_read_back_by_seq() {
    // given six inputs folded in two commits (after the third, and at the end)
    let mut folder = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    fold_all(&mut folder);
    let store = folder.store();
    let meta = &folder.state().meta;
    // then the journal is two chunks, keyed by their last seqs, and the store says its format
    let journal_keys: Vec<u64> =
        store.scan(keys::JOURNAL, None).map(|r| keys::seq_of(&r.unwrap().0).unwrap()).collect();
    assert_eq!(journal_keys, [3, 6]);
    assert_eq!(store.get(keys::FORMAT).unwrap(), Some(STORE_FORMAT.to_be_bytes().to_vec()));
    assert_eq!(check_format(store).unwrap(), Format::Current);
    // and each output stream has at most one chunk per commit, ending at its last seq
    for (prefix, last) in [(keys::ORDERS, meta.order_seq), (keys::AUDIT, meta.audit_seq)] {
        assert!(last > 0);
        let chunks: Vec<_> = store.scan(prefix, None).map(Result::unwrap).collect();
        assert!((1..=2).contains(&chunks.len()), "{} chunks", chunks.len());
        assert_eq!(last_seq(store, prefix).unwrap(), last);
        // and reading from any point gives the records after it, in order, the same as one at a time
        let all: Vec<(u64, Vec<u8>)> = records_after(store, prefix, 0).map(Result::unwrap).collect();
        assert_eq!(all.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (1..=last).collect::<Vec<_>>());
        for after in 0..=last + 1 {
            let from: Vec<_> = records_after(store, prefix, after).map(Result::unwrap).collect();
            assert_eq!(from, all[(after.min(last) as usize)..], "after {after}");
        }
        for (seq, record) in &all {
            assert_eq!(record_at(store, prefix, *seq).unwrap().as_ref(), Some(record));
        }
        assert_eq!(record_at(store, prefix, 0).unwrap(), None);
        assert_eq!(record_at(store, prefix, last + 1).unwrap(), None);
    }
    assert_eq!(record_at(store, keys::DEAD_LETTERS, 1).unwrap(), None);
    assert_eq!(records_after(store, keys::DEAD_LETTERS, 0).count(), 0);
}

#[test]
fn a_missing_repeated_or_damaged_chunk_is_corrupt_where_the_stream_reads_it() {
    // given a store whose audit stream spans two chunks
    let mut folder = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    fold_all(&mut folder);
    let chunks: Vec<_> = folder.store().scan(keys::AUDIT, None).map(Result::unwrap).collect();
    assert_eq!(chunks.len(), 2);
    let first = Chunk::parse(keys::AUDIT, &chunks[0].0, &chunks[0].1).unwrap();
    let second = Chunk::parse(keys::AUDIT, &chunks[1].0, &chunks[1].1).unwrap();
    // when the first chunk is missing
    let gap = MemStore::new();
    let mut b = WriteBatch::default();
    b.put(chunks[1].0.clone(), chunks[1].1.clone());
    gap.commit(b).unwrap();
    // then reading from the start fails there, and reading from inside the second chunk does not
    let err = records_after(&gap, keys::AUDIT, 0).next().unwrap().unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "store is corrupt: audit records: the chunk of seqs {}..={} follows seq 0: seqs are missing",
            second.first, second.last
        )
    );
    assert_eq!(
        records_after(&gap, keys::AUDIT, second.first).map(Result::unwrap).count() as u64,
        second.last - second.first
    );
    // when a chunk repeats seqs of the one before it (the second chunk, moved to start inside the first)
    let overlap = MemStore::new();
    let mut b = WriteBatch::default();
    b.put(chunks[0].0.clone(), chunks[0].1.clone());
    let records: Vec<Vec<u8>> = second.records().map(|(_, r)| r.to_vec()).collect();
    let start = first.last;
    b.put(keys::seq_key(keys::AUDIT, start + records.len() as u64 - 1), crate::chunk::encode(start, &records));
    overlap.commit(b).unwrap();
    // then the stream stops at the first error
    let read: Vec<_> = records_after(&overlap, keys::AUDIT, 0).collect();
    assert!(read[..first.last as usize].iter().all(Result::is_ok));
    let err = read[first.last as usize].as_ref().unwrap_err().to_string();
    assert!(err.ends_with(&format!("follows seq {}: seqs are recorded twice", first.last)), "{err}");
    assert_eq!(read.len() as u64, first.last + 1);
    // and a damaged chunk (its last byte cut, or a byte added) is corrupt: a
    // read lends the records before the damage and stops at the record it
    // reaches; a single lookup refuses the chunk whole
    let held = first.last - first.first + 1;
    let mut added = chunks[0].1.clone();
    added.push(0);
    for (damaged, what) in [(chunks[0].1[..chunks[0].1.len() - 1].to_vec(), "is truncated"), (added, "bytes after")] {
        let store = MemStore::new();
        let mut b = WriteBatch::default();
        b.put(chunks[0].0.clone(), damaged);
        b.put(chunks[1].0.clone(), chunks[1].1.clone());
        store.commit(b).unwrap();
        let read: Vec<_> = records_after(&store, keys::AUDIT, 0).collect();
        assert_eq!(read.len() as u64, held, "{what}");
        assert!(read[..held as usize - 1].iter().all(Result::is_ok), "{what}");
        assert!(
            matches!(read.last(), Some(Err(StoreError::Corrupt(m))) if m.contains(what) && m.contains(&format!("seq {}", first.last))),
            "{what}: {:?}",
            read.last()
        );
        assert!(matches!(record_at(&store, keys::AUDIT, 1), Err(StoreError::Corrupt(_))), "{what}");
    }
}

/// `store`'s records as the first store format kept them: one key per
/// stream record, no format record.
fn as_format_1(store: &dyn Store) -> MemStore {
    let old = MemStore::new();
    let mut b = WriteBatch::default();
    for (k, v) in records_of(store) {
        let stream =
            [keys::JOURNAL, keys::ORDERS, keys::AUDIT, keys::DEAD_LETTERS].into_iter().find(|p| k.starts_with(p));
        match stream {
            Some(prefix) => {
                for (seq, record) in Chunk::parse(prefix, &k, &v).unwrap().records() {
                    b.put(keys::seq_key(prefix, seq), record.to_vec());
                }
            }
            None if k == keys::FORMAT => {}
            None => b.put(k, v),
        }
    }
    old.commit(b).unwrap();
    old
}

#[test]
fn a_store_of_another_format_is_refused_with_what_to_do() {
    // given a store folded by this engine, and the same records as the first format kept them
    let mut folder = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    fold_all(&mut folder);
    let old = as_format_1(folder.store());
    assert!(old.get(&keys::seq_key(keys::JOURNAL, 1)).unwrap().is_some());
    // then opening the old one is refused, saying what it is and what to do
    let err = Folder::open(Box::new(old), EngineSettings::default()).err().unwrap();
    assert!(matches!(err, StoreError::Format(_)));
    let text = err.to_string();
    assert!(text.starts_with("this store is in format 1, written by an earlier version of the engine"), "{text}");
    assert!(text.contains("Delete the store directory"), "{text}");
    // and so is a store whose format number is not this engine's
    let newer = MemStore::new();
    let mut b = WriteBatch::default();
    for (k, v) in records_of(folder.store()) {
        b.put(k, v);
    }
    b.put(keys::FORMAT.to_vec(), 4u64.to_be_bytes().to_vec());
    newer.commit(b).unwrap();
    let err = check_format(&newer).unwrap_err().to_string();
    assert!(err.starts_with("this store is in format 4 and this engine reads formats 2 and 3 only"), "{err}");
    // and a store with nothing folded yet (publish cursors alone) is new: its first commit records the format
    let fresh = MemStore::new();
    crate::set_cursor(&fresh, "orders", 4).unwrap();
    assert_eq!(check_format(&fresh).unwrap(), Format::New);
    let mut folder = Folder::open(Box::new(fresh), EngineSettings::default()).unwrap();
    assert_eq!(folder.store().get(keys::FORMAT).unwrap(), None);
    fold_all(&mut folder);
    assert_eq!(check_format(folder.store()).unwrap(), Format::Current);
}

#[test]
fn last_finds_the_greatest_key_under_a_prefix_only() {
    let mem = MemStore::new();
    let mut b = crate::WriteBatch::default();
    for (k, v) in [("a:1", "x"), ("a:2", "y"), ("b:1", "z")] {
        b.put(k.as_bytes().to_vec(), v.as_bytes().to_vec());
    }
    mem.commit(b).unwrap();
    assert_eq!(mem.last(b"a:").unwrap().map(|(k, _)| k), Some(b"a:2".to_vec()));
    assert_eq!(mem.last(b"c:").unwrap(), None);
}

/// A tax objective, a withdrawal schedule with its cash set aside, and a
/// transition (found complete at once: the setup buys already put the
/// account on its target) are state like the rest: stored through the same
/// records and read back equal.
#[test]
fn personalisation_state_survives_a_reload() {
    let t = Utc.with_ymd_and_hms(2025, 1, 2, 21, 0, 0).unwrap();
    let day = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    let env = |i: u32, payload| Envelope {
        event_id: format!("p{i}"),
        producer: "t".into(),
        event_time: t,
        schema_version: 1,
        payload,
    };
    let more = [
        env(
            1,
            Payload::TaxObjectiveSet(TaxObjectiveSet {
                household: "H".into(),
                objective: TaxObjective::TaxNeutral { tolerance_usd: Decimal::new(500, 0) },
            }),
        ),
        env(
            2,
            Payload::WithdrawalScheduled(WithdrawalScheduled {
                household: "H".into(),
                account: "A".into(),
                schedule_id: "s".into(),
                amount: Decimal::new(1000, 0),
                frequency: Frequency::Monthly,
                first_payment: day("2025-01-06"),
                lead_days: 5,
                until: None,
                yield_tilt: Some(Decimal::new(5, 2)),
            }),
        ),
        env(
            3,
            Payload::TransitionSet(TransitionSet {
                household: "H".into(),
                plan: TransitionPlan {
                    period: Frequency::Quarterly,
                    periods: 4,
                    budget_usd: Some(Decimal::new(2000, 0)),
                    yearly_budget_usd: None,
                    keep: vec![],
                    complete_below: Decimal::new(2, 2),
                },
            }),
        ),
        env(4, Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date: day("2025-01-02") })),
    ];
    let dir = tempfile::tempdir().unwrap();
    let live = {
        let mut folder =
            Folder::open(Box::new(SledStore::open(dir.path()).unwrap()), EngineSettings::default()).unwrap();
        fold_all(&mut folder);
        for (i, e) in more.iter().enumerate() {
            let raw = overlay_proto::encode_envelope(e);
            let applied = folder.fold(&format!("t/1/{i}"), Some(("t/1", i as u64 + 1)), &raw, Input::Event(e));
            assert!(applied.rejection.is_none(), "{:?}", applied.rejection);
        }
        folder.commit().unwrap();
        folder.state().clone()
    };
    let hh = &live.households[&"H".into()];
    assert!(hh.objective.is_some() && hh.income["s"].raised_for.is_some());
    assert_eq!(hh.transition.as_ref().unwrap().completed, Some(day("2025-01-02")));
    assert_eq!(hh.accounts[&"A".into()].income_reserved, Decimal::new(1000, 0));
    let reloaded = load_state(&SledStore::open(dir.path()).unwrap()).unwrap();
    assert_eq!(reloaded, live);
}

/// The logical state records of a folder's store, as the engine encodes
/// every record of its in-memory state one by one.
fn logical_records(folder: &Folder) -> Vec<(Vec<u8>, Vec<u8>)> {
    let state = folder.state();
    let mut v = crate::encode_records(state, &overlay_core::fold::every_record(state));
    v.sort();
    v.dedup_by(|x, y| x.0 == y.0);
    v
}

#[test]
fn the_idempotency_set_is_one_record_per_commit_and_one_logical_record_per_id() {
    let mut folder = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    folder.state_every(1);
    fold_all(&mut folder);
    // two commits writing state (fold_all commits after the third input and at the end), so two stored records
    let stored: Vec<_> = folder.store().scan(keys::SEEN_COMMIT.as_bytes(), None).map(Result::unwrap).collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].0, keys::seen_commit_key(3));
    assert_eq!(stored[1].0, keys::seen_commit_key(6));
    assert!(folder.store().scan(keys::SEEN.as_bytes(), None).next().is_none());
    // the ids are the events' (price ticks carry none)
    let ids: Vec<String> = stored
        .iter()
        .flat_map(|(k, v)| crate::codec::decode_seen(k, v).unwrap())
        .map(|(id, at)| format!("{id}@{at}"))
        .collect();
    assert_eq!(ids, ["e1@1", "e2@2", "e5@5", "e6@6"]);
    // read back as the state's logical records: one per id, in key order among the others
    let read: Vec<_> = state_records(folder.store()).map(Result::unwrap).collect();
    assert_eq!(read, logical_records(&folder));
    assert!(read.iter().any(|(k, _)| k == b"s:seen:e5"));
    assert_eq!(load_state(folder.store()).unwrap(), *folder.state());
}

#[test]
fn the_state_hash_does_not_depend_on_where_commits_fell() {
    let mut once = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    let mut each = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    for (i, e) in events().iter().enumerate() {
        let raw = overlay_proto::encode_envelope(e);
        once.fold(&format!("t/0/{i}"), Some(("t/0", i as u64 + 1)), &raw, Input::Event(e));
        each.fold(&format!("t/0/{i}"), Some(("t/0", i as u64 + 1)), &raw, Input::Event(e));
        each.commit().unwrap();
    }
    once.commit().unwrap();
    assert_ne!(records_of(once.store()), records_of(each.store()));
    assert_eq!(state_hash(once.store()).unwrap(), state_hash(each.store()).unwrap());
    let mut h = crate::StateHasher::default();
    for (k, v) in logical_records(&once) {
        h.record(&k, &v);
    }
    assert_eq!(state_hash(once.store()).unwrap(), h.finish());
}

#[test]
fn a_store_of_the_previous_format_is_read_and_marked_current_at_its_next_commit() {
    let mut folder = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    fold_all(&mut folder);
    let hash = state_hash(folder.store()).unwrap();
    // the same store as format 2 kept it: one idempotency record per id
    let old = MemStore::new();
    let mut b = WriteBatch::default();
    for (k, v) in records_of(folder.store()) {
        if k.starts_with(keys::SEEN_COMMIT.as_bytes()) {
            for (id, at) in crate::codec::decode_seen(&k, &v).unwrap() {
                b.put(keys::text_key(keys::SEEN, &[&id]), at.to_be_bytes().to_vec());
            }
        } else if k == keys::FORMAT {
            b.put(k, PREVIOUS_FORMAT.to_be_bytes().to_vec());
        } else {
            b.put(k, v);
        }
    }
    old.commit(b).unwrap();
    assert_eq!(check_format(&old).unwrap(), Format::Previous);
    assert_eq!(state_hash(&old).unwrap(), hash);
    let mut reopened = Folder::open(Box::new(old), EngineSettings::default()).unwrap();
    assert_eq!(reopened.state(), folder.state());
    // an input with an event id folded into both: the same logical state, and the old store is format 3 now
    let e = Envelope { event_id: "e7".into(), ..events().swap_remove(0) };
    let raw = overlay_proto::encode_envelope(&e);
    for f in [&mut folder, &mut reopened] {
        f.fold("t/0/6", Some(("t/0", 7)), &raw, Input::Event(&e));
        f.commit().unwrap();
    }
    assert_eq!(check_format(reopened.store()).unwrap(), Format::Current);
    assert!(reopened.store().get(b"s:seen:e1").unwrap().is_some());
    assert_eq!(state_hash(reopened.store()).unwrap(), state_hash(folder.store()).unwrap());
    assert_eq!(load_state(reopened.store()).unwrap(), *folder.state());
}

#[test]
fn state_records_are_written_every_few_commits_and_loading_folds_the_journal_after_them() {
    // Given the same inputs committed one by one, state written every 4 commits in one store and every commit in the other
    let mut every_4 = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    every_4.state_every(4);
    let mut every_1 = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    every_1.state_every(1);
    let events = events();
    let fold = |f: &mut Folder, i: usize, e: &Envelope| {
        let raw = overlay_proto::encode_envelope(e);
        f.fold(&format!("t/0/{i}"), Some(("t/0", i as u64 + 1)), &raw, Input::Event(e));
        f.commit().unwrap();
    };
    for (i, e) in events.iter().enumerate() {
        fold(&mut every_4, i, e);
        fold(&mut every_1, i, e);
    }
    // then the first store's state records are those of its fifth commit (its first and fifth wrote them)
    assert_eq!(crate::load_meta(every_4.store()).unwrap().applied, 5);
    assert_eq!(crate::load_meta(every_1.store()).unwrap().applied, 6);
    assert_eq!(records_after(every_4.store(), keys::JOURNAL, 0).count(), 6);
    // yet loading either gives the live state: the journal after the stored state is folded again
    assert_eq!(load_state(every_4.store()).unwrap(), *every_4.state());
    assert_eq!(load_state(every_1.store()).unwrap(), *every_4.state());
    assert_eq!(state_hash(every_4.store()).unwrap(), state_hash(every_1.store()).unwrap());
    // and a folder opened on it (after a crash, say) goes on as the first one would
    let copy = MemStore::new();
    let mut b = WriteBatch::default();
    for (k, v) in records_of(every_4.store()) {
        b.put(k, v);
    }
    copy.commit(b).unwrap();
    let mut reopened = Folder::open(Box::new(copy), EngineSettings::default()).unwrap();
    reopened.state_every(4);
    assert_eq!(reopened.state(), every_4.state());
    let next = Envelope { event_id: "e7".into(), ..events[5].clone() };
    fold(&mut reopened, 6, &next);
    fold(&mut every_1, 6, &next);
    for prefix in [keys::ORDERS, keys::AUDIT, keys::DEAD_LETTERS, keys::JOURNAL] {
        let a: Vec<_> = records_after(reopened.store(), prefix, 0).map(Result::unwrap).collect();
        let b: Vec<_> = records_after(every_1.store(), prefix, 0).map(Result::unwrap).collect();
        assert_eq!(a, b);
    }
    // its first commit writes the state records the folded journal changed: they are the whole state again
    assert_eq!(crate::load_meta(reopened.store()).unwrap().applied, 7);
    let stored = |f: &Folder| state_records(f.store()).map(Result::unwrap).collect::<Vec<_>>();
    assert_eq!(stored(&reopened), stored(&every_1));
    assert_eq!(state_hash(reopened.store()).unwrap(), state_hash(every_1.store()).unwrap());
}
