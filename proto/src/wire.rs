//! The commonest input, a price tick, read straight from its protobuf bytes.
//!
//! A replay reads every tick again, so decoding them is a good part of its
//! time; the general path builds prost's message first (a string for the
//! price, the oneof machinery) and converts it after. This reads the bytes
//! as prost writes them: the envelope's fields in field order, each at most
//! once, then the tick's, with no unknown field. Anything else (another
//! payload, fields out of order or repeated, a malformed varint, text that
//! is not UTF-8) is left to the general path by returning None, so the
//! result is always the general path's, errors included (a property test
//! holds the two equal).

use crate::{dec, time};
use chrono::{DateTime, Utc};
use overlay_core::event::{Envelope, InputError, Payload, PriceTick};
use overlay_core::ids::SecurityId;
use rust_decimal::Decimal;

/// Protobuf wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;

/// The envelope's payload field for a price tick (`price_tick = 12`).
const PRICE_TICK_FIELD: u64 = 12;

/// A price tick's fields as read from its bytes, not yet converted.
pub(crate) struct Tick<'a> {
    event_id: &'a str,
    producer: &'a str,
    event_time: i64,
    schema_version: u32,
    security: &'a str,
    price: &'a str,
    as_of: i64,
}

/// The envelope of a price tick in the layout prost writes, decoded and
/// validated as [`crate::decode_envelope`] would; None for any other bytes.
#[cfg(test)]
pub(crate) fn price_tick(bytes: &[u8]) -> Option<Result<Envelope, InputError>> {
    Some(Tick::read(bytes)?.envelope())
}

impl<'a> Tick<'a> {
    /// The fields of a tick in prost's layout; None for any other bytes.
    pub(crate) fn read(bytes: &'a [u8]) -> Option<Self> {
        let (mut event_id, mut producer, mut event_time, mut schema_version) = ("", "", 0i64, 0u32);
        let mut tick = None;
        fields(bytes, |field, r| {
            match field {
                (1, LEN) => event_id = r.text()?,
                (2, LEN) => producer = r.text()?,
                // prost reads an int64 as the varint's bits.
                (3, VARINT) => event_time = r.varint()? as i64,
                (4, VARINT) => schema_version = u32::try_from(r.varint()?).ok()?,
                (PRICE_TICK_FIELD, LEN) => tick = Some(tick_fields(r.bytes()?)?),
                _ => return None,
            }
            Some(())
        })?;
        let (security, price, as_of) = tick?;
        Some(Self { event_id, producer, event_time, schema_version, security, price, as_of })
    }

    /// The domain envelope, converted in the order [`crate::envelope_from_pb`]
    /// converts (so the first error is the same) and validated.
    pub(crate) fn envelope(&self) -> Result<Envelope, InputError> {
        let (event_time, price, as_of) = self.values()?;
        let env = Envelope {
            event_id: self.event_id.to_string(),
            producer: self.producer.to_string(),
            event_time,
            schema_version: self.schema_version,
            payload: Payload::PriceTick(PriceTick {
                security: SecurityId::new(self.security.to_string()),
                price,
                as_of,
            }),
        };
        env.validate().map_err(|e| e.concerning(&env))?;
        Ok(env)
    }

    /// [`Tick::envelope`] written over `out`: the text of a tick envelope
    /// already there is overwritten in place, so a reader that decodes many
    /// ticks allocates nothing for them.
    pub(crate) fn envelope_into(&self, out: &mut Result<Envelope, InputError>) {
        let Ok(env @ Envelope { payload: Payload::PriceTick(_), .. }) = out else {
            *out = self.envelope();
            return;
        };
        let (event_time, price, as_of) = match self.values() {
            Ok(v) => v,
            Err(e) => {
                *out = Err(e);
                return;
            }
        };
        env.event_id.clear();
        env.event_id.push_str(self.event_id);
        env.producer.clear();
        env.producer.push_str(self.producer);
        env.event_time = event_time;
        env.schema_version = self.schema_version;
        if let Payload::PriceTick(t) = &mut env.payload {
            t.security.set(self.security);
            t.price = price;
            t.as_of = as_of;
        }
        if let Err(e) = env.validate() {
            *out = Err(e.concerning(env));
        }
    }

    /// The converted values, in the general path's order: the event time, the price, the as-of time.
    fn values(&self) -> Result<(DateTime<Utc>, Decimal, DateTime<Utc>), InputError> {
        let event_time = time("event_time", self.event_time)?;
        let price = dec("price_tick.price", self.price)?;
        let as_of = time("price_tick.as_of", self.as_of)?;
        Ok((event_time, price, as_of))
    }
}

/// A `PriceTick` message's fields: security, price text, as-of micros.
fn tick_fields(bytes: &[u8]) -> Option<(&str, &str, i64)> {
    let (mut security, mut price, mut as_of) = ("", "", 0i64);
    fields(bytes, |field, r| {
        match field {
            (1, LEN) => security = r.text()?,
            (2, LEN) => price = r.text()?,
            (3, VARINT) => as_of = r.varint()? as i64,
            _ => return None,
        }
        Some(())
    })?;
    Some((security, price, as_of))
}

/// Walks a message's fields in order, each at most once, calling `read`
/// with (field number, wire type) to read its value; None as soon as a
/// field is out of order or repeated, or `read` declines.
fn fields<'a>(bytes: &'a [u8], mut read: impl FnMut((u64, u64), &mut Reader<'a>) -> Option<()>) -> Option<()> {
    let mut r = Reader { buf: bytes, at: 0 };
    let mut last = 0;
    while r.at < bytes.len() {
        let key = r.varint()?;
        let field = key >> 3;
        if field <= last {
            return None;
        }
        last = field;
        read((field, key & 7), &mut r)?;
    }
    Some(())
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A varint of at most 10 bytes whose value fits 64 bits (what prost accepts).
    fn varint(&mut self) -> Option<u64> {
        // Most are one byte: a field's key, a text's length.
        let first = *self.buf.get(self.at)?;
        if first < 0x80 {
            self.at += 1;
            return Some(u64::from(first));
        }
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let end = self.at.checked_add(n)?;
        let b = self.buf.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}
