//! Replay against live runs: a history is folded input by input through the
//! engine's own folder (as the runner does), with a custodian filling the
//! orders, and the live state captured along the way.

use crate::journal::{fold_to, AsOf, Fold, Journal, Point, Scope};
use crate::view::household_view;
use crate::{state_at, verify, verify_range, ReplayError, VerifyRange};
use chrono::{Duration, NaiveDate};
use overlay_core::event::{Envelope, Fill, FillStatus, Payload};
use overlay_core::fold::Input;
use overlay_core::ids::HouseholdId;
use overlay_core::output::Order;
use overlay_core::state::EngineSettings;
use overlay_core::State;
use overlay_scenario::data::MarketData;
use overlay_scenario::demo::{close_time_utc, demo, DemoSpec};
use overlay_store::chunk::{self, Chunk};
use overlay_store::keys::{self, seq_key};
use overlay_store::{Folder, MemStore, Store, WriteBatch};

/// The chunk of stream `prefix` that holds `seq`: its key, first seq and records.
fn chunk_of(store: &dyn Store, prefix: &'static [u8], seq: u64) -> (Vec<u8>, u64, Vec<Vec<u8>>) {
    let (k, v) = store.scan(prefix, Some(&seq_key(prefix, seq))).next().expect("a chunk holds the seq").unwrap();
    let c = Chunk::parse(prefix, &k, &v).unwrap();
    assert!(c.first <= seq);
    (k.clone(), c.first, c.records().map(|(_, r)| r.to_vec()).collect())
}

/// The writes that replace the chunk stored under `key` by `records`, seqs `first..`.
fn replace_chunk(batch: &mut WriteBatch, prefix: &'static [u8], key: Vec<u8>, first: u64, records: &[Vec<u8>]) {
    batch.delete(key);
    if !records.is_empty() {
        batch.put(seq_key(prefix, first + records.len() as u64 - 1), chunk::encode(first, records));
    }
}

/// The custodian of the tests: fills every order in full at its reference
/// price half an hour after the close, except every `reject_every`th (by
/// seq; 0: none), which it rejects.
pub(crate) fn fills(orders: &[Order], date: NaiveDate, reject_every: u64) -> Vec<Envelope> {
    let at = close_time_utc(date) + Duration::minutes(30);
    orders
        .iter()
        .map(|o| {
            let rejected = reject_every > 0 && o.seq % reject_every == 0;
            Envelope {
                event_id: format!("fill-{}", o.order_id),
                producer: "custodian".into(),
                event_time: at,
                schema_version: 1,
                payload: Payload::Fill(if rejected {
                    Fill {
                        status: FillStatus::Rejected,
                        quantity: rust_decimal::Decimal::ZERO,
                        ..Fill::of_order(o, o.ref_price, date)
                    }
                } else {
                    Fill::of_order(o, o.ref_price, date)
                }),
            }
        })
        .collect()
}

/// A live run of the demo scenario: the folder (its store holds the journal
/// and outputs) and the live state after every input (`states[n]` = after n inputs).
pub(crate) struct LiveRun {
    pub folder: Folder,
    pub states: Vec<State>,
}

pub(crate) fn live_run(households: usize, days: usize) -> LiveRun {
    let data = MarketData::embedded().expect("the shipped market data");
    let spec = DemoSpec { households, price_days: days, ..DemoSpec::default() };
    let scenario = demo(&spec, &data).expect("a demo scenario");
    let mut folder = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    let mut states = vec![folder.state().clone()];
    let mut feed = |folder: &mut Folder, env: &Envelope| -> Vec<Order> {
        let raw = overlay_proto::encode_envelope(env);
        let decoded = overlay_proto::decode_envelope(&raw).expect("demo events decode");
        let n = folder.state().meta.applied;
        let applied = folder.fold(&format!("test/0/{n}"), Some(("test/0", n + 1)), &raw, Input::Event(&decoded));
        states.push(folder.state().clone());
        if folder.uncommitted() >= 500 {
            folder.commit().unwrap();
        }
        applied.orders
    };
    for day in &scenario.days {
        let mut orders = Vec::new();
        for env in &day.events {
            orders.extend(feed(&mut folder, env));
        }
        // Fills can make orders too (a withdrawal paid, a harvest's buy-back): fill those the next day.
        for env in fills(&orders, day.date, 7) {
            feed(&mut folder, &env);
        }
    }
    // An undecodable input in the middle of nowhere: replay folds it too.
    let n = folder.state().meta.applied;
    folder.fold(
        &format!("test/0/{n}"),
        Some(("test/0", n + 1)),
        b"\xff\xff",
        Input::Undecodable(&overlay_proto::decode_envelope(b"\xff\xff").unwrap_err()),
    );
    states.push(folder.state().clone());
    // The input has run out: the state records are written, as the engine writes them when caught up.
    folder.commit_all().unwrap();
    LiveRun { folder, states }
}

fn as_of(store: &dyn Store, seq: u64) -> AsOf {
    let e = Journal::open(store).unwrap().entry(seq).unwrap();
    AsOf { seq, event_id: (*e.decoded).as_ref().ok().map(|x| x.event_id.clone()), event_time: e.time() }
}

#[test]
fn the_replayed_state_hash_is_the_hash_of_the_store_holding_that_state() {
    // given a live run, and its store (which holds the live state at the end)
    let run = live_run(4, 2);
    let n = run.states.len() - 1;
    assert_eq!(
        crate::verify::replayed_hash(&run.states[n]),
        overlay_store::state_hash(run.folder.store()).unwrap(),
        "the end"
    );
    // then at points along the run, the hash taken without a store is the one of the store of the records
    for k in [1, n / 3, n / 2, n - 1] {
        let state = &run.states[k];
        let store = crate::verify::state_store(state, &overlay_core::fold::every_record(state)).unwrap();
        assert_eq!(crate::verify::replayed_hash(state), overlay_store::state_hash(&store).unwrap(), "input {k}");
    }
}

#[test]
fn state_at_equals_the_live_state_captured_at_each_point() {
    // given a live run of 8 households over 3 days, the live state kept after every input
    let run = live_run(8, 3);
    let store = run.folder.store();
    let n = run.states.len() as u64 - 1;
    assert!(n > 300, "{n} inputs");
    let households: Vec<HouseholdId> = run.states[n as usize].households.keys().take(4).cloned().collect();
    // then at points spread over the run (the setup, decisions, fills, the end)
    for k in [n / 7, n / 3, n / 2, 2 * n / 3, n - 1, n] {
        let live = &run.states[k as usize];
        // a full replay to k is the live state, whole
        let journal = Journal::open(store).unwrap();
        let mut full = Fold::new(journal.settings.clone(), Scope::All);
        fold_to(&journal, &mut full, Some(Point::Seq(k)), &mut |_, _| {}, &mut |_, _, _| Ok(())).unwrap();
        assert!(full.state == *live, "full replay to {k} differs from the live state");
        for h in &households {
            let Some(live_hh) = live.households.get(h) else { continue };
            // and `state --at k` shows the household as the live state had it
            let replayed = state_at(store, h, Point::Seq(k), &mut |_, _| {}).unwrap();
            let at = replayed.at;
            let expected = household_view(live, h, as_of(store, k), at).unwrap();
            assert_eq!(replayed, expected, "household {h} at {k}");
            // (the household-scoped fold holds exactly the live household)
            let mut scoped = Fold::new(journal.settings.clone(), Scope::Household(h.clone()));
            fold_to(&journal, &mut scoped, Some(Point::Seq(k)), &mut |_, _| {}, &mut |_, _, _| Ok(())).unwrap();
            assert!(scoped.state.households[h] == *live_hh, "scoped household {h} at {k}");
            assert!(scoped.state.prices == live.prices && scoped.state.models == live.models);
        }
    }
    // and the views are not trivially empty
    let last = state_at(store, &households[0], Point::Seq(n), &mut |_, _| {}).unwrap();
    assert!(last.accounts.iter().any(|a| !a.lots.is_empty() && !a.targets.is_empty()), "{last:?}");
}

#[test]
fn state_at_a_time_is_the_state_before_the_first_later_input() {
    let run = live_run(6, 2);
    let store = run.folder.store();
    let journal = Journal::open(store).unwrap();
    let entries: Vec<_> = journal.entries(0).map(Result::unwrap).collect();
    // the last input of the setup day: its time, and the next input's seq
    let setup_close = entries
        .iter()
        .rposition(|e| e.time().is_some_and(|t| t.date_naive() == entries[0].time().unwrap().date_naive()))
        .unwrap();
    let t = entries[setup_close].time().unwrap();
    let k = entries.iter().position(|e| e.time().is_some_and(|x| x > t)).unwrap() as u64;
    let h = run.states.last().unwrap().households.keys().next().unwrap().clone();
    let by_time = state_at(store, &h, Point::Time(t), &mut |_, _| {}).unwrap();
    let by_seq = state_at(store, &h, Point::Seq(k), &mut |_, _| {}).unwrap();
    assert_eq!(by_time.as_of.seq, k);
    assert_eq!(by_time.accounts, by_seq.accounts);
}

#[test]
fn missing_points_are_clear_errors() {
    let run = live_run(3, 1);
    let store = run.folder.store();
    let n = run.states.len() as u64 - 1;
    let h = run.states.last().unwrap().households.keys().next().unwrap().clone();
    let beyond = state_at(store, &h, Point::Seq(n + 5), &mut |_, _| {}).unwrap_err();
    assert_eq!(beyond.to_string(), format!("--at {} is beyond the journal, which holds inputs 1..={n}", n + 5));
    let before = state_at(store, &h, Point::Seq(1), &mut |_, _| {}).unwrap_err();
    assert!(matches!(before, ReplayError::Range(_)), "{before}");
    assert!(before.to_string().contains(&format!("household {h} does not exist at input 1")), "{before}");
    let unknown = state_at(store, &HouseholdId::new("nobody"), Point::Seq(n), &mut |_, _| {}).unwrap_err();
    assert!(unknown.to_string().contains("household nobody does not exist"), "{unknown}");
    let early = Point::parse("2000-01-01", crate::DayEdge::End).unwrap();
    let err = state_at(store, &h, early, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("nothing is recorded at or before 2000-01-01T23:59:59"), "{err}");
}

#[test]
fn verify_checks_a_range_and_names_the_first_differing_record() {
    let run = live_run(6, 2);
    let store = run.folder.store();
    let n = run.states.len() as u64 - 1;
    // the whole journal, and a range in the middle, verify
    let all = verify(store, &mut |_, _| {}).unwrap();
    assert_eq!((all.inputs, all.checked_first, all.checked_last), (n, 1, n));
    assert!(all.state_hash.is_some() && all.orders > 0 && all.dead_letters == 1);
    let mid =
        verify_range(store, VerifyRange { from: Some(Point::Seq(n / 3)), to: Some(Point::Seq(n / 2)) }, &mut |_, _| {})
            .unwrap();
    assert_eq!((mid.inputs, mid.checked_first, mid.checked_last, mid.state_hash.clone()), (n / 2, n / 3, n / 2, None));
    assert!(mid.audit > 0 && mid.audit < all.audit);
    // a range beyond the journal, or backwards, is refused
    let err = verify_range(store, VerifyRange { from: None, to: Some(Point::Seq(n + 1)) }, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("is beyond the journal"), "{err}");
    let err = verify_range(store, VerifyRange { from: Some(Point::Seq(9)), to: Some(Point::Seq(3)) }, &mut |_, _| {})
        .unwrap_err();
    assert_eq!(err.to_string(), "--from 9 is after --to 3");
    let late = Point::parse("2031-01-01", crate::DayEdge::Start).unwrap();
    let err = verify_range(store, VerifyRange { from: Some(late), to: None }, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().starts_with("no recorded input from 2031-01-01T00:00:00Z to the end"), "{err}");

    // when one recorded audit record in the range has a changed byte
    let copy = MemStore::new();
    let mut batch = overlay_store::WriteBatch::default();
    for r in store.scan(b"", None) {
        let (k, v) = r.unwrap();
        batch.put(k, v);
    }
    copy.commit(batch).unwrap();
    let target = all.audit / 2;
    let (key, first, mut records) = chunk_of(&copy, keys::AUDIT, target);
    let v = &mut records[(target - first) as usize];
    let at = v.iter().position(|b| *b == b':').unwrap() + 1;
    v[at] = if v[at] == b'9' { b'8' } else { b'9' };
    let mut batch = overlay_store::WriteBatch::default();
    replace_chunk(&mut batch, keys::AUDIT, key, first, &records);
    copy.commit(batch).unwrap();
    // then verify names that record
    let err = verify(&copy, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, ReplayError::OutputMismatch { stream: "audit records", seq, .. } if seq == target), "{err}");
}

#[test]
fn checkpoints_hold_the_live_state_and_lookups_from_them_equal_full_folds() {
    // given a live run, and checkpoints every 97 inputs in a store of their own (bases and changes)
    let run = live_run(6, 2);
    let store = run.folder.store();
    let n = run.states.len() as u64 - 1;
    let journal = Journal::open(store).unwrap();
    let cache = MemStore::new();
    let every = 97;
    let built = crate::checkpoint::ensure(&journal, &cache, every, &mut |_, _| {}).unwrap();
    assert_eq!(built.len() as u64, n / every);
    // then each checkpoint, loaded back, is the live state at its seq, whole
    let h = run.states[n as usize].households.keys().nth(1).unwrap().clone();
    for c in &built {
        let live = &run.states[c.as_of.seq as usize];
        let fold = crate::checkpoint::resume(&cache, c, Scope::All).unwrap();
        assert!(fold.state == *live, "checkpoint {}", c.as_of.seq);
        // (and, for one household's scope, that household and the reference data alone)
        let scoped = crate::checkpoint::resume(&cache, c, Scope::Household(h.clone())).unwrap().state;
        assert!(scoped.households.keys().all(|x| *x == h));
        assert!(scoped.households.get(&h) == live.households.get(&h), "household {h} at checkpoint {}", c.as_of.seq);
        assert!(scoped.prices == live.prices && scoped.models == live.models && scoped.meta == live.meta);
    }
    // and a second look finds them valid and builds nothing
    assert_eq!(crate::checkpoint::ensure(&journal, &cache, every, &mut |_, _| {}).unwrap(), built);
    // and checkpoints built on a shorter journal (past a base: the 12th) are extended to the same ones
    assert!(built.len() > 13 && built[9].base == built[9].as_of.seq && built[11].base == built[9].as_of.seq);
    let keep = built[11].as_of.seq;
    let mut batch = overlay_store::WriteBatch::default();
    for r in cache.scan(b"", None) {
        let (k, _) = r.unwrap();
        if k.len() >= 10 && k[1] == b'/' && u64::from_be_bytes(k[2..10].try_into().unwrap()) > keep {
            batch.delete(k);
        }
    }
    cache.commit(batch).unwrap();
    assert_eq!(crate::checkpoint::ensure(&journal, &cache, every, &mut |_, _| {}).unwrap(), built);
    for c in &built[12..] {
        let fold = crate::checkpoint::resume(&cache, c, Scope::All).unwrap();
        assert!(fold.state == run.states[c.as_of.seq as usize], "extended checkpoint {}", c.as_of.seq);
    }
    // and state --at from the nearest checkpoint equals the fold from the start, by seq and by time
    for k in [1, every - 1, every, every + 1, n / 2, n - 1, n] {
        let from_start = state_at(store, &h, Point::Seq(k), &mut |_, _| {});
        let from_checkpoint = crate::state_at::state_at_from(
            crate::prefetch::Reader::Inline(store),
            Some((&cache, every)),
            &h,
            Point::Seq(k),
            &mut |_, _| {},
        );
        match (from_start, from_checkpoint) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "at {k}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "at {k}"),
            (a, b) => panic!("at {k}: {a:?} vs {b:?}"),
        }
    }
    let t = journal.entry(n / 2).unwrap().time().unwrap();
    let a = state_at(store, &h, Point::Time(t), &mut |_, _| {}).unwrap();
    let b = crate::state_at::state_at_from(
        crate::prefetch::Reader::Inline(store),
        Some((&cache, every)),
        &h,
        Point::Time(t),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(a, b);
    // and checkpoints built with another interval are thrown away and rebuilt
    let rebuilt = crate::checkpoint::ensure(&journal, &cache, 2 * every, &mut |_, _| {}).unwrap();
    assert_eq!(rebuilt.len() as u64, n / (2 * every));
    assert!(rebuilt.iter().all(|c| c.as_of.seq.is_multiple_of(2 * every)));
}

/// Every record of `store` copied into a fresh sled store (one that threads
/// can share) in a temporary directory named after `name`; the caller removes it.
fn sled_copy(store: &dyn Store, name: &str) -> (std::path::PathBuf, overlay_store::SledStore) {
    let dir = std::env::temp_dir().join(format!("overlay-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sled = overlay_store::SledStore::open(&dir).unwrap();
    let mut batch = overlay_store::WriteBatch::default();
    for r in store.scan(b"", None) {
        let (k, v) = r.unwrap();
        batch.put(k, v);
    }
    sled.commit(batch).unwrap();
    (dir, sled)
}

#[test]
fn threaded_verify_reports_what_the_inline_one_does_and_finds_the_same_tampering() {
    // given a live run copied into a sled store (one that threads can share)
    let run = live_run(4, 2);
    let store = run.folder.store();
    let n = run.states.len() as u64 - 1;
    let (dir, sled) = sled_copy(store, "threaded");
    // then the whole journal and a range verify alike, read inline or on threads
    let inline = verify(store, &mut |_, _| {}).unwrap();
    let threaded = crate::verify_range_threaded(&sled, VerifyRange::default(), &mut |_, _| {}).unwrap();
    assert_eq!(inline, threaded);
    assert_eq!((threaded.inputs, threaded.checked_first), (n, 1));
    let range = VerifyRange { from: Some(Point::Seq(n / 3)), to: Some(Point::Seq(n / 2)) };
    assert_eq!(
        verify_range(store, range, &mut |_, _| {}).unwrap(),
        crate::verify_range_threaded(&sled, range, &mut |_, _| {}).unwrap()
    );
    // and a deleted last order, a changed audit record late in the stream, are found where they are
    let (orders_key, orders_first, mut orders) = chunk_of(&sled, keys::ORDERS, inline.orders);
    assert_eq!(orders_key, seq_key(keys::ORDERS, inline.orders), "the last order ends the last chunk");
    let all_orders = orders.clone();
    orders.pop();
    let mut batch = overlay_store::WriteBatch::default();
    replace_chunk(&mut batch, keys::ORDERS, orders_key, orders_first, &orders);
    sled.commit(batch).unwrap();
    let err = crate::verify_range_threaded(&sled, VerifyRange::default(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, ReplayError::OutputMismatch { stream: "orders", seq, .. } if seq == inline.orders), "{err}");
    let target = inline.audit - 3;
    let (key, first, mut records) = chunk_of(&sled, keys::AUDIT, target);
    let v = &mut records[(target - first) as usize];
    let at = v.len() / 2;
    v[at] ^= 1;
    let mut batch = overlay_store::WriteBatch::default();
    let shortened = seq_key(keys::ORDERS, inline.orders - 1);
    replace_chunk(&mut batch, keys::ORDERS, shortened, orders_first, &all_orders);
    replace_chunk(&mut batch, keys::AUDIT, key, first, &records);
    sled.commit(batch).unwrap();
    let err = crate::verify_range_threaded(&sled, VerifyRange { from: None, to: Some(Point::Seq(n)) }, &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, ReplayError::OutputMismatch { stream: "audit records", seq, .. } if seq == target), "{err}");
    drop(sled);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_in_segments_from_checkpoints_reports_what_one_fold_does() {
    // given a live run copied into a sled store, and checkpoints every 97 inputs in a tree of their own
    let run = live_run(4, 2);
    let store = run.folder.store();
    let (dir, sled) = sled_copy(store, "segments");
    let cache = sled.tree(crate::checkpoint::TREE).unwrap();
    let one = verify(store, &mut |_, _| {}).unwrap();
    // (without checkpoints it is the ordinary verify)
    assert_eq!(crate::verify_checkpointed(&sled, &cache, &mut |_, _| {}).unwrap(), one);
    let journal = crate::journal::Journal::open(&sled).unwrap();
    let built = crate::checkpoint::ensure(&journal, &cache, 97, &mut |_, _| {}).unwrap();
    assert!(built.len() >= 4, "{} checkpoints", built.len());
    // (one segment per thread at first; one shorter than 4 times its checkpoint's load is not worth it: one fold)
    assert!(built.iter().all(|c| c.records > 0));
    assert_eq!(crate::segments::plan_segments(one.inputs, &built, 2, 0).len(), 2);
    assert_eq!(crate::segments::plan_segments(one.inputs, &built, 3, 0).len(), 3);
    let small: Vec<_> = built.iter().cloned().map(|c| crate::checkpoint::Checkpoint { records: 10, ..c }).collect();
    assert_eq!(crate::segments::plan_segments(one.inputs, &small, 2, one.inputs / 80).len(), 2);
    assert_eq!(crate::segments::plan_segments(one.inputs, &small, 2, one.inputs / 40 + 1).len(), 1);
    let unnoted: Vec<_> = built.iter().cloned().map(|c| crate::checkpoint::Checkpoint { records: 0, ..c }).collect();
    assert_eq!(crate::segments::plan_segments(one.inputs, &unnoted, 2, 0).len(), 1);
    // then verify in segments, on 2 or 3 threads, reports what one fold does, and its progress reaches the end
    for workers in [2, 3] {
        let mut last = 0;
        assert_eq!(crate::segments::verify_in_segments(&sled, &cache, workers, 0, &mut |d, _| last = d).unwrap(), one);
        assert_eq!(last, one.inputs);
    }

    // when checkpoints hold a state the fold never reached (the audit counter changed in each)
    let mut edited = 0;
    crate::checkpoint::edit_records(&cache, |k, v| {
        if k == keys::META.as_bytes() && v.len() > 1 {
            edited += 1;
            let text = String::from_utf8(std::mem::take(v)).unwrap().replacen("\"audit_seq\":", "\"audit_seq\":1", 1);
            *v = text.into_bytes();
        }
    });
    assert!(edited >= built.len(), "{edited} counters changed");
    // then no segment is trusted from them: verify starts over and still reports the same
    assert_eq!(crate::segments::verify_in_segments(&sled, &cache, 2, 0, &mut |_, _| {}).unwrap(), one);
    let mut batch = overlay_store::WriteBatch::default();
    for r in cache.scan(b"", None) {
        batch.delete(r.unwrap().0);
    }
    cache.commit(batch).unwrap();
    assert_eq!(crate::checkpoint::ensure(&journal, &cache, 97, &mut |_, _| {}).unwrap(), built);

    // and a record changed early, and one late, are each named, as one fold names them
    for target in [3, one.audit - 3] {
        let (key, first, mut records) = chunk_of(&sled, keys::AUDIT, target);
        let original = records.clone();
        let v = &mut records[(target - first) as usize];
        let at = v.len() / 2;
        v[at] ^= 1;
        let mut batch = overlay_store::WriteBatch::default();
        replace_chunk(&mut batch, keys::AUDIT, key.clone(), first, &records);
        sled.commit(batch).unwrap();
        let err = crate::segments::verify_in_segments(&sled, &cache, 2, 0, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(err, ReplayError::OutputMismatch { stream: "audit records", seq, .. } if seq == target),
            "record {target}: {err}"
        );
        let mut batch = overlay_store::WriteBatch::default();
        replace_chunk(&mut batch, keys::AUDIT, key, first, &original);
        sled.commit(batch).unwrap();
    }

    // and an input changed after the checkpoints were built (the one a
    // checkpoint was built after, early and late) is found as one fold finds it
    for c in [&built[0], &built[built.len() - 2]] {
        let target = c.as_of.seq;
        let (key, first, mut records) = chunk_of(&sled, keys::JOURNAL, target);
        let original = records.clone();
        let v = &mut records[(target - first) as usize];
        let last = v.len() - 1;
        v[last] ^= 1;
        let mut batch = overlay_store::WriteBatch::default();
        replace_chunk(&mut batch, keys::JOURNAL, key.clone(), first, &records);
        sled.commit(batch).unwrap();
        let one = verify(&sled, &mut |_, _| {}).unwrap_err().to_string();
        let segments = crate::segments::verify_in_segments(&sled, &cache, 2, 0, &mut |_, _| {}).unwrap_err();
        assert_eq!(segments.to_string(), one, "input {target}");
        let mut batch = overlay_store::WriteBatch::default();
        replace_chunk(&mut batch, keys::JOURNAL, key, first, &original);
        sled.commit(batch).unwrap();
    }
    drop((cache, sled));
    let _ = std::fs::remove_dir_all(&dir);
}
