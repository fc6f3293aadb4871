//! Lot accounting of executed fills (DESIGN §5, taxes and wash sales): lots
//! created and relieved, realized gains by term, and the wash-sale rule of
//! IRC §1091 applied household-wide with IRAs included. Pure: it works on
//! copies of the household's records and says which ones changed.
//!
//! The wash-sale rule as applied here (IRS Pub. 550; Rev. Rul. 2008-5):
//! - a sale of shares at a loss in a taxable account, and a purchase of the
//!   same security (or one in its `identical_group`) in any account of the
//!   household within 30 days before or after it, make a wash sale;
//! - sold shares and replacement shares are matched share for share, earliest
//!   first, and a share serves as a replacement once; shares bought before the
//!   sale count only while still held after it, and never the sold shares
//!   themselves;
//! - the matched part of the loss is disallowed: in a taxable account it is
//!   added to the replacement shares' basis (those shares become a lot of
//!   their own) and their holding period starts earlier by the days the sold
//!   shares were held; in an IRA or Roth the loss is lost for good.

use crate::event::Fill;
use crate::ids::{AccountId, SecurityId};
use crate::output::{AuditBody, RealizedLot};
use crate::state::{within_wash_window, Account, Household, LossSale, Lot, RecentBuy, State, WashLedger};
use chrono::{Datelike, Days, NaiveDate};
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The wash-sale key of a security: its identical group, else itself.
/// Borrowed unless the security is in a group (decisions look keys up for
/// every name of an index, so the common case must not allocate).
pub fn wash_key<'a>(state: &State, sec: &'a SecurityId) -> Cow<'a, str> {
    match state.securities.get(sec).and_then(|s| s.identical_group.as_ref()) {
        Some(g) => Cow::Owned(format!("group:{g}")),
        None => Cow::Borrowed(sec.as_str()),
    }
}

/// Working copies of the household records a fill may change: the household
/// header (ledgers), account headers, and lots by (account, security).
pub struct Book<'a> {
    hh: &'a Household,
    pub header: Household,
    pub accounts: BTreeMap<AccountId, Account>,
    pub lots: BTreeMap<(AccountId, SecurityId), Vec<Lot>>,
    pub audit: Vec<AuditBody>,
}

impl<'a> Book<'a> {
    pub fn new(hh: &'a Household, header: Household) -> Self {
        Self { hh, header, accounts: BTreeMap::new(), lots: BTreeMap::new(), audit: Vec::new() }
    }

    /// The account header to change (loaded on first use, without its lots and orders).
    pub fn account(&mut self, a: &AccountId) -> &mut Account {
        let hh = self.hh;
        // The header alone: cloning the whole account would copy its lots and orders only to drop them.
        self.accounts.entry(a.clone()).or_insert_with(|| crate::fold::header_account(&hh.accounts[a]))
    }

    /// One security's lots in one account, to change.
    pub fn lots(&mut self, a: &AccountId, sec: &SecurityId) -> &mut Vec<Lot> {
        let hh = self.hh;
        self.lots
            .entry((a.clone(), sec.clone()))
            .or_insert_with(|| hh.accounts.get(a).and_then(|acc| acc.lots.get(sec)).cloned().unwrap_or_default())
    }

    fn next_lot_id(&mut self, a: &AccountId) -> u64 {
        let acc = self.account(a);
        let id = acc.next_lot_id;
        acc.next_lot_id += 1;
        id
    }

    fn is_taxable(&self, a: &AccountId) -> bool {
        self.hh.accounts.get(a).is_some_and(|acc| acc.kind.is_taxable())
    }
}

/// A buy executed: a new lot, matched against recent loss sales.
pub fn buy(state: &State, book: &mut Book<'_>, e: &Fill) {
    let key = wash_key(state, &e.security).into_owned();
    let lot_id = book.next_lot_id(&e.account);
    book.lots(&e.account, &e.security).push(Lot {
        lot_id,
        quantity: e.quantity,
        cost_per_share: e.price,
        acquired: e.trade_date,
        holding_start: e.trade_date,
    });
    let mut left = e.quantity;
    let mut ledger = std::mem::take(&mut book.header.wash);
    for sale in ledger.loss_sales.iter_mut() {
        if left <= Decimal::ZERO {
            break;
        }
        if sale.key != key || sale.open_shares <= Decimal::ZERO || !within_wash_window(sale.date, e.trade_date) {
            continue;
        }
        let take = sale.open_shares.min(left);
        sale.open_shares -= take;
        left -= take;
        let (replacement_lot_id, holding_start) =
            adjust_replacement(book, &e.account, &e.security, lot_id, take, sale.loss_per_share, sale.held_days);
        disallow(book, sale, &e.account, &e.security, replacement_lot_id, e.trade_date, take, holding_start);
    }
    if left > Decimal::ZERO {
        ledger.buys.push(RecentBuy {
            account: e.account.clone(),
            security: e.security.clone(),
            key,
            date: e.trade_date,
            lot_id,
            open_shares: left,
        });
    }
    book.header.wash = ledger;
}

/// Moves `take` shares of lot `lot_id` into a lot of their own carrying the
/// disallowed loss and the sold shares' holding period (taxable accounts);
/// in a tax-deferred account the lot is left as it is. Returns the lot that
/// holds the replacement shares and its holding period start.
fn adjust_replacement(
    book: &mut Book<'_>,
    account: &AccountId,
    sec: &SecurityId,
    lot_id: u64,
    take: Decimal,
    loss_per_share: Decimal,
    held_days: i64,
) -> (u64, NaiveDate) {
    let taxable = book.is_taxable(account);
    let lots = book.lots(account, sec);
    let i = lots.iter().position(|l| l.lot_id == lot_id).expect("replacement lots are held");
    if !taxable {
        return (lot_id, lots[i].holding_start);
    }
    let base = lots[i].clone();
    let holding_start = base.holding_start - Days::new(held_days.max(0) as u64);
    let cost_per_share = base.cost_per_share + loss_per_share;
    if take == base.quantity {
        let lot = &mut book.lots(account, sec)[i];
        lot.cost_per_share = cost_per_share;
        lot.holding_start = holding_start;
        return (lot_id, holding_start);
    }
    let new_id = book.next_lot_id(account);
    let lots = book.lots(account, sec);
    lots[i].quantity -= take;
    lots.push(Lot { lot_id: new_id, quantity: take, cost_per_share, acquired: base.acquired, holding_start });
    (new_id, holding_start)
}

#[allow(clippy::too_many_arguments)]
fn disallow(
    book: &mut Book<'_>,
    sale: &LossSale,
    replacement_account: &AccountId,
    replacement_security: &SecurityId,
    replacement_lot_id: u64,
    replacement_date: NaiveDate,
    shares: Decimal,
    holding_start: NaiveDate,
) {
    let disallowed = shares * sale.loss_per_share;
    let basis_added = book.is_taxable(replacement_account);
    book.header.realized.entry(sale.date.year()).or_default().disallowed_usd += disallowed;
    let detail = if basis_added {
        format!(
            "wash sale: {shares} shares of {} sold at a loss on {} replaced by {} {replacement_security} in {} on {replacement_date}; ${disallowed} disallowed and added to lot #{replacement_lot_id}, holding period from {holding_start}",
            sale.security, sale.date, shares, replacement_account
        )
    } else {
        format!(
            "wash sale: {shares} shares of {} sold at a loss on {} replaced by {} {replacement_security} in tax-deferred account {} on {replacement_date}; ${disallowed} disallowed for good (no basis adjustment in an IRA)",
            sale.security, sale.date, shares, replacement_account
        )
    };
    book.audit.push(AuditBody::WashSale {
        sale_event_id: sale.sale_event_id.clone(),
        sale_account: sale.account.clone(),
        security: sale.security.clone(),
        sale_date: sale.date,
        sold_lot_id: sale.lot_id,
        replacement_account: replacement_account.clone(),
        replacement_security: replacement_security.clone(),
        replacement_lot_id,
        replacement_date,
        shares,
        disallowed_usd: disallowed,
        basis_added,
        holding_start,
        detail,
    });
}

/// A sell executed: `relief` (lot id, shares) is relieved from the account's
/// lots; gains go to the realized ledger (taxable accounts) and losses are
/// matched against purchases in the 30 days before. Returns the realized lots.
pub fn sell(
    state: &State,
    book: &mut Book<'_>,
    event_id: &str,
    e: &Fill,
    relief: &[(u64, Decimal)],
) -> Vec<RealizedLot> {
    let key = wash_key(state, &e.security).into_owned();
    let taxable = book.is_taxable(&e.account);
    let lots = book.lots(&e.account, &e.security);
    let mut realized = Vec::with_capacity(relief.len());
    for (id, q) in relief {
        let lot = lots.iter_mut().find(|l| l.lot_id == *id).expect("relief names held lots");
        realized.push(RealizedLot {
            lot_id: lot.lot_id,
            quantity: *q,
            cost_per_share: lot.cost_per_share,
            acquired: lot.acquired,
            holding_start: lot.holding_start,
            gain_usd: (e.price - lot.cost_per_share) * *q,
            long_term: lot.is_long_term(e.trade_date),
        });
        lot.quantity -= *q;
    }
    lots.retain(|l| l.quantity > Decimal::ZERO);
    if !taxable {
        return realized;
    }
    let year = book.header.realized.entry(e.trade_date.year()).or_default();
    for r in &realized {
        if r.long_term {
            year.long_term_usd += r.gain_usd;
        } else {
            year.short_term_usd += r.gain_usd;
        }
    }
    let mut ledger = std::mem::take(&mut book.header.wash);
    for r in realized.iter().filter(|r| r.gain_usd < Decimal::ZERO) {
        let mut sale = LossSale {
            sale_event_id: event_id.to_string(),
            account: e.account.clone(),
            security: e.security.clone(),
            key: key.clone(),
            date: e.trade_date,
            lot_id: r.lot_id,
            open_shares: r.quantity,
            loss_per_share: r.cost_per_share - e.price,
            held_days: (e.trade_date - r.holding_start).num_days(),
        };
        match_earlier_buys(book, &mut ledger, &mut sale);
        if sale.open_shares > Decimal::ZERO {
            ledger.loss_sales.push(sale);
        }
    }
    book.header.wash = ledger;
    realized
}

/// Matches a loss sale against shares bought in the 30 days before it that
/// are still held (never the sold lot itself).
fn match_earlier_buys(book: &mut Book<'_>, ledger: &mut WashLedger, sale: &mut LossSale) {
    for b in ledger.buys.iter_mut() {
        if sale.open_shares <= Decimal::ZERO {
            break;
        }
        if b.key != sale.key
            || b.open_shares <= Decimal::ZERO
            || !within_wash_window(sale.date, b.date)
            || b.date > sale.date
        {
            continue;
        }
        if b.account == sale.account && b.lot_id == sale.lot_id && b.security == sale.security {
            continue;
        }
        let held = book
            .lots(&b.account, &b.security)
            .iter()
            .find(|l| l.lot_id == b.lot_id)
            .map_or(Decimal::ZERO, |l| l.quantity);
        let take = b.open_shares.min(held).min(sale.open_shares);
        if take <= Decimal::ZERO {
            continue;
        }
        b.open_shares -= take;
        sale.open_shares -= take;
        let (lot, start) =
            adjust_replacement(book, &b.account, &b.security, b.lot_id, take, sale.loss_per_share, sale.held_days);
        disallow(book, sale, &b.account, &b.security, lot, b.date, take, start);
    }
}
