//! `overlay backtest --quick`: the CI slice of the backtest (65 trading days
//! of real closes, the 100 largest names, twelve households), its outputs
//! read back and checked from their own numbers.

use overlay_tests::*;
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

/// Account rows: the household set's 12 households (6 with an IRA) and
/// the three personalisation scenarios (one taxable account each).
const ACCOUNTS: usize = 21;

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("a decimal is a string: {v}")))
        .unwrap_or_else(|e| panic!("{v} is not a decimal: {e}"))
}

fn date(v: &Value) -> chrono::NaiveDate {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{v} is not a date"))
}

/// A CSV file of the backtest (no quoted fields) as rows of header → cell.
fn csv_rows(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            assert_eq!(cells.len(), header.len(), "{}: {l}", path.display());
            header.iter().zip(cells).map(|(h, c)| (h.to_string(), c.to_string())).collect()
        })
        .collect()
}

fn quick(dir: &Path, out: &Path) -> Run {
    overlay(dir, &["backtest", "--quick", "--quiet", "--out", out.to_str().expect("a UTF-8 path")]).ok()
}

#[test]
fn backtest_slice_outputs_add_up() {
    let tmp = tempdir("overlay-backtest-");
    let out = tmp.path().join("out");
    // When the CI slice runs.
    let run = quick(tmp.path(), &out);
    // Then the engine refused none of its inputs and the trade log accounts
    // for the engine's realized ledger, cash and positions.
    assert!(run.stdout.contains("refused inputs 0; ledger mismatches 0"), "{}", run.stdout);

    // accounts.csv: one row per account, each with a tracking error, no budget breach.
    let accounts = csv_rows(&out.join("accounts.csv"));
    assert_eq!(accounts.len(), ACCOUNTS, "{accounts:?}");
    for a in &accounts {
        let te: f64 = a["tracking_error_pct"].parse().unwrap_or_else(|_| panic!("no tracking error: {a:?}"));
        assert!(te.is_finite() && te > 0.0 && te < 50.0, "{a:?}");
        assert_eq!(a["budget_breaches"], "0", "{a:?}");
        for money in ["end_usd", "realized_short_usd", "realized_long_usd", "harvested_losses_usd"] {
            Decimal::from_str(&a[money]).unwrap_or_else(|_| panic!("{money} of {a:?}"));
        }
    }

    // trades.jsonl: every sell's realized gain is (price − cost) × quantity over its lots.
    let trades = json_lines(&std::fs::read_to_string(out.join("trades.jsonl")).unwrap());
    assert!(trades.len() > 500, "{} trades", trades.len());
    let (mut sells, mut with_gain, mut with_loss) = (0, 0, 0);
    for t in &trades {
        let (price, quantity) = (dec(&t["price"]), dec(&t["quantity"]));
        let lots = t["lots"].as_array().expect("lots");
        assert_eq!(lots.iter().map(|l| dec(&l["quantity"])).sum::<Decimal>(), quantity, "{t}");
        assert_eq!(dec(&t["value_usd"]), price * quantity, "{t}");
        if t["side"] == "buy" {
            assert_eq!(lots.len(), 1, "a buy opens one lot: {t}");
            assert_eq!(dec(&lots[0]["cost_per_share"]), price, "{t}");
            assert_eq!(date(&lots[0]["acquired"]), date(&t["date"]), "{t}");
            continue;
        }
        sells += 1;
        let (mut short, mut long) = (Decimal::ZERO, Decimal::ZERO);
        for l in lots {
            let realized = (price - dec(&l["cost_per_share"])) * dec(&l["quantity"]);
            assert_eq!(dec(&l["realized_usd"]), realized, "{t}");
            let long_term = date(&t["date"]) > overlay_core::state::one_year_after(date(&l["holding_start"]));
            assert_eq!(l["long_term"].as_bool(), Some(long_term), "{t}");
            if long_term {
                long += realized;
            } else {
                short += realized;
            }
        }
        assert_eq!(dec(&t["realized_short_usd"]), short, "{t}");
        assert_eq!(dec(&t["realized_long_usd"]), long, "{t}");
        if short + long > Decimal::ZERO {
            with_gain += 1;
        } else if short + long < Decimal::ZERO {
            with_loss += 1;
        }
    }
    assert!(
        sells > 50 && with_gain > 0 && with_loss > 0,
        "{sells} sells, {with_gain} at a gain, {with_loss} at a loss"
    );

    // wash_sales.csv: every case it lists is a real wash sale, and accounts.csv counts them.
    let washes = csv_rows(&out.join("wash_sales.csv"));
    let by_order: BTreeMap<&str, &Value> = trades.iter().map(|t| (t["order_id"].as_str().unwrap(), t)).collect();
    for w in &washes {
        let (sale, buy) = (by_order[w["sale_order_id"].as_str()], by_order[w["buy_order_id"].as_str()]);
        assert_eq!((sale["side"].as_str(), buy["side"].as_str()), (Some("sell"), Some("buy")), "{w:?}");
        assert_eq!(sale["household"], buy["household"], "{w:?}");
        assert_eq!(sale["account_kind"], "taxable", "{w:?}");
        let loss_lots = sale["lots"].as_array().unwrap().iter().filter(|l| dec(&l["realized_usd"]) < Decimal::ZERO);
        assert!(loss_lots.count() > 0, "a wash sale needs a loss: {w:?}");
        let days = (date(&buy["date"]) - date(&sale["date"])).num_days();
        assert!(days.abs() <= 30, "{w:?}");
        // No wash sale may come from harvesting: that is the harvester's own contract.
        for reason in [&w["sale_reason"], &w["buy_reason"]] {
            assert!(reason != "harvest" && reason != "replacement", "a harvest trade washes: {w:?}");
        }
    }
    let counted: usize = accounts.iter().map(|a| a["wash_sales"].parse::<usize>().unwrap()).sum();
    assert_eq!(counted, washes.len());

    // daily.csv: one row per trading day, the index and every account valued.
    let daily = csv_rows(&out.join("daily.csv"));
    assert_eq!(daily.len(), 65);
    assert_eq!(daily[0].len(), 2 + ACCOUNTS);
    // chart.svg: both panels drawn.
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 3 + 3 * 2, "three sizes: one line on top, two below");

    // And a second run writes the same bytes.
    let again = tmp.path().join("again");
    quick(tmp.path(), &again);
    for f in ["accounts.csv", "trades.jsonl", "wash_sales.csv", "daily.csv", "chart.svg", "summary.md"] {
        let (a, b) = (std::fs::read(out.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap());
        assert!(a == b, "{f} differs between two runs");
    }
    eprintln!(
        "[backtest] quick slice {:.1} s, {} trades, {} wash sales",
        run.elapsed.as_secs_f64(),
        trades.len(),
        washes.len()
    );
}

/// The engine's own trades never wash, checked by the backtest's own
/// wash-sale finder over the trade log (not by the engine's records).
#[test]
fn backtest_slice_makes_no_wash_sales() {
    let tmp = tempdir("overlay-backtest-wash-");
    let out = tmp.path().join("out");
    let run = quick(tmp.path(), &out);
    let washes = csv_rows(&out.join("wash_sales.csv"));
    assert!(washes.is_empty(), "{} wash sales, first {:?}\n{}", washes.len(), washes.first(), run.stdout);
}

/// The personalisation scenarios of the slice: a tilted index, a retiree's
/// income, a transition, each checked from the trade log and the summary.
#[test]
fn backtest_slice_runs_the_personalisation_scenarios() {
    let tmp = tempdir("overlay-backtest-personal-");
    let out = tmp.path().join("out");
    let run = quick(tmp.path(), &out);
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for part in ["### Personalisation scenarios", "**Tilted direct index**", "**Retiree**", "**Transition**"] {
        assert!(summary.contains(part), "{part} missing from the summary:\n{summary}");
    }
    let trades = json_lines(&std::fs::read_to_string(out.join("trades.jsonl")).unwrap());
    let of = |h: &str, reason: &str| -> Vec<&Value> {
        trades.iter().filter(|t| t["household"] == h && t["reason"] == reason).collect()
    };
    // The retiree's income is raised by sales with reason income, and only sales.
    let income = of("1M-retiree", "income");
    assert!(!income.is_empty() && income.iter().all(|t| t["side"] == "sell"), "{}", run.stdout);
    // The transition sells with reason transition; the kept name (its largest) is never sold.
    let transition = of("1M-transition", "transition");
    assert!(!transition.is_empty(), "{}", run.stdout);
    let sold: std::collections::BTreeSet<&str> = trades
        .iter()
        .filter(|t| t["household"] == "1M-transition" && t["side"] == "sell")
        .map(|t| t["security"].as_str().unwrap())
        .collect();
    let kept_line = summary.lines().find(|l| l.contains("the largest kept (")).expect("the transition line");
    let kept = kept_line.split("the largest kept (").nth(1).and_then(|r| r.split(')').next()).expect("the kept name");
    assert!(!kept.is_empty() && !sold.contains(kept), "{kept} was sold: {sold:?}");
    // The gain the transition's sales realized (from the trade log) is within its budget: $30,000, $20,000 a year.
    let mut by_year: BTreeMap<String, Decimal> = BTreeMap::new();
    for t in &transition {
        *by_year.entry(t["date"].as_str().unwrap()[..4].to_string()).or_default() +=
            dec(&t["realized_short_usd"]) + dec(&t["realized_long_usd"]);
    }
    let total: Decimal = by_year.values().sum();
    assert!(total <= Decimal::from(30_000) && by_year.values().all(|y| *y <= Decimal::from(20_000)), "{by_year:?}");
    assert!(summary.contains(&format!("${} of gain used", total.round_dp(2))), "{by_year:?}\n{summary}");
    // The tilted account is in the table with a tracking error against the index.
    let accounts = csv_rows(&out.join("accounts.csv"));
    let tilted = accounts.iter().find(|a| a["household"] == "1M-frac-taxable-tilt-it").expect("the tilted household");
    assert!(tilted["tracking_error_pct"].parse::<f64>().is_ok(), "{tilted:?}");
    assert!(!sold.is_empty());
}
