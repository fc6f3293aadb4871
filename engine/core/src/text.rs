//! Fast, allocation-light text forms for the hot output path: lowercase hex
//! and RFC 3339 UTC times byte-identical to chrono's serde form.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

fn push_digits(out: &mut Vec<u8>, mut value: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for i in (0..width).rev() {
        out[start + i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `t` as chrono's serde writes it (RFC 3339, `Z`, fractional seconds with
/// 3, 6 or 9 digits only when non-zero), for years 0..=9999 without leap
/// seconds; anything else is left to chrono.
pub fn rfc3339_utc(t: &DateTime<Utc>, out: &mut Vec<u8>) {
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&t.year()) || nanos >= 1_000_000_000 {
        out.extend_from_slice(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).as_bytes());
        return;
    }
    push_digits(out, t.year() as u32, 4);
    out.push(b'-');
    push_digits(out, t.month(), 2);
    out.push(b'-');
    push_digits(out, t.day(), 2);
    out.push(b'T');
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    push_digits(out, t.second(), 2);
    if nanos != 0 {
        out.push(b'.');
        if nanos.is_multiple_of(1_000_000) {
            push_digits(out, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            push_digits(out, nanos / 1_000, 6);
        } else {
            push_digits(out, nanos, 9);
        }
    }
    out.push(b'Z');
}

/// Serde `serialize_with` for an optional time, in the same form as chrono's.
pub fn serialize_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        None => s.serialize_none(),
        Some(t) => {
            let mut buf = Vec::with_capacity(32);
            rfc3339_utc(t, &mut buf);
            s.serialize_str(std::str::from_utf8(&buf).expect("RFC 3339 text is ASCII"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_match_chronos_serde_form_exactly() {
        let base = Utc.with_ymd_and_hms(2015, 1, 2, 21, 0, 0).unwrap();
        let samples = [
            base,
            base + chrono::Duration::milliseconds(5),
            base + chrono::Duration::microseconds(7),
            base + chrono::Duration::nanoseconds(9),
            base + chrono::Duration::microseconds(123_456),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
        ];
        for t in samples {
            let mut ours = Vec::new();
            rfc3339_utc(&t, &mut ours);
            let theirs = serde_json::to_string(&t).unwrap();
            assert_eq!(format!("\"{}\"", String::from_utf8(ours).unwrap()), theirs);
        }
    }

    #[test]
    fn hex_matches_the_usual_encoding() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_lower(&bytes), hex::encode(&bytes));
    }
}
