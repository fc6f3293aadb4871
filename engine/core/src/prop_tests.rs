//! Property tests over random households and event sequences: whatever the
//! prices, restrictions and clock do, the engine's own trades keep the rules.

use crate::event::*;
use crate::fold::{apply_into, decide, seal, step, Applied, Input};
use crate::ids::*;
use crate::output::{AuditBody, Order, OrderReason};
use crate::rebalance::{target_weights, Context, Mode};
use crate::state::State;
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

const SECURITIES: [(&str, &str); 8] = [
    ("AAA", "Tech"),
    ("BBB", "Tech"),
    ("CCC", "Tech"),
    ("DDD", "Energy"),
    ("EEE", "Energy"),
    ("FFF", "Health"),
    ("GGG", "Health"),
    ("HHH", "Utilities"),
];

/// A small deterministic generator (the proptest seed drives everything).
pub(crate) struct Gen(pub(crate) u64);

impl Gen {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    /// A decimal in [lo, hi) with two places.
    pub(crate) fn money(&mut self, lo: i64, hi: i64) -> Decimal {
        Decimal::new(lo * 100 + self.below(((hi - lo) * 100) as u64) as i64, 2)
    }
}

struct Sim {
    state: State,
    now: DateTime<Utc>,
    n: u64,
    prices: BTreeMap<&'static str, Decimal>,
    /// Every applied result, in order.
    log: Vec<Applied>,
    /// The same history folded as a replay folds it: each input applied
    /// into the outputs of the one before ([`apply_into`]).
    reused: State,
    outputs: Applied,
    /// Orders not yet filled.
    open: Vec<Order>,
}

impl Sim {
    fn event(&mut self, payload: Payload) -> Applied {
        self.n += 1;
        self.now += Duration::minutes(1);
        let env = Envelope {
            event_id: format!("p{}", self.n),
            producer: "prop".into(),
            event_time: self.now,
            schema_version: 1,
            payload,
        };
        env.validate().expect("generated events are valid");
        let a = step(&mut self.state, Input::Event(&env));
        let d = decide(&self.reused, Input::Event(&env));
        apply_into(&mut self.reused, d, &mut self.outputs);
        seal(&mut self.reused, &mut self.outputs);
        assert_eq!(self.outputs, a, "input {} applied into the outputs of the one before", self.n);
        self.open.extend(a.orders.iter().cloned());
        self.log.push(a.clone());
        a
    }

    /// Fills every open order at its reference price: sells first, so their
    /// proceeds are there for the buys.
    fn fill_all(&mut self) {
        let mut open = std::mem::take(&mut self.open);
        open.sort_by_key(|o| (o.side == Side::Buy, o.seq));
        for o in open {
            let trade_date = self.now.date_naive();
            self.event(Payload::Fill(Fill::of_order(&o, o.ref_price, trade_date)));
        }
    }
}

/// Builds a random world and history from `seed`, checking the invariants
/// after every step; returns the audit and order bytes.
fn run(seed: u64) -> Vec<u8> {
    let mut g = Gen(seed);
    let mut sim = Sim {
        state: State::default(),
        now: Utc.with_ymd_and_hms(2024, 3, 1, 21, 0, 0).unwrap(),
        n: 0,
        prices: BTreeMap::new(),
        log: vec![],
        open: vec![],
        reused: State::default(),
        outputs: Applied::default(),
    };
    for (i, (s, sector)) in SECURITIES.iter().enumerate() {
        // Two pairs are each other's substitutes; one pair is substantially identical.
        let sub = SECURITIES[(i + 1) % SECURITIES.len()].0;
        sim.event(Payload::SecurityUpserted(SecurityUpserted {
            security: (*s).into(),
            name: String::new(),
            sector: (*sector).into(),
            sub_industry: String::new(),
            identical_group: (i >= 6).then(|| "twins".to_string()),
            substitutes: vec![sub.into()],
            attributes: Default::default(),
        }));
        let p = g.money(20, 300);
        sim.prices.insert(s, p);
        let as_of = sim.now;
        sim.event(Payload::PriceTick(PriceTick { security: (*s).into(), price: p, as_of }));
    }
    let mut model_version = 1;
    let publish = |sim: &mut Sim, g: &mut Gen, version: u64| {
        let names: Vec<&str> = SECURITIES.iter().map(|s| s.0).filter(|_| g.chance(75)).collect();
        let names = if names.is_empty() { vec!["AAA"] } else { names };
        let each = (Decimal::new(98, 2) / Decimal::from(names.len()))
            .round_dp_with_strategy(4, rust_decimal::RoundingStrategy::ToZero);
        sim.event(Payload::ModelPublished(ModelPublished {
            model: "m".into(),
            version,
            kind: ModelKind::Standard,
            weights: names.iter().map(|s| ModelWeight { security: (*s).into(), weight: each }).collect(),
        }));
    };
    publish(&mut sim, &mut g, model_version);

    let households = 1 + g.below(3);
    for h in 0..households {
        let accounts = 1 + g.below(2);
        let mut specs = Vec::new();
        for a in 0..accounts {
            let kind = if a == 0 { AccountKind::Taxable } else { AccountKind::Ira };
            let mut lots = Vec::new();
            for (s, _) in SECURITIES.iter() {
                if !g.chance(40) {
                    continue;
                }
                for _ in 0..1 + g.below(3) {
                    let price = sim.prices[s];
                    // Costs from 50% below to 60% above today's price; some long-term, some short.
                    let cost = (price * Decimal::new(50 + g.below(110) as i64, 2)).round_dp(2);
                    let days = 20 + g.below(700) as i64;
                    lots.push(OpeningLot {
                        security: (*s).into(),
                        quantity: Decimal::from(1 + g.below(60)),
                        cost_per_share: cost,
                        acquired: (sim.now - Duration::days(days)).date_naive(),
                    });
                }
            }
            specs.push(AccountSpec {
                account: format!("H{h}-A{a}").as_str().into(),
                kind,
                sleeves: vec![Sleeve { model: "m".into(), percent: Decimal::ONE }],
                settings: AccountSettings { fractional: g.chance(50), ..AccountSettings::default() },
                opening_cash: g.money(0, 30_000),
                opening_lots: lots,
            });
        }
        let mut restrictions = Vec::new();
        for r in 0..g.below(3) {
            let sec: SecurityId = SECURITIES[g.below(8) as usize].0.into();
            let rule = match g.below(3) {
                0 => RestrictionRule::DoNotBuy { security: sec },
                1 => RestrictionRule::DoNotHold { security: sec },
                _ => RestrictionRule::SectorExclusion { sector: SECURITIES[g.below(8) as usize].1.into() },
            };
            restrictions.push(RestrictionSpec {
                restriction_id: format!("r{r}").as_str().into(),
                rule,
                account: None,
                effective: sim.now,
            });
        }
        let tax =
            TaxProfile { annual_gain_budget_usd: g.chance(50).then(|| g.money(0, 3_000)), ..TaxProfile::default() };
        sim.event(Payload::HouseholdUpserted(HouseholdUpserted {
            household: format!("H{h}").as_str().into(),
            tax,
            accounts: specs,
            restrictions,
        }));
        check(&sim);
    }
    sim.fill_all();

    for _ in 0..40 {
        match g.below(10) {
            0..=4 => {
                // A day passes: every price moves up to ±12%, then the close.
                sim.now += Duration::days(1 + g.below(4) as i64);
                for (s, _) in SECURITIES.iter() {
                    let p = sim.prices[s];
                    let next = (p * Decimal::new(88 + g.below(25) as i64, 2)).round_dp(2).max(Decimal::ONE);
                    sim.prices.insert(s, next);
                    let as_of = sim.now;
                    sim.event(Payload::PriceTick(PriceTick { security: (*s).into(), price: next, as_of }));
                }
                let trade_date = sim.now.date_naive();
                sim.event(Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date }));
            }
            5 => {
                model_version += 1;
                publish(&mut sim, &mut g, model_version);
            }
            6 => {
                let h = g.below(households);
                let hh: HouseholdId = format!("H{h}").as_str().into();
                let account = format!("H{h}-A0").as_str().into();
                let amount = g.money(100, 20_000);
                sim.event(Payload::CashFlow(CashFlow { household: hh, account, kind: CashFlowKind::Deposit, amount }));
            }
            _ => {}
        }
        check(&sim);
        sim.fill_all();
        check(&sim);
    }
    no_wash_sale_from_discretionary_trades(&sim);
    within_budget_unless_forced(&sim);
    assert!(sim.reused == sim.state, "the history applied input into input ends in the same state");
    let mut bytes = Vec::new();
    for a in &sim.log {
        for o in &a.orders {
            bytes.extend(serde_json::to_vec(o).unwrap());
        }
        for j in &a.audit_json {
            bytes.extend(j);
        }
    }
    bytes
}

/// After every step: no buy of a restricted or excluded security, no
/// negative cash, targets within 1.
fn check(sim: &Sim) {
    let last = sim.log.last().expect("a step was taken");
    for o in last.orders.iter().filter(|o| o.side == Side::Buy) {
        let hh = &sim.state.households[&o.household];
        for (id, r) in hh.restrictions_in_force(&o.account, sim.now) {
            let hit = match &r.rule {
                RestrictionRule::DoNotBuy { security } | RestrictionRule::DoNotHold { security } => {
                    security == &o.security
                }
                RestrictionRule::SectorExclusion { sector } => &sim.state.securities[&o.security].sector == sector,
                _ => false,
            };
            assert!(!hit, "bought {} against restriction {id}", o.security);
        }
    }
    let ctx = Context::new(sim.now, sim.now.date_naive(), OrderReason::Drift, Mode::Full);
    for hh in sim.state.households.values() {
        for a in hh.accounts.values() {
            assert!(a.cash >= Decimal::ZERO, "{} cash {} is negative", a.id, a.cash);
            let total: Decimal = target_weights(&sim.state, hh, a, &ctx).values().sum();
            assert!(total <= Decimal::ONE, "{} targets sum to {total}", a.id);
        }
    }
}

/// Every fill in these histories answers an engine order, so a wash sale
/// could only come from the engine. Forced sales (do-not-hold, sector
/// exclusions) sell every share household-wide, so they leave no replacement.
fn no_wash_sale_from_discretionary_trades(sim: &Sim) {
    for a in &sim.log {
        for r in &a.audit {
            assert!(!matches!(r.body, AuditBody::WashSale { .. }), "the engine's trades made a wash sale: {r:?}");
        }
    }
}

/// A household whose sales were all discretionary stays within its budget.
fn within_budget_unless_forced(sim: &Sim) {
    let forced: std::collections::BTreeSet<&HouseholdId> = sim
        .log
        .iter()
        .flat_map(|a| a.orders.iter())
        .filter(|o| o.side == Side::Sell && matches!(o.reason, OrderReason::Restriction | OrderReason::Esg))
        .map(|o| &o.household)
        .collect();
    for hh in sim.state.households.values().filter(|h| !forced.contains(&h.id)) {
        let Some(budget) = hh.tax.annual_gain_budget_usd else { continue };
        for (year, r) in &hh.realized {
            assert!(r.net_usd() <= budget, "{} realized {} in {year}, budget {budget}", hh.id, r.net_usd());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_rule_and_replay_to_the_same_bytes(seed in any::<u64>()) {
        let first = run(seed);
        let second = run(seed);
        prop_assert!(first == second, "the same inputs gave different bytes");
    }
}

/// The sum under the tracking-error estimate's square root as first
/// written: every term recomputed per account. The shared-terms version must
/// give the same Decimal, digit for digit and scale for scale (the estimate is
/// printed in decisions that replays compare byte for byte).
fn sum_of_squares_reference(index: &BTreeMap<SecurityId, Decimal>, subset: &BTreeMap<&SecurityId, Decimal>) -> Decimal {
    let total: Decimal = index.values().sum();
    let sub_total: Decimal = subset.values().sum();
    let mut sum_sq = Decimal::ZERO;
    for (sec, w) in index {
        let held = subset.get(sec).copied().unwrap_or_default();
        let held = if sub_total > Decimal::ZERO { held / sub_total } else { Decimal::ZERO };
        let diff = held - *w / total;
        sum_sq += diff * diff;
    }
    sum_sq
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_tracking_error_from_shared_terms_equals_the_per_account_sum(seed in any::<u64>()) {
        let mut g = Gen(seed);
        let names = 1 + g.below(60) as usize;
        let index: BTreeMap<SecurityId, Decimal> = (0..names)
            .map(|i| (SecurityId::new(format!("S{i:03}")), Decimal::new(g.below(1_000_000) as i64, 1 + g.below(8) as u32)))
            .collect();
        let mut subset: BTreeMap<&SecurityId, Decimal> = BTreeMap::new();
        for (s, w) in &index {
            if g.chance(40) {
                let held = if g.chance(20) { Decimal::ZERO } else { *w * Decimal::new(1 + g.below(3000) as i64, 3) };
                subset.insert(s, held);
            }
        }
        prop_assume!(index.values().sum::<Decimal>() > Decimal::ZERO);
        let terms = crate::rebalance::IndexTerms::of(&index);
        let (fast, reference) = (terms.sum_of_squares(&index, &subset), sum_of_squares_reference(&index, &subset));
        prop_assert_eq!(fast.serialize(), reference.serialize(), "{} vs {}", fast, reference);
    }
}
