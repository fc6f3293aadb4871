//! The backtest's chart, written as SVG by hand: tracking difference against
//! the index over time, and cumulative harvested losses, per household size.

use super::{Book, Report, Trade};
use chrono::{Datelike, NaiveDate};
use overlay_core::output::OrderReason;
use rust_decimal::Decimal;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 640.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
/// (top, bottom) of each panel.
const PANELS: [(f64, f64); 2] = [(70.0, 320.0), (390.0, 590.0)];
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
/// Most x-axis labels.
const X_LABELS_MAX: i32 = 12;

/// One size bucket's daily series, from the first fill day on.
pub struct Bucket {
    pub label: &'static str,
    /// Composite tracking difference (all the bucket's accounts together), percentage points.
    pub td_pp: Vec<f64>,
    /// Cumulative losses of harvest sells, dollars.
    pub harvested_usd: Vec<f64>,
    /// Cumulative losses of every sell, dollars (context for the harvested line).
    pub losses_usd: Vec<f64>,
}

pub struct Series {
    pub dates: Vec<NaiveDate>,
    pub buckets: Vec<Bucket>,
}

/// The chart's series, measured from day 1 (the first fills) like the report.
pub fn series(
    trades: &[Trade],
    buckets: Vec<(&'static str, Vec<&Book>)>,
    index_values: &[Decimal],
    dates: &[NaiveDate],
) -> Series {
    let f = super::to_f64;
    let idx: Vec<f64> = index_values[1..].iter().map(|v| f(*v)).collect();
    let days = &dates[1..];
    let mut out = Vec::new();
    for (label, books) in buckets {
        let total: Vec<f64> = (1..dates.len()).map(|k| books.iter().map(|b| f(b.values[k])).sum()).collect();
        let td_pp = total.iter().zip(&idx).map(|(v, i)| 100.0 * ((v / total[0]) - (i / idx[0]))).collect();
        let accounts: Vec<_> = books.iter().map(|b| &b.account).collect();
        let mut harvested_usd = Vec::with_capacity(days.len());
        let mut losses_usd = Vec::with_capacity(days.len());
        let (mut h, mut l) = (Decimal::ZERO, Decimal::ZERO);
        let mut mine = trades.iter().filter(|t| accounts.contains(&&t.account)).peekable();
        for d in days {
            while let Some(t) = mine.next_if(|t| t.date <= *d) {
                let loss = t.losses_usd();
                l += loss;
                if t.reason == OrderReason::Harvest {
                    h += loss;
                }
            }
            harvested_usd.push(f(h));
            losses_usd.push(f(l));
        }
        out.push(Bucket { label, td_pp, harvested_usd, losses_usd });
    }
    Series { dates: days.to_vec(), buckets: out }
}

/// A step of 1, 2, 2.5 or 5 × 10^k giving about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|m| m * mag >= raw).unwrap_or(10.0);
    step * mag
}

/// A panel: its y axis, its title, and how it labels a y value.
type Panel<'a> = (&'a Axis, &'static str, &'a dyn Fn(f64) -> String);

struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
}

fn axis(values: impl Iterator<Item = f64>) -> Axis {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let step = nice_step(hi - lo, 5.0);
    Axis { lo: (lo / step).floor() * step, hi: (hi / step).ceil() * step, step }
}

fn money_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("${:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("${:.0}k", v / 1e3)
    } else {
        format!("${v:.0}")
    }
}

pub fn svg(s: &Series, report: &Report) -> String {
    let mut o = String::new();
    let n = s.dates.len();
    let x = |i: usize| LEFT + (WIDTH - LEFT - RIGHT) * if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">overlay backtest, {} .. {}: {} names, cap-weighted index {:+.1}%</text>"#,
        report.first_day, report.last_day, report.names, report.index_return_pct
    );

    let td = axis(s.buckets.iter().flat_map(|b| b.td_pp.iter().copied()));
    let usd = axis(s.buckets.iter().flat_map(|b| b.harvested_usd.iter().chain(&b.losses_usd).copied()));
    let points = |v: f64| format!("{v:+.1}");
    let panels: [Panel<'_>; 2] = [
        (&td, "Tracking difference vs the index (percentage points), all accounts of a household size", &points),
        (&usd, "Cumulative harvested losses (solid) and all realized losses (dashed), by household size", &money_label),
    ];
    for (p, (ax, title, label)) in panels.iter().enumerate() {
        let (top, bottom) = PANELS[p];
        let y = |v: f64| bottom - (bottom - top) * (v - ax.lo) / (ax.hi - ax.lo);
        let _ = writeln!(o, r#"<text x="{LEFT}" y="{}" font-size="13">{title}</text>"#, top - 12.0);
        // Horizontal grid and y labels.
        let mut v = ax.lo;
        while v <= ax.hi + ax.step * 1e-6 {
            let yy = y(v);
            let stroke = if v.abs() < ax.step * 1e-6 { "#888" } else { "#e4e4e4" };
            let _ = writeln!(
                o,
                r#"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="{stroke}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                WIDTH - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                label(v)
            );
            v += ax.step;
        }
        // Vertical grid at month starts.
        let months = s
            .dates
            .first()
            .zip(s.dates.last())
            .map_or(1, |(a, b)| (b.year() - a.year()) * 12 + b.month() as i32 - a.month() as i32 + 1);
        let every = [1, 2, 3, 6, 12].into_iter().find(|m| months / m <= X_LABELS_MAX).unwrap_or(12);
        for i in 1..n {
            let (a, b) = (s.dates[i - 1], s.dates[i]);
            if a.month() == b.month() || (b.month0() as i32) % every != 0 {
                continue;
            }
            let xx = x(i);
            let _ = writeln!(
                o,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{bottom}" stroke="#f0f0f0"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                b.format("%Y-%m")
            );
        }
        let _ = writeln!(
            o,
            r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{:.1}" fill="none" stroke="#888"/>"##,
            WIDTH - LEFT - RIGHT,
            bottom - top
        );
        for (k, b) in s.buckets.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let lines: Vec<(&Vec<f64>, &str)> = if p == 0 {
                vec![(&b.td_pp, "")]
            } else {
                vec![(&b.harvested_usd, ""), (&b.losses_usd, r#" stroke-dasharray="5,4" stroke-opacity="0.6""#)]
            };
            for (values, style) in lines {
                let mut pts = String::new();
                for (i, v) in values.iter().enumerate() {
                    let _ = write!(pts, "{:.1},{:.1} ", x(i), y(*v));
                }
                let _ = writeln!(
                    o,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.6"{style} points="{}"/>"#,
                    pts.trim_end()
                );
            }
        }
        // Legend, top left of the panel, on a white ground over the lines.
        let lx = LEFT + 10.0;
        let _ = writeln!(
            o,
            r##"<rect x="{}" y="{}" width="150" height="{}" fill="white" fill-opacity="0.85" stroke="#ccc"/>"##,
            lx - 6.0,
            top + 5.0,
            16.0 * s.buckets.len() as f64 + 6.0
        );
        for (k, b) in s.buckets.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let ly = top + 16.0 + 16.0 * k as f64;
            let _ = writeln!(
                o,
                r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">${} households</text>"#,
                lx + 18.0,
                lx + 24.0,
                ly + 4.0,
                b.label
            );
        }
    }
    let _ = writeln!(o, "</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(0.9, 5.0), 0.2);
        assert_eq!(nice_step(120_000.0, 5.0), 25_000.0);
        let a = axis([-0.3, 1.7].into_iter());
        assert!(a.lo <= -0.3 && a.hi >= 1.7 && a.step > 0.0);
    }
}
