//! Personalisation scenarios of the backtest, run beside the twelve index
//! households on the same closes:
//!
//! - **tilted**: the $1M fractional taxable household of the set, with
//!   Information Technology tilted 5 points below the index; its tracking
//!   error against the (untilted) index is in the main table, next to its
//!   untilted twin `1M-frac-taxable`;
//! - **retiree**: $1M taxable, fractional, invested on day 0, paid a monthly
//!   income of 0.4% of its opening value, raised 5 days ahead. For each
//!   raise, the tax of the engine's sales is set against the tax of a naive
//!   pro-rata sale of the same amount (every position in proportion to its
//!   value, oldest lots first), both at that day's prices on the same state;
//! - **transition**: $1M taxable arriving in five of the largest index names
//!   bought years ago (four at a gain, one at a loss), the largest kept by
//!   the client, moving to the index over quarterly periods within a gain
//!   budget; each period's drift, tax and budget used are reported.
//!
//! The lots the transition household arrives with are stated here (their
//! basis a fixed fraction of day 0's close, bought on a fixed date): the
//! data has no holdings history, and the point is a portfolio full of old
//! gains.

use super::HouseholdPlan;
use chrono::NaiveDate;
use overlay_core::event::{
    AccountKind, Frequency, OpeningLot, Payload, RestrictionRule, RestrictionSpec, TaxProfile, TransitionPlan,
    TransitionSet, WithdrawalScheduled,
};
use overlay_core::ids::{AccountId, HouseholdId, SecurityId};
use overlay_core::output::{AuditBody, AuditRecord, IncomeSource};
use overlay_core::state::{add_months, Household, Lot, State};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::io::Write;

pub const TILTED: &str = "1M-frac-taxable-tilt-it";
pub const TILT_TWIN: &str = "1M-frac-taxable";
pub const TILT_SECTOR: &str = "Information Technology";
/// −5 percentage points.
pub const TILT_DELTA: Decimal = Decimal::from_parts(5, 0, 0, true, 2);
pub const RETIREE: &str = "1M-retiree";
/// Monthly income as a fraction of the opening value: 0.4% (4.8% a year).
pub const INCOME_PCT: Decimal = Decimal::from_parts(4, 0, 0, false, 3);
pub const INCOME_LEAD_DAYS: u32 = 5;
pub const TRANSITION: &str = "1M-transition";
/// The transition household's names: the largest of the index.
pub const TRANSITION_NAMES: usize = 5;
/// Their weights in the account, largest name first.
const TRANSITION_MIX_PCT: [i64; TRANSITION_NAMES] = [35, 25, 15, 15, 10];
/// Basis as a fraction of day 0's close: four old gains, the fourth name at a loss.
const TRANSITION_BASIS_PCT: [i64; TRANSITION_NAMES] = [30, 40, 50, 130, 60];
/// When the transition household's lots were bought.
pub const TRANSITION_ACQUIRED: &str = "2009-03-16";
pub const TRANSITION_PERIODS: u32 = 4;
/// The transition's gain budget: 3% of the account over the transition, 2% a year.
pub const TRANSITION_BUDGET_PCT: i64 = 3;
pub const TRANSITION_YEARLY_PCT: i64 = 2;
const SIZE: i64 = 1_000_000;

/// The scenario households, given day 0's index weights and closes.
pub fn households(
    start: NaiveDate,
    index: &[(SecurityId, Decimal)],
    close: &dyn Fn(&SecurityId) -> Decimal,
) -> Vec<HouseholdPlan> {
    let size = Decimal::from(SIZE);
    let taxable = |id: &HouseholdId| vec![(AccountId::new(format!("{id}:taxable")), AccountKind::Taxable, size)];
    let rates = TaxProfile {
        short_term_rate: Decimal::new(350, 3),
        long_term_rate: Decimal::new(150, 3),
        ..TaxProfile::default()
    };
    let mut out = Vec::new();

    let id = HouseholdId::new(TILTED);
    out.push(HouseholdPlan {
        accounts: taxable(&id),
        size_label: "personal",
        size_usd: size,
        fractional: true,
        budget_usd: size / Decimal::ONE_HUNDRED,
        tax: TaxProfile { annual_gain_budget_usd: Some(size / Decimal::ONE_HUNDRED), ..rates.clone() },
        restrictions: vec![RestrictionSpec {
            restriction_id: "tilt-it".into(),
            rule: RestrictionRule::Tilt { sector: Some(TILT_SECTOR.into()), sub_industry: None, delta: TILT_DELTA },
            account: None,
            effective: super::close_time_utc(start),
        }],
        opening_lots: Vec::new(),
        then: Vec::new(),
        id,
    });

    let id = HouseholdId::new(RETIREE);
    let account = AccountId::new(format!("{id}:taxable"));
    out.push(HouseholdPlan {
        accounts: taxable(&id),
        size_label: "personal",
        size_usd: size,
        fractional: true,
        budget_usd: Decimal::ZERO,
        tax: rates.clone(),
        restrictions: Vec::new(),
        opening_lots: Vec::new(),
        then: vec![Payload::WithdrawalScheduled(WithdrawalScheduled {
            household: id.clone(),
            account,
            schedule_id: "monthly-income".into(),
            amount: size * INCOME_PCT,
            frequency: Frequency::Monthly,
            first_payment: add_months(start, 1),
            lead_days: INCOME_LEAD_DAYS,
            until: None,
            yield_tilt: None,
        })],
        id,
    });

    let id = HouseholdId::new(TRANSITION);
    let mut largest: Vec<&(SecurityId, Decimal)> = index.iter().collect();
    largest.sort_by(|a, b| (std::cmp::Reverse(a.1), &a.0).cmp(&(std::cmp::Reverse(b.1), &b.0)));
    let names: Vec<SecurityId> = largest.iter().take(TRANSITION_NAMES).map(|(s, _)| s.clone()).collect();
    let acquired: NaiveDate = TRANSITION_ACQUIRED.parse().expect("a date");
    let lots: Vec<OpeningLot> = names
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let price = close(s);
            OpeningLot {
                security: s.clone(),
                quantity: (size * Decimal::new(TRANSITION_MIX_PCT[i], 2) / price).floor(),
                cost_per_share: (price * Decimal::new(TRANSITION_BASIS_PCT[i], 2)).round_dp(2),
                acquired,
            }
        })
        .collect();
    out.push(HouseholdPlan {
        accounts: vec![(AccountId::new(format!("{id}:taxable")), AccountKind::Taxable, Decimal::ZERO)],
        size_label: "personal",
        size_usd: size,
        fractional: true,
        budget_usd: Decimal::ZERO,
        tax: rates,
        restrictions: Vec::new(),
        opening_lots: lots,
        then: vec![Payload::TransitionSet(TransitionSet {
            household: id.clone(),
            plan: TransitionPlan {
                period: Frequency::Quarterly,
                periods: TRANSITION_PERIODS,
                budget_usd: Some(size * Decimal::new(TRANSITION_BUDGET_PCT, 2)),
                yearly_budget_usd: Some(size * Decimal::new(TRANSITION_YEARLY_PCT, 2)),
                keep: names.iter().take(1).cloned().collect(),
                complete_below: Decimal::new(2, 2),
            },
        })],
        id,
    });
    out
}

/// Tax at the household's rates on (short, long) gains.
fn tax_of(hh: &Household, short: Decimal, long: Decimal) -> Decimal {
    short * hh.tax.short_term_rate + long * hh.tax.long_term_rate
}

/// The tax a naive pro-rata sale of `amount` would cost on `state` at its
/// confirmed prices: every position sold in proportion to its value, the
/// oldest lots first (fractional shares, as the account trades).
pub fn naive_tax(state: &State, h: &HouseholdId, a: &AccountId, amount: Decimal, on: NaiveDate) -> Decimal {
    let hh = &state.households[h];
    let account = &hh.accounts[a];
    let price = |s: &SecurityId| state.prices.get(s).map(|p| p.price);
    let holdings: Decimal = account
        .lots
        .iter()
        .filter_map(|(s, lots)| price(s).map(|p| p * lots.iter().map(|l| l.quantity).sum::<Decimal>()))
        .sum();
    if holdings <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    let (mut short, mut long) = (Decimal::ZERO, Decimal::ZERO);
    for (s, lots) in &account.lots {
        let Some(p) = price(s) else { continue };
        let value: Decimal = lots.iter().map(|l| l.quantity).sum::<Decimal>() * p;
        let mut left = (amount * value / holdings / p).round_dp(4);
        let mut fifo: Vec<&Lot> = lots.iter().collect();
        fifo.sort_by_key(|l| (l.acquired, l.lot_id));
        for l in fifo {
            if left <= Decimal::ZERO {
                break;
            }
            let q = l.quantity.min(left);
            left -= q;
            let gain = (p - l.cost_per_share) * q;
            if l.is_long_term(on) {
                long += gain;
            } else {
                short += gain;
            }
        }
    }
    tax_of(hh, short, long).round_dp(2)
}

/// One income raise: the engine's sales against the naive sale.
#[derive(Clone, Debug, PartialEq)]
pub struct IncomeRow {
    pub date: NaiveDate,
    pub payment_date: NaiveDate,
    pub raised_usd: Decimal,
    pub engine_tax_usd: Decimal,
    pub naive_tax_usd: Decimal,
    pub short_term_lots: usize,
}

/// One transition period, from the engine's record.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodRow {
    pub date: NaiveDate,
    pub period: u32,
    pub drift: Decimal,
    pub allowance_usd: Decimal,
    pub planned_gain_usd: Decimal,
    pub used_before_usd: Decimal,
}

/// What the scenarios found.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    pub income: Vec<IncomeRow>,
    pub periods: Vec<PeriodRow>,
    /// Income paid on its date, and the part left due for want of cash.
    pub paid_usd: Decimal,
    pub paid_short_usd: Decimal,
    /// Income fallen due, by account (what left the account, less what is still due).
    pub due_usd: BTreeMap<AccountId, Decimal>,
    /// The transition household at the end: drift and budget used.
    pub transition_end_drift: Option<Decimal>,
    pub transition_used_usd: Decimal,
    pub transition_budget_usd: Decimal,
    pub transition_yearly_usd: Decimal,
    pub transition_used_by_year: BTreeMap<i32, Decimal>,
    pub transition_kept: Vec<SecurityId>,
    /// (tilted, twin) tracking error, and the tilted account's sector weight vs the index's, at the end.
    pub tilt_te_pct: Option<(Option<f64>, Option<f64>)>,
    pub tilt_sector_weights: Option<(f64, f64)>,
}

impl Findings {
    /// Takes in a decision's audit records (the naive alternative is priced
    /// on the state as the decision left it: its sales are not filled yet).
    pub fn observe(&mut self, state: &State, on: NaiveDate, audit: &[AuditRecord]) {
        for r in audit {
            let Some(h) = &r.household else { continue };
            match &r.body {
                AuditBody::IncomeRaised { account, payments, sources, est_tax_usd, .. } => {
                    let raised: Decimal = sources.iter().map(|s: &IncomeSource| s.quantity * s.ref_price).sum();
                    self.income.push(IncomeRow {
                        date: on,
                        payment_date: payments.first().map_or(on, |p| p.payment_date),
                        raised_usd: raised,
                        engine_tax_usd: *est_tax_usd,
                        naive_tax_usd: naive_tax(state, h, account, raised, on),
                        short_term_lots: sources.iter().flat_map(|s| &s.lots).filter(|l| !l.long_term).count(),
                    });
                }
                AuditBody::IncomePaid { account, amount_usd, paid_usd, .. } => {
                    *self.due_usd.entry(account.clone()).or_default() += *amount_usd;
                    self.paid_usd += *paid_usd;
                    self.paid_short_usd += *amount_usd - *paid_usd;
                }
                AuditBody::TransitionPeriod { period, drift, allowance_usd, planned_gain_usd, used_usd, .. } => {
                    self.periods.push(PeriodRow {
                        date: on,
                        period: *period,
                        drift: *drift,
                        allowance_usd: *allowance_usd,
                        planned_gain_usd: *planned_gain_usd,
                        used_before_usd: *used_usd,
                    });
                }
                _ => {}
            }
        }
    }

    /// The end of the run: the transition's budget and drift, the tilt's sector weight.
    pub fn finish(&mut self, state: &State, last: NaiveDate, index_sector_weight: f64) {
        use rust_decimal::prelude::ToPrimitive;
        if let Some(hh) = state.households.get(&HouseholdId::new(TRANSITION)) {
            if let Some(t) = &hh.transition {
                self.transition_used_usd = t.used_usd;
                self.transition_used_by_year = t.used_by_year.clone();
                self.transition_budget_usd = t.plan.budget_usd.unwrap_or_default();
                self.transition_yearly_usd = t.plan.yearly_budget_usd.unwrap_or_default();
                self.transition_kept = t.plan.keep.clone();
            }
            let ctx = overlay_core::rebalance::Context::new(
                super::close_time_utc(last),
                last,
                overlay_core::output::OrderReason::Drift,
                overlay_core::rebalance::Mode::Full,
            );
            let kept: std::collections::BTreeSet<&SecurityId> =
                hh.transition.as_ref().map(|t| t.plan.keep.iter().collect()).unwrap_or_default();
            for a in hh.accounts.values() {
                let proj = overlay_core::rebalance::Projection::of(state, a);
                let owned = overlay_core::rebalance::target_weights(state, hh, a, &ctx);
                let targets: BTreeMap<&SecurityId, Decimal> = owned.iter().map(|(s, w)| (s, *w)).collect();
                self.transition_end_drift = Some(overlay_core::transition::drift(state, &proj, &targets, &kept));
            }
        }
        if let Some(hh) = state.households.get(&HouseholdId::new(TILTED)) {
            let mut sector = Decimal::ZERO;
            let mut total = Decimal::ZERO;
            for a in hh.accounts.values() {
                total += a.cash;
                for (s, lots) in &a.lots {
                    let v = lots.iter().map(|l| l.quantity).sum::<Decimal>()
                        * state.prices.get(s).map_or(Decimal::ZERO, |p| p.price);
                    total += v;
                    if state.securities.get(s).is_some_and(|x| x.sector == TILT_SECTOR) {
                        sector += v;
                    }
                }
            }
            if total > Decimal::ZERO {
                self.tilt_sector_weights = Some(((sector / total).to_f64().unwrap_or(f64::NAN), index_sector_weight));
            }
        }
    }

    /// The scenarios' section of the summary (Markdown).
    pub fn markdown(&self, accounts: &[super::AccountReport], out: &mut dyn Write) -> std::io::Result<()> {
        let row = |id: &str| accounts.iter().find(|a| a.household.as_str() == id);
        writeln!(out, "\n### Personalisation scenarios\n")?;
        if let (Some(t), Some(u)) = (row(TILTED), row(TILT_TWIN)) {
            let te = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}%"));
            writeln!(
                out,
                "- **Tilted direct index** ({TILTED}: {TILT_SECTOR} {}pp against the model): tracking error vs the untilted index {} (its untilted twin {TILT_TWIN}: {}), return {:+.2}% vs {:+.2}%; realized short {} / long {}.",
                (TILT_DELTA * Decimal::ONE_HUNDRED).normalize(),
                te(t.tracking_error_pct),
                te(u.tracking_error_pct),
                t.return_pct,
                u.return_pct,
                t.realized_short_usd.round_dp(0),
                t.realized_long_usd.round_dp(0)
            )?;
            if let Some((held, index)) = self.tilt_sector_weights {
                writeln!(
                    out,
                    "  {TILT_SECTOR} at the end: {:.2}% of the tilted account, {:.2}% of the index.",
                    100.0 * held,
                    100.0 * index
                )?;
            }
        }
        let engine: Decimal = self.income.iter().map(|r| r.engine_tax_usd).sum();
        let naive: Decimal = self.income.iter().map(|r| r.naive_tax_usd).sum();
        let raised: Decimal = self.income.iter().map(|r| r.raised_usd).sum();
        writeln!(
            out,
            "- **Retiree** ({RETIREE}: {}% of the opening value a month, raised {INCOME_LEAD_DAYS} days ahead): {} raises, ${} sold, ${} paid (${} paid late for want of settled cash); estimated tax of the engine's sales ${} against ${} for a naive pro-rata sale of the same amounts on the same days ({} short-term lots sold by the engine).",
            (INCOME_PCT * Decimal::ONE_HUNDRED).normalize(),
            self.income.len(),
            raised.round_dp(0),
            self.paid_usd.round_dp(0),
            self.paid_short_usd.round_dp(0),
            engine.round_dp(2),
            naive.round_dp(2),
            self.income.iter().map(|r| r.short_term_lots).sum::<usize>()
        )?;
        if !self.income.is_empty() {
            writeln!(
                out,
                "\n| raised on | for | sold $ | engine tax $ | naive pro-rata tax $ |\n|---|---|--:|--:|--:|"
            )?;
            for r in &self.income {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    r.date,
                    r.payment_date,
                    r.raised_usd.round_dp(0),
                    r.engine_tax_usd.round_dp(2),
                    r.naive_tax_usd.round_dp(2)
                )?;
            }
        }
        writeln!(
            out,
            "\n- **Transition** ({TRANSITION}: {TRANSITION_NAMES} of the largest names bought {TRANSITION_ACQUIRED}, the largest kept ({}); {TRANSITION_PERIODS} quarterly periods, budget ${} in all and ${} a year): ${} of gain used{}; drift at the end {}.",
            self.transition_kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            self.transition_budget_usd.round_dp(0),
            self.transition_yearly_usd.round_dp(0),
            self.transition_used_usd.round_dp(2),
            if self.transition_used_by_year.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.transition_used_by_year
                        .iter()
                        .map(|(y, u)| format!("{y}: ${}", u.round_dp(2)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.transition_end_drift.map_or("-".to_string(), |d| format!("{}pp", (d * Decimal::ONE_HUNDRED).round_dp(2)))
        )?;
        if !self.periods.is_empty() {
            writeln!(out, "\n| period | date | drift pp | allowance $ | planned gain $ | used before $ |\n|--:|---|--:|--:|--:|--:|")?;
            for p in &self.periods {
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    p.period,
                    p.date,
                    (p.drift * Decimal::ONE_HUNDRED).round_dp(2),
                    p.allowance_usd.round_dp(2),
                    p.planned_gain_usd.round_dp(2),
                    p.used_before_usd.round_dp(2)
                )?;
            }
        }
        Ok(())
    }
}
