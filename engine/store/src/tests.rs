//! The store keeps exactly what the fold changed: reloading gives back the
//! live state, and sled and memory hold the same bytes.

use crate::{keys, load_state, position, records_after, state_hash, Folder, MemStore, SledStore, Store};
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
        let raw = serde_json::to_vec(e).unwrap();
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
            let raw = serde_json::to_vec(e).unwrap();
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
