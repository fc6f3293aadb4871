//! Given / when / then for lot accounting and the wash-sale rule: every case
//! of `data/tax-cases/cases.json` (worked examples from IRS material, with
//! their answers) replayed as fills through the fold, plus the edges the
//! cases do not cover.

use crate::event::*;
use crate::fold::{step, Applied, Input};
use crate::ids::*;
use crate::output::AuditBody;
use crate::state::State;
use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;

const CASES: &str = include_str!("../../../data/tax-cases/cases.json");

#[derive(Deserialize)]
struct Case {
    id: String,
    accounts: BTreeMap<String, String>,
    trades: Vec<Trade>,
    expect: Expect,
}

#[derive(Deserialize, Clone)]
struct Trade {
    date: NaiveDate,
    account: String,
    security: String,
    side: Side,
    quantity: Decimal,
    price: Decimal,
    #[serde(default)]
    lots: Vec<LotPick>,
}

#[derive(Deserialize)]
struct Expect {
    realized: Vec<ExpectRealized>,
    lots: Vec<ExpectLot>,
}

#[derive(Deserialize)]
struct ExpectRealized {
    trade: usize,
    gain_loss: Decimal,
    disallowed: Decimal,
    term: String,
}

#[derive(Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ExpectLot {
    account: String,
    security: String,
    quantity: Decimal,
    basis_per_share: Decimal,
    holding_period_start: NaiveDate,
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// A household of the given accounts (no sleeves: the engine only keeps
/// their books), fed trades as outside fills.
struct Books {
    state: State,
    n: u64,
}

impl Books {
    fn new(accounts: &[(&str, AccountKind)], securities: &[&str]) -> Self {
        let mut b = Books { state: State::default(), n: 0 };
        let mut group = BTreeMap::new();
        for s in securities {
            group.insert(*s, None);
        }
        b.securities(&group);
        b.household(accounts);
        b
    }

    fn securities(&mut self, secs: &BTreeMap<&str, Option<&str>>) {
        for (s, g) in secs {
            self.event(
                NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
                Payload::SecurityUpserted(SecurityUpserted {
                    security: (*s).into(),
                    name: String::new(),
                    sector: "Test".into(),
                    sub_industry: String::new(),
                    identical_group: g.map(str::to_string),
                    substitutes: vec![],
                    attributes: Default::default(),
                }),
            );
        }
    }

    fn household(&mut self, accounts: &[(&str, AccountKind)]) {
        let settings = AccountSettings { lot_policy: LotPolicy::Fifo, ..AccountSettings::default() };
        let applied = self.event(
            NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
            Payload::HouseholdUpserted(HouseholdUpserted {
                household: "H".into(),
                tax: TaxProfile::default(),
                accounts: accounts
                    .iter()
                    .map(|(a, kind)| AccountSpec {
                        account: (*a).into(),
                        kind: *kind,
                        sleeves: vec![],
                        settings: settings.clone(),
                        opening_cash: Decimal::ZERO,
                        opening_lots: vec![],
                    })
                    .collect(),
                restrictions: vec![],
            }),
        );
        assert!(applied.orders.is_empty(), "accounts without sleeves are not traded");
    }

    fn event(&mut self, on: NaiveDate, payload: Payload) -> Applied {
        self.n += 1;
        let env = Envelope {
            event_id: format!("t{}", self.n),
            producer: "test".into(),
            event_time: Utc.from_utc_datetime(&on.and_hms_opt(21, 0, 0).unwrap())
                + chrono::Duration::seconds(self.n as i64),
            schema_version: 1,
            payload,
        };
        env.validate().expect("test events are valid");
        let applied = step(&mut self.state, Input::Event(&env));
        assert!(applied.rejection.is_none(), "refused: {:?}", applied.rejection);
        applied
    }

    fn trade(&mut self, t: &Trade) -> (String, Applied) {
        let applied = self.event(
            t.date,
            Payload::Fill(Fill {
                household: "H".into(),
                account: t.account.as_str().into(),
                order_id: None,
                security: t.security.as_str().into(),
                side: t.side,
                status: FillStatus::Filled,
                quantity: t.quantity,
                price: t.price,
                trade_date: t.date,
                reason: None,
                lots: t.lots.clone(),
            }),
        );
        (format!("t{}", self.n), applied)
    }

    fn lots(&self) -> Vec<ExpectLot> {
        let mut out = Vec::new();
        for (a, acc) in &self.state.households[&HouseholdId::new("H")].accounts {
            for (sec, lots) in &acc.lots {
                for l in lots {
                    out.push(ExpectLot {
                        account: a.to_string(),
                        security: sec.to_string(),
                        quantity: l.quantity,
                        basis_per_share: l.cost_per_share,
                        holding_period_start: l.holding_start,
                    });
                }
            }
        }
        out.sort();
        out
    }
}

fn kind(s: &str) -> AccountKind {
    match s {
        "taxable" => AccountKind::Taxable,
        "ira" => AccountKind::Ira,
        "roth" => AccountKind::Roth,
        other => panic!("unknown account type {other}"),
    }
}

/// The sale's Tax record: (realized, every lot long-term?, every lot short-term?).
fn sale_record(applied: &Applied) -> (Decimal, bool, bool) {
    applied
        .audit
        .iter()
        .find_map(|r| match &r.body {
            AuditBody::Tax { realized_usd, lots, .. } => {
                Some((*realized_usd, lots.iter().all(|l| l.long_term), lots.iter().all(|l| !l.long_term)))
            }
            _ => None,
        })
        .expect("a sale has a tax record")
}

/// Disallowed loss of the sale `sale_event`, over every wash-sale record so far.
fn disallowed_of(all: &[Applied], sale_event: &str) -> Decimal {
    all.iter()
        .flat_map(|a| a.audit.iter())
        .filter_map(|r| match &r.body {
            AuditBody::WashSale { sale_event_id, disallowed_usd, .. } if sale_event_id == sale_event => {
                Some(*disallowed_usd)
            }
            _ => None,
        })
        .sum()
}

#[test]
fn tax_cases_from_irs_material_reproduce_exactly() {
    let cases: Vec<Case> = serde_json::from_str(CASES).expect("cases.json parses");
    assert!(cases.len() >= 6, "every shipped case is replayed");
    for case in &cases {
        let accounts: Vec<(&str, AccountKind)> = case.accounts.iter().map(|(a, k)| (a.as_str(), kind(k))).collect();
        let mut secs: Vec<&str> = case.trades.iter().map(|t| t.security.as_str()).collect();
        secs.sort();
        secs.dedup();
        let mut books = Books::new(&accounts, &secs);
        let mut ids = Vec::new();
        let mut all = Vec::new();
        for t in &case.trades {
            let (id, applied) = books.trade(t);
            ids.push(id);
            all.push(applied);
        }
        for r in &case.expect.realized {
            let (gain, long, short) = sale_record(&all[r.trade]);
            assert_eq!(gain, r.gain_loss, "{}: gain/loss of trade {}", case.id, r.trade);
            assert_eq!(
                disallowed_of(&all, &ids[r.trade]),
                r.disallowed,
                "{}: disallowed of trade {}",
                case.id,
                r.trade
            );
            match r.term.as_str() {
                "long" => assert!(long, "{}: trade {} is long-term", case.id, r.trade),
                "short" => assert!(short, "{}: trade {} is short-term", case.id, r.trade),
                t => panic!("unknown term {t}"),
            }
        }
        let mut expected: Vec<&ExpectLot> = case.expect.lots.iter().collect();
        expected.sort();
        let got = books.lots();
        assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{}: open lots", case.id);
        // The ledger agrees with the records: disallowed losses by sale year.
        let hh = &books.state.households[&HouseholdId::new("H")];
        let ledger: Decimal = hh.realized.values().map(|y| y.disallowed_usd).sum();
        let records: Decimal = case.expect.realized.iter().map(|r| r.disallowed).sum();
        assert_eq!(ledger, records, "{}: disallowed in the realized ledger", case.id);
    }
}

fn trade(date: &str, account: &str, sec: &str, side: Side, q: &str, p: &str) -> Trade {
    Trade {
        date: NaiveDate::from_str(date).unwrap(),
        account: account.into(),
        security: sec.into(),
        side,
        quantity: d(q),
        price: d(p),
        lots: vec![],
    }
}

#[test]
fn a_purchase_thirty_days_before_a_loss_sale_is_a_replacement_and_thirty_one_is_not() {
    for (bought, washed) in [("2025-02-01", true), ("2025-01-31", false)] {
        let mut b = Books::new(&[("T", AccountKind::Taxable)], &["X"]);
        b.trade(&trade("2025-01-02", "T", "X", Side::Buy, "100", "10"));
        b.trade(&trade(bought, "T", "X", Side::Buy, "100", "9"));
        // Sells the first lot (FIFO) at a loss: the second is the replacement if bought within 30 days.
        let (id, sale) = b.trade(&trade("2025-03-03", "T", "X", Side::Sell, "100", "8"));
        assert_eq!(sale_record(&sale).0, d("-200"));
        let disallowed = disallowed_of(std::slice::from_ref(&sale), &id);
        let lots = b.lots();
        assert_eq!(lots.len(), 1);
        if washed {
            assert_eq!(disallowed, d("200"), "bought {bought}: 30 days before the sale");
            assert_eq!(lots[0].basis_per_share, d("11"));
            // Sold shares held Jan 2 → Mar 3 (60 days): the replacement's period starts 60 days before Feb 1.
            assert_eq!(lots[0].holding_period_start, NaiveDate::from_str("2024-12-03").unwrap());
        } else {
            assert_eq!(disallowed, Decimal::ZERO, "bought {bought}: 31 days before the sale");
            assert_eq!(lots[0].basis_per_share, d("9"));
        }
    }
}

#[test]
fn a_purchase_thirty_days_after_a_loss_sale_washes_it_and_thirty_one_does_not() {
    for (bought, washed) in [("2025-04-02", true), ("2025-04-03", false)] {
        let mut b = Books::new(&[("T", AccountKind::Taxable)], &["X"]);
        b.trade(&trade("2025-01-10", "T", "X", Side::Buy, "100", "10"));
        let (id, _) = b.trade(&trade("2025-03-03", "T", "X", Side::Sell, "100", "7.5"));
        let (_, buy) = b.trade(&trade(bought, "T", "X", Side::Buy, "100", "8"));
        let disallowed = disallowed_of(std::slice::from_ref(&buy), &id);
        assert_eq!(disallowed, if washed { d("250") } else { Decimal::ZERO }, "bought {bought}");
    }
}

#[test]
fn a_partial_replacement_is_matched_share_for_share_and_only_once() {
    let mut b = Books::new(&[("T", AccountKind::Taxable)], &["X"]);
    b.trade(&trade("2025-01-10", "T", "X", Side::Buy, "100", "10"));
    let (id, _) = b.trade(&trade("2025-03-03", "T", "X", Side::Sell, "100", "7.5"));
    let (_, first) = b.trade(&trade("2025-03-10", "T", "X", Side::Buy, "30", "8"));
    let (_, second) = b.trade(&trade("2025-03-12", "T", "X", Side::Buy, "50", "8"));
    let (_, third) = b.trade(&trade("2025-03-14", "T", "X", Side::Buy, "40", "8"));
    // 30 + 50 replace 80 of the 100 loss shares; 20 of the third buy replace the rest; 20 stay plain.
    assert_eq!(disallowed_of(std::slice::from_ref(&first), &id), d("75"));
    assert_eq!(disallowed_of(std::slice::from_ref(&second), &id), d("125"));
    assert_eq!(disallowed_of(std::slice::from_ref(&third), &id), d("50"));
    let lots = b.lots();
    let adjusted: Decimal = lots.iter().filter(|l| l.basis_per_share == d("10.5")).map(|l| l.quantity).sum();
    let plain: Decimal = lots.iter().filter(|l| l.basis_per_share == d("8")).map(|l| l.quantity).sum();
    assert_eq!((adjusted, plain), (d("100"), d("20")));
    let hh = &b.state.households[&HouseholdId::new("H")];
    assert_eq!(hh.realized[&2025].disallowed_usd, d("250"));
    assert_eq!(hh.realized[&2025].net_usd(), Decimal::ZERO, "the whole loss is disallowed");
}

#[test]
fn an_identical_group_counts_as_the_same_security_and_a_substitute_outside_it_does_not() {
    let mut b = Books { state: State::default(), n: 0 };
    b.securities(&BTreeMap::from([("SPY", Some("sp500-etf")), ("IVV", Some("sp500-etf")), ("VTI", None)]));
    b.household(&[("T", AccountKind::Taxable)]);
    b.trade(&trade("2025-01-10", "T", "SPY", Side::Buy, "10", "500"));
    let (id, _) = b.trade(&trade("2025-03-03", "T", "SPY", Side::Sell, "10", "450"));
    let (_, vti) = b.trade(&trade("2025-03-04", "T", "VTI", Side::Buy, "10", "250"));
    assert_eq!(disallowed_of(std::slice::from_ref(&vti), &id), Decimal::ZERO, "a different index fund");
    let (_, ivv) = b.trade(&trade("2025-03-05", "T", "IVV", Side::Buy, "10", "460"));
    assert_eq!(disallowed_of(std::slice::from_ref(&ivv), &id), d("500"), "same index: substantially identical");
}

fn split(b: &mut Books, date: &str, numerator: u32, denominator: u32) {
    let on = NaiveDate::from_str(date).unwrap();
    b.event(
        on,
        Payload::CorporateAction(CorporateAction {
            security: "X".into(),
            ex_date: on,
            kind: CorporateActionKind::Split { numerator, denominator },
        }),
    );
}

#[test]
fn a_split_inside_the_wash_window_carries_the_adjusted_basis_of_a_replacement() {
    let mut b = Books::new(&[("T", AccountKind::Taxable)], &["X"]);
    b.trade(&trade("2025-01-10", "T", "X", Side::Buy, "100", "10"));
    b.trade(&trade("2025-02-03", "T", "X", Side::Buy, "100", "9"));
    b.trade(&trade("2025-02-20", "T", "X", Side::Sell, "100", "8"));
    // The sale matched the Feb 3 lot at once (bought 17 days before): 100 × $2 disallowed, basis 9 + 2 = 11.
    split(&mut b, "2025-02-25", 2, 1);
    let lots = b.lots();
    assert_eq!(lots.len(), 1);
    assert_eq!((lots[0].quantity, lots[0].basis_per_share), (d("200"), d("5.5")), "split keeps the adjusted basis");
    assert_eq!(b.state.households[&HouseholdId::new("H")].realized[&2025].disallowed_usd, d("200"));
}

#[test]
fn a_split_between_a_loss_sale_and_the_buy_back_matches_post_split_shares() {
    let mut b = Books::new(&[("T", AccountKind::Taxable)], &["X"]);
    b.trade(&trade("2025-01-10", "T", "X", Side::Buy, "100", "10"));
    let (id, _) = b.trade(&trade("2025-02-20", "T", "X", Side::Sell, "100", "8"));
    // 100 shares sold $2 below basis are 200 post-split shares $1 below it.
    split(&mut b, "2025-02-25", 2, 1);
    let (_, buy) = b.trade(&trade("2025-03-01", "T", "X", Side::Buy, "150", "4.1"));
    assert_eq!(disallowed_of(std::slice::from_ref(&buy), &id), d("150"));
    let lots = b.lots();
    assert_eq!((lots[0].quantity, lots[0].basis_per_share), (d("150"), d("5.1")));
    let (_, more) = b.trade(&trade("2025-03-02", "T", "X", Side::Buy, "100", "4.2"));
    assert_eq!(disallowed_of(std::slice::from_ref(&more), &id), d("50"), "the last 50 post-split shares");
}

#[test]
fn a_loss_in_an_ira_is_not_a_reportable_loss_and_starts_no_wash_window() {
    let mut b = Books::new(&[("T", AccountKind::Taxable), ("I", AccountKind::Ira)], &["X"]);
    b.trade(&trade("2025-01-10", "I", "X", Side::Buy, "100", "10"));
    let (_, sale) = b.trade(&trade("2025-03-03", "I", "X", Side::Sell, "100", "7"));
    assert!(matches!(
        &sale.audit.iter().find_map(|r| match &r.body {
            AuditBody::Tax { reportable, .. } => Some(*reportable),
            _ => None,
        }),
        Some(false)
    ));
    let (_, buy) = b.trade(&trade("2025-03-10", "T", "X", Side::Buy, "100", "7"));
    assert!(!buy.audit.iter().any(|r| matches!(r.body, AuditBody::WashSale { .. })));
    assert!(b.state.households[&HouseholdId::new("H")].realized.is_empty());
}

#[test]
fn specific_identification_relieves_the_named_lots() {
    let mut b = Books::new(&[("T", AccountKind::Taxable)], &["X"]);
    b.trade(&trade("2024-01-10", "T", "X", Side::Buy, "10", "10"));
    b.trade(&trade("2024-06-10", "T", "X", Side::Buy, "10", "30"));
    let mut sell = trade("2025-03-03", "T", "X", Side::Sell, "5", "20");
    sell.lots = vec![LotPick { lot_id: 2, quantity: d("5") }];
    let (_, sale) = b.trade(&sell);
    assert_eq!(sale_record(&sale).0, d("-50"), "lot 2 (cost 30) at 20, not FIFO's lot 1");
    let lots = b.lots();
    let by_basis: BTreeMap<Decimal, Decimal> = lots.iter().map(|l| (l.basis_per_share, l.quantity)).collect();
    assert_eq!(by_basis, BTreeMap::from([(d("10"), d("10")), (d("30"), d("5"))]));
}
