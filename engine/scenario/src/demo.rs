//! The demo scenario: about 490 real S&P 500 names, three models, a thousand
//! synthetic households, and a few weeks of real closing prices with the
//! events that make an overlay manager work (a model update, an ESG
//! downgrade, restriction edits, deposits and withdrawals).
//!
//! # Shape
//!
//! [`demo`] returns a [`Demo`]: one [`DemoDay`] per trading day, day 0 being
//! the setup day (the start date) and days `1..=price_days` the trading days
//! after it, plus a [`DatasetInfo`] summary. A driver feeds one day's events,
//! then may add its own custodian fills for the orders that day produced,
//! then feeds the next day. [`demo_events`] flattens the days for a driver
//! that needs no interleaving.
//!
//! # Days
//!
//! Day 0 (setup), in this order:
//! 1. `security_upserted` for every ticker with a close on the start date;
//!    share-class pairs (GOOG/GOOGL, FOX/FOXA, NWS/NWSA, DISCA/DISCK) share an
//!    `identical_group`; each security names two substitutes from its
//!    sub-industry (or sector), closest in size first.
//! 2. `esg_score_changed` for every security from the synthetic provider
//!    [`ESG_PROVIDER`] (scores drawn from the seed with a sector tilt; they
//!    are not real ratings).
//! 3. `price_tick` for every security at the start date's close.
//! 4. `model_published`: [`MODEL_SP500_CW`] v1 (direct index of every priced
//!    name, weighted by the dollar-volume proxy for market capitalisation,
//!    weights rounded down to 6 decimals so they sum to at most 1),
//!    [`MODEL_UMA_GROWTH`] (35 leaders of Information Technology, Consumer
//!    Discretionary and Health Care, 2% cash) and [`MODEL_UMA_INCOME`] (30
//!    leaders of Utilities, Consumer Staples, Real Estate, Energy and
//!    Telecommunication Services, 3% cash); UMA weights go as the square root
//!    of the proxy, rounded down to 4 decimals.
//! 5. `household_upserted` for each household (see [`DemoSpec`]).
//! 6. setup restrictions, inside `household_upserted`, for about 25% of households.
//! 7. `clock` market_close.
//!
//! Days `k = 1..=price_days`: `price_tick` for every security with a close
//! that day; on day 2 `sp500-cw` v2 (the v1 weights drifted by each name's
//! price change since the start date); on day 3 an ESG downgrade of the three
//! most widely held names (by dollars expected in them across all accounts)
//! to scores between 10 and 24, below every demo ESG minimum (25–35); on day 4
//! restriction edits (add, change or remove) for about 5% of households; on
//! days 1, 6, 11, … a deposit or withdrawal for about 3% of households; then
//! the `clock` market_close.
//!
//! # Time
//!
//! Every event of a day is stamped at that day's 16:00 America/New_York close
//! expressed in UTC ([`close_time_utc`]: 20:00Z while US daylight saving time
//! is in force, 21:00Z otherwise, by the US rules in force since 2007).
//! Reference data (securities, ESG, prices, models) carries exactly the close
//! time; household events (CRM and custodian) one minute after; the
//! scheduler's market_close clock five minutes after. So event times never
//! decrease, and ordering by time gives the same order as the list.
//!
//! # Onboarding order
//!
//! A new household's setup restrictions travel inside its `household_upserted`
//! (as they do at onboarding), so its first decision already honours them.
//!
//! # Determinism
//!
//! Everything is drawn from [`SplitMix64`] streams derived from `spec.seed`:
//! one stream per security (for its ESG score), one per household, one per
//! (day, household) for cash flows. Household `k` is the same whatever the
//! number of households. No clock, no OS randomness, no hash-map iteration;
//! event ids are `demo-<seq>` in list order.

use crate::data::{MarketData, SectorInfo};
use crate::rng::SplitMix64;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};
use overlay_core::event::{
    AccountKind, AccountSettings, AccountSpec, CashFlow, CashFlowKind, Clock, ClockKind, EditOp, Envelope, EsgMode,
    EsgScoreChanged, HouseholdUpserted, LotPolicy, ModelKind, ModelPublished, ModelWeight, OpeningLot, Payload,
    PriceTick, RestrictionEdited, RestrictionRule, RestrictionSpec, SecurityUpserted, Sleeve, TaxProfile,
    SCHEMA_VERSION_CURRENT,
};
use overlay_core::ids::{AccountId, HouseholdId, ModelId, RestrictionId, SecurityId};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::BTreeMap;

/// The cap-weighted direct index of every priced name.
pub const MODEL_SP500_CW: &str = "sp500-cw";
/// Growth sleeve of the UMA blend.
pub const MODEL_UMA_GROWTH: &str = "uma-growth";
/// Income sleeve of the UMA blend.
pub const MODEL_UMA_INCOME: &str = "uma-income";
/// The synthetic ESG provider: scores are generated from the seed, not real ratings.
pub const ESG_PROVIDER: &str = "demo-esg";

/// Producer names, one per source system.
pub const PRODUCER_SECURITY_MASTER: &str = "security-master";
pub const PRODUCER_MODEL_PROVIDER: &str = "model-provider";
pub const PRODUCER_PRICE_FEED: &str = "price-feed";
pub const PRODUCER_ESG_FEED: &str = "esg-feed";
pub const PRODUCER_CRM: &str = "crm";
pub const PRODUCER_CUSTODIAN: &str = "custodian";
pub const PRODUCER_SCHEDULER: &str = "scheduler";

/// Share classes that are substantially identical (one wash-sale group each).
pub const SHARE_CLASS_GROUPS: &[(&str, &[&str])] = &[
    ("alphabet", &["GOOG", "GOOGL"]),
    ("twenty-first-century-fox", &["FOX", "FOXA"]),
    ("news-corp", &["NWS", "NWSA"]),
    ("discovery-communications", &["DISCA", "DISCK"]),
];

/// Dates with known bad one-day prints in the shipped data (see data/README.md);
/// legacy lots are never acquired on them.
const KNOWN_BAD_PRINT_DATES: &[(i32, u32, u32)] = &[(2014, 10, 30)];

/// What to generate. `Default`: 1,000 households, 20 price days, seed 42,
/// start 2015-01-02.
///
/// Each household (`hh-00001`, …) has a taxable account (`<household>-tx`),
/// an IRA (`-ira`) in about 50% of households and a Roth (`-roth`) in about
/// 15%. Account sizes are log-uniform between $100,000 and $3,000,000. About
/// 55% of accounts follow `sp500-cw` alone; the rest blend `uma-growth` and
/// `uma-income` 50/50, 60/40 or 70/30. About 30% of accounts allow
/// fractional shares. Tax rates follow the 2015 federal brackets (richer
/// households in higher ones); about 20% of households have an annual gain
/// budget ($0 to $100,000). About 40% of households bring legacy lots into
/// their taxable account: 5–30 names picked in proportion to the cap proxy,
/// in 1–3 lots each, bought at the real close of real trading days before
/// the start date (so at gains and at losses); the rest of that account, and
/// every other account, is opening cash. About 25% of households get 1–3
/// restrictions: sector exclusions, ESG minimums (25, 30 or 35; divest or no
/// new buys), do-not-buy, do-not-hold, keep-legacy (of a legacy holding),
/// max-weight and substitute rules, about one in five scoped to the taxable
/// account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoSpec {
    /// Client households (each with 1–3 accounts).
    pub households: usize,
    /// Trading days after the setup day.
    pub price_days: usize,
    pub seed: u64,
    /// The setup day: this date, or the first trading day of the data on or after it.
    pub start_date: NaiveDate,
}

impl Default for DemoSpec {
    fn default() -> Self {
        Self {
            households: 1000,
            price_days: 20,
            seed: 42,
            start_date: NaiveDate::from_ymd_opt(2015, 1, 2).expect("valid date"),
        }
    }
}

/// One trading day of the scenario. Day 0 is the setup day.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoDay {
    pub day: usize,
    pub date: NaiveDate,
    pub events: Vec<Envelope>,
}

/// Summary of a generated scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetInfo {
    pub securities: usize,
    /// Distinct models (versions not counted).
    pub models: usize,
    pub households: usize,
    pub accounts: usize,
    pub households_with_legacy_lots: usize,
    pub opening_lots: usize,
    /// Restrictions in force after the setup day.
    pub restrictions: usize,
    /// Trading days including the setup day.
    pub trading_days: usize,
    pub start_date: NaiveDate,
    pub end_date: NaiveDate,
    pub events: usize,
}

/// A generated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Demo {
    pub days: Vec<DemoDay>,
    pub info: DatasetInfo,
}

impl Demo {
    /// Every event, in order.
    pub fn events(&self) -> impl Iterator<Item = &Envelope> {
        self.days.iter().flat_map(|d| d.events.iter())
    }

    pub fn into_events(self) -> Vec<Envelope> {
        self.days.into_iter().flat_map(|d| d.events).collect()
    }
}

/// Why a scenario could not be generated from the given data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DemoError {
    #[error("no trading day on or after {start} in the price data (its last day is {last})")]
    StartAfterData { start: NaiveDate, last: NaiveDate },
    #[error("{requested} price days were asked for after {start}, but the price data has only {available}")]
    NotEnoughDays { start: NaiveDate, requested: usize, available: usize },
    #[error("the price data has no trading days")]
    NoPriceData,
    #[error("no security has a price on {date}")]
    NoPricedSecurities { date: NaiveDate },
}

/// Generates the demo scenario (see the module documentation).
pub fn demo(spec: &DemoSpec, data: &MarketData) -> Result<Demo, DemoError> {
    Generator::new(spec, data)?.run()
}

/// The demo scenario as one list of events.
pub fn demo_events(spec: &DemoSpec, data: &MarketData) -> Result<Vec<Envelope>, DemoError> {
    Ok(demo(spec, data)?.into_events())
}

/// 16:00 America/New_York on `date`, in UTC: 20:00Z under US daylight saving
/// time (second Sunday of March to first Sunday of November, the rules in
/// force since 2007), 21:00Z otherwise.
pub fn close_time_utc(date: NaiveDate) -> DateTime<Utc> {
    let y = date.year();
    let dst_start = nth_sunday(y, 3, 2);
    let dst_end = nth_sunday(y, 11, 1);
    let hour = if date >= dst_start && date < dst_end { 20 } else { 21 };
    date.and_hms_opt(hour, 0, 0).expect("valid time").and_utc()
}

fn nth_sunday(year: i32, month: u32, n: u8) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, n).expect("every month has its first two Sundays")
}

// ---------------------------------------------------------------------------
// Stream labels for SplitMix64::derive.

const STREAM_ESG: u64 = 1;
const STREAM_HOUSEHOLD: u64 = 2;
const STREAM_DOWNGRADE: u64 = 3;
const STREAM_EDIT: u64 = 4;
const STREAM_CASH: u64 = 5;

/// FNV-1a, to turn a ticker into a stream label.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

// ---------------------------------------------------------------------------
// The universe of securities priced on the start date.

struct Sec {
    id: SecurityId,
    /// Column in the price panel.
    col: usize,
    info: SectorInfo,
    /// Market-cap proxy (average dollar volume).
    cap: Decimal,
    group: Option<&'static str>,
    start_price: Decimal,
    /// Panel rows before the start date on which a legacy lot may have been bought.
    acquisition_days: Vec<usize>,
}

struct Household {
    id: HouseholdId,
    /// (account, kind, opening value in dollars)
    accounts: Vec<(AccountId, AccountKind, Decimal)>,
    /// Universe indices of legacy holdings.
    legacy: Vec<usize>,
    restrictions: Vec<ActiveRestriction>,
    next_restriction: u32,
}

#[derive(Clone)]
struct ActiveRestriction {
    id: u32,
    rule: RestrictionRule,
    account: Option<AccountId>,
}

struct Generator<'a> {
    spec: &'a DemoSpec,
    data: &'a MarketData,
    /// Panel row of the setup day.
    start: usize,
    secs: Vec<Sec>,
    index: BTreeMap<SecurityId, usize>,
    cap_f64: Vec<f64>,
    seq: u64,
}

impl<'a> Generator<'a> {
    fn new(spec: &'a DemoSpec, data: &'a MarketData) -> Result<Self, DemoError> {
        let panel = &data.prices;
        let Some(&last) = panel.dates.last() else {
            return Err(DemoError::NoPriceData);
        };
        let start = panel
            .first_on_or_after(spec.start_date)
            .ok_or(DemoError::StartAfterData { start: spec.start_date, last })?;
        let available = panel.dates.len() - 1 - start;
        if spec.price_days > available {
            return Err(DemoError::NotEnoughDays { start: panel.dates[start], requested: spec.price_days, available });
        }

        // Median proxy for tickers the dollar-volume file lacks.
        let mut known: Vec<Decimal> = (0..panel.tickers.len())
            .filter(|&c| panel.close(start, c).is_some())
            .filter_map(|c| data.dollar_volume.get(&panel.tickers[c]).map(|d| d.avg_dollar_volume))
            .collect();
        known.sort();
        let median = known.get(known.len() / 2).copied().unwrap_or(Decimal::ONE);

        let mut secs: Vec<Sec> = Vec::new();
        for (col, ticker) in panel.tickers.iter().enumerate() {
            let Some(start_price) = panel.close(start, col) else {
                continue;
            };
            let info = data.sectors.get(ticker).cloned().unwrap_or_else(|| SectorInfo {
                name: ticker.as_str().to_string(),
                sector: "Unclassified".to_string(),
                sub_industry: String::new(),
            });
            let cap = data.dollar_volume.get(ticker).map_or(median, |d| d.avg_dollar_volume);
            let group =
                SHARE_CLASS_GROUPS.iter().find(|(_, members)| members.contains(&ticker.as_str())).map(|(g, _)| *g);
            secs.push(Sec {
                id: ticker.clone(),
                col,
                info,
                cap,
                group,
                start_price,
                acquisition_days: acquisition_days(data, col, start),
            });
        }
        if secs.is_empty() {
            return Err(DemoError::NoPricedSecurities { date: panel.dates[start] });
        }
        secs.sort_by(|a, b| a.id.cmp(&b.id));
        let index = secs.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect();
        let cap_f64 = secs.iter().map(|s| s.cap.to_f64().unwrap_or(0.0)).collect();
        Ok(Self { spec, data, start, secs, index, cap_f64, seq: 0 })
    }

    fn envelope(&mut self, producer: &str, time: DateTime<Utc>, payload: Payload) -> Envelope {
        self.seq += 1;
        Envelope {
            event_id: format!("demo-{}", self.seq),
            producer: producer.to_string(),
            event_time: time,
            schema_version: SCHEMA_VERSION_CURRENT,
            payload,
        }
    }

    fn date(&self, day: usize) -> NaiveDate {
        self.data.prices.dates[self.start + day]
    }

    fn run(mut self) -> Result<Demo, DemoError> {
        let spec = self.spec;
        let mut days = Vec::with_capacity(spec.price_days + 1);

        // ---- Day 0: setup.
        let date0 = self.date(0);
        let t0 = close_time_utc(date0);
        let mut ev = Vec::new();
        for i in 0..self.secs.len() {
            let payload = Payload::SecurityUpserted(self.security_upserted(i));
            ev.push(self.envelope(PRODUCER_SECURITY_MASTER, t0, payload));
        }
        let esg = self.initial_esg();
        for (i, score) in esg.iter().enumerate() {
            let payload = Payload::EsgScoreChanged(EsgScoreChanged {
                security: self.secs[i].id.clone(),
                provider: ESG_PROVIDER.to_string(),
                score: *score,
                as_of: t0,
            });
            ev.push(self.envelope(PRODUCER_ESG_FEED, t0, payload));
        }
        self.push_prices(&mut ev, 0);

        let cw_caps: Vec<(usize, Decimal)> = self.secs.iter().enumerate().map(|(i, s)| (i, s.cap)).collect();
        let cw_v1 = weights_rounded_down(&self.secs, &cw_caps, Decimal::ONE, 6);
        let growth = self.uma_model(
            &["Information Technology", "Consumer Discretionary", "Health Care"],
            35,
            Decimal::new(98, 2),
        );
        let income = self.uma_model(
            &["Utilities", "Consumer Staples", "Real Estate", "Energy", "Telecommunication Services"],
            30,
            Decimal::new(97, 2),
        );
        for (model, kind, weights) in [
            (MODEL_SP500_CW, ModelKind::DirectIndex, &cw_v1),
            (MODEL_UMA_GROWTH, ModelKind::Standard, &growth),
            (MODEL_UMA_INCOME, ModelKind::Standard, &income),
        ] {
            let payload = self.model_published(model, 1, kind, weights);
            ev.push(self.envelope(PRODUCER_MODEL_PROVIDER, t0, payload));
        }

        let th0 = t0 + Duration::minutes(1);
        let mut households = Vec::with_capacity(spec.households);
        // Where each household's upsert is in `ev`: its setup restrictions join it.
        let mut household_event = Vec::with_capacity(spec.households);
        // Dollars expected in each security across all accounts ("widely held").
        let mut held_dollars = vec![0.0f64; self.secs.len()];
        let mut model_dollars = [0.0f64; 3];
        let mut opening_lots = 0usize;
        let mut accounts = 0usize;
        for h in 0..spec.households {
            let (payload, hh, lots_value) = self.household(h as u64);
            let Payload::HouseholdUpserted(ref up) = payload else { unreachable!() };
            for a in &up.accounts {
                accounts += 1;
                opening_lots += a.opening_lots.len();
                let value = hh.accounts.iter().find(|x| x.0 == a.account).map_or(0.0, |x| dec_f64(x.2));
                for s in &a.sleeves {
                    let m = match s.model.as_str() {
                        MODEL_SP500_CW => 0,
                        MODEL_UMA_GROWTH => 1,
                        _ => 2,
                    };
                    model_dollars[m] += value * dec_f64(s.percent);
                }
            }
            for (i, v) in lots_value {
                held_dollars[i] += v;
            }
            ev.push(self.envelope(PRODUCER_CRM, th0, payload));
            household_event.push(ev.len() - 1);
            households.push(hh);
        }
        for (m, weights) in [&cw_v1, &growth, &income].into_iter().enumerate() {
            for w in weights {
                held_dollars[self.index[&w.security]] += model_dollars[m] * dec_f64(w.weight);
            }
        }
        let mut restrictions = 0usize;
        for (h, hh) in households.iter_mut().enumerate() {
            let mut rng = SplitMix64::derive(spec.seed, &[STREAM_HOUSEHOLD, h as u64, 1]);
            if !rng.chance(0.25) {
                continue;
            }
            let n = match rng.below(100) {
                0..=69 => 1,
                70..=94 => 2,
                _ => 3,
            };
            for _ in 0..n {
                if let Some((rule, account)) = self.random_rule(&mut rng, hh) {
                    let id = hh.next_restriction;
                    hh.next_restriction += 1;
                    hh.restrictions.push(ActiveRestriction { id, rule: rule.clone(), account: account.clone() });
                    if let Payload::HouseholdUpserted(up) = &mut ev[household_event[h]].payload {
                        up.restrictions.push(RestrictionSpec {
                            restriction_id: RestrictionId::new(format!("r{id}")),
                            rule,
                            account,
                            effective: th0,
                        });
                    }
                    restrictions += 1;
                }
            }
        }
        self.push_clock(&mut ev, 0);
        days.push(DemoDay { day: 0, date: date0, events: ev });

        // The three most widely held names with a score that a downgrade changes.
        let mut ranked: Vec<usize> = (0..self.secs.len()).filter(|&i| esg[i] >= Decimal::new(40, 0)).collect();
        ranked.sort_by(|&a, &b| held_dollars[b].total_cmp(&held_dollars[a]).then(a.cmp(&b)));
        let downgraded: Vec<usize> = ranked.into_iter().take(3).collect();

        // ---- Days 1..=price_days.
        for k in 1..=spec.price_days {
            let date = self.date(k);
            let t = close_time_utc(date);
            let th = t + Duration::minutes(1);
            let mut ev = Vec::new();
            self.push_prices(&mut ev, k);
            if k == 2 {
                let drifted: Vec<(usize, Decimal)> = cw_v1
                    .iter()
                    .map(|w| {
                        let i = self.index[&w.security];
                        let s = &self.secs[i];
                        let now = self.last_close(s.col, self.start + k).unwrap_or(s.start_price);
                        (i, s.cap * now / s.start_price)
                    })
                    .collect();
                let cw_v2 = weights_rounded_down(&self.secs, &drifted, Decimal::ONE, 6);
                let payload = self.model_published(MODEL_SP500_CW, 2, ModelKind::DirectIndex, &cw_v2);
                ev.push(self.envelope(PRODUCER_MODEL_PROVIDER, t, payload));
            }
            if k == 3 {
                let mut rng = SplitMix64::derive(spec.seed, &[STREAM_DOWNGRADE]);
                for &i in &downgraded {
                    let payload = Payload::EsgScoreChanged(EsgScoreChanged {
                        security: self.secs[i].id.clone(),
                        provider: ESG_PROVIDER.to_string(),
                        score: Decimal::new(rng.range_i64(100, 240), 1),
                        as_of: t,
                    });
                    ev.push(self.envelope(PRODUCER_ESG_FEED, t, payload));
                }
            }
            for (h, hh) in households.iter_mut().enumerate() {
                if k == 4 {
                    let mut rng = SplitMix64::derive(spec.seed, &[STREAM_EDIT, h as u64]);
                    if rng.chance(0.05) {
                        if let Some(payload) = self.edit_restriction(&mut rng, hh, th) {
                            ev.push(self.envelope(PRODUCER_CRM, th, payload));
                        }
                    }
                }
                if k % 5 == 1 {
                    let mut rng = SplitMix64::derive(spec.seed, &[STREAM_CASH, k as u64, h as u64]);
                    if rng.chance(0.03) {
                        let payload = cash_flow(&mut rng, hh);
                        ev.push(self.envelope(PRODUCER_CUSTODIAN, th, payload));
                    }
                }
            }
            self.push_clock(&mut ev, k);
            days.push(DemoDay { day: k, date, events: ev });
        }

        let info = DatasetInfo {
            securities: self.secs.len(),
            models: 3,
            households: households.len(),
            accounts,
            households_with_legacy_lots: households.iter().filter(|h| !h.legacy.is_empty()).count(),
            opening_lots,
            restrictions,
            trading_days: days.len(),
            start_date: date0,
            end_date: days.last().map_or(date0, |d| d.date),
            events: days.iter().map(|d| d.events.len()).sum(),
        };
        Ok(Demo { days, info })
    }

    fn last_close(&self, col: usize, row: usize) -> Option<Decimal> {
        (0..=row).rev().find_map(|r| self.data.prices.close(r, col))
    }

    fn push_prices(&mut self, ev: &mut Vec<Envelope>, day: usize) {
        let t = close_time_utc(self.date(day));
        for i in 0..self.secs.len() {
            let Some(price) = self.data.prices.close(self.start + day, self.secs[i].col) else {
                continue;
            };
            let payload = Payload::PriceTick(PriceTick { security: self.secs[i].id.clone(), price, as_of: t });
            ev.push(self.envelope(PRODUCER_PRICE_FEED, t, payload));
        }
    }

    fn push_clock(&mut self, ev: &mut Vec<Envelope>, day: usize) {
        let date = self.date(day);
        let payload = Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date: date });
        ev.push(self.envelope(PRODUCER_SCHEDULER, close_time_utc(date) + Duration::minutes(5), payload));
    }

    fn security_upserted(&self, i: usize) -> SecurityUpserted {
        let s = &self.secs[i];
        SecurityUpserted {
            security: s.id.clone(),
            name: s.info.name.clone(),
            sector: s.info.sector.clone(),
            sub_industry: s.info.sub_industry.clone(),
            identical_group: s.group.map(str::to_string),
            substitutes: self.substitutes(i),
            attributes: Default::default(),
        }
    }

    /// Two names from the same sub-industry (then sector), closest in size
    /// first, never a substantially identical share class.
    fn substitutes(&self, i: usize) -> Vec<SecurityId> {
        let s = &self.secs[i];
        let eligible = |j: usize| j != i && (s.group.is_none() || self.secs[j].group != s.group);
        let distance = |j: usize| {
            let (a, b) = (s.cap, self.secs[j].cap);
            if a > b {
                a / b
            } else {
                b / a
            }
        };
        let mut out: Vec<usize> = Vec::with_capacity(2);
        let tiers: [&dyn Fn(&Sec) -> bool; 2] = [
            &|o: &Sec| {
                !s.info.sub_industry.is_empty()
                    && o.info.sub_industry == s.info.sub_industry
                    && o.info.sector == s.info.sector
            },
            &|o: &Sec| o.info.sector == s.info.sector,
        ];
        for tier in tiers {
            let mut candidates: Vec<(Decimal, usize)> = (0..self.secs.len())
                .filter(|&j| eligible(j) && !out.contains(&j) && tier(&self.secs[j]))
                .map(|j| (distance(j), j))
                .collect();
            candidates.sort();
            out.extend(candidates.into_iter().map(|(_, j)| j).take(2 - out.len()));
            if out.len() == 2 {
                break;
            }
        }
        out.into_iter().map(|j| self.secs[j].id.clone()).collect()
    }

    /// Synthetic scores, 0–100 with one decimal: a sector base plus noise.
    fn initial_esg(&self) -> Vec<Decimal> {
        self.secs
            .iter()
            .map(|s| {
                let base: i64 = match s.info.sector.as_str() {
                    "Energy" => 380,
                    "Utilities" | "Materials" => 480,
                    "Information Technology" | "Real Estate" | "Health Care" => 640,
                    _ => 570,
                };
                let mut rng = SplitMix64::derive(self.spec.seed, &[STREAM_ESG, fnv1a(s.id.as_str())]);
                let tenths = (base + rng.range_i64(-320, 320)).clamp(0, 1000);
                Decimal::new(tenths, 1)
            })
            .collect()
    }

    /// The `count` largest names of `sectors` by the cap proxy (one per
    /// share-class group), weighted by the square root of the proxy, summing
    /// to at most `invested` (the rest is cash).
    fn uma_model(&self, sectors: &[&str], count: usize, invested: Decimal) -> Vec<ModelWeight> {
        let mut candidates: Vec<usize> =
            (0..self.secs.len()).filter(|&i| sectors.contains(&self.secs[i].info.sector.as_str())).collect();
        candidates.sort_by(|&a, &b| self.secs[b].cap.cmp(&self.secs[a].cap).then(a.cmp(&b)));
        let mut chosen: Vec<usize> = Vec::with_capacity(count);
        for i in candidates {
            if chosen.len() == count {
                break;
            }
            let g = self.secs[i].group;
            if g.is_some() && chosen.iter().any(|&j| self.secs[j].group == g) {
                continue;
            }
            chosen.push(i);
        }
        let caps: Vec<(usize, Decimal)> = chosen
            .into_iter()
            .map(|i| {
                let dollars = self.secs[i].cap.trunc().to_u64().unwrap_or(u64::MAX);
                (i, Decimal::from(dollars.isqrt()))
            })
            .collect();
        let mut w = weights_rounded_down(&self.secs, &caps, invested, 4);
        w.sort_by(|a, b| a.security.cmp(&b.security));
        w
    }

    fn model_published(&self, model: &str, version: u64, kind: ModelKind, weights: &[ModelWeight]) -> Payload {
        Payload::ModelPublished(ModelPublished { model: ModelId::new(model), version, kind, weights: weights.to_vec() })
    }

    /// Household `h`: the event, the state the story needs, and the legacy
    /// holdings' market value by security.
    fn household(&self, h: u64) -> (Payload, Household, Vec<(usize, f64)>) {
        let mut rng = SplitMix64::derive(self.spec.seed, &[STREAM_HOUSEHOLD, h, 0]);
        let id = HouseholdId::new(format!("hh-{:05}", h + 1));
        let mut kinds = vec![AccountKind::Taxable];
        if rng.chance(0.5) {
            kinds.push(AccountKind::Ira);
        }
        if rng.chance(0.15) {
            kinds.push(AccountKind::Roth);
        }
        let sizes: Vec<Decimal> = kinds.iter().map(|_| log_spread_size(&mut rng)).collect();
        let total: Decimal = sizes.iter().sum();

        // Federal 2015 brackets (short-term = ordinary rate; the top two
        // include the 3.8% net investment income tax), richer households
        // in higher brackets.
        const BRACKETS: [(i64, i64); 5] = [(280, 150), (330, 150), (350, 150), (396, 200), (434, 238)];
        let base: i64 = match total.to_i64().unwrap_or(0) {
            ..=299_999 => 0,
            300_000..=749_999 => 1,
            750_000..=1_499_999 => 2,
            1_500_000..=2_999_999 => 3,
            _ => 4,
        };
        let (st, lt) = BRACKETS[(base + rng.range_i64(-1, 1)).clamp(0, 4) as usize];
        let budget = rng.chance(0.2).then(|| {
            let choices = [0, 5_000, 10_000, 25_000, 50_000, 100_000];
            Decimal::from(choices[rng.index(choices.len())])
        });
        let tax = TaxProfile {
            short_term_rate: Decimal::new(st, 3),
            long_term_rate: Decimal::new(lt, 3),
            annual_gain_budget_usd: budget,
            ..TaxProfile::default()
        };
        let legacy = rng.chance(0.4);

        let mut specs = Vec::with_capacity(kinds.len());
        let mut state_accounts = Vec::with_capacity(kinds.len());
        let mut held = Vec::new();
        let mut lots_value = Vec::new();
        for (kind, size) in kinds.iter().zip(&sizes) {
            let suffix = match kind {
                AccountKind::Taxable => "tx",
                AccountKind::Ira => "ira",
                AccountKind::Roth => "roth",
            };
            let account = AccountId::new(format!("{}-{suffix}", id.as_str()));
            let sleeves = if rng.chance(0.55) {
                vec![Sleeve { model: ModelId::new(MODEL_SP500_CW), percent: Decimal::ONE }]
            } else {
                let growth = [Decimal::new(6, 1), Decimal::new(5, 1), Decimal::new(7, 1)][rng.index(3)];
                vec![
                    Sleeve { model: ModelId::new(MODEL_UMA_GROWTH), percent: growth },
                    Sleeve { model: ModelId::new(MODEL_UMA_INCOME), percent: Decimal::ONE - growth },
                ]
            };
            let fractional = rng.chance(0.3);
            let lot_policy = if kind.is_taxable() {
                match rng.below(20) {
                    0..=16 => LotPolicy::MinTax,
                    17..=18 => LotPolicy::Hifo,
                    _ => LotPolicy::Fifo,
                }
            } else {
                LotPolicy::Fifo
            };
            let settings = AccountSettings {
                fractional,
                min_trade_usd: Decimal::from(if fractional { 25 } else { 100 }),
                cash_reserve_pct: [Decimal::new(1, 2), Decimal::new(2, 2), Decimal::new(5, 3)][rng.index(3)],
                lot_policy,
                ..AccountSettings::default()
            };
            let mut opening_cash = *size;
            let mut opening_lots = Vec::new();
            if legacy && kind.is_taxable() {
                let invested_pct = rng.range_i64(60, 100);
                let target = dec_f64(*size) * invested_pct as f64 / 100.0;
                let (lots, names, value) = self.legacy_lots(&mut rng, target);
                opening_lots = lots;
                held = names;
                let mut by_sec: BTreeMap<usize, f64> = BTreeMap::new();
                for l in &opening_lots {
                    let i = self.index[&l.security];
                    *by_sec.entry(i).or_default() += dec_f64(l.quantity * self.secs[i].start_price);
                }
                lots_value = by_sec.into_iter().collect();
                opening_cash = (*size - value).max(Decimal::ZERO).round_dp(2);
            }
            state_accounts.push((account.clone(), *kind, *size));
            specs.push(AccountSpec { account, kind: *kind, sleeves, settings, opening_cash, opening_lots });
        }
        let payload = Payload::HouseholdUpserted(HouseholdUpserted {
            household: id.clone(),
            tax,
            accounts: specs,
            restrictions: Vec::new(),
        });
        let hh =
            Household { id, accounts: state_accounts, legacy: held, restrictions: Vec::new(), next_restriction: 1 };
        (payload, hh, lots_value)
    }

    /// 5–30 names picked in proportion to the cap proxy, worth about
    /// `target` dollars at the start date, each in 1–3 lots bought at the
    /// real close of real earlier trading days. Returns the lots, the names
    /// and their value at the start date.
    fn legacy_lots(&self, rng: &mut SplitMix64, target: f64) -> (Vec<OpeningLot>, Vec<usize>, Decimal) {
        let mut weights: Vec<f64> = self
            .secs
            .iter()
            .enumerate()
            .map(|(i, s)| if s.acquisition_days.is_empty() { 0.0 } else { self.cap_f64[i] })
            .collect();
        let n = rng.range_i64(5, 30) as usize;
        let mut names = Vec::with_capacity(n);
        while names.len() < n {
            let Some(i) = rng.weighted_index(&weights) else {
                break;
            };
            weights[i] = 0.0;
            names.push(i);
        }
        names.sort_unstable();
        let shares: Vec<f64> = names.iter().map(|_| 0.5 + rng.next_f64()).collect();
        let share_sum: f64 = shares.iter().sum();
        let mut lots = Vec::new();
        let mut value = Decimal::ZERO;
        for (&i, share) in names.iter().zip(&shares) {
            let s = &self.secs[i];
            let n_lots = match rng.below(20) {
                0..=13 => 1,
                14..=18 => 2,
                _ => 3,
            };
            let dollars = target * share / share_sum / n_lots as f64;
            let price = dec_f64(s.start_price);
            let mut picked: Vec<usize> =
                (0..n_lots).map(|_| *rng.choose(&s.acquisition_days).expect("non-empty")).collect();
            picked.sort_unstable();
            picked.dedup();
            for row in picked {
                let quantity = Decimal::from(((dollars / price).floor() as i64).max(1));
                let cost = self.data.prices.close(row, s.col).expect("acquisition days have a close");
                value += quantity * s.start_price;
                lots.push(OpeningLot {
                    security: s.id.clone(),
                    quantity,
                    cost_per_share: cost,
                    acquired: self.data.prices.dates[row],
                });
            }
        }
        (lots, names, value)
    }

    /// A rule this household does not have yet, maybe scoped to one account.
    fn random_rule(&self, rng: &mut SplitMix64, hh: &Household) -> Option<(RestrictionRule, Option<AccountId>)> {
        for _attempt in 0..8 {
            let roll = rng.below(100);
            let Some(rule) = self.rule_of_kind(rng, hh, roll) else {
                continue;
            };
            if hh.restrictions.iter().any(|r| same_target(&r.rule, &rule)) {
                continue;
            }
            let account = rng.chance(0.2).then(|| hh.accounts[0].0.clone());
            return Some((rule, account));
        }
        None
    }

    /// A rule of the kind picked by `roll` (0..100).
    fn rule_of_kind(&self, rng: &mut SplitMix64, hh: &Household, roll: u64) -> Option<RestrictionRule> {
        let any_name = |rng: &mut SplitMix64| rng.weighted_index(&self.cap_f64).expect("non-empty universe");
        Some(match roll {
            0..=24 => {
                let sectors = ["Energy", "Energy", "Energy", "Utilities", "Materials", "Financials"];
                RestrictionRule::SectorExclusion { sector: sectors[rng.index(sectors.len())].to_string() }
            }
            25..=49 => RestrictionRule::EsgMinimum {
                min_score: Decimal::from(25 + 5 * rng.range_i64(0, 2)),
                mode: if rng.chance(0.5) { EsgMode::Divest } else { EsgMode::NoNewBuys },
            },
            50..=64 => RestrictionRule::DoNotBuy { security: self.secs[any_name(rng)].id.clone() },
            65..=74 => {
                let i = match rng.choose(&hh.legacy) {
                    Some(&i) if rng.chance(0.5) => i,
                    _ => any_name(rng),
                };
                RestrictionRule::DoNotHold { security: self.secs[i].id.clone() }
            }
            75..=89 => RestrictionRule::KeepLegacy { security: self.secs[*rng.choose(&hh.legacy)?].id.clone() },
            90..=94 => RestrictionRule::MaxWeight {
                security: self.secs[any_name(rng)].id.clone(),
                max_weight: Decimal::new(rng.range_i64(2, 5), 2),
            },
            _ => {
                let i = any_name(rng);
                let substitute = self.substitutes(i).into_iter().next()?;
                RestrictionRule::Substitute { security: self.secs[i].id.clone(), substitute }
            }
        })
    }

    /// Day 4: change or remove an existing restriction, or add one.
    fn edit_restriction(&self, rng: &mut SplitMix64, hh: &mut Household, time: DateTime<Utc>) -> Option<Payload> {
        if !hh.restrictions.is_empty() && rng.chance(0.6) {
            let k = rng.index(hh.restrictions.len());
            let current = hh.restrictions[k].clone();
            if rng.chance(0.55) {
                let rule = self.changed_rule(rng, hh, &current.rule);
                hh.restrictions[k].rule = rule.clone();
                return Some(restriction(hh, current.id, EditOp::Change, Some(rule), current.account, time));
            }
            hh.restrictions.remove(k);
            return Some(restriction(hh, current.id, EditOp::Remove, None, current.account, time));
        }
        let (rule, account) = self.random_rule(rng, hh)?;
        let id = hh.next_restriction;
        hh.next_restriction += 1;
        hh.restrictions.push(ActiveRestriction { id, rule: rule.clone(), account: account.clone() });
        Some(restriction(hh, id, EditOp::Add, Some(rule), account, time))
    }

    /// A different rule of the same kind (a tighter ESG minimum, another sector, another name).
    fn changed_rule(&self, rng: &mut SplitMix64, hh: &Household, rule: &RestrictionRule) -> RestrictionRule {
        match rule {
            RestrictionRule::EsgMinimum { min_score, mode } => RestrictionRule::EsgMinimum {
                min_score: (*min_score + Decimal::from(10)).min(Decimal::ONE_HUNDRED),
                mode: *mode,
            },
            RestrictionRule::SectorExclusion { sector } => RestrictionRule::SectorExclusion {
                sector: if sector == "Energy" { "Utilities" } else { "Energy" }.to_string(),
            },
            RestrictionRule::MaxWeight { security, max_weight } => RestrictionRule::MaxWeight {
                security: security.clone(),
                max_weight: (*max_weight / Decimal::TWO).round_dp(4),
            },
            other => {
                let roll = match other {
                    RestrictionRule::DoNotBuy { .. } => 50,
                    RestrictionRule::DoNotHold { .. } => 65,
                    RestrictionRule::KeepLegacy { .. } => 75,
                    _ => 95,
                };
                for _ in 0..8 {
                    if let Some(r) = self.rule_of_kind(rng, hh, roll) {
                        if &r != other {
                            return r;
                        }
                    }
                }
                other.clone()
            }
        }
    }
}

/// Rows before `start` on which a legacy lot of column `col` may have been
/// bought: rows with a close, not a known or apparent bad print (a move of 4%
/// or more that reverses the next day), and after the last one-day move of
/// -35% or +50% (an unadjusted spin-off, split or share dividend, which would
/// make the lot look like a loss or gain it is not).
fn acquisition_days(data: &MarketData, col: usize, start: usize) -> Vec<usize> {
    let p = &data.prices;
    let series: Vec<(usize, Decimal)> = (0..start).filter_map(|r| p.close(r, col).map(|c| (r, c))).collect();
    let bad_dates: Vec<NaiveDate> =
        KNOWN_BAD_PRINT_DATES.iter().filter_map(|&(y, m, d)| NaiveDate::from_ymd_opt(y, m, d)).collect();
    let up = Decimal::new(104, 2);
    let down = Decimal::new(96, 2);
    let mut days = Vec::with_capacity(series.len());
    for (k, &(row, close)) in series.iter().enumerate() {
        if k > 0 {
            let prev = series[k - 1].1;
            if close < prev * Decimal::new(65, 2) || close > prev * Decimal::new(15, 1) {
                days.clear();
            }
        }
        if bad_dates.contains(&p.dates[row]) {
            continue;
        }
        if k > 0 && k + 1 < series.len() {
            let (prev, next) = (series[k - 1].1, series[k + 1].1);
            let spike = close > prev * up && next < close * down;
            let dip = close < prev * down && next > close * up;
            if spike || dip {
                continue;
            }
        }
        days.push(row);
    }
    days
}

/// [`cap_weights`] over universe indices.
fn weights_rounded_down(secs: &[Sec], caps: &[(usize, Decimal)], invested: Decimal, dp: u32) -> Vec<ModelWeight> {
    let by_id: Vec<(SecurityId, Decimal)> = caps.iter().map(|&(i, cap)| (secs[i].id.clone(), cap)).collect();
    cap_weights(&by_id, invested, dp)
}

/// Model weights in proportion to a size measure: `invested × cap / Σcap`
/// for each `(security, cap)`, rounded down to `dp` decimals (so the weights
/// never sum above `invested`); zero weights are dropped. Ordered as given.
/// The demo's cap-weighted index is this over the dollar-volume proxy; a
/// backtest republishes it over the index's drifted values.
pub fn cap_weights(caps: &[(SecurityId, Decimal)], invested: Decimal, dp: u32) -> Vec<ModelWeight> {
    let total: Decimal = caps.iter().map(|c| c.1).sum();
    if total <= Decimal::ZERO {
        return Vec::new();
    }
    let mut weights: Vec<ModelWeight> = caps
        .iter()
        .map(|(id, cap)| ModelWeight {
            security: id.clone(),
            weight: (invested * *cap / total).round_dp_with_strategy(dp, RoundingStrategy::ToZero),
        })
        .filter(|w| w.weight > Decimal::ZERO)
        .collect();
    // Rounding down already keeps the sum at or under `invested`; this guards
    // the 28-digit division against ever tipping it over.
    let step = Decimal::new(1, dp);
    while weights.iter().map(|w| w.weight).sum::<Decimal>() > invested {
        let largest = (0..weights.len()).max_by(|&a, &b| weights[a].weight.cmp(&weights[b].weight).then(b.cmp(&a)));
        let Some(k) = largest else { break };
        weights[k].weight -= step;
    }
    weights
}

fn restriction(
    hh: &Household,
    id: u32,
    op: EditOp,
    rule: Option<RestrictionRule>,
    account: Option<AccountId>,
    effective: DateTime<Utc>,
) -> Payload {
    Payload::RestrictionEdited(RestrictionEdited {
        household: hh.id.clone(),
        restriction_id: RestrictionId::new(format!("r{id}")),
        op,
        rule,
        account,
        effective,
    })
}

fn cash_flow(rng: &mut SplitMix64, hh: &Household) -> Payload {
    let (account, _, size) = &hh.accounts[rng.index(hh.accounts.len())];
    let deposit = rng.chance(0.5);
    let pct = if deposit { rng.range_i64(1, 10) } else { rng.range_i64(1, 8) };
    let amount = (*size * Decimal::new(pct, 2) / Decimal::ONE_HUNDRED).round() * Decimal::ONE_HUNDRED;
    Payload::CashFlow(CashFlow {
        household: hh.id.clone(),
        account: account.clone(),
        kind: if deposit { CashFlowKind::Deposit } else { CashFlowKind::Withdrawal },
        amount: amount.max(Decimal::ONE_HUNDRED),
    })
}

/// Two rules aim at the same thing (so a household gets at most one of each).
fn same_target(a: &RestrictionRule, b: &RestrictionRule) -> bool {
    use RestrictionRule::*;
    let security = |r: &RestrictionRule| match r {
        DoNotBuy { security } | DoNotHold { security } | KeepLegacy { security } => Some(security.clone()),
        MaxWeight { security, .. } | Substitute { security, .. } => Some(security.clone()),
        _ => None,
    };
    match (a, b) {
        (EsgMinimum { .. }, EsgMinimum { .. }) => true,
        (SectorExclusion { sector: x }, SectorExclusion { sector: y }) => x == y,
        _ => security(a).is_some() && security(a) == security(b),
    }
}

/// Log-uniform between $100,000 and $3,000,000, rounded to $1,000.
fn log_spread_size(rng: &mut SplitMix64) -> Decimal {
    const LN_30: f64 = 3.401_197_381_662_155_4;
    let dollars = 100_000.0 * exp(rng.next_f64() * LN_30);
    Decimal::from((dollars / 1000.0).round() as i64 * 1000)
}

/// e^x for 0 <= x < 4 by its Taylor series: basic IEEE operations only, so
/// the result is the same on every platform (unlike a libm `exp`).
fn exp(x: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..40 {
        term = term * x / n as f64;
        sum += term;
    }
    sum
}

fn dec_f64(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PricePanel;
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    fn data() -> &'static MarketData {
        static DATA: OnceLock<MarketData> = OnceLock::new();
        DATA.get_or_init(|| MarketData::embedded().expect("shipped data loads"))
    }

    fn default_demo() -> &'static Demo {
        static DEMO: OnceLock<Demo> = OnceLock::new();
        DEMO.get_or_init(|| demo(&DemoSpec::default(), data()).expect("default demo"))
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn default_demo_is_deterministic() {
        let again = demo(&DemoSpec::default(), data()).unwrap();
        assert_eq!(&again, default_demo());
        let other = demo(&DemoSpec { seed: 7, ..DemoSpec::default() }, data()).unwrap();
        assert_ne!(other.days[0].events, default_demo().days[0].events);
    }

    #[test]
    fn every_event_validates_ids_are_unique_and_time_never_decreases() {
        let d = default_demo();
        let mut ids = BTreeSet::new();
        let mut last = None;
        for e in d.events() {
            e.validate().unwrap_or_else(|err| panic!("{} ({}) invalid: {err}", e.event_id, e.payload.type_name()));
            assert!(ids.insert(e.event_id.clone()), "duplicate id {}", e.event_id);
            if let Some(prev) = last {
                assert!(e.event_time >= prev, "{} goes back in time", e.event_id);
            }
            last = Some(e.event_time);
        }
        assert_eq!(ids.len(), d.info.events);
    }

    #[test]
    fn default_demo_has_the_expected_shape() {
        let d = default_demo();
        let i = &d.info;
        assert_eq!(i.households, 1000);
        assert_eq!(i.start_date, date("2015-01-02"));
        assert_eq!(i.trading_days, 21);
        assert_eq!(d.days.len(), 21);
        assert!((480..=505).contains(&i.securities), "{i:?}");
        assert!(i.accounts > 1500 && i.accounts < 1800, "{i:?}");
        assert!(i.households_with_legacy_lots > 330 && i.households_with_legacy_lots < 470, "{i:?}");
        assert!(i.restrictions > 250, "{i:?}");
        for (k, day) in d.days.iter().enumerate() {
            assert_eq!(day.day, k);
            let last = day.events.last().unwrap();
            assert!(
                matches!(&last.payload, Payload::Clock(c) if c.trade_date == day.date),
                "day {k} ends with its clock"
            );
            // Reference events come before household events.
            let first_household =
                day.events.iter().position(|e| matches!(e.payload.key(), overlay_core::event::EventKey::Household(_)));
            if let Some(p) = first_household {
                assert!(day.events[p..day.events.len() - 1]
                    .iter()
                    .all(|e| matches!(e.payload.key(), overlay_core::event::EventKey::Household(_))));
            }
        }
        let count = |k: usize, ty: &str| d.days[k].events.iter().filter(|e| e.payload.type_name() == ty).count();
        assert_eq!(count(0, "security_upserted"), i.securities);
        assert_eq!(count(0, "esg_score_changed"), i.securities);
        assert_eq!(count(0, "price_tick"), i.securities);
        assert_eq!(count(0, "model_published"), 3);
        assert_eq!(count(0, "household_upserted"), 1000);
        assert_eq!(count(2, "model_published"), 1);
        assert_eq!(count(3, "esg_score_changed"), 3);
        assert!(count(4, "restriction_edited") > 20, "about 5% of households edit on day 4");
        assert!(count(1, "cash_flow") > 10 && count(1, "cash_flow") < 60);
        assert_eq!(count(2, "cash_flow"), 0);
        assert!(count(1, "price_tick") > 480);
    }

    #[test]
    fn models_sum_to_at_most_one_and_name_known_securities() {
        let d = default_demo();
        let securities: BTreeSet<SecurityId> = d.days[0]
            .events
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::SecurityUpserted(s) => Some(s.security.clone()),
                _ => None,
            })
            .collect();
        let mut seen = Vec::new();
        for e in d.events() {
            let Payload::ModelPublished(m) = &e.payload else {
                continue;
            };
            let sum: Decimal = m.weights.iter().map(|w| w.weight).sum();
            assert!(sum <= Decimal::ONE, "{} v{} sums to {sum}", m.model, m.version);
            assert!(m.weights.iter().all(|w| securities.contains(&w.security)));
            match m.model.as_str() {
                MODEL_SP500_CW => {
                    assert_eq!(m.kind, ModelKind::DirectIndex);
                    assert!(m.weights.len() > 480);
                    assert!(sum > Decimal::new(999, 3), "{sum}");
                    assert!(m.weights.iter().all(|w| w.weight.scale() <= 6));
                }
                MODEL_UMA_GROWTH => {
                    assert_eq!(m.weights.len(), 35);
                    assert!(sum <= Decimal::new(98, 2) && sum > Decimal::new(97, 2), "{sum}");
                }
                MODEL_UMA_INCOME => {
                    assert_eq!(m.weights.len(), 30);
                    assert!(sum <= Decimal::new(97, 2) && sum > Decimal::new(96, 2), "{sum}");
                }
                other => panic!("unexpected model {other}"),
            }
            seen.push((m.model.as_str().to_string(), m.version));
        }
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(&(MODEL_SP500_CW.to_string(), 2)));
    }

    #[test]
    fn securities_have_groups_and_substitutes() {
        let d = default_demo();
        let ups: BTreeMap<SecurityId, SecurityUpserted> = d.days[0]
            .events
            .iter()
            .filter_map(|e| match &e.payload {
                Payload::SecurityUpserted(s) => Some((s.security.clone(), s.clone())),
                _ => None,
            })
            .collect();
        let goog = &ups[&SecurityId::new("GOOG")];
        assert_eq!(goog.identical_group.as_deref(), Some("alphabet"));
        assert_eq!(ups[&SecurityId::new("GOOGL")].identical_group.as_deref(), Some("alphabet"));
        assert!(!goog.substitutes.contains(&SecurityId::new("GOOGL")));
        for s in ups.values() {
            assert_eq!(s.substitutes.len(), 2, "{}", s.security);
            for sub in &s.substitutes {
                assert!(ups.contains_key(sub));
                assert_eq!(ups[sub].sector, s.sector, "{} -> {sub}", s.security);
            }
        }
        let aapl = &ups[&SecurityId::new("AAPL")];
        assert_eq!(aapl.sector, "Information Technology");
        assert_eq!(aapl.name, "Apple Inc.");
    }

    #[test]
    fn legacy_lots_use_real_closes_and_mix_gains_and_losses() {
        let d = default_demo();
        let p = &data().prices;
        let start = p.date_index(d.info.start_date).unwrap();
        let (mut gains, mut losses, mut lots) = (0, 0, 0);
        for e in &d.days[0].events {
            let Payload::HouseholdUpserted(h) = &e.payload else {
                continue;
            };
            assert!(!h.accounts.is_empty() && h.accounts.len() <= 3);
            assert_eq!(h.accounts[0].kind, AccountKind::Taxable);
            for a in &h.accounts {
                for l in &a.opening_lots {
                    lots += 1;
                    assert!(l.acquired < d.info.start_date && l.acquired >= date("2013-02-08"));
                    assert_eq!(p.close_on(l.acquired, l.security.as_str()), Some(l.cost_per_share));
                    assert_ne!(l.acquired, date("2014-10-30"));
                    let now = p.close(start, p.ticker_index(l.security.as_str()).unwrap()).unwrap();
                    if now > l.cost_per_share {
                        gains += 1;
                    } else {
                        losses += 1;
                    }
                }
                let value: Decimal = a.opening_cash
                    + a.opening_lots
                        .iter()
                        .map(|l| l.quantity * p.close_on(d.info.start_date, l.security.as_str()).unwrap())
                        .sum::<Decimal>();
                assert!(
                    value >= Decimal::from(90_000) && value <= Decimal::from(3_100_000),
                    "{} worth {value}",
                    a.account
                );
            }
        }
        assert_eq!(lots, d.info.opening_lots);
        assert!(gains > 1000 && losses > 200, "gains {gains}, losses {losses}");
    }

    #[test]
    fn esg_downgrade_goes_below_every_minimum() {
        let d = default_demo();
        for e in &d.days[3].events {
            if let Payload::EsgScoreChanged(s) = &e.payload {
                assert!(s.score < Decimal::from(25), "{}: {}", s.security, s.score);
            }
        }
    }

    #[test]
    fn households_do_not_depend_on_how_many_there_are() {
        let small = demo(&DemoSpec { households: 10, price_days: 2, ..DemoSpec::default() }, data()).unwrap();
        let big = demo(&DemoSpec { households: 30, price_days: 2, ..DemoSpec::default() }, data()).unwrap();
        let households = |d: &Demo| -> Vec<Payload> {
            d.days[0]
                .events
                .iter()
                .filter(|e| e.payload.type_name() == "household_upserted")
                .map(|e| e.payload.clone())
                .collect()
        };
        assert_eq!(households(&small)[..], households(&big)[..10]);
        assert_eq!(small.info.households, 10);
    }

    #[test]
    fn spec_errors_are_clear() {
        let late = DemoSpec { start_date: date("2016-01-04"), ..DemoSpec::default() };
        assert!(matches!(demo(&late, data()), Err(DemoError::StartAfterData { .. })));
        let long = DemoSpec { start_date: date("2015-12-28"), ..DemoSpec::default() };
        let err = demo(&long, data()).unwrap_err();
        assert_eq!(err, DemoError::NotEnoughDays { start: date("2015-12-28"), requested: 20, available: 3 });
        // A non-trading start date rolls forward.
        let sat = DemoSpec { start_date: date("2015-01-03"), price_days: 0, households: 3, seed: 1 };
        let d = demo(&sat, data()).unwrap();
        assert_eq!(d.info.start_date, date("2015-01-05"));
        assert_eq!(d.days.len(), 1);
    }

    #[test]
    fn works_with_another_price_file() {
        let csv = "date,AAPL,ZZZZ\n2015-01-02,100,10\n2015-01-05,101,\n2015-01-06,102,11\n";
        let prices = PricePanel::from_csv_reader(csv.as_bytes(), "custom.csv").unwrap();
        let data = data().clone().with_prices(prices);
        let spec = DemoSpec { households: 20, price_days: 2, ..DemoSpec::default() };
        let d = demo(&spec, &data).unwrap();
        assert_eq!(d.info.securities, 2);
        for e in d.events() {
            e.validate().unwrap();
        }
        let zzzz = d.days[0].events.iter().find_map(|e| match &e.payload {
            Payload::SecurityUpserted(s) if s.security.as_str() == "ZZZZ" => Some(s.sector.clone()),
            _ => None,
        });
        assert_eq!(zzzz.as_deref(), Some("Unclassified"));
        assert_eq!(d.days[1].events.iter().filter(|e| e.payload.type_name() == "price_tick").count(), 1);
    }

    #[test]
    fn close_time_follows_us_daylight_saving() {
        let t = |s: &str| close_time_utc(date(s)).to_rfc3339();
        assert_eq!(t("2015-01-02"), "2015-01-02T21:00:00+00:00");
        assert_eq!(t("2015-03-06"), "2015-03-06T21:00:00+00:00");
        assert_eq!(t("2015-03-09"), "2015-03-09T20:00:00+00:00");
        assert_eq!(t("2015-10-30"), "2015-10-30T20:00:00+00:00");
        assert_eq!(t("2015-11-02"), "2015-11-02T21:00:00+00:00");
    }

    #[test]
    fn portable_exp_is_accurate() {
        for k in 0..=34 {
            let x = k as f64 / 10.0;
            assert!((exp(x) / x.exp() - 1.0).abs() < 1e-14, "{x}");
        }
    }
}
