//! `overlay transition plan`: a household snapshot with a transition plan
//! in, the projected path out, and nothing stored or sent.

use overlay_tests::*;
use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;

fn dec(v: &Value) -> Decimal {
    Decimal::from_str(v.as_str().unwrap_or_else(|| panic!("a decimal string: {v}"))).unwrap()
}

#[test]
fn transition_plan_projects_drift_and_tax_per_period_within_the_budgets() {
    // given the example snapshot: $80,000 of gain over the transition, $50,000 a year, KO kept
    let tmp = tempdir("transition-plan");
    let data = tmp.path().join("never-created");
    let file = workspace_root().join("schemas/examples/household_snapshot_transition.json");
    // when its path is projected as JSON
    let run = overlay(&data, &["transition", "plan", "--household", file.to_str().unwrap(), "--json"]).ok();
    let rows: Vec<Value> = serde_json::from_str(&run.stdout).expect("a JSON array of periods");
    assert!(rows.len() >= 4, "{}", run.stdout);
    // then each period's used budget is the running sum of its realized gains, never past either budget
    let mut used = Decimal::ZERO;
    let mut by_year: std::collections::BTreeMap<String, Decimal> = Default::default();
    for r in &rows {
        let gain = dec(&r["realized_short_usd"]) + dec(&r["realized_long_usd"]);
        used += gain;
        assert_eq!(dec(&r["used_usd"]), used, "{r}");
        *by_year.entry(r["date"].as_str().unwrap()[..4].to_string()).or_default() += gain;
        // tax at the snapshot's rates (37% short, 20% long)
        let tax = (dec(&r["realized_short_usd"]) * Decimal::new(37, 2)
            + dec(&r["realized_long_usd"]) * Decimal::new(20, 2))
        .round_dp(2);
        assert_eq!(dec(&r["tax_usd"]), tax, "{r}");
        assert!(dec(&r["drift_after"]) <= dec(&r["drift_before"]) || dec(&r["sold_usd"]).is_zero(), "{r}");
    }
    assert!(used <= Decimal::from(80_000), "{used}");
    assert!(by_year.values().all(|y| *y <= Decimal::from(50_000)), "{by_year:?}");
    // and drift falls from the first period to the last
    assert!(dec(&rows.last().unwrap()["drift_after"]) < dec(&rows[0]["drift_before"]));
    // and the table form names the plan; nothing was created
    let text = overlay(&data, &["transition", "plan", "--household", file.to_str().unwrap()]).ok();
    assert!(text.stdout.contains("keeping KO") && text.stdout.contains("total tax $"), "{}", text.stdout);
    assert!(!data.exists(), "transition plan created {}", data.display());
}
