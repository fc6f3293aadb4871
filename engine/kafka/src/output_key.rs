//! The Kafka key of an output record, read from its JSON without parsing all
//! of it: each output puts the fields its key comes from before its large
//! ones (an audit record's body, a dead letter's refused bytes), so reading
//! stops there. Publishing keys ~100,000 records a run; a whole parse of
//! each was a tenth of the engine thread's work.

use anyhow::{anyhow, bail, Result};
use overlay_proto::topics::{AUDIT, DEAD_LETTERS, ORDERS};

/// An output record's key fields, as far as they were read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OutputKey {
    /// The key the record is published with (empty if it has none).
    pub key: String,
    /// A dead letter's `source` (`topic/partition/offset`).
    pub source: Option<String>,
}

/// The key of a record of output `topic`: an order's account, an audit
/// record's household (its stream if it has none), a dead letter's source.
pub fn output_key(topic: &str, json: &[u8]) -> Result<OutputKey> {
    let (mut account, mut household, mut stream, mut source) = (None, None, None, None);
    let mut failed = None;
    fields(json, |name, value| {
        let slot = match (topic, name) {
            (ORDERS, b"account") => &mut account,
            (AUDIT, b"stream") => &mut stream,
            (AUDIT, b"household") => &mut household,
            (DEAD_LETTERS, b"source") => &mut source,
            // An audit record's household, if it has one, comes before its body.
            (AUDIT, b"body") => return false,
            _ => return true,
        };
        match serde_json::from_slice::<Option<String>>(value) {
            Ok(v) => *slot = v,
            Err(e) => {
                failed = Some(e);
                return false;
            }
        }
        // Only an audit record's stream is read past (its household may follow).
        topic == AUDIT && name == b"stream"
    })?;
    if let Some(e) = failed {
        bail!("an outbox record's key field is not a string: {e}");
    }
    let key = match topic {
        ORDERS => account,
        AUDIT => household.or(stream),
        _ => source.clone(),
    };
    Ok(OutputKey { key: key.unwrap_or_default(), source })
}

/// Calls `f` with each top-level field of the JSON object `json` (its name
/// as written, its value's bytes) until `f` returns false or the object ends.
fn fields(json: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) -> Result<()> {
    let not_json = || anyhow!("an outbox record is not a JSON object");
    let mut i = skip_space(json, 0);
    if json.get(i) != Some(&b'{') {
        return Err(not_json());
    }
    i = skip_space(json, i + 1);
    if json.get(i) == Some(&b'}') {
        return Ok(());
    }
    loop {
        if json.get(i) != Some(&b'"') {
            return Err(not_json());
        }
        let name_end = string_end(json, i).ok_or_else(not_json)?;
        let name = &json[i + 1..name_end - 1];
        i = skip_space(json, name_end);
        if json.get(i) != Some(&b':') {
            return Err(not_json());
        }
        let start = skip_space(json, i + 1);
        let end = value_end(json, start).ok_or_else(not_json)?;
        if !f(name, &json[start..end]) {
            return Ok(());
        }
        i = skip_space(json, end);
        match json.get(i) {
            Some(b',') => i = skip_space(json, i + 1),
            Some(b'}') => return Ok(()),
            _ => return Err(not_json()),
        }
    }
}

fn skip_space(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The index just past the string that starts (with its quote) at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match json.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index just past the value that starts at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = start;
            while json.get(i).is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace()) {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// What a whole parse reads (what publishing did before).
    #[derive(Deserialize)]
    struct Whole {
        #[serde(default)]
        account: Option<String>,
        #[serde(default)]
        household: Option<String>,
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        source: Option<String>,
    }

    fn whole(topic: &str, json: &str) -> OutputKey {
        let w: Whole = serde_json::from_str(json).expect("test records are JSON");
        let key = match topic {
            ORDERS => w.account,
            AUDIT => w.household.or(w.stream),
            _ => w.source.clone(),
        }
        .unwrap_or_default();
        OutputKey { key, source: if topic == DEAD_LETTERS { w.source } else { None } }
    }

    #[test]
    fn keys_read_as_a_whole_parse_reads_them() {
        let cases = [
            (
                ORDERS,
                r#"{"order_id":"o-1","seq":3,"household":"hh-1","account":"acc-1","security":"AAPL","lots":[{"account":"x"}]}"#,
            ),
            (ORDERS, r#"{"order_id":"o-\"account\":\"no\"","seq":3,"household":"hh-1","account":"acc-\u00e9\\1"}"#),
            (
                AUDIT,
                r#"{"seq":1,"stream":"household/hh-1","stream_seq":1,"event_id":null,"at":null,"household":"hh-1","body":{"kind":"decision"},"prev_hash":"","hash":"ab"}"#,
            ),
            (
                AUDIT,
                r#"{"seq":2,"stream":"reference","stream_seq":4,"event_id":"e-1","at":"2015-01-02T00:00:00Z","body":{"kind":"applied","household":"not-this","summary":"a } b"},"prev_hash":"x","hash":"y"}"#,
            ),
            (AUDIT, r#"{ "seq" : 2 , "stream" : "reference" , "household" : null , "body" : [ {"household":"no"} ] }"#),
            (
                DEAD_LETTERS,
                r#"{"seq":1,"event_id":null,"error":"malformed","reason":"bad \"source\": x","source":"overlay.reference/0/17","raw_hex":"00ff"}"#,
            ),
            (DEAD_LETTERS, r#"{"seq":1,"reason":"r","raw_hex":"00"}"#),
            (ORDERS, r#"{}"#),
        ];
        for (topic, json) in cases {
            assert_eq!(output_key(topic, json.as_bytes()).unwrap(), whole(topic, json), "{topic}: {json}");
        }
    }

    #[test]
    fn what_is_not_a_json_object_is_refused() {
        for bad in ["", "[]", "{\"account\"", "{\"seq\":1,", "{\"account\":\"open", "{\"a\":1 \"b\":2}", "nul"] {
            assert!(output_key(ORDERS, bad.as_bytes()).is_err(), "{bad:?} was taken");
        }
        assert!(output_key(ORDERS, br#"{"account":7}"#).is_err(), "a key field that is not a string");
    }
}
