//! `overlay transition plan --household FILE`: the projected path of a
//! tax-aware transition — drift and tax period by period — for a household
//! snapshot carrying a `transition` plan, at the snapshot's prices, decided
//! by the engine's own fold on a copy (nothing is stored or sent).

use anyhow::{bail, Context, Result};
use overlay_core::snapshot::HouseholdSnapshot;
use overlay_core::transition::{project, PeriodProjection};
use std::io::Write;
use std::path::Path;

/// Reads a snapshot ("-" for standard input) and projects its transition.
pub fn plan_file(path: &Path) -> Result<(HouseholdSnapshot, Vec<PeriodProjection>)> {
    let bytes = if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).context("reading standard input")?;
        v
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    let snapshot = HouseholdSnapshot::from_json(&bytes).with_context(|| format!("{}", path.display()))?;
    if snapshot.transition.is_none() {
        bail!("{}: the snapshot has no transition plan (a \"transition\" object)", path.display());
    }
    let state = snapshot.to_state().with_context(|| format!("{}", path.display()))?;
    let path_ = project(&state, &snapshot.household).with_context(|| format!("{}", path.display()))?;
    Ok((snapshot, path_))
}

fn money(d: rust_decimal::Decimal) -> String {
    d.round_dp(2).to_string()
}

fn pp(d: rust_decimal::Decimal) -> String {
    format!("{}", (d * rust_decimal::Decimal::ONE_HUNDRED).round_dp(2))
}

/// The path as a table.
pub fn print_text(s: &HouseholdSnapshot, rows: &[PeriodProjection], out: &mut dyn Write) -> std::io::Result<()> {
    let plan = s.transition.as_ref().expect("checked when read");
    writeln!(
        out,
        "transition of {} from {}: {} {:?} period(s){}{}{}; at the snapshot's prices",
        s.household,
        s.trade_date(),
        plan.periods,
        plan.period,
        plan.budget_usd.map_or(String::new(), |b| format!(", budget ${b}")),
        plan.yearly_budget_usd.map_or(String::new(), |b| format!(", ${b} a year")),
        if plan.keep.is_empty() {
            String::new()
        } else {
            format!(", keeping {}", plan.keep.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "))
        }
    )?;
    writeln!(
        out,
        "{:>6} {:>10} {:>10} {:>10} {:>12} {:>12} {:>11} {:>11} {:>10} {:>12}",
        "period", "date", "drift pp", "after pp", "allowance $", "sold $", "short $", "long $", "tax $", "used $"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:>6} {:>10} {:>10} {:>10} {:>12} {:>12} {:>11} {:>11} {:>10} {:>12}{}",
            r.period,
            r.date,
            pp(r.drift_before),
            pp(r.drift_after),
            money(r.allowance_usd),
            money(r.sold_usd),
            money(r.realized_short_usd),
            money(r.realized_long_usd),
            money(r.tax_usd),
            money(r.used_usd),
            if r.complete { "  complete" } else { "" }
        )?;
    }
    let tax: rust_decimal::Decimal = rows.iter().map(|r| r.tax_usd).sum();
    writeln!(out, "total tax ${}", money(tax))
}
