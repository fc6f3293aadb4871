//! Export for compliance: a household's published orders or audit records
//! over a date range (UTC dates of `decided_at` / `at`, both ends included),
//! as JSON lines (the published bytes, unchanged) or CSV (RFC 4180, one
//! header row; nested values as JSON text in their cell).

use chrono::NaiveDate;
use serde_json::Value;

/// What to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Orders,
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("the range is empty: {from} is after {to}")]
    EmptyRange { from: NaiveDate, to: NaiveDate },
    #[error("record {index} is not a JSON {what} record: {message}")]
    NotARecord { index: usize, what: &'static str, message: String },
    #[error("no {what} for household {household} {range}")]
    Nothing { what: &'static str, household: String, range: String },
}

/// The selection: one household, optionally a date range.
#[derive(Clone, Debug)]
pub struct Selection {
    pub household: String,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Selection {
    fn range(&self) -> String {
        match (self.from, self.to) {
            (None, None) => "at all".into(),
            (Some(f), None) => format!("from {f}"),
            (None, Some(t)) => format!("up to {t}"),
            (Some(f), Some(t)) => format!("from {f} to {t}"),
        }
    }
}

const ORDER_COLUMNS: [&str; 12] = [
    "order_id",
    "seq",
    "household",
    "account",
    "security",
    "side",
    "quantity",
    "ref_price",
    "reason",
    "lots",
    "cause_event_id",
    "decided_at",
];
const AUDIT_COLUMNS: [&str; 10] =
    ["seq", "stream", "stream_seq", "event_id", "at", "household", "kind", "body", "prev_hash", "hash"];

/// Exports the selected records of `records` (published bytes, in order).
/// Returns the text and how many records it holds; selecting nothing is an error.
pub fn export(
    kind: Kind,
    format: Format,
    selection: &Selection,
    records: impl IntoIterator<Item = Vec<u8>>,
) -> Result<(String, u64), ExportError> {
    if let (Some(from), Some(to)) = (selection.from, selection.to) {
        if from > to {
            return Err(ExportError::EmptyRange { from, to });
        }
    }
    let (what, time_field, columns): (&'static str, &str, &[&str]) = match kind {
        Kind::Orders => ("orders", "decided_at", &ORDER_COLUMNS),
        Kind::Audit => ("audit records", "at", &AUDIT_COLUMNS),
    };
    let mut out = String::new();
    if format == Format::Csv {
        out.push_str(&columns.join(","));
        out.push_str("\r\n");
    }
    let mut count = 0;
    for (index, bytes) in records.into_iter().enumerate() {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ExportError::NotARecord {
            index: index + 1,
            what,
            message: e.to_string(),
        })?;
        if v.get("household").and_then(Value::as_str) != Some(selection.household.as_str()) {
            continue;
        }
        // Dates compare as text: the engine writes RFC 3339 UTC instants.
        let date = v.get(time_field).and_then(Value::as_str).and_then(|t| t.get(..10)).unwrap_or("");
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok();
        let inside = |d: Option<NaiveDate>| {
            d.is_some_and(|d| selection.from.is_none_or(|f| d >= f) && selection.to.is_none_or(|t| d <= t))
        };
        if (selection.from.is_some() || selection.to.is_some()) && !inside(date) {
            continue;
        }
        match format {
            Format::JsonLines => {
                out.push_str(&String::from_utf8_lossy(&bytes));
                out.push('\n');
            }
            Format::Csv => {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        let cell = match (kind, *c) {
                            (Kind::Audit, "kind") => v.get("body").and_then(|b| b.get("kind")).cloned(),
                            _ => v.get(*c).cloned(),
                        };
                        csv_cell(cell.as_ref())
                    })
                    .collect();
                out.push_str(&cells.join(","));
                out.push_str("\r\n");
            }
        }
        count += 1;
    }
    if count == 0 {
        return Err(ExportError::Nothing { what, household: selection.household.clone(), range: selection.range() });
    }
    Ok((out, count))
}

/// A CSV cell: strings as they are, other values as JSON text; quoted when needed.
fn csv_cell(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, household: &str, day: &str) -> Vec<u8> {
        format!(
            r#"{{"order_id":"{id}","seq":1,"household":"{household}","account":"{household}-TX","security":"AAPL","side":"buy","quantity":"3","ref_price":"1.5","reason":"setup","lots":[{{"lot_id":1}}],"cause_event_id":"e, \"quoted\"","decided_at":"{day}T20:05:00Z"}}"#
        )
        .into_bytes()
    }

    fn sel(from: Option<&str>, to: Option<&str>) -> Selection {
        let d = |s: Option<&str>| s.map(|s| s.parse().unwrap());
        Selection { household: "H1".into(), from: d(from), to: d(to) }
    }

    fn orders() -> Vec<Vec<u8>> {
        vec![order("o1", "H1", "2025-03-13"), order("o2", "H2", "2025-03-14"), order("o3", "H1", "2025-03-14")]
    }

    #[test]
    fn json_lines_keep_the_published_bytes_of_the_household_in_the_range() {
        let (text, n) = export(Kind::Orders, Format::JsonLines, &sel(Some("2025-03-14"), None), orders()).unwrap();
        assert_eq!(n, 1);
        assert_eq!(text.as_bytes(), [order("o3", "H1", "2025-03-14"), b"\n".to_vec()].concat());
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let (text, n) = export(Kind::Orders, Format::Csv, &sel(None, Some("2025-03-14")), orders()).unwrap();
        assert_eq!(n, 2);
        let rows: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(rows[0], ORDER_COLUMNS.join(","));
        assert_eq!(
            rows[1],
            r#"o1,1,H1,H1-TX,AAPL,buy,3,1.5,setup,"[{""lot_id"":1}]","e, ""quoted""",2025-03-13T20:05:00Z"#
        );
        assert_eq!(rows.len(), 4, "two rows and the final line end");
    }

    #[test]
    fn an_empty_range_or_an_empty_selection_is_a_clear_error() {
        let err = export(Kind::Orders, Format::Csv, &sel(Some("2025-03-15"), Some("2025-03-14")), orders());
        assert!(matches!(err, Err(ExportError::EmptyRange { .. })));
        let err = export(Kind::Orders, Format::Csv, &sel(Some("2025-03-15"), None), orders()).unwrap_err();
        assert_eq!(err.to_string(), "no orders for household H1 from 2025-03-15");
    }
}
