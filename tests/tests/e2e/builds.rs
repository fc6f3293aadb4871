//! Determinism across builds and versions (RELIABILITY.md).
//!
//! Across builds: given a demo scenario (real prices, households with legacy
//! lots, restrictions, a bad input of each kind) and the simulated
//! custodian's fills, when the release `overlay` records it in one data
//! directory and the debug `overlay` in another, then each recording passes
//! `overlay replay verify` under the *other* build, and the two recordings
//! hold the same journal, the same state hash and the same order, audit and
//! dead-letter bytes. Optimisation level, debug assertions and overflow
//! checks must change nothing that reaches state or output.
//!
//! Across versions: `tests/fixtures/journal-v1/` holds a journal recorded by
//! an earlier build (its README says which commit and command), exported as
//! its input records, with the state hash and output digests that build
//! produced. The current build folds those same input bytes and must record
//! the same journal, reach the same state hash and publish the same bytes.
//! When a format version is bumped, the old fixture stays and one of the new
//! version is added next to it.

use overlay_app::demo::Custodian;
use overlay_core::event::Envelope;
use overlay_scenario::{demo, Demo, DemoSpec, MarketData, PricePanel};
use overlay_store::{codec, keys, records_after, SledStore, Store, WriteBatch};
use overlay_tests::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The cross-build scenario: about 2,000 inputs and their fills; a
/// debug-build run folds it in a few seconds.
const HOUSEHOLDS: usize = 20;
const PRICE_DAYS: usize = 3;

const GARBAGE_ARGS: [&str; 7] = ["publish", "--raw", "--topic", "overlay.households", "--key", "hh-00002", "-"];
const GARBAGE: &str = "this is not an event\n";

/// What one build recorded in one data directory.
struct Recording {
    orders: String,
    audit: String,
    dead_letters: String,
    inputs: u64,
}

/// With `bin` only: publish the scenario and the bad inputs, run, publish
/// the custodian's fills for every order, run again.
fn record(bin: &Path, dir: &Path, scenario: &Demo) -> Recording {
    let mut events: Vec<Envelope> = scenario.events().cloned().collect();
    events.extend(bad_inputs(scenario, "builds"));
    overlay_using(bin, dir, &["publish", "-"], Some(ndjson(&events).into_bytes())).ok();
    overlay_using(bin, dir, &GARBAGE_ARGS, Some(GARBAGE.into())).ok();
    assert_folded(&overlay_using(bin, dir, &["run"], None).ok(), events.len() + 1);
    let last_day = scenario.days.last().expect("at least one day").date;
    let fills = Custodian::default().fills(&open_log(dir), last_day).expect("the custodian reads the orders topic");
    assert!(!fills.is_empty(), "the scenario made no orders to fill");
    overlay_using(bin, dir, &["publish", "-"], Some(ndjson(&fills).into_bytes())).ok();
    assert_folded(&overlay_using(bin, dir, &["run"], None).ok(), fills.len());
    let text = |what: &str| overlay_using(bin, dir, &[what], None).ok().stdout;
    Recording {
        orders: text("orders"),
        audit: text("audit"),
        dead_letters: text("dead-letters"),
        inputs: (events.len() + 1 + fills.len()) as u64,
    }
}

/// `replay verify` of `dir` by `bin`: must pass; returns the state hash it reports.
#[track_caller]
fn verify(bin: &Path, dir: &Path) -> String {
    let run = overlay_using(bin, dir, &["replay", "verify", "--quiet"], None).ok();
    assert!(run.stdout.contains("replay verify OK"), "{}", run.stdout);
    let hash = run
        .stdout
        .split("state hash ")
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("`replay verify` by {} reported no state hash:\n{}", bin.display(), run.stdout));
    assert_eq!(hash.len(), 64, "not a SHA-256 in hex: {hash:?}");
    hash.to_string()
}

/// One journal record: (seq, source, raw input bytes).
type JournalRecord = (u64, String, Vec<u8>);

/// The journal a data directory's store recorded (read after the engine stopped).
fn journal(dir: &Path) -> Vec<JournalRecord> {
    let store = SledStore::open(&overlay_app::runner::store_dir(dir)).expect("opening the recorded store");
    records_after(&store, keys::JOURNAL, 0)
        .map(|r| {
            let (seq, value) = r.expect("a journal record");
            let (source, raw) = codec::decode_journal(&value).expect("a journal record decodes");
            (seq, source.to_string(), raw.to_vec())
        })
        .collect()
}

#[track_caller]
fn assert_same_text(what: &str, a: &str, b: &str) {
    assert!(!a.is_empty() || what == "dead letters", "the scenario produced no {what}");
    if let Some(d) = first_difference(a, b) {
        panic!("{what} differ between the release and the debug build: {d}");
    }
}

#[test]
fn a_journal_recorded_by_either_build_verifies_under_the_other_with_the_same_bytes() {
    let release = overlay_release_bin();
    let debug = overlay_debug_bin();
    assert_ne!(
        std::fs::read(&release).expect("reading the release binary"),
        std::fs::read(&debug).expect("reading the debug binary"),
        "the release and the debug binary are the same file: nothing would be compared"
    );
    let spec = DemoSpec { households: HOUSEHOLDS, price_days: PRICE_DAYS, ..DemoSpec::default() };
    let scenario = demo(&spec, &MarketData::embedded().expect("shipped market data")).expect("demo scenario");
    let root = tempdir("overlay-builds-");
    let (by_release, by_debug) = (root.path().join("release"), root.path().join("debug"));

    // Given the same inputs recorded by each build.
    let r = record(&release, &by_release, &scenario);
    let d = record(&debug, &by_debug, &scenario);

    // Then each recording verifies under the other build.
    let hash_of_release_by_debug = verify(&debug, &by_release);
    let hash_of_debug_by_release = verify(&release, &by_debug);
    // And the two recordings are the same bytes.
    assert_eq!(hash_of_release_by_debug, hash_of_debug_by_release, "the builds reached different states");
    let (jr, jd) = (journal(&by_release), journal(&by_debug));
    assert_eq!(jr.len() as u64, r.inputs, "the release build's journal holds every input");
    assert_eq!(jd.len() as u64, d.inputs, "the debug build's journal holds every input");
    if let Some(i) = (0..jr.len()).find(|&i| jr[i] != jd[i]) {
        panic!("journal record {} differs between the builds: {:?} vs {:?}", i + 1, jr[i].1, jd[i].1);
    }
    assert_same_text("orders", &r.orders, &d.orders);
    assert_same_text("audit records", &r.audit, &d.audit);
    assert_same_text("dead letters", &r.dead_letters, &d.dead_letters);
    let mut kinds: Vec<String> =
        json_lines(&d.dead_letters).iter().map(|v| v["error"].as_str().unwrap_or("?").to_string()).collect();
    kinds.sort();
    assert_eq!(kinds, ["malformed", "unknown_reference"], "dead letters of the bad inputs");
    eprintln!(
        "[builds] {} inputs, {} orders, {} audit records identical across builds; state hash {}",
        r.inputs,
        json_lines(&r.orders).len(),
        json_lines(&r.audit).len(),
        hash_of_release_by_debug
    );
}

// ---------------------------------------------------------------------------
// The previous-version fixture.

/// Where the fixture lives, from the workspace root.
const FIXTURE_DIR: &str = "tests/fixtures/journal-v1";
/// The fixture scenario: a small universe (the most traded names of the
/// shipped data), a few households, four trading days; a few hundred inputs.
const FIXTURE_NAMES: usize = 24;
const FIXTURE_HOUSEHOLDS: usize = 6;
const FIXTURE_PRICE_DAYS: usize = 4;

/// One line of `journal.ndjson`: a journal record and the input-log record it came from.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct FixtureRecord {
    /// Journal seq (1-based): the state version once applied.
    seq: u64,
    /// `topic/partition/offset` of the input.
    source: String,
    /// The log record's key (UTF-8), if it had one.
    key: Option<String>,
    /// The log record's timestamp (milliseconds since the epoch).
    timestamp_ms: u64,
    /// The raw input bytes, base64 (RFC 4648, with padding).
    value: String,
}

/// An output topic as `overlay orders` (or `audit`, `dead-letters`) prints it: records and SHA-256.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Digest256 {
    records: usize,
    sha256: String,
}

impl Digest256 {
    fn of(text: &str) -> Self {
        Self { records: text.lines().count(), sha256: hex::encode(Sha256::digest(text.as_bytes())) }
    }
}

/// `expected.json`: what the recording build reported.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Expected {
    /// Event envelope schema version of every input.
    schema_version: u32,
    /// The `[log] household_partitions` the recording ran with.
    household_partitions: u32,
    inputs: u64,
    /// As `overlay replay verify` reported it.
    state_hash: String,
    orders: Digest256,
    audit: Digest256,
    dead_letters: Digest256,
}

/// The fixture's market: the `FIXTURE_NAMES` most traded names (by the
/// dollar-volume proxy) priced on the start date, every date kept.
fn fixture_market() -> MarketData {
    let data = MarketData::embedded().expect("shipped market data");
    let start = DemoSpec::default().start_date;
    let day = data.prices.first_on_or_after(start).expect("the start date is in the data");
    let mut cols: Vec<usize> =
        (0..data.prices.tickers.len()).filter(|&c| data.prices.close(day, c).is_some()).collect();
    let volume = |c: usize| data.dollar_volume.get(&data.prices.tickers[c]).map(|v| v.avg_dollar_volume);
    cols.sort_by(|&a, &b| volume(b).cmp(&volume(a)).then(data.prices.tickers[a].cmp(&data.prices.tickers[b])));
    cols.truncate(FIXTURE_NAMES);
    cols.sort_unstable();
    let prices = PricePanel {
        dates: data.prices.dates.clone(),
        tickers: cols.iter().map(|&c| data.prices.tickers[c].clone()).collect(),
        closes: data.prices.closes.iter().map(|row| cols.iter().map(|&c| row[c]).collect()).collect(),
    };
    data.with_prices(prices)
}

fn fixture_path(name: &str) -> PathBuf {
    workspace_root().join(FIXTURE_DIR).join(name)
}

/// Records the fixture with `$OVERLAY_BIN` (the pinned earlier build) into
/// `$OVERLAY_FIXTURE_OUT`. Not part of the suite: run it by name when a
/// version is bumped (see the fixture's README).
#[test]
#[ignore = "records a fixture; run by name with OVERLAY_BIN and OVERLAY_FIXTURE_OUT"]
fn record_journal_fixture() {
    let out = PathBuf::from(std::env::var_os("OVERLAY_FIXTURE_OUT").expect(
        "OVERLAY_FIXTURE_OUT names the directory to write the fixture to (and OVERLAY_BIN the build that records it)",
    ));
    let bin = overlay_bin();
    let spec = DemoSpec { households: FIXTURE_HOUSEHOLDS, price_days: FIXTURE_PRICE_DAYS, ..DemoSpec::default() };
    let scenario = demo(&spec, &fixture_market()).expect("the fixture scenario");
    let root = tempdir("overlay-fixture-");
    let dir = root.path().join("data");
    let rec = record(&bin, &dir, &scenario);
    let state_hash = verify(&bin, &dir);

    // The input-log records, in journal order.
    let log = open_log(&dir);
    let mut by_source = BTreeMap::new();
    for topic in topics::INPUTS {
        for p in 0..log.partitions(topic).expect("partitions") {
            for r in overlay_app::topics::read_partition(&log, topic, p).expect("reading an input partition") {
                by_source.insert(format!("{topic}/{p}/{}", r.offset), r);
            }
        }
    }
    let mut lines = String::new();
    for (seq, source, raw) in journal(&dir) {
        let r = by_source.remove(&source).unwrap_or_else(|| panic!("journal record {seq}: no input at {source}"));
        assert_eq!(r.value, raw, "journal record {seq} is not the bytes at {source}");
        let key = r.key.map(|k| String::from_utf8(k).expect("keys are UTF-8 ids"));
        let line = FixtureRecord { seq, source, key, timestamp_ms: r.timestamp_ms, value: base64_encode(&raw) };
        lines.push_str(&serde_json::to_string(&line).expect("a fixture line"));
        lines.push('\n');
    }
    assert!(by_source.is_empty(), "inputs the journal does not hold: {:?}", by_source.keys().collect::<Vec<_>>());
    let expected = Expected {
        schema_version: 1,
        household_partitions: log.partitions(topics::HOUSEHOLDS).expect("partitions"),
        inputs: rec.inputs,
        state_hash,
        orders: Digest256::of(&rec.orders),
        audit: Digest256::of(&rec.audit),
        dead_letters: Digest256::of(&rec.dead_letters),
    };
    std::fs::create_dir_all(&out).expect("the fixture directory");
    std::fs::write(out.join("journal.ndjson"), lines).expect("writing journal.ndjson");
    let expected = serde_json::to_string_pretty(&expected).expect("expected.json") + "\n";
    std::fs::write(out.join("expected.json"), expected).expect("writing expected.json");
    eprintln!("[builds] fixture of {} inputs written to {}", rec.inputs, out.display());
}

/// The fixture: its records and what the recording build reported.
fn fixture() -> (Vec<FixtureRecord>, Expected) {
    let text = std::fs::read_to_string(fixture_path("journal.ndjson")).expect("the fixture's journal.ndjson");
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(fixture_path("expected.json")).expect("expected.json"))
            .expect("expected.json parses");
    let records: Vec<FixtureRecord> = text
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("journal.ndjson line {}: {e}", i + 1)))
        .collect();
    assert_eq!(records.len() as u64, expected.inputs, "the fixture holds every input");
    (records, expected)
}

/// A data directory under `root` whose input log holds the fixture's
/// records at their recorded places, and a configuration file with the
/// recorded partition count: (data directory, configuration path).
fn fixture_data_dir(root: &Path, records: &[FixtureRecord], expected: &Expected) -> (PathBuf, String) {
    let dir = root.join("data");
    let cfg = root.join("config.toml");
    std::fs::write(&cfg, format!("[log]\nhousehold_partitions = {}\n", expected.household_partitions)).unwrap();
    let log = open_log(&dir);
    overlay_app::topics::ensure_topics(&log, expected.household_partitions).expect("the engine's topics");
    for r in records {
        let (topic, at) = r.source.split_once('/').expect("topic/partition/offset");
        let (p, offset) = at.split_once('/').expect("partition/offset");
        let (p, offset): (u32, u64) = (p.parse().unwrap(), offset.parse().unwrap());
        let value = base64_decode(&r.value).unwrap_or_else(|| panic!("record {}: bad base64", r.seq));
        let record = overlay_log::Record {
            key: r.key.as_ref().map(|k| k.as_bytes().to_vec()),
            value,
            timestamp_ms: r.timestamp_ms,
            partition: Some(p),
        };
        let placed = log.append(topic, &[record]).expect("appending an input");
        assert_eq!(placed, [(p, offset)], "record {} landed elsewhere than it was recorded", r.seq);
    }
    (dir, cfg.to_str().expect("a UTF-8 path").to_string())
}

/// The output topics of `dir` match the digests the fixture's build reported.
#[track_caller]
fn assert_fixture_outputs(dir: &Path, expected: &Expected) {
    for (what, args, want) in [
        ("orders", ["orders"], &expected.orders),
        ("audit records", ["audit"], &expected.audit),
        ("dead letters", ["dead-letters"], &expected.dead_letters),
    ] {
        let got = Digest256::of(&overlay(dir, &args).ok().stdout);
        assert_eq!(&got, want, "{what} differ from what the previous version published");
    }
}

#[test]
fn a_journal_recorded_by_the_previous_version_replays_to_the_same_bytes() {
    // Given the recorded input bytes, back at their places in the input log.
    let (records, expected) = fixture();
    let root = tempdir("overlay-fixture-replay-");
    let (dir, cfg) = fixture_data_dir(root.path(), &records, &expected);
    let cfg = cfg.as_str();

    // When the current build folds them.
    let run = overlay(&dir, &["--config", cfg, "run"]).ok();
    assert_folded(&run, records.len());

    // Then it records the same journal, reaches the same state and publishes the same bytes.
    for ((seq, source, raw), r) in journal(&dir).into_iter().zip(&records) {
        assert_eq!((seq, source.as_str()), (r.seq, r.source.as_str()), "the journal's order changed");
        assert_eq!(base64_encode(&raw), r.value, "journal record {seq} holds other bytes");
    }
    let state_hash = verify(&overlay_bin(), &dir);
    assert_eq!(state_hash, expected.state_hash, "the state reached from the previous version's journal differs");
    assert_fixture_outputs(&dir, &expected);
    assert!(
        expected.orders.records > 0 && expected.dead_letters.records > 0,
        "the fixture exercises orders and dead letters"
    );
}

/// Rewrites `dir`'s store as the first store format kept it: one key per
/// journal entry and output record (the stream's prefix and the seq, u64
/// BE), and no `x:format` record.
fn rewrite_as_format_1(dir: &Path) {
    let store = SledStore::open(&overlay_app::runner::store_dir(dir)).expect("opening the recorded store");
    let mut batch = WriteBatch::default();
    // The deletes go first: a chunk's key is also its last record's key in format 1.
    for prefix in [keys::JOURNAL, keys::ORDERS, keys::AUDIT, keys::DEAD_LETTERS] {
        for r in store.scan(prefix, None) {
            batch.delete(r.expect("a chunk").0);
        }
    }
    for prefix in [keys::JOURNAL, keys::ORDERS, keys::AUDIT, keys::DEAD_LETTERS] {
        for r in records_after(&store, prefix, 0) {
            let (seq, record) = r.expect("a stream record");
            batch.put(keys::seq_key(prefix, seq), record);
        }
    }
    batch.delete(keys::FORMAT.to_vec());
    store.commit(batch).expect("rewriting the store");
}

#[test]
fn a_store_of_the_first_format_is_refused_and_folding_the_log_again_gives_the_same_bytes() {
    // Given the fixture folded by this build, its store then rewritten as the first store format kept it
    let (records, expected) = fixture();
    let root = tempdir("overlay-format-1-");
    let (dir, cfg) = fixture_data_dir(root.path(), &records, &expected);
    assert_folded(&overlay(&dir, &["--config", &cfg, "run"]).ok(), records.len());
    rewrite_as_format_1(&dir);

    // When the engine, or replay, opens it, then each refuses, saying what the store is and what to do
    for args in [["--config", &cfg, "run"].as_slice(), ["replay", "verify", "--quiet"].as_slice()] {
        let run = overlay(&dir, args).fails();
        for said in
            ["this store is in format 1, written by an earlier version of the engine", "Delete the store directory"]
        {
            assert!(run.stderr.contains(said), "`overlay {}` said:\n{}", args.join(" "), run.stderr);
        }
    }
    // and the engine names what to delete in this data directory: the store and the output topics
    let run = overlay(&dir, &["--config", &cfg, "run"]).fails();
    let store_dir = overlay_app::runner::store_dir(&dir);
    let topics_dir = overlay_app::runner::log_dir(&dir).join("topics");
    let outputs = [topics::ORDERS, topics::AUDIT, topics::DEAD_LETTERS].map(|t| topics_dir.join(t));
    for path in std::iter::once(&store_dir).chain(&outputs) {
        assert!(run.stderr.contains(&path.display().to_string()), "no {} in:\n{}", path.display(), run.stderr);
    }

    // When those are deleted
    for path in std::iter::once(&store_dir).chain(&outputs) {
        std::fs::remove_dir_all(path).expect("deleting what the engine named");
    }
    // then the engine folds the input log again into a new store: the same state and the same published bytes
    assert_folded(&overlay(&dir, &["--config", &cfg, "run"]).ok(), records.len());
    assert_eq!(verify(&overlay_bin(), &dir), expected.state_hash);
    assert_fixture_outputs(&dir, &expected);
}

// ---------------------------------------------------------------------------
// Base64 (RFC 4648, standard alphabet, padded): the fixture's text form of raw bytes.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// None for text that is not padded standard base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    for (i, quad) in t.chunks(4).enumerate() {
        let last = i + 1 == t.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | B64.iter().position(|&a| a == c)? as u32;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[test]
fn base64_round_trips_and_matches_rfc_4648() {
    for (raw, text) in
        [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
    {
        assert_eq!(base64_encode(raw.as_bytes()), text);
        assert_eq!(base64_decode(text).as_deref(), Some(raw.as_bytes()));
    }
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(base64_decode(&base64_encode(&all)), Some(all));
    assert_eq!(base64_decode("Zg="), None);
    assert_eq!(base64_decode("Z==="), None);
    assert_eq!(base64_decode("Zg==Zm8="), None);
}
