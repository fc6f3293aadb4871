//! `overlay backtest`: the engine's pure core driven in memory by real daily
//! closes, for a fixed set of households on a cap-weighted index, with a
//! simulated custodian. It measures what the engine does, independently of
//! the engine's own bookkeeping:
//!
//! - **tracking**: each account's value (cash plus positions at the close)
//!   against the index, from the same closes; tracking difference and
//!   annualised tracking error;
//! - **taxes**: realized gains and losses recomputed from the lots each fill
//!   relieved (the account's lots diffed before and after the fill, never
//!   read from the audit text), harvested losses (losses of sells whose order
//!   reason is `harvest`), wash sales found by a checker of its own over the
//!   trade log, and tax-budget breaches;
//! - **turnover**.
//!
//! # The run, day by day
//!
//! Day 0 (the first trading day on or after `--from`): `security_upserted`
//! for every name with a close that day (sectors, substitutes and
//! substantially-identical groups as the demo makes them), a `price_tick` per
//! name, `model_published` of the demo's cap-weighted direct index
//! ([`MODEL_SP500_CW`] v1, dollar-volume proxy for capitalisation), the
//! households ([`household_set`]), then a `clock` market_close.
//!
//! Every later day: a `price_tick` per name with a close, the custodian's
//! fills, on the first trading day of a calendar quarter a new version of the
//! model (the index's current weights: the periodic reconstitution), then
//! the `clock` market_close (the engine's daily drift check; harvesting runs
//! on it too once the engine has it), and on quarter days a `clock` review.
//!
//! # The custodian
//!
//! Orders decided after the close of day *d* are filled in full at the
//! **next trading day's close** (the first later close of that security, if
//! it has a gap), with that day as trade date: a market-on-close order sent
//! the next day. Nothing is filled at a price the decision already saw, so
//! the backtest has no look-ahead; the cost is that a buy can spend a little
//! more than the engine sized it for (cash may dip below zero for a day; the
//! report shows the lowest cash of each account).
//!
//! # The index
//!
//! The benchmark is the cap-weighted index the model describes, held buy and
//! hold: the v1 weights turned into share counts at day 0's closes, valued at
//! each day's closes (a gap keeps the last close). Prices are not dividend
//! adjusted, for the index and the accounts alike.
//!
//! Determinism: no clock, no randomness; every collection that reaches the
//! outputs is ordered. The same data and options give the same bytes.

mod chart;
pub mod personal;

use anyhow::{bail, ensure, Context as _, Result};
use chrono::{Datelike, Duration, NaiveDate};
use indicatif::{ProgressBar, ProgressStyle};
use overlay_core::event::{
    AccountKind, AccountSettings, AccountSpec, Clock, ClockKind, Envelope, Fill, HouseholdUpserted, ModelKind,
    ModelPublished, OpeningLot, Payload, PriceTick, RestrictionSpec, SecurityUpserted, Side, Sleeve, TaxProfile,
    SCHEMA_VERSION_CURRENT,
};
use overlay_core::fold::{step, Applied, Input};
use overlay_core::ids::{AccountId, HouseholdId, ModelId, OrderId, SecurityId};
use overlay_core::output::{Order, OrderReason};
use overlay_core::state::{Lot, State};
use overlay_scenario::data::{load_sectors, MarketData, PricePanel};
use overlay_scenario::demo::{
    cap_weights, close_time_utc, demo, DemoSpec, MODEL_SP500_CW, PRODUCER_CRM, PRODUCER_CUSTODIAN,
    PRODUCER_MODEL_PROVIDER, PRODUCER_PRICE_FEED, PRODUCER_SCHEDULER,
};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the outputs go unless `--out` says otherwise.
pub const OUT_DIR_DEFAULT: &str = "./backtest-out";
/// The CI slice (`--quick`): three months around the August 2015 sell-off,
/// a quarter start (a model update) inside it, on the largest names.
pub const QUICK_FROM: &str = "2015-06-15";
pub const QUICK_TO: &str = "2015-09-15";
pub const QUICK_NAMES: usize = 100;
/// A loss sale and a purchase of a substantially identical security this many
/// days before or after it, in any account of the household, is a wash sale.
pub const WASH_WINDOW_DAYS: i64 = 30;
/// For annualising daily figures.
pub const TRADING_DAYS_PER_YEAR: f64 = 252.0;
/// Part of a two-account household in its taxable account (the rest in the IRA).
pub const TAXABLE_SHARE_PCT: i64 = 60;
/// Each household's annual net realized gain budget, as a percentage of its
/// opening value.
pub const GAIN_BUDGET_PCT: i64 = 1;
/// The fewest trading days a run needs: onboarding, the first fills, and one
/// day of returns.
pub const TRADING_DAYS_MIN: usize = 3;

/// Output files, inside `--out`.
pub const ACCOUNTS_CSV: &str = "accounts.csv";
pub const TRADES_JSONL: &str = "trades.jsonl";
pub const DAILY_CSV: &str = "daily.csv";
pub const WASH_SALES_CSV: &str = "wash_sales.csv";
pub const CHART_SVG: &str = "chart.svg";
pub const SUMMARY_MD: &str = "summary.md";

#[derive(Clone, Debug)]
pub struct BacktestOptions {
    /// First day (the first trading day on or after it); default the data's first.
    pub from: Option<NaiveDate>,
    /// Last day (inclusive); default the data's last.
    pub to: Option<NaiveDate>,
    /// A price file in the wide layout (gzip or plain) instead of the shipped one.
    pub prices: Option<PathBuf>,
    /// A sector file in the shipped layout instead of the shipped one.
    pub sectors: Option<PathBuf>,
    /// Keep only the largest `names` tickers (by the cap proxy) priced on the first day.
    pub names: Option<usize>,
    pub out: PathBuf,
    pub progress: bool,
}

impl BacktestOptions {
    /// The CI slice, with what the caller set explicitly kept.
    pub fn quick(mut self) -> Self {
        self.from = self.from.or_else(|| QUICK_FROM.parse().ok());
        self.to = self.to.or_else(|| QUICK_TO.parse().ok());
        self.names = self.names.or(Some(QUICK_NAMES));
        self
    }
}

// ---------------------------------------------------------------------------
// Households

/// One household of the backtest and what it stands for.
#[derive(Clone, Debug)]
pub struct HouseholdPlan {
    pub id: HouseholdId,
    /// `250k`, `1M`, `2M`: the bucket the chart groups by.
    pub size_label: &'static str,
    pub size_usd: Decimal,
    pub fractional: bool,
    pub budget_usd: Decimal,
    /// (account, kind, opening cash)
    pub accounts: Vec<(AccountId, AccountKind, Decimal)>,
    pub tax: TaxProfile,
    /// Restrictions it arrives with (a tilt, say).
    pub restrictions: Vec<RestrictionSpec>,
    /// Lots its first account arrives with.
    pub opening_lots: Vec<OpeningLot>,
    /// Events right after it arrives (a withdrawal schedule; a transition,
    /// set before its accounts take their sleeves).
    pub then: Vec<Payload>,
}

/// Household sizes, with the tax rates of households that size (2015 federal
/// brackets; the top one includes the 3.8% net investment income tax).
const SIZES: [(&str, i64, (i64, i64)); 3] =
    [("250k", 250_000, (280, 150)), ("1M", 1_000_000, (350, 150)), ("2M", 2_000_000, (434, 238))];

/// Twelve households: $250k, $1M and $2M; whole or fractional shares; one
/// taxable account, or a taxable account ([`TAXABLE_SHARE_PCT`]) and an IRA.
/// Every household has an annual gain budget of [`GAIN_BUDGET_PCT`] of its
/// value, and every account follows the cap-weighted index alone, opening
/// in cash.
pub fn household_set() -> Vec<HouseholdPlan> {
    let mut out = Vec::new();
    for (label, usd, (st, lt)) in SIZES {
        for fractional in [false, true] {
            for with_ira in [false, true] {
                let shares = if fractional { "frac" } else { "whole" };
                let structure = if with_ira { "taxable+ira" } else { "taxable" };
                let id = HouseholdId::new(format!("{label}-{shares}-{structure}"));
                let size = Decimal::from(usd);
                let account = |kind: &str| AccountId::new(format!("{id}:{kind}"));
                let accounts = if with_ira {
                    let taxable = size * Decimal::new(TAXABLE_SHARE_PCT, 2);
                    vec![
                        (account("taxable"), AccountKind::Taxable, taxable),
                        (account("ira"), AccountKind::Ira, size - taxable),
                    ]
                } else {
                    vec![(account("taxable"), AccountKind::Taxable, size)]
                };
                let budget = size * Decimal::new(GAIN_BUDGET_PCT, 2);
                out.push(HouseholdPlan {
                    id,
                    size_label: label,
                    size_usd: size,
                    fractional,
                    budget_usd: budget,
                    accounts,
                    tax: TaxProfile {
                        short_term_rate: Decimal::new(st, 3),
                        long_term_rate: Decimal::new(lt, 3),
                        annual_gain_budget_usd: Some(budget),
                        ..TaxProfile::default()
                    },
                    restrictions: Vec::new(),
                    opening_lots: Vec::new(),
                    then: Vec::new(),
                });
            }
        }
    }
    out
}

/// The household's arrival; `managed` false: its accounts have no sleeves
/// yet (a transition is set before they take them).
fn household_upserted(h: &HouseholdPlan, managed: bool) -> HouseholdUpserted {
    HouseholdUpserted {
        household: h.id.clone(),
        tax: h.tax.clone(),
        accounts: h
            .accounts
            .iter()
            .enumerate()
            .map(|(i, (account, kind, cash))| AccountSpec {
                account: account.clone(),
                kind: *kind,
                sleeves: if managed {
                    vec![Sleeve { model: ModelId::new(MODEL_SP500_CW), percent: Decimal::ONE }]
                } else {
                    Vec::new()
                },
                settings: AccountSettings {
                    fractional: h.fractional,
                    min_trade_usd: Decimal::from(if h.fractional { 25 } else { 100 }),
                    ..AccountSettings::default()
                },
                opening_cash: *cash,
                opening_lots: if i == 0 { h.opening_lots.clone() } else { Vec::new() },
            })
            .collect(),
        restrictions: h.restrictions.clone(),
    }
}

// ---------------------------------------------------------------------------
// The trade log

/// One fill as the trade log records it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trade {
    pub date: NaiveDate,
    pub household: HouseholdId,
    pub account: AccountId,
    pub account_kind: AccountKind,
    pub order_id: OrderId,
    pub reason: OrderReason,
    /// The trading day whose decision made the order.
    pub decided_on: NaiveDate,
    pub security: SecurityId,
    pub side: Side,
    pub quantity: Decimal,
    pub price: Decimal,
    pub value_usd: Decimal,
    /// Sells: the lots relieved; buys: the lot opened.
    pub lots: Vec<TradeLot>,
    /// Sum of the relieved lots' realized gains (+) and losses (−), by holding period.
    pub realized_short_usd: Decimal,
    pub realized_long_usd: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TradeLot {
    pub lot_id: u64,
    /// Shares relieved (sells) or bought (buys).
    pub quantity: Decimal,
    pub cost_per_share: Decimal,
    pub acquired: NaiveDate,
    pub holding_start: NaiveDate,
    /// Sells only: held more than a year on the trade date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_term: Option<bool>,
    /// Sells only: (price − cost per share) × quantity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realized_usd: Option<Decimal>,
}

impl Trade {
    /// Losses realized by this trade (a positive number), whatever its reason.
    pub fn losses_usd(&self) -> Decimal {
        self.lots.iter().filter_map(|l| l.realized_usd).filter(|r| *r < Decimal::ZERO).map(|r| -r).sum()
    }
}

/// The trade a fill made, from the account's lots of that security before
/// and after the fill: a sell relieved what the lots lost, a buy opened the
/// lot that appeared.
fn trade_from_lots(
    fill: &Fill,
    order: &OrderInfo,
    account_kind: AccountKind,
    before: &[Lot],
    after: &[Lot],
) -> Result<Trade> {
    let mut t = Trade {
        date: fill.trade_date,
        household: fill.household.clone(),
        account: fill.account.clone(),
        account_kind,
        order_id: fill.order_id.clone().expect("the custodian names the order"),
        reason: order.reason,
        decided_on: order.decided_on,
        security: fill.security.clone(),
        side: fill.side,
        quantity: fill.quantity,
        price: fill.price,
        value_usd: fill.quantity * fill.price,
        lots: Vec::new(),
        realized_short_usd: Decimal::ZERO,
        realized_long_usd: Decimal::ZERO,
    };
    let find = |lots: &[Lot], id: u64| lots.iter().find(|l| l.lot_id == id).cloned();
    match fill.side {
        Side::Sell => {
            // A wash-sale adjustment moves replacement shares into a lot of their
            // own (a new lot id, the same acquisition date, a higher basis): those
            // shares moved, they were not sold.
            let mut moved: std::collections::BTreeMap<u64, Decimal> = std::collections::BTreeMap::new();
            for new in after.iter().filter(|l| find(before, l.lot_id).is_none()) {
                let parent = before
                    .iter()
                    .filter(|b| b.acquired == new.acquired && b.lot_id != new.lot_id)
                    .max_by_key(|b| b.quantity - find(after, b.lot_id).map_or(Decimal::ZERO, |l| l.quantity));
                if let Some(p) = parent {
                    *moved.entry(p.lot_id).or_default() += new.quantity;
                }
            }
            for lot in before {
                let left = find(after, lot.lot_id).map_or(Decimal::ZERO, |l| l.quantity);
                let relieved = lot.quantity - left - moved.get(&lot.lot_id).copied().unwrap_or_default();
                ensure!(relieved >= Decimal::ZERO, "sell {} grew lot {} of {}", t.order_id, lot.lot_id, t.security);
                if relieved == Decimal::ZERO {
                    continue;
                }
                let long_term = lot.is_long_term(t.date);
                let realized = (t.price - lot.cost_per_share) * relieved;
                if long_term {
                    t.realized_long_usd += realized;
                } else {
                    t.realized_short_usd += realized;
                }
                t.lots.push(TradeLot {
                    lot_id: lot.lot_id,
                    quantity: relieved,
                    cost_per_share: lot.cost_per_share,
                    acquired: lot.acquired,
                    holding_start: lot.holding_start,
                    long_term: Some(long_term),
                    realized_usd: Some(realized),
                });
            }
            let relieved: Decimal = t.lots.iter().map(|l| l.quantity).sum();
            ensure!(
                relieved == t.quantity,
                "sell {} of {} {} relieved {relieved} shares from its lots",
                t.order_id,
                t.quantity,
                t.security
            );
            ensure!(
                after.iter().all(|l| find(before, l.lot_id).is_some()),
                "sell {} opened a lot in {}",
                t.order_id,
                t.security
            );
        }
        Side::Buy => {
            let opened: Vec<&Lot> = after.iter().filter(|l| find(before, l.lot_id).is_none()).collect();
            ensure!(
                opened.len() == 1 && opened[0].quantity == t.quantity,
                "buy {} of {} {} opened {} lots",
                t.order_id,
                t.quantity,
                t.security,
                opened.len()
            );
            let lot = opened[0];
            t.lots.push(TradeLot {
                lot_id: lot.lot_id,
                quantity: lot.quantity,
                cost_per_share: lot.cost_per_share,
                acquired: lot.acquired,
                holding_start: lot.holding_start,
                long_term: None,
                realized_usd: None,
            });
        }
    }
    Ok(t)
}

// ---------------------------------------------------------------------------
// Wash sales: a checker of its own over the trade log

/// A loss sale with a purchase of a substantially identical security within
/// [`WASH_WINDOW_DAYS`] before or after it, in any account of the household.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WashSale {
    pub household: HouseholdId,
    pub sale_date: NaiveDate,
    pub sale_account: AccountId,
    pub sale_order_id: OrderId,
    pub sale_reason: OrderReason,
    pub security: SecurityId,
    pub loss_usd: Decimal,
    pub buy_date: NaiveDate,
    pub buy_account: AccountId,
    pub buy_order_id: OrderId,
    pub buy_reason: OrderReason,
    pub buy_security: SecurityId,
    pub buy_quantity: Decimal,
}

/// Every loss sale in a taxable account that has a replacement purchase:
/// a buy, in any account of the same household (IRAs included), of the same
/// security or one of its `identical_group`, with a trade date within
/// [`WASH_WINDOW_DAYS`] of the sale. The purchase that made a lot the sale
/// relieves is not a replacement of it (those are the very shares sold).
/// One entry per sale, naming its first replacement.
pub fn wash_sales(trades: &[Trade], groups: &BTreeMap<SecurityId, String>) -> Vec<WashSale> {
    let group = |s: &SecurityId| groups.get(s).cloned().unwrap_or_else(|| format!("security:{s}"));
    // (household, group) → buys in date order.
    let mut buys: BTreeMap<(&HouseholdId, String), Vec<&Trade>> = BTreeMap::new();
    for t in trades.iter().filter(|t| t.side == Side::Buy) {
        buys.entry((&t.household, group(&t.security))).or_default().push(t);
    }
    for list in buys.values_mut() {
        list.sort_by_key(|t| t.date);
    }
    let mut out = Vec::new();
    for sale in trades.iter().filter(|t| t.side == Side::Sell && t.account_kind.is_taxable()) {
        let loss = sale.losses_usd();
        if loss <= Decimal::ZERO {
            continue;
        }
        let Some(candidates) = buys.get(&(&sale.household, group(&sale.security))) else { continue };
        let window = Duration::days(WASH_WINDOW_DAYS);
        let very_shares = |b: &Trade| {
            b.account == sale.account && b.lots.iter().any(|bl| sale.lots.iter().any(|sl| sl.lot_id == bl.lot_id))
        };
        let replacement = candidates
            .iter()
            .filter(|b| b.date >= sale.date - window && b.date <= sale.date + window)
            .find(|b| !very_shares(b));
        if let Some(b) = replacement {
            out.push(WashSale {
                household: sale.household.clone(),
                sale_date: sale.date,
                sale_account: sale.account.clone(),
                sale_order_id: sale.order_id.clone(),
                sale_reason: sale.reason,
                security: sale.security.clone(),
                loss_usd: loss,
                buy_date: b.date,
                buy_account: b.account.clone(),
                buy_order_id: b.order_id.clone(),
                buy_reason: b.reason,
                buy_security: b.security.clone(),
                buy_quantity: b.quantity,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Statistics (f64 is fine here: reports only, never decisions)

/// Daily returns of a value series (a zero value gives no return).
pub fn daily_returns(values: &[f64]) -> Vec<f64> {
    values.windows(2).map(|w| if w[0] > 0.0 { w[1] / w[0] - 1.0 } else { 0.0 }).collect()
}

/// Annualised tracking error: the sample standard deviation of the daily
/// return differences × √252. None with fewer than two differences.
pub fn tracking_error(account: &[f64], index: &[f64]) -> Option<f64> {
    let diffs: Vec<f64> = daily_returns(account).iter().zip(daily_returns(index)).map(|(a, i)| a - i).collect();
    if diffs.len() < 2 {
        return None;
    }
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n - 1.0);
    Some(var.sqrt() * TRADING_DAYS_PER_YEAR.sqrt())
}

fn to_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------
// The run

/// What the engine decided about an order, for the trade log.
#[derive(Clone, Debug)]
struct OrderInfo {
    reason: OrderReason,
    decided_on: NaiveDate,
}

/// One account's books, kept by the backtest (not by the engine).
#[derive(Clone, Debug)]
struct Book {
    household: usize,
    account: AccountId,
    kind: AccountKind,
    opening_usd: Decimal,
    /// Shares the account arrived with, by security.
    opening_shares: BTreeMap<SecurityId, Decimal>,
    /// Value at each day's close.
    values: Vec<Decimal>,
    /// Cash at each day's close.
    cash: Vec<Decimal>,
    min_cash: Decimal,
    fills: u64,
    /// Traded value after onboarding (orders decided on day 0 excluded).
    buys_usd: Decimal,
    sells_usd: Decimal,
    realized_short: Decimal,
    realized_long: Decimal,
    harvested_losses: Decimal,
}

/// Per-account results: one row of `accounts.csv`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountReport {
    pub household: HouseholdId,
    pub account: AccountId,
    pub kind: AccountKind,
    pub size: &'static str,
    pub fractional: bool,
    pub household_usd: Decimal,
    pub budget_usd: Decimal,
    pub opening_usd: Decimal,
    pub end_usd: Decimal,
    pub names_held: usize,
    pub end_cash_usd: Decimal,
    /// Cash as a share of the account, averaged over the days from the first fills.
    pub avg_cash_pct: f64,
    /// From the close of the first fill day (the day the account is invested).
    pub return_pct: f64,
    pub index_return_pct: f64,
    pub tracking_difference_pct: f64,
    pub tracking_error_pct: Option<f64>,
    pub harvested_losses_usd: Decimal,
    pub realized_short_usd: Decimal,
    pub realized_long_usd: Decimal,
    pub turnover_pct: f64,
    pub fills: u64,
    pub min_cash_usd: Decimal,
    /// Wash sales with a sale in this account.
    pub wash_sales: usize,
    /// The household's calendar years over its gain budget.
    pub budget_breaches: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetBreach {
    pub household: HouseholdId,
    pub year: i32,
    pub realized_usd: Decimal,
    pub budget_usd: Decimal,
}

/// Everything a run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub days: usize,
    pub names: usize,
    pub index_return_pct: f64,
    pub accounts: Vec<AccountReport>,
    pub trades: usize,
    pub orders_by_reason: BTreeMap<&'static str, u64>,
    /// Orders the custodian had not filled by the last day (no later close).
    pub unfilled_orders: usize,
    pub wash_sales: Vec<WashSale>,
    pub budget_breaches: Vec<BudgetBreach>,
    /// Inputs the engine refused (none expected: the backtest makes its own inputs).
    pub rejections: Vec<String>,
    /// Where the trade log disagrees with the engine's books: realized gains
    /// per household and year, cash or positions per account.
    pub ledger_mismatches: Vec<String>,
    /// The personalisation scenarios.
    pub personal: personal::Findings,
    pub out: PathBuf,
}

/// The market data the options name, sliced to the run's days and names.
fn load_data(opts: &BacktestOptions) -> Result<MarketData> {
    let mut data = MarketData::embedded().context("loading the shipped market data")?;
    if let Some(p) = &opts.prices {
        data = data.with_prices(PricePanel::load(p)?);
    }
    if let Some(s) = &opts.sectors {
        data.sectors = load_sectors(s)?;
    }
    let panel = &data.prices;
    let first = match opts.from {
        Some(d) => {
            panel.first_on_or_after(d).with_context(|| format!("no trading day on or after {d} in the price data"))?
        }
        None => 0,
    };
    let last = match opts.to {
        Some(d) => panel.dates.partition_point(|x| *x <= d).checked_sub(1).context("--to is before the price data")?,
        None => panel.dates.len() - 1,
    };
    if last < first || last - first + 1 < TRADING_DAYS_MIN {
        bail!(
            "the run needs at least {TRADING_DAYS_MIN} trading days; {} .. {} has {}",
            panel.dates[first],
            panel.dates[last.max(first)],
            (last + 1).saturating_sub(first)
        );
    }
    let mut columns: Vec<usize> = (0..panel.tickers.len()).filter(|&c| panel.close(first, c).is_some()).collect();
    if let Some(n) = opts.names {
        ensure!(n > 0, "--names must be positive");
        // Largest by the cap proxy first; names without one last, by ticker.
        let proxy = |c: usize| data.dollar_volume.get(&panel.tickers[c]).map(|d| d.avg_dollar_volume);
        columns.sort_by(|&a, &b| proxy(b).cmp(&proxy(a)).then(a.cmp(&b)));
        columns.truncate(n);
        columns.sort_unstable();
    }
    ensure!(!columns.is_empty(), "no security has a close on {}", panel.dates[first]);
    let sliced = PricePanel {
        dates: panel.dates[first..=last].to_vec(),
        tickers: columns.iter().map(|&c| panel.tickers[c].clone()).collect(),
        closes: panel.closes[first..=last].iter().map(|row| columns.iter().map(|&c| row[c]).collect()).collect(),
    };
    Ok(data.with_prices(sliced))
}

/// The engine, folded in memory, and what the backtest keeps beside it.
struct Sim {
    state: State,
    orders: BTreeMap<OrderId, OrderInfo>,
    /// Orders the custodian has yet to fill, in the engine's order.
    queue: Vec<Order>,
    orders_by_reason: BTreeMap<&'static str, u64>,
    rejections: Vec<String>,
    /// The trading day being played.
    today: NaiveDate,
    findings: personal::Findings,
}

impl Sim {
    fn feed(&mut self, env: &Envelope) -> Result<Applied> {
        env.validate().with_context(|| format!("the backtest made an invalid event {}", env.event_id))?;
        let applied = step(&mut self.state, Input::Event(env));
        self.findings.observe(&self.state, self.today, &applied.audit);
        if let Some((_, err)) = &applied.rejection {
            self.rejections.push(format!("{} ({}): {err}", env.event_id, env.payload.type_name()));
        }
        for o in &applied.orders {
            *self.orders_by_reason.entry(o.reason.as_str()).or_default() += 1;
            self.orders.insert(o.order_id.clone(), OrderInfo { reason: o.reason, decided_on: self.today });
            self.queue.push(o.clone());
        }
        Ok(applied)
    }

    fn lots(&self, h: &HouseholdId, a: &AccountId, sec: &SecurityId) -> Vec<Lot> {
        self.state.households[h].accounts[a].lots.get(sec).cloned().unwrap_or_default()
    }

    /// Fills one order in full at `price` on `date`; the trade it made, or
    /// none if the engine refused the fill.
    fn fill(&mut self, o: &Order, date: NaiveDate, price: Decimal) -> Result<Option<Trade>> {
        let fill = Fill::of_order(o, price, date);
        let env = envelope(
            format!("bt-fill-{}", o.order_id),
            PRODUCER_CUSTODIAN,
            close_time_utc(date) + Duration::minutes(1),
            Payload::Fill(fill.clone()),
        );
        let before = self.lots(&o.household, &o.account, &o.security);
        let applied = self.feed(&env)?;
        if applied.rejection.is_some() {
            return Ok(None);
        }
        let after = self.lots(&o.household, &o.account, &o.security);
        let kind = self.state.households[&o.household].accounts[&o.account].kind;
        let info = self.orders.get(&o.order_id).context("a fill for an order the engine never made")?;
        trade_from_lots(&fill, info, kind, &before, &after).map(Some)
    }
}

fn envelope(event_id: String, producer: &str, time: chrono::DateTime<chrono::Utc>, payload: Payload) -> Envelope {
    Envelope {
        event_id,
        producer: producer.to_string(),
        event_time: time,
        schema_version: SCHEMA_VERSION_CURRENT,
        payload,
    }
}

/// The first trading day of each calendar quarter after day 0.
fn quarter_starts(dates: &[NaiveDate]) -> BTreeSet<usize> {
    let quarter = |d: &NaiveDate| (d.year(), d.month0() / 3);
    (1..dates.len()).filter(|&k| quarter(&dates[k]) != quarter(&dates[k - 1])).collect()
}

pub fn run(opts: &BacktestOptions) -> Result<Report> {
    let data = load_data(opts)?;
    let panel = &data.prices;
    let days = panel.dates.len();
    // The demo's day 0 is the universe and the index: securities with their
    // groups and substitutes, and the cap-weighted model.
    let spec = DemoSpec { households: 0, price_days: 0, seed: 0, start_date: panel.dates[0] };
    let setup = demo(&spec, &data).context("building the universe and the index")?;
    let mut securities: Vec<SecurityUpserted> = Vec::new();
    let mut model_v1: Option<ModelPublished> = None;
    for e in setup.into_events() {
        match e.payload {
            Payload::SecurityUpserted(s) => securities.push(s),
            Payload::ModelPublished(m) if m.model.as_str() == MODEL_SP500_CW => model_v1 = Some(m),
            _ => {}
        }
    }
    let model_v1 = model_v1.context("the demo publishes the cap-weighted index")?;
    let column: BTreeMap<&SecurityId, usize> = panel.tickers.iter().enumerate().map(|(c, t)| (t, c)).collect();
    let groups: BTreeMap<SecurityId, String> =
        securities.iter().filter_map(|s| s.identical_group.clone().map(|g| (s.security.clone(), g))).collect();

    // Index shares: the v1 weights bought at day 0's closes.
    let index: Vec<(usize, Decimal)> = model_v1
        .weights
        .iter()
        .map(|w| {
            let c = column[&w.security];
            (c, w.weight / panel.close(0, c).expect("the universe is priced on day 0"))
        })
        .collect();

    let mut households = household_set();
    let day0 = |s: &SecurityId| panel.close(0, column[s]).expect("the universe is priced on day 0");
    let v1: Vec<(SecurityId, Decimal)> = model_v1.weights.iter().map(|w| (w.security.clone(), w.weight)).collect();
    households.extend(personal::households(panel.dates[0], &v1, &day0));
    let mut books: Vec<Book> = Vec::new();
    for (i, h) in households.iter().enumerate() {
        for (j, (a, kind, cash)) in h.accounts.iter().enumerate() {
            let mut opening_shares: BTreeMap<SecurityId, Decimal> = BTreeMap::new();
            for l in h.opening_lots.iter().filter(|_| j == 0) {
                *opening_shares.entry(l.security.clone()).or_default() += l.quantity;
            }
            books.push(Book {
                household: i,
                account: a.clone(),
                kind: *kind,
                opening_usd: *cash,
                opening_shares,
                values: Vec::with_capacity(days),
                cash: Vec::with_capacity(days),
                min_cash: *cash,
                fills: 0,
                buys_usd: Decimal::ZERO,
                sells_usd: Decimal::ZERO,
                realized_short: Decimal::ZERO,
                realized_long: Decimal::ZERO,
                harvested_losses: Decimal::ZERO,
            });
        }
    }
    let book_of: BTreeMap<AccountId, usize> = books.iter().enumerate().map(|(i, b)| (b.account.clone(), i)).collect();

    let mut sim = Sim {
        state: State::default(),
        orders: BTreeMap::new(),
        queue: Vec::new(),
        orders_by_reason: BTreeMap::new(),
        rejections: Vec::new(),
        today: panel.dates[0],
        findings: personal::Findings::default(),
    };
    let mut last_close: Vec<Option<Decimal>> = vec![None; panel.tickers.len()];
    let mut index_values: Vec<Decimal> = Vec::with_capacity(days);
    let mut trades: Vec<Trade> = Vec::new();
    let quarters = quarter_starts(&panel.dates);
    let mut model_version = model_v1.version;

    let bar = if opts.progress { ProgressBar::new(days as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} days  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    for k in 0..days {
        let date = panel.dates[k];
        sim.today = date;
        bar.set_message(date.to_string());
        let close = close_time_utc(date);
        for (c, slot) in last_close.iter_mut().enumerate() {
            if let Some(p) = panel.close(k, c) {
                *slot = Some(p);
            }
        }
        if k == 0 {
            for s in &securities {
                sim.feed(&envelope(
                    format!("bt-security-{}", s.security),
                    overlay_scenario::demo::PRODUCER_SECURITY_MASTER,
                    close,
                    Payload::SecurityUpserted(s.clone()),
                ))?;
            }
        }
        for (c, t) in panel.tickers.iter().enumerate() {
            let Some(price) = panel.close(k, c) else { continue };
            sim.feed(&envelope(
                format!("bt-tick-{date}-{t}"),
                PRODUCER_PRICE_FEED,
                close,
                Payload::PriceTick(PriceTick { security: t.clone(), price, as_of: close }),
            ))?;
        }
        if k == 0 {
            sim.feed(&envelope(
                format!("bt-model-{MODEL_SP500_CW}-v{}", model_v1.version),
                PRODUCER_MODEL_PROVIDER,
                close,
                Payload::ModelPublished(model_v1.clone()),
            ))?;
            for h in &households {
                // A transition is set before the accounts take their sleeves,
                // so their first decision already follows it.
                let transition = h.then.iter().any(|p| matches!(p, Payload::TransitionSet(_)));
                sim.feed(&envelope(
                    format!("bt-household-{}", h.id),
                    PRODUCER_CRM,
                    close + Duration::minutes(1),
                    Payload::HouseholdUpserted(household_upserted(h, !transition)),
                ))?;
                for (i, p) in h.then.iter().enumerate() {
                    sim.feed(&envelope(
                        format!("bt-household-{}-then-{i}", h.id),
                        PRODUCER_CRM,
                        close + Duration::minutes(1),
                        p.clone(),
                    ))?;
                }
                if transition {
                    sim.feed(&envelope(
                        format!("bt-household-{}-managed", h.id),
                        PRODUCER_CRM,
                        close + Duration::minutes(1),
                        Payload::HouseholdUpserted(household_upserted(h, true)),
                    ))?;
                }
            }
        } else {
            // The custodian fills yesterday's orders (and any that waited for a close) at today's close.
            let queue = std::mem::take(&mut sim.queue);
            for o in queue {
                let Some(price) = panel.close(k, column[&o.security]) else {
                    sim.queue.push(o);
                    continue;
                };
                let Some(t) = sim.fill(&o, date, price)? else { continue };
                let b = &mut books[book_of[&t.account]];
                b.fills += 1;
                if t.decided_on != panel.dates[0] {
                    match t.side {
                        Side::Buy => b.buys_usd += t.value_usd,
                        Side::Sell => b.sells_usd += t.value_usd,
                    }
                }
                b.realized_short += t.realized_short_usd;
                b.realized_long += t.realized_long_usd;
                if t.reason == OrderReason::Harvest {
                    b.harvested_losses += t.losses_usd();
                }
                trades.push(t);
            }
            if quarters.contains(&k) {
                model_version += 1;
                let drifted: Vec<(SecurityId, Decimal)> = index
                    .iter()
                    .map(|&(c, shares)| (panel.tickers[c].clone(), shares * last_close[c].expect("priced on day 0")))
                    .collect();
                let model = ModelPublished {
                    model: ModelId::new(MODEL_SP500_CW),
                    version: model_version,
                    kind: ModelKind::DirectIndex,
                    weights: cap_weights(&drifted, Decimal::ONE, 6),
                };
                sim.feed(&envelope(
                    format!("bt-model-{MODEL_SP500_CW}-v{model_version}"),
                    PRODUCER_MODEL_PROVIDER,
                    close + Duration::minutes(2),
                    Payload::ModelPublished(model),
                ))?;
            }
        }
        let clock = |kind: ClockKind, minutes: i64, tag: &str| {
            envelope(
                format!("bt-clock-{tag}-{date}"),
                PRODUCER_SCHEDULER,
                close + Duration::minutes(minutes),
                Payload::Clock(Clock { kind, trade_date: date }),
            )
        };
        sim.feed(&clock(ClockKind::MarketClose, 5, "close"))?;
        if quarters.contains(&k) {
            sim.feed(&clock(ClockKind::Review, 6, "review"))?;
        }

        // Values at the close, from the backtest's own prices.
        index_values.push(index.iter().map(|&(c, shares)| shares * last_close[c].unwrap_or_default()).sum());
        for b in books.iter_mut() {
            let account = &sim.state.households[&households[b.household].id].accounts[&b.account];
            let mut value = account.cash;
            for (sec, lots) in &account.lots {
                let price = column.get(sec).and_then(|&c| last_close[c]).unwrap_or_default();
                value += lots.iter().map(|l| l.quantity).sum::<Decimal>() * price;
            }
            b.values.push(value);
            b.cash.push(account.cash);
            b.min_cash = b.min_cash.min(account.cash);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Independent checks.
    let washes = wash_sales(&trades, &groups);
    let mut breaches = Vec::new();
    let mut mismatches = Vec::new();
    for h in &households {
        let hh = &sim.state.households[&h.id];
        let mut ours: BTreeMap<i32, Decimal> = BTreeMap::new();
        for t in trades.iter().filter(|t| t.household == h.id && t.account_kind.is_taxable()) {
            *ours.entry(t.date.year()).or_default() += t.realized_short_usd + t.realized_long_usd;
        }
        let years: BTreeSet<i32> = ours.keys().chain(hh.realized.keys()).copied().collect();
        for y in years {
            let engine = hh.realized.get(&y).map_or(Decimal::ZERO, |r| r.short_term_usd + r.long_term_usd);
            let log = ours.get(&y).copied().unwrap_or_default();
            if engine != log {
                mismatches.push(format!("{} {y}: engine ledger {engine}, trade log {log}", h.id));
            }
            if let Some(budget) = hh.tax.annual_gain_budget_usd {
                if engine > budget {
                    breaches.push(BudgetBreach {
                        household: h.id.clone(),
                        year: y,
                        realized_usd: engine,
                        budget_usd: budget,
                    });
                }
            }
        }
    }

    // The trade log must account for the engine's cash and positions too.
    for b in &books {
        let account = &sim.state.households[&households[b.household].id].accounts[&b.account];
        // Scheduled withdrawals that fell due left the account, but for what is still due.
        let withdrawn = sim.findings.due_usd.get(&b.account).copied().unwrap_or_default() - account.withdrawal_due;
        let mut cash = b.opening_usd - withdrawn;
        let mut held: BTreeMap<&SecurityId, Decimal> = b.opening_shares.iter().map(|(s, q)| (s, *q)).collect();
        for t in trades.iter().filter(|t| t.account == b.account) {
            let signed = if t.side == Side::Buy { t.quantity } else { -t.quantity };
            *held.entry(&t.security).or_default() += signed;
            cash -= signed * t.price;
        }
        held.retain(|_, q| !q.is_zero());
        if cash != account.cash {
            mismatches.push(format!("{}: engine cash {}, trade log {cash}", b.account, account.cash));
        }
        let engine: BTreeMap<&SecurityId, Decimal> =
            account.lots.iter().map(|(s, lots)| (s, lots.iter().map(|l| l.quantity).sum())).collect();
        for sec in held.keys().chain(engine.keys()).collect::<BTreeSet<_>>() {
            let (log, eng) = (held.get(sec).copied().unwrap_or_default(), engine.get(sec).copied().unwrap_or_default());
            if log != eng {
                mismatches.push(format!("{} {sec}: engine holds {eng}, trade log {log}", b.account));
            }
        }
    }

    // Per-account results, measured from the close of day 1 (the first fills).
    let idx_f: Vec<f64> = index_values[1..].iter().map(|v| to_f64(*v)).collect();
    let years = (days - 2) as f64 / TRADING_DAYS_PER_YEAR;
    let index_return = idx_f.last().expect("three days at least") / idx_f[0] - 1.0;
    let mut accounts = Vec::new();
    for b in &books {
        let h = &households[b.household];
        let vals: Vec<f64> = b.values[1..].iter().map(|v| to_f64(*v)).collect();
        let ret = vals.last().expect("three days at least") / vals[0] - 1.0;
        let avg = vals.iter().sum::<f64>() / vals.len() as f64;
        let traded = to_f64(b.buys_usd + b.sells_usd) / 2.0;
        let account = &sim.state.households[&h.id].accounts[&b.account];
        accounts.push(AccountReport {
            household: h.id.clone(),
            account: b.account.clone(),
            kind: b.kind,
            size: h.size_label,
            fractional: h.fractional,
            household_usd: h.size_usd,
            budget_usd: h.budget_usd,
            opening_usd: b.opening_usd,
            end_usd: *b.values.last().expect("a value per day"),
            names_held: account.lots.len(),
            end_cash_usd: account.cash,
            avg_cash_pct: 100.0
                * (1..days).map(|k| to_f64(b.cash[k]) / to_f64(b.values[k]).max(f64::MIN_POSITIVE)).sum::<f64>()
                / (days - 1) as f64,
            return_pct: 100.0 * ret,
            index_return_pct: 100.0 * index_return,
            tracking_difference_pct: 100.0 * (ret - index_return),
            tracking_error_pct: tracking_error(&vals, &idx_f).map(|x| 100.0 * x),
            harvested_losses_usd: b.harvested_losses,
            realized_short_usd: b.realized_short,
            realized_long_usd: b.realized_long,
            turnover_pct: if avg > 0.0 && years > 0.0 { 100.0 * traded / avg / years } else { 0.0 },
            fills: b.fills,
            min_cash_usd: b.min_cash,
            wash_sales: washes.iter().filter(|w| w.sale_account == b.account).count(),
            budget_breaches: breaches.iter().filter(|x| x.household == h.id).count(),
        });
    }

    // The tilt's sector in the index at the end, from the index's own shares.
    let sector_of: BTreeMap<&SecurityId, &str> = securities.iter().map(|s| (&s.security, s.sector.as_str())).collect();
    let (mut in_sector, mut index_total) = (Decimal::ZERO, Decimal::ZERO);
    for &(c, shares) in &index {
        let v = shares * last_close[c].unwrap_or_default();
        index_total += v;
        if sector_of.get(&panel.tickers[c]).is_some_and(|s| *s == personal::TILT_SECTOR) {
            in_sector += v;
        }
    }
    let index_sector = if index_total > Decimal::ZERO { to_f64(in_sector / index_total) } else { 0.0 };
    let mut findings = std::mem::take(&mut sim.findings);
    findings.finish(&sim.state, panel.dates[days - 1], index_sector);
    let report = Report {
        first_day: panel.dates[0],
        last_day: panel.dates[days - 1],
        days,
        names: securities.len(),
        index_return_pct: 100.0 * index_return,
        accounts,
        trades: trades.len(),
        orders_by_reason: sim.orders_by_reason.clone(),
        unfilled_orders: sim.queue.len(),
        wash_sales: washes,
        budget_breaches: breaches,
        rejections: sim.rejections.clone(),
        ledger_mismatches: mismatches,
        personal: findings,
        out: opts.out.clone(),
    };
    write_outputs(opts, &report, &trades, &books, &households, &index_values, &panel.dates)?;
    Ok(report)
}

// ---------------------------------------------------------------------------
// Outputs

fn money(d: Decimal) -> String {
    d.round_dp(2).to_string()
}

fn create(dir: &Path, name: &str) -> Result<std::io::BufWriter<std::fs::File>> {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::io::BufWriter::new(f))
}

fn kind_str(k: AccountKind) -> &'static str {
    match k {
        AccountKind::Taxable => "taxable",
        AccountKind::Ira => "ira",
        AccountKind::Roth => "roth",
    }
}

fn write_outputs(
    opts: &BacktestOptions,
    report: &Report,
    trades: &[Trade],
    books: &[Book],
    households: &[HouseholdPlan],
    index_values: &[Decimal],
    dates: &[NaiveDate],
) -> Result<()> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;

    let mut w = create(&opts.out, ACCOUNTS_CSV)?;
    writeln!(
        w,
        "household,account,kind,size,fractional,household_usd,budget_usd,opening_usd,end_usd,names_held,\
         end_cash_usd,avg_cash_pct,return_pct,index_return_pct,tracking_difference_pct,tracking_error_pct,harvested_losses_usd,\
         realized_short_usd,realized_long_usd,turnover_pct,fills,min_cash_usd,wash_sales,budget_breaches"
    )?;
    for a in &report.accounts {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{:.4},{:.4},{:.4},{:.4},{},{},{},{},{:.4},{},{},{},{}",
            a.household,
            a.account,
            kind_str(a.kind),
            a.size,
            a.fractional,
            money(a.household_usd),
            money(a.budget_usd),
            money(a.opening_usd),
            money(a.end_usd),
            a.names_held,
            money(a.end_cash_usd),
            a.avg_cash_pct,
            a.return_pct,
            a.index_return_pct,
            a.tracking_difference_pct,
            a.tracking_error_pct.map_or(String::new(), |x| format!("{x:.4}")),
            money(a.harvested_losses_usd),
            money(a.realized_short_usd),
            money(a.realized_long_usd),
            a.turnover_pct,
            a.fills,
            money(a.min_cash_usd),
            a.wash_sales,
            a.budget_breaches
        )?;
    }
    w.flush()?;

    let mut w = create(&opts.out, TRADES_JSONL)?;
    for t in trades {
        serde_json::to_writer(&mut w, t)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;

    let mut w = create(&opts.out, WASH_SALES_CSV)?;
    writeln!(
        w,
        "household,security,sale_date,sale_account,sale_order_id,sale_reason,loss_usd,\
         buy_date,buy_account,buy_order_id,buy_reason,buy_security,buy_quantity"
    )?;
    for x in &report.wash_sales {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
            x.household,
            x.security,
            x.sale_date,
            x.sale_account,
            x.sale_order_id,
            x.sale_reason.as_str(),
            money(x.loss_usd),
            x.buy_date,
            x.buy_account,
            x.buy_order_id,
            x.buy_reason.as_str(),
            x.buy_security,
            x.buy_quantity
        )?;
    }
    w.flush()?;

    let mut w = create(&opts.out, DAILY_CSV)?;
    write!(w, "date,index_value")?;
    for b in books {
        write!(w, ",{}", b.account)?;
    }
    writeln!(w)?;
    for (k, d) in dates.iter().enumerate() {
        write!(w, "{d},{}", index_values[k].round_dp(8))?;
        for b in books {
            write!(w, ",{}", money(b.values[k]))?;
        }
        writeln!(w)?;
    }
    w.flush()?;

    let series = chart::series(trades, books_by_size(books, households), index_values, dates);
    std::fs::write(opts.out.join(CHART_SVG), chart::svg(&series, report))
        .with_context(|| format!("writing {}", opts.out.join(CHART_SVG).display()))?;

    let mut w = create(&opts.out, SUMMARY_MD)?;
    report.markdown(&mut w)?;
    w.flush()?;
    Ok(())
}

/// Each size bucket's accounts: (label, [(account, daily values)]).
fn books_by_size<'a>(books: &'a [Book], households: &[HouseholdPlan]) -> Vec<(&'static str, Vec<&'a Book>)> {
    let mut out: Vec<(&'static str, Vec<&'a Book>)> = Vec::new();
    for (label, _, _) in SIZES {
        let members: Vec<&Book> = books.iter().filter(|b| households[b.household].size_label == label).collect();
        if !members.is_empty() {
            out.push((label, members));
        }
    }
    out
}

impl Report {
    /// Wash sales, budget breaches, refused inputs and ledger mismatches: all must be zero.
    pub fn problems(&self) -> usize {
        self.wash_sales.len() + self.budget_breaches.len() + self.rejections.len() + self.ledger_mismatches.len()
    }

    /// The summary table, fixed width, for a terminal.
    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "overlay backtest: {} .. {} ({} trading days), {} names, cap-weighted index {:+.2}%",
            self.first_day, self.last_day, self.days, self.names, self.index_return_pct
        )?;
        writeln!(
            out,
            "{:<30} {:>10} {:>6} {:>8} {:>7} {:>6} {:>11} {:>9} {:>9} {:>8} {:>5} {:>5}",
            "account",
            "end $",
            "cash%",
            "return%",
            "TD pp",
            "TE %",
            "harvested $",
            "short $",
            "long $",
            "turn %/y",
            "wash",
            "over"
        )?;
        for a in &self.accounts {
            writeln!(
                out,
                "{:<30} {:>10} {:>6.2} {:>+8.2} {:>+7.2} {:>6} {:>11} {:>9} {:>9} {:>8.1} {:>5} {:>5}",
                a.account.as_str(),
                a.end_usd.round_dp(0),
                a.avg_cash_pct,
                a.return_pct,
                a.tracking_difference_pct,
                a.tracking_error_pct.map_or("-".to_string(), |x| format!("{x:.2}")),
                a.harvested_losses_usd.round_dp(0),
                a.realized_short_usd.round_dp(0),
                a.realized_long_usd.round_dp(0),
                a.turnover_pct,
                a.wash_sales,
                a.budget_breaches
            )?;
        }
        self.print_footer(out, "")?;
        self.personal.markdown(&self.accounts, out)?;
        writeln!(out, "outputs in {}", self.out.display())
    }

    fn print_footer(&self, out: &mut dyn Write, bullet: &str) -> std::io::Result<()> {
        let reasons: Vec<String> = self.orders_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(
            out,
            "{bullet}orders {} ({}); fills {}; unfilled at the end {}",
            self.orders_by_reason.values().sum::<u64>(),
            reasons.join(", "),
            self.trades,
            self.unfilled_orders
        )?;
        writeln!(
            out,
            "{bullet}wash sales {}; tax-budget breaches {}; refused inputs {}; ledger mismatches {}",
            self.wash_sales.len(),
            self.budget_breaches.len(),
            self.rejections.len(),
            self.ledger_mismatches.len()
        )?;
        for b in &self.budget_breaches {
            writeln!(
                out,
                "  {bullet}budget breach: {} {} realized {} over a budget of {}",
                b.household,
                b.year,
                money(b.realized_usd),
                money(b.budget_usd)
            )?;
        }
        for r in self.rejections.iter().take(10) {
            writeln!(out, "  {bullet}refused: {r}")?;
        }
        for m in self.ledger_mismatches.iter().take(10) {
            writeln!(out, "  {bullet}ledger mismatch: {m}")?;
        }
        Ok(())
    }

    /// The summary table as Markdown, for the docs.
    pub fn markdown(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} .. {}, {} trading days, {} names; cap-weighted index {:+.2}% (price return).\n",
            self.first_day, self.last_day, self.days, self.names, self.index_return_pct
        )?;
        writeln!(
            out,
            "| account | kind | shares | end $ | avg cash % | return % | TD pp | TE % | harvested $ | realized short $ | realized long $ | turnover %/yr | wash sales | budget breaches |"
        )?;
        writeln!(out, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")?;
        for a in &self.accounts {
            writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {:+.2} | {:+.2} | {} | {} | {} | {} | {:.1} | {} | {} |",
                a.account,
                kind_str(a.kind),
                if a.fractional { "fractional" } else { "whole" },
                a.end_usd.round_dp(0),
                a.avg_cash_pct,
                a.return_pct,
                a.tracking_difference_pct,
                a.tracking_error_pct.map_or("-".to_string(), |x| format!("{x:.2}")),
                a.harvested_losses_usd.round_dp(0),
                a.realized_short_usd.round_dp(0),
                a.realized_long_usd.round_dp(0),
                a.turnover_pct,
                a.wash_sales,
                a.budget_breaches
            )?;
        }
        writeln!(out)?;
        self.print_footer(out, "- ")?;
        self.personal.markdown(&self.accounts, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_core::event::FillStatus;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn trade(date: &str, account: &str, kind: AccountKind, sec: &str, side: Side, lots: &[(u64, i64)]) -> Trade {
        let lots: Vec<TradeLot> = lots
            .iter()
            .map(|&(lot_id, realized)| TradeLot {
                lot_id,
                quantity: Decimal::ONE,
                cost_per_share: Decimal::TEN,
                acquired: d("2015-01-02"),
                holding_start: d("2015-01-02"),
                long_term: (side == Side::Sell).then_some(false),
                realized_usd: (side == Side::Sell).then(|| Decimal::from(realized)),
            })
            .collect();
        Trade {
            date: d(date),
            household: HouseholdId::new("h"),
            account: AccountId::new(account),
            account_kind: kind,
            order_id: OrderId(format!("o-{date}-{account}-{sec}")),
            reason: OrderReason::Drift,
            decided_on: d(date),
            security: SecurityId::new(sec),
            side,
            quantity: Decimal::ONE,
            price: Decimal::TEN,
            value_usd: Decimal::TEN,
            lots,
            realized_short_usd: Decimal::ZERO,
            realized_long_usd: Decimal::ZERO,
        }
    }

    #[test]
    fn a_loss_sale_with_a_buy_within_thirty_days_in_any_account_is_a_wash_sale() {
        use AccountKind::{Ira, Taxable};
        let groups: BTreeMap<SecurityId, String> = [("GOOG", "alphabet"), ("GOOGL", "alphabet")]
            .into_iter()
            .map(|(s, g)| (SecurityId::new(s), g.to_string()))
            .collect();
        let sale = trade("2015-03-02", "tx", Taxable, "AAPL", Side::Sell, &[(1, -50)]);
        // Given a loss sale, when the household buys the same name 30 days later in its IRA, then it is a wash sale.
        let ira_buy = trade("2015-04-01", "ira", Ira, "AAPL", Side::Buy, &[(7, 0)]);
        assert_eq!(wash_sales(&[sale.clone(), ira_buy.clone()], &groups).len(), 1);
        // Thirty-one days later it is not.
        let late = trade("2015-04-02", "ira", Ira, "AAPL", Side::Buy, &[(7, 0)]);
        assert!(wash_sales(&[sale.clone(), late], &groups).is_empty());
        // A buy before the sale counts too, unless it made the very lot sold.
        let before = trade("2015-02-10", "tx", Taxable, "AAPL", Side::Buy, &[(2, 0)]);
        assert_eq!(wash_sales(&[before.clone(), sale.clone()], &groups).len(), 1);
        let the_lot_sold = trade("2015-02-10", "tx", Taxable, "AAPL", Side::Buy, &[(1, 0)]);
        assert!(wash_sales(&[the_lot_sold, sale.clone()], &groups).is_empty());
        // A substantially identical share class counts; another name does not.
        let goog_sale = trade("2015-03-02", "tx", Taxable, "GOOG", Side::Sell, &[(1, -5)]);
        let googl = trade("2015-03-05", "tx", Taxable, "GOOGL", Side::Buy, &[(3, 0)]);
        assert_eq!(wash_sales(&[goog_sale.clone(), googl], &groups).len(), 1);
        let msft = trade("2015-03-05", "tx", Taxable, "MSFT", Side::Buy, &[(3, 0)]);
        assert!(wash_sales(&[goog_sale, msft], &groups).is_empty());
        // A sale at a gain, or a loss in an IRA, is never one.
        let gain = trade("2015-03-02", "tx", Taxable, "AAPL", Side::Sell, &[(1, 50)]);
        assert!(wash_sales(&[gain, ira_buy.clone()], &groups).is_empty());
        let ira_loss = trade("2015-03-02", "ira", Ira, "AAPL", Side::Sell, &[(1, -50)]);
        assert!(wash_sales(&[ira_loss, before], &groups).is_empty());
    }

    #[test]
    fn tracking_error_is_the_annualised_stdev_of_return_differences() {
        let index = [100.0, 101.0, 102.01, 103.0301];
        // An account that returns exactly the index tracks it perfectly.
        let same: Vec<f64> = index.iter().map(|v| v * 3.0).collect();
        assert!(tracking_error(&same, &index).unwrap().abs() < 1e-12);
        // Differences of +1% and -1% and 0: stdev 1%, annualised × √252.
        let acct = [100.0, 102.0, 102.0, 103.0];
        let diffs: Vec<f64> = daily_returns(&acct).iter().zip(daily_returns(&index)).map(|(a, i)| a - i).collect();
        let mean = diffs.iter().sum::<f64>() / 3.0;
        let sd = (diffs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let te = tracking_error(&acct, &index).unwrap();
        assert!((te - sd * 252f64.sqrt()).abs() < 1e-12 && te > 0.1, "{te}");
        assert_eq!(tracking_error(&acct[..2], &index[..2]), None);
    }

    #[test]
    fn realized_gains_come_from_the_lots_a_sell_relieved() {
        let lot = |id, q: i64, cost: i64, acquired: &str| Lot {
            lot_id: id,
            quantity: Decimal::from(q),
            cost_per_share: Decimal::from(cost),
            acquired: d(acquired),
            holding_start: d(acquired),
        };
        let before = vec![lot(1, 10, 50, "2013-03-01"), lot(2, 10, 80, "2014-06-02")];
        let after = vec![lot(2, 4, 80, "2014-06-02")];
        let fill = Fill {
            household: HouseholdId::new("h"),
            account: AccountId::new("a"),
            order_id: Some(OrderId::new("o-1")),
            security: SecurityId::new("X"),
            side: Side::Sell,
            status: FillStatus::Filled,
            quantity: Decimal::from(16),
            price: Decimal::from(70),
            trade_date: d("2014-09-02"),
            reason: None,
            lots: Vec::new(),
        };
        let info = OrderInfo { reason: OrderReason::Drift, decided_on: d("2014-08-29") };
        let t = trade_from_lots(&fill, &info, AccountKind::Taxable, &before, &after).unwrap();
        // Lot 1: long term, (70 − 50) × 10; lot 2: short term, (70 − 80) × 6.
        assert_eq!(t.realized_long_usd, Decimal::from(200));
        assert_eq!(t.realized_short_usd, Decimal::from(-60));
        assert_eq!(t.losses_usd(), Decimal::from(60));
        assert_eq!(t.lots.len(), 2);
        // A sell the lots do not account for is a broken invariant.
        let short = Fill { quantity: Decimal::from(17), ..fill };
        assert!(trade_from_lots(&short, &info, AccountKind::Taxable, &before, &after).is_err());
    }

    #[test]
    fn the_household_set_spans_sizes_share_modes_and_structures() {
        let hs = household_set();
        assert_eq!(hs.len(), 12);
        assert_eq!(hs.iter().map(|h| h.accounts.len()).sum::<usize>(), 18);
        for h in &hs {
            let total: Decimal = h.accounts.iter().map(|a| a.2).sum();
            assert_eq!(total, h.size_usd, "{}", h.id);
            assert_eq!(h.tax.annual_gain_budget_usd, Some(h.size_usd / Decimal::ONE_HUNDRED));
            let e = Envelope {
                event_id: "x".into(),
                producer: "p".into(),
                event_time: close_time_utc(d("2015-01-02")),
                schema_version: SCHEMA_VERSION_CURRENT,
                payload: Payload::HouseholdUpserted(household_upserted(h, true)),
            };
            e.validate().unwrap();
        }
    }

    #[test]
    fn quarters_start_on_their_first_trading_day() {
        let dates = [d("2015-03-30"), d("2015-03-31"), d("2015-04-01"), d("2015-04-02"), d("2015-07-01")];
        assert_eq!(quarter_starts(&dates).into_iter().collect::<Vec<_>>(), vec![2, 4]);
    }
}
