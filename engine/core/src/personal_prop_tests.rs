//! Property tests of personalisation over random worlds: tilts and
//! attribute filters never make a weight negative nor the target sum above
//! 1; a tax-neutral household's realized gains and losses stay within its
//! tolerance; a transition never spends more than its tax budget.

use crate::event::*;
use crate::fold::{step, Input};
use crate::ids::*;
use crate::output::OrderReason;
use crate::prop_tests::Gen;
use crate::rebalance::{target_weights, Context, Mode};
use crate::state::State;
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

const SECTORS: [&str; 4] = ["Tech", "Energy", "Health", "Utilities"];
const SUBS: [&str; 3] = ["Alpha", "Beta", "Gamma"];
const ATTRIBUTES: [&str; 3] = ["dividend_yield", "risk_rating", "profitable"];

fn event(state: &mut State, now: &mut DateTime<Utc>, n: &mut u64, payload: Payload) -> crate::fold::Applied {
    *n += 1;
    *now += Duration::minutes(1);
    let env =
        Envelope { event_id: format!("q{n}"), producer: "prop".into(), event_time: *now, schema_version: 1, payload };
    env.validate().expect("generated events are valid");
    let a = step(state, Input::Event(&env));
    assert!(a.rejection.is_none(), "{:?}", a.rejection);
    a
}

/// A random delta in [−1, 1], not 0, with up to 4 places.
fn delta(g: &mut Gen) -> Decimal {
    let x = Decimal::new(g.below(20_001) as i64 - 10_000, 4);
    if x.is_zero() {
        Decimal::new(1, 4)
    } else {
        x
    }
}

fn random_rule(g: &mut Gen) -> RestrictionRule {
    let attribute = ATTRIBUTES[g.below(3) as usize].to_string();
    match g.below(5) {
        0 => RestrictionRule::Tilt { sector: Some(SECTORS[g.below(4) as usize].into()), sub_industry: None, delta: delta(g) },
        1 => RestrictionRule::Tilt { sector: None, sub_industry: Some(SUBS[g.below(3) as usize].into()), delta: delta(g) },
        2 => RestrictionRule::AttributeTilt { attribute, delta: delta(g) },
        3 => RestrictionRule::AttributeFilter {
            attribute,
            min: Some(Decimal::new(g.below(60) as i64, 1)),
            max: None,
            max_weight: g.chance(50).then(|| Decimal::new(g.below(30) as i64, 2)),
        },
        _ => RestrictionRule::AttributeFilter {
            attribute,
            min: None,
            max: Some(Decimal::new(g.below(60) as i64, 1)),
            max_weight: g.chance(50).then(|| Decimal::new(g.below(30) as i64, 2)),
        },
    }
}

/// Random securities (sectors, sub-industries, attributes), a random model,
/// a household holding random lots with up to six random tilts and filters
/// in force (and sometimes a legacy holding): every target weight is at
/// least 0 and they sum to at most 1.
fn tilted_targets_stay_in_bounds(seed: u64) {
    let mut g = Gen(seed);
    let mut state = State::default();
    let mut now = Utc.with_ymd_and_hms(2024, 3, 1, 21, 0, 0).unwrap();
    let mut n = 0;
    let names = 3 + g.below(10) as usize;
    let mut secs = Vec::new();
    for i in 0..names {
        let id = format!("S{i:02}");
        let mut attributes = BTreeMap::new();
        for a in ATTRIBUTES {
            if g.chance(70) {
                attributes.insert(a.to_string(), Decimal::new(g.below(60) as i64, 1));
            }
        }
        let payload = Payload::SecurityUpserted(SecurityUpserted {
            security: id.as_str().into(),
            name: String::new(),
            sector: SECTORS[g.below(4) as usize].into(),
            sub_industry: SUBS[g.below(3) as usize].into(),
            identical_group: None,
            substitutes: vec![],
            attributes,
        });
        event(&mut state, &mut now, &mut n, payload);
        let as_of = now;
        let price = g.money(5, 400);
        event(&mut state, &mut now, &mut n, Payload::PriceTick(PriceTick { security: id.as_str().into(), price, as_of }));
        secs.push(id);
    }
    // Random weights summing to at most 1.
    let mut left = 10_000i64;
    let mut weights = Vec::new();
    for s in &secs {
        let w = g.below(left as u64 + 1) as i64 / 2;
        left -= w;
        weights.push(ModelWeight { security: s.as_str().into(), weight: Decimal::new(w, 4) });
    }
    let model = ModelPublished { model: "m".into(), version: 1, kind: ModelKind::Standard, weights };
    event(&mut state, &mut now, &mut n, Payload::ModelPublished(model));
    let mut lots = Vec::new();
    for s in &secs {
        if g.chance(40) {
            lots.push(OpeningLot {
                security: s.as_str().into(),
                quantity: Decimal::from(1 + g.below(200)),
                cost_per_share: g.money(1, 300),
                acquired: (now - Duration::days(400)).date_naive(),
            });
        }
    }
    let mut restrictions: Vec<RestrictionSpec> = (0..1 + g.below(6))
        .map(|i| RestrictionSpec { restriction_id: format!("p{i}").as_str().into(), rule: random_rule(&mut g), account: None, effective: now })
        .collect();
    if g.chance(30) {
        let security = secs[g.below(secs.len() as u64) as usize].as_str().into();
        restrictions.push(RestrictionSpec { restriction_id: "legacy".into(), rule: RestrictionRule::KeepLegacy { security }, account: None, effective: now });
    }
    let settings = AccountSettings { cash_reserve_pct: Decimal::new(g.below(5) as i64, 2), ..AccountSettings::default() };
    let hh = HouseholdUpserted {
        household: "H".into(),
        tax: TaxProfile::default(),
        accounts: vec![AccountSpec {
            account: "A".into(),
            kind: AccountKind::Taxable,
            sleeves: vec![Sleeve { model: "m".into(), percent: Decimal::ONE }],
            settings,
            opening_cash: g.money(0, 50_000),
            opening_lots: lots,
        }],
        restrictions,
    };
    event(&mut state, &mut now, &mut n, Payload::HouseholdUpserted(hh));
    let hh = &state.households[&HouseholdId::new("H")];
    let account = &hh.accounts[&AccountId::new("A")];
    let ctx = Context::new(now, now.date_naive(), OrderReason::Drift, Mode::Full);
    let targets = target_weights(&state, hh, account, &ctx);
    for (s, w) in &targets {
        assert!(*w >= Decimal::ZERO, "{s} has a negative target {w}: {:#?}", hh.restrictions);
    }
    let total: Decimal = targets.values().sum();
    assert!(total <= Decimal::ONE, "targets sum to {total}: {:#?}", hh.restrictions);
}

/// One tilt on a random weight map: no weight below 0, the sum never
/// grows and loses only rounding (under 1e-8 a name), and the group moves
/// by the delta, clamped to what the group (down) or the rest (up) holds.
fn one_tilt_moves_exactly_what_it_says(seed: u64) {
    let mut g = Gen(seed);
    let ids: Vec<SecurityId> = (0..1 + g.below(12)).map(|i| SecurityId::new(format!("S{i:02}"))).collect();
    let mut left = 10_000i64;
    let mut weights: BTreeMap<&SecurityId, Decimal> = BTreeMap::new();
    for s in &ids {
        let w = if g.chance(15) { 0 } else { g.below(left as u64 + 1) as i64 / 2 };
        left -= w;
        weights.insert(s, Decimal::new(w, 4));
    }
    let members: Vec<bool> = ids.iter().map(|_| g.chance(40)).collect();
    let in_group = |s: &SecurityId| members[ids.iter().position(|x| x == s).expect("one of ours")];
    let d = delta(&mut g);
    let before: Decimal = weights.values().sum();
    let group: Decimal = weights.iter().filter(|(s, _)| in_group(s)).map(|(_, w)| *w).sum();
    let out = crate::tilt::tilt_group(&mut weights, &in_group, d);
    let after: Decimal = weights.values().sum();
    let rounding = Decimal::new(ids.len() as i64, 8);
    assert!(weights.values().all(|w| *w >= Decimal::ZERO), "{weights:?}");
    // Weight leaving the group goes to cash only when nothing else is held.
    let to_cash = if d < Decimal::ZERO && before == group { (-d).min(group) } else { Decimal::ZERO };
    assert!(after <= before - to_cash && before - to_cash - after <= rounding, "sum {before} -> {after} ({d} on {group})");
    assert_eq!(out.group_before, group);
    let expected = if d < Decimal::ZERO {
        group - (-d).min(group)
    } else if group.is_zero() {
        group
    } else {
        group + d.min(before - group)
    };
    assert!((out.group_after - expected).abs() <= rounding, "group {group} tilted {d}: {} not {expected}", out.group_after);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn one_tilt_moves_its_delta_and_never_grows_the_target(seed in any::<u64>()) {
        one_tilt_moves_exactly_what_it_says(seed);
    }

    #[test]
    fn tilts_and_filters_never_make_a_weight_negative_nor_the_target_sum_above_one(seed in any::<u64>()) {
        tilted_targets_stay_in_bounds(seed);
    }
}
