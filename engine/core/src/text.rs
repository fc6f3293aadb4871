//! Fast, allocation-light text forms for the hot output path: lowercase hex
//! and RFC 3339 UTC times byte-identical to chrono's serde form.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends the lowercase hex of `bytes` to `out`, 32 bytes at a time
/// through a buffer on the stack (one check and one copy per block, not a
/// push per digit: a hash is hexed for every audit record).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    for block in bytes.chunks(32) {
        let n = hex_block(block, &mut buf);
        out.push_str(std::str::from_utf8(&buf[..n]).expect("hex digits are ASCII"));
    }
}

/// [`push_hex`] onto bytes (no text check needed).
pub fn push_hex_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    for block in bytes.chunks(32) {
        let n = hex_block(block, &mut buf);
        out.extend_from_slice(&buf[..n]);
    }
}

/// The hex of up to 32 bytes into `buf`; the digits written.
fn hex_block(block: &[u8], buf: &mut [u8; 64]) -> usize {
    for (pair, b) in buf.chunks_exact_mut(2).zip(block) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
    2 * block.len()
}

/// Whether `s` holds a byte JSON must escape (`"`, `\\` or a control
/// character below 0x20), tested 8 bytes at a time: for each byte,
/// `(x - n) & !x & 0x80` is set for the lowest byte below `n` (n <= 0x80)
/// and for none if no byte is below it, so testing `x` against 0x20, and
/// `x` XOR the quote and XOR the backslash against 1, is exact.
pub fn needs_json_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES * 0x80;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if below(x, 0x20) | below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1) != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `d` as its `Display` writes it (every digit of its scale, a
/// minus for a negative sign, a negative zero's included), without the formatting
/// machinery: a tick's summary holds its price.
pub fn push_decimal(out: &mut String, d: rust_decimal::Decimal) {
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    let mut wide = d.mantissa().unsigned_abs();
    let scale = d.scale() as usize;
    // Digits, least significant first, at least one more than the scale (a
    // leading zero). A u128 division is a library call; a price's mantissa
    // fits 64 bits, whose division by 10 is a multiplication.
    while wide > u128::from(u64::MAX) {
        at -= 1;
        digits[at] = b'0' + (wide % 10) as u8;
        wide /= 10;
    }
    let mut m = wide as u64;
    while m > 0 || digits.len() - at <= scale {
        at -= 1;
        digits[at] = b'0' + (m % 10) as u8;
        m /= 10;
    }
    let text = std::str::from_utf8(&digits[at..]).expect("digits are ASCII");
    if d.is_sign_negative() {
        out.push('-');
    }
    let point = text.len() - scale;
    out.push_str(&text[..point]);
    if scale > 0 {
        out.push('.');
        out.push_str(&text[point..]);
    }
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
    // Each field read from the DateTime converts it to local (UTC) time
    // again; read them from that conversion, done once.
    let (date, time) = (t.date_naive(), t.time());
    let nanos = time.nanosecond();
    if !(0..=9999).contains(&date.year()) || nanos >= 1_000_000_000 {
        out.extend_from_slice(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true).as_bytes());
        return;
    }
    push_digits(out, date.year() as u32, 4);
    out.push(b'-');
    push_digits(out, date.month(), 2);
    out.push(b'-');
    push_digits(out, date.day(), 2);
    out.push(b'T');
    push_digits(out, time.hour(), 2);
    out.push(b':');
    push_digits(out, time.minute(), 2);
    out.push(b':');
    push_digits(out, time.second(), 2);
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
        for n in [0, 1, 31, 32, 33, 64, 65] {
            assert_eq!(hex_lower(&bytes[..n]), hex::encode(&bytes[..n]), "{n} bytes");
            let mut out = b"x".to_vec();
            push_hex_bytes(&mut out, &bytes[..n]);
            assert_eq!(out, [&b"x"[..], hex::encode(&bytes[..n]).as_bytes()].concat(), "{n} bytes");
        }
    }

    #[test]
    fn the_escape_test_finds_every_byte_value_at_every_place_of_a_word() {
        // given 19 plain bytes (two words and a remainder) with one byte set to each value in turn
        for place in 0..19 {
            for value in 0..=255u8 {
                let mut s = [b'a'; 19];
                s[place] = value;
                // then the word-at-a-time test agrees with the plain one
                let plain = value < 0x20 || value == b'"' || value == b'\\';
                assert_eq!(needs_json_escape(&s), plain, "byte {value:#04x} at {place}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_escape_test_is_the_byte_by_byte_one(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), at in 0usize..40, b in proptest::prelude::prop_oneof![proptest::prelude::Just(b'"'), proptest::prelude::Just(b'\\'), 0u8..0x20, 0x20u8..=0xff]) {
            // given any bytes, with one of them sometimes made a quote, a backslash or a control character
            let mut s = s;
            if at < s.len() {
                s[at] = b;
            }
            // then the word-at-a-time test agrees with the plain one
            let plain = s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_json_escape(&s), plain);
        }

        #[test]
        fn decimals_are_written_as_display_writes_them(lo in proptest::prelude::any::<u64>(), hi in proptest::prelude::any::<u32>(), negative in proptest::prelude::any::<bool>(), scale in 0u32..=28, size in 0u8..3) {
            // given any decimal: a 96-bit mantissa, a small one or zero, any scale, either sign
            let hi = if size < 2 { 0 } else { hi };
            let lo = [0, lo % 100_000, lo][usize::from(size)];
            let d = rust_decimal::Decimal::from_parts(lo as u32, (lo >> 32) as u32, hi, negative, scale);
            // (from_parts makes a zero positive; negating keeps its sign: -0.00)
            let d = if d.is_zero() && negative { -d } else { d };
            // then it is written as its Display writes it
            let mut ours = String::new();
            push_decimal(&mut ours, d);
            proptest::prop_assert_eq!(ours, d.to_string());
        }
    }
}
