//! Operations: the engine's `/metrics` lag figures against offsets read
//! independently (the embedded log's own ends and group positions, and
//! `overlay status` once the engine is stopped; on Kafka, kcat's end offsets
//! and the group's committed offsets from the broker), the lag page in
//! headless Chromium, structured JSON logs, and the deployment kit
//! (dashboard and alert rules against the names the engine exports,
//! promtool, the Kubernetes manifests and the systemd unit).

use overlay_core::event::Envelope;
use overlay_scenario::{demo, DemoSpec, MarketData};
use overlay_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `[ops]` for the tests: a free loopback port, quick polls, ready only when fully caught up.
const OPS: &str = "[ops]\nlisten = \"127.0.0.1:0\"\nlag_poll_ms = 100\nready_lag_max = 0\n";

/// A partition's figures from one scrape: (end, position, lag), by `topic/partition`.
type Figures = BTreeMap<String, (u64, u64, u64)>;

fn scenario_events(households: usize, price_days: usize) -> Vec<Envelope> {
    let spec = DemoSpec { households, price_days, ..DemoSpec::default() };
    demo(&spec, &MarketData::embedded().expect("shipped market data"))
        .expect("demo scenario")
        .events()
        .cloned()
        .collect()
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The lag gauges of one `/metrics` text, checked for consistency (lag = end − position).
fn figures(text: &str) -> Figures {
    let mut by: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for s in prometheus_samples(text) {
        if let "overlay_consumer_lag" | "overlay_input_end_offset" | "overlay_input_position" = s.name.as_str() {
            let key = format!("{}/{}", s.labels["topic"], s.labels["partition"]);
            assert!(s.value >= 0.0 && s.value.fract() == 0.0, "{} {key} = {}", s.name, s.value);
            by.entry(key).or_default().insert(s.name.clone(), s.value as u64);
        }
    }
    by.into_iter()
        .map(|(k, m)| {
            let (end, pos, lag) =
                (m["overlay_input_end_offset"], m["overlay_input_position"], m["overlay_consumer_lag"]);
            assert_eq!(lag, end.saturating_sub(pos), "{k}: lag {lag} is not end {end} − position {pos}");
            (k, (end, pos, lag))
        })
        .collect()
}

fn sum_of(text: &str, name: &str) -> f64 {
    prometheus_samples(text).iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

/// Scrapes until `done` holds for the `/metrics` text, failing after `limit` with `what`.
fn scrape_until(addr: &str, what: &str, limit: Duration, mut done: impl FnMut(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let (code, text) = http_get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        figures(&text); // consistent at every scrape
        if done(&text) {
            return text;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}; last scrape:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The embedded log's own figures: (end offset, the engine group's committed position).
fn log_figures(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    let log = open_log(dir);
    let mut out = BTreeMap::new();
    for t in topics::INPUTS {
        for p in 0..log.partitions(t).unwrap() {
            let end = log.end_offset(t, p).unwrap();
            let pos = log.committed(topics::ENGINE_GROUP, t, p).unwrap().unwrap_or(0);
            out.insert(format!("{t}/{p}"), (end, pos));
        }
    }
    out
}

/// `overlay status`'s table (read from the engine's store and log): partition → (position, end, lag).
fn status_figures(dir: &Path) -> BTreeMap<String, (u64, u64, u64)> {
    let out = overlay(dir, &["status"]).ok().stdout;
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[0].contains('/')).then(|| (f[0].to_string(), (num(f[1]), num(f[2]), num(f[3]))))
        })
        .collect()
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

fn stop(mut child: Running) {
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(term.expect("kill -TERM").success());
    let status = child.wait().expect("reaped");
    assert!(status.success(), "the engine exited {status} on SIGTERM");
}

/// Waits until the engine says it is ready (with `ready_lag_max = 0`: every input durably folded).
fn wait_ready(addr: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let (code, body) = http_get(addr, "/readyz");
        if code == 200 {
            return;
        }
        assert_eq!(code, 503, "{body}");
        assert!(started.elapsed() < limit, "not ready within {limit:?}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn embedded_lag_on_metrics_equals_the_logs_own_offsets_once_quiet() {
    // given a backlog of a demo scenario's events in the embedded log
    let tmp = tempdir("overlay-ops-lag-");
    let dir = tmp.path().join("engine");
    let events = scenario_events(20, 2);
    publish(&dir, &events).ok();
    let backlog = log_figures(&dir);
    assert!(backlog.values().filter(|(end, _)| *end > 0).count() >= 5, "a backlog across partitions: {backlog:?}");
    // when the engine follows the log with its metrics server on
    let cfg = write_config(tmp.path(), "ops.toml", OPS);
    let err = tmp.path().join("run.stderr");
    let mut child = spawn(&dir, &["--config", cfg.to_str().unwrap(), "run", "--follow"], &err);
    let addr = ops_address(&mut child, &err, Duration::from_secs(60));
    // then the lag it started from (its first poll, made before it folds anything) was the whole backlog
    let started = Instant::now();
    let status = loop {
        let (code, status) = http_get(&addr, "/api/status");
        assert_eq!(code, 200);
        let status: Value = serde_json::from_str(&status).unwrap();
        if status["history"].as_array().is_some_and(|h| !h.is_empty()) {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no poll within a minute: {status}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let first = &status["history"][0]["lag"];
    for (key, (end, _)) in &backlog {
        assert_eq!(first[key].as_u64(), Some(*end), "{key}: the first poll's lag is its end offset: {first}");
    }
    // and once every input is durably folded (the engine counts them once durable) it is ready
    let inputs = input_count(&open_log(&dir)) as f64;
    scrape_until(&addr, "every input counted", Duration::from_secs(180), |t| {
        sum_of(t, "overlay_events_total") == inputs
    });
    wait_ready(&addr, Duration::from_secs(30));
    // and, quiet, its figures equal the log's own: ends, the group's positions, their difference
    std::thread::sleep(Duration::from_millis(500));
    let scraped = figures(&http_get(&addr, "/metrics").1);
    let log = log_figures(&dir);
    assert_eq!(scraped.keys().collect::<Vec<_>>(), log.keys().collect::<Vec<_>>(), "every input partition shows");
    for (key, (end, pos)) in &log {
        assert_eq!(scraped[key], (*end, *pos, end - pos), "{key}: scraped (end, position, lag) vs the log's");
    }
    assert!(log.values().any(|(end, _)| *end > 0));

    // when more events arrive while it follows
    let more = scenario_events(6, 1);
    let more: Vec<Envelope> = more
        .into_iter()
        .filter(|e| e.payload.type_name() == "household_upserted")
        .map(|mut e| {
            e.event_id = format!("{}-again", e.event_id);
            e
        })
        .collect();
    publish(&dir, &more).ok();
    let inputs = input_count(&open_log(&dir)) as f64;
    scrape_until(&addr, "the new inputs counted", Duration::from_secs(120), |t| {
        sum_of(t, "overlay_events_total") == inputs
    });
    wait_ready(&addr, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let scraped = figures(&http_get(&addr, "/metrics").1);
    let log = log_figures(&dir);
    for (key, (end, pos)) in &log {
        assert_eq!(scraped[key], (*end, *pos, end - pos), "{key}, after more events: scraped vs the log's");
    }
    assert_ne!(log, backlog, "the new events moved the ends");
    // and after a graceful stop, `overlay status` (from the store) gives the same figures
    stop(child);
    let status = status_figures(&dir);
    assert_eq!(status.len(), scraped.len(), "{status:?}");
    for (key, (pos, end, lag)) in status {
        assert_eq!(scraped[&key], (end, pos, lag), "{key}: scraped vs `overlay status`");
    }
}

/// End offsets of `topic`'s partitions, by kcat (Debian's, librdkafka 2.0.2) from the broker.
fn kcat_ends(brokers: &str, topic: &str, partitions: u32) -> BTreeMap<String, u64> {
    let mut args = vec!["-b".to_string(), brokers.to_string(), "-Q".to_string()];
    for p in 0..partitions {
        args.extend(["-t".to_string(), format!("{topic}:{p}:-1")]);
    }
    let out = Command::new("kcat")
        .args(&args)
        .output()
        .unwrap_or_else(|e| panic!("no kcat ({e}): run `bash scripts/setup-kafka` (it installs Debian's kcat)"));
    assert!(out.status.success(), "kcat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    // "overlay.households [0] offset 12"
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[2] == "offset")
                .then(|| (format!("{}/{}", f[0], f[1].trim_matches(['[', ']'])), num(f[3])))
        })
        .collect()
}

/// The engine group's committed offsets in `topic`, from the broker (an
/// offset fetch; this client never joins the group).
fn group_committed(brokers: &str, topic: &str, partitions: u32) -> BTreeMap<String, u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", topics::ENGINE_GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p as i32);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(30)).expect("the group's offsets");
    committed
        .elements()
        .iter()
        .map(|e| {
            let at = match e.offset() {
                Offset::Offset(o) => o as u64,
                _ => 0,
            };
            (format!("{}/{}", e.topic(), e.partition()), at)
        })
        .collect()
}

#[test]
fn kafka_lag_on_metrics_equals_the_brokers_watermarks_and_the_groups_committed_offsets() {
    // given a scenario's events on librdkafka's mock cluster, 4 household partitions
    let broker = Broker::mock(4);
    let tmp = tempdir("overlay-ops-kafka-lag-");
    let events = scenario_events(12, 2);
    let file = tmp.path().join("events.ndjson");
    std::fs::write(&file, ndjson(&events)).unwrap();
    overlay_kafka(&tmp.path().join("admin"), &broker, 4, &["publish", "--kafka", file.to_str().unwrap()]).ok();
    // and the broker's end offsets, read by kcat
    let brokers = broker.brokers();
    let mut ends = kcat_ends(&brokers, "overlay.households", 4);
    ends.extend(kcat_ends(&brokers, "overlay.reference", 1));
    assert_eq!(ends.len(), 5, "{ends:?}");
    assert_eq!(ends.values().sum::<u64>(), events.len() as u64, "kcat sees every event: {ends:?}");
    assert!(ends.values().filter(|e| **e > 0).count() >= 3, "events in most partitions: {ends:?}");
    // when an engine follows them with its metrics server on
    let err = tmp.path().join("run.stderr");
    let dir = tmp.path().join("engine");
    let mut child = spawn_kafka(&dir, &broker, 4, OPS, &["run", "--kafka", "--follow"], &err);
    let addr = ops_address(&mut child, &err, Duration::from_secs(60));
    // then it counts every input once durable (each shard folds the whole
    // reference topic and its own household partition) and becomes ready
    let household_events: u64 = (0..4).map(|p| ends[&format!("overlay.households/{p}")]).sum();
    let expected = (4 * ends["overlay.reference/0"] + household_events) as f64;
    scrape_until(&addr, "every input counted", Duration::from_secs(180), |t| {
        sum_of(t, "overlay_events_total") == expected
    });
    wait_ready(&addr, Duration::from_secs(60));
    // and once quiet (the group's commits are asynchronous: two equal reads apart) ...
    let mut committed = group_committed(&brokers, "overlay.households", 4);
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let again = group_committed(&brokers, "overlay.households", 4);
        if again == committed || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        committed = again;
    }
    // ... the scraped ends are the broker's, the positions the group's, the lag their difference
    let scraped = figures(&http_get(&addr, "/metrics").1);
    assert_eq!(scraped.keys().collect::<Vec<_>>(), ends.keys().collect::<Vec<_>>(), "every partition shows");
    for (key, end) in &ends {
        let (s_end, s_pos, s_lag) = scraped[key];
        assert_eq!(s_end, *end, "{key}: scraped end vs kcat's");
        // The reference topic has no group offset: every shard reads all of it.
        let pos = committed.get(key).copied().unwrap_or(*end);
        assert_eq!((s_pos, s_lag), (pos, end - pos), "{key}: scraped position and lag vs the group's committed offset");
    }
    let text = http_get(&addr, "/metrics").1;
    assert_eq!(sum_of(&text, "overlay_decision_latency_seconds_count"), expected, "every input's latency observed");
    assert!(sum_of(&text, "overlay_orders_total") > 0.0, "{text}");
    stop(child);
}

/// Chromium, headless, as the tests run it (as root in CI: no sandbox).
fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("no chromium ({e}): run `bash scripts/setup-ops` (it installs Debian's chromium)"))
}

/// Where test artifacts go: `target/artifacts` (or under `$CARGO_TARGET_DIR`).
fn artifacts_dir() -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
    let dir = if target.is_absolute() { target } else { workspace_root().join(target) }.join("artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    dir
}

#[test]
fn the_lag_page_in_headless_chromium_shows_every_partition() {
    // given an engine following a scenario with a dead letter, its metrics server on
    let tmp = tempdir("overlay-ops-page-");
    let dir = tmp.path().join("engine");
    publish(&dir, &scenario_events(10, 2)).ok();
    publish_text(&dir, &["--raw", "--topic", "overlay.households", "--key", "hh-00003"], "not an event at all\n").ok();
    let cfg = write_config(tmp.path(), "ops.toml", OPS);
    let err = tmp.path().join("run.stderr");
    let mut child = spawn(&dir, &["--config", cfg.to_str().unwrap(), "run", "--follow"], &err);
    let addr = ops_address(&mut child, &err, Duration::from_secs(60));
    wait_ready(&addr, Duration::from_secs(180));
    // when the lag page is opened in headless Chromium and given time to fetch its data
    let url = format!("http://{addr}/");
    let profile = tmp.path().join("chromium-profile");
    let dom = chromium(&["--virtual-time-budget=8000", "--dump-dom", &url], &profile);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // then it is live (it received data), with every input partition and its lag, and the dead letter
    assert!(dom.contains("data-state=\"live\""), "the page never received data:\n{}", head(&dom, 3000));
    let log = log_figures(&dir);
    for (key, (end, pos)) in &log {
        let row = format!("data-partition=\"{key}\" data-lag=\"{}\"", end - pos);
        assert!(dom.contains(&row), "no row {row}:\n{}", head(&dom, 5000));
    }
    assert!(dom.contains(&format!("data-partitions=\"{}\"", log.len())), "{}", head(&dom, 3000));
    assert!(dom.contains("data-dead-letter=\"1\"") && dom.contains("malformed"), "the dead letter is listed");
    for chart in ["lag-chart", "rate-chart"] {
        let svg = dom.split(&format!("id=\"{chart}\"")).nth(1).and_then(|r| r.split("</svg>").next()).unwrap_or("");
        assert!(svg.contains("<path"), "{chart} draws a line:\n{svg}");
    }
    // and a screenshot of it is kept
    let png = artifacts_dir().join("lag-page.png");
    let _ = std::fs::remove_file(&png);
    let shot = chromium(
        &["--window-size=1400,1000", "--virtual-time-budget=8000", &format!("--screenshot={}", png.display()), &url],
        &profile,
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!("no screenshot at {} ({e}): {}", png.display(), String::from_utf8_lossy(&shot.stderr))
    });
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000, "a real PNG ({} bytes)", bytes.len());
    eprintln!("[ops] the lag page's screenshot: {}", png.display());
    stop(child);
}

#[test]
fn logs_in_json_name_households_events_and_orders_by_id_and_nothing_else() {
    // given the example day and a record that is no event
    let tmp = tempdir("overlay-ops-logs-");
    let dir = tmp.path().join("engine");
    publish_file(&dir, &workspace_root().join("schemas/examples/day.ndjson")).ok();
    publish_text(&dir, &["--raw", "--topic", "overlay.households", "--key", "HH-30562"], "garbage\n").ok();
    // when the engine folds them, logging JSON at debug level for itself
    let out = command(&dir, &["run"])
        .env("OVERLAY_LOG_FORMAT", "json")
        .env("OVERLAY_LOG", "warn,overlay_app=debug")
        .output()
        .expect("overlay run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // then every log line is a JSON object
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |message: &str| -> Vec<&Value> { lines.iter().filter(|l| l["message"] == message).collect() };
    // and each order is logged with its ids as fields, and no quantities, prices or amounts
    let orders = of("order decided");
    let published = overlay_tests::orders(&dir);
    assert_eq!(orders.len(), published.len(), "one line per order");
    let want: BTreeSet<&str> =
        ["timestamp", "level", "message", "target", "shard", "order_id", "household", "account", "event_id", "reason"]
            .into();
    for (line, order) in orders.iter().zip(&published) {
        let keys: BTreeSet<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, want, "{line}");
        assert_eq!(line["order_id"], order["order_id"]);
        assert_eq!(line["household"], order["household"]);
    }
    // and each input with its event id, type and household
    let folded = of("input folded");
    assert_eq!(folded.len() as u64, input_count(&open_log(&dir)));
    assert!(folded.iter().any(|l| l["household"] == "HH-30562" && l["event_type"] == "household_upserted"));
    // and the refused record as a warning with its error kind
    let refused = of("input refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["level"], "WARN");
    assert_eq!(refused[0]["error"], "malformed");
    // and a format that does not exist is reported, not ignored
    let typo = command(&dir, &["status"]).env("OVERLAY_LOG_FORMAT", "jsno").output().unwrap();
    assert!(String::from_utf8_lossy(&typo.stderr).contains("is not a log format"));
}

/// Metric names a PromQL expression uses: identifiers that are not
/// functions, keywords, label names, label values or durations.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    // Operators, modifiers, and the aggregations (which may be followed by `by (…)` before their parentheses).
    const KEYWORDS: [&str; 24] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut braces, mut in_string) = (0, 0, None::<char>);
    let mut after_grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = in_string {
            if c == '\\' {
                i += 1;
            } else if c == q {
                in_string = None;
            }
            i += 1;
            continue;
        }
        match c {
            '"' | '\'' | '`' => in_string = Some(c),
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => {
                // A range or subquery: skip its duration.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
            }
            '$' => {
                // A Grafana variable ($__rate_interval, ${datasource}).
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let grouping =
                    ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word.as_str());
                if braces == 0 && !after_grouping && next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
                // A grouping clause's label list follows in parentheses.
                if grouping {
                    after_grouping = true;
                }
                continue;
            }
            '(' => {}
            ')' => after_grouping = false,
            _ => {}
        }
        i += 1;
    }
    names
}

/// Every PromQL expression in a Grafana dashboard: targets' `expr` and query variables.
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) | ("definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// `label_values(metric, label)` → `metric`; anything else as it is.
fn as_promql(expr: &str) -> String {
    match expr.trim().strip_prefix("label_values(") {
        Some(rest) => rest.split([',', ')']).next().unwrap_or("").to_string(),
        None => expr.to_string(),
    }
}

/// The families a running engine declares on `/metrics`.
fn exported_families() -> BTreeMap<String, String> {
    let tmp = tempdir("overlay-ops-families-");
    let cfg = write_config(tmp.path(), "ops.toml", OPS);
    let err = tmp.path().join("run.stderr");
    let mut child = spawn(&tmp.path().join("engine"), &["--config", cfg.to_str().unwrap(), "run", "--follow"], &err);
    let addr = ops_address(&mut child, &err, Duration::from_secs(60));
    // Ready: the engine has opened its store and handles SIGTERM.
    wait_ready(&addr, Duration::from_secs(60));
    let (code, text) = http_get(&addr, "/metrics");
    stop(child);
    assert_eq!(code, 200);
    prometheus_families(&text)
}

/// Whether `name` is an exported family, or a histogram family's series.
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    families.contains_key(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|base| families.get(base).is_some_and(|k| k == "histogram")))
}

fn yaml(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
        })
        .collect()
}

/// Runs promtool with `args` in `dir` when it is installed; says why not otherwise.
fn promtool(dir: &Path, args: &[&str]) -> bool {
    match Command::new("promtool").args(args).current_dir(dir).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "promtool {args:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(e) => {
            eprintln!("[ops] SKIPPED promtool {args:?}: promtool is not installed ({e}); `bash scripts/setup-ops` installs Debian's prometheus, which provides it");
            false
        }
    }
}

#[test]
fn the_dashboard_and_alert_rules_parse_and_use_only_metrics_the_engine_exports() {
    let deploy = workspace_root().join("deploy");
    let families = exported_families();
    assert!(families.len() >= 10, "{families:?}");
    // given the Grafana dashboard and the Prometheus rules, parsed
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy.join("grafana/overlay-dashboard.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut dash_exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut dash_exprs);
    assert!(dash_exprs.len() >= 10, "{dash_exprs:?}");
    let rules = yaml(&deploy.join("prometheus/alerts.yml"));
    let mut alerts = BTreeMap::new();
    for group in rules[0]["groups"].as_sequence().expect("rule groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alerting rules").to_string();
            alerts.insert(name, rule["expr"].as_str().expect("an expression").to_string());
        }
    }
    // then every metric they use is one the engine exports
    let mut used = BTreeSet::new();
    for (what, expr) in
        dash_exprs.iter().map(|e| ("dashboard", as_promql(e))).chain(alerts.values().map(|e| ("rules", e.clone())))
    {
        let names = promql_metric_names(&expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr:?}");
        for n in names {
            assert!(exported(&n, &families), "{what} uses {n}, which the engine does not export ({expr})");
            used.insert(n);
        }
    }
    // and the checker would see a name the engine does not export
    assert_eq!(
        promql_metric_names("sum by (le) (rate(overlay_nope_bucket{a=\"b\"}[5m])) > 1"),
        ["overlay_nope_bucket".to_string()].into()
    );
    assert!(!exported("overlay_nope_bucket", &families));
    // and the rules cover what operations asked for: lag growing, dead letters, latency, readiness
    for (alert, metric) in [
        ("OverlayConsumerLagGrowing", "overlay_consumer_lag"),
        ("OverlayDeadLetters", "overlay_dead_letters_total"),
        ("OverlayDecisionLatencyHigh", "overlay_decision_latency_seconds_bucket"),
        ("OverlayNotReady", "overlay_ready"),
    ] {
        assert!(alerts.get(alert).is_some_and(|e| e.contains(metric)), "no {alert} on {metric}: {alerts:?}");
    }
    // and the dashboard shows lag, throughput by type, latency, orders, skips, dead letters, outbox, store
    for m in [
        "overlay_consumer_lag",
        "overlay_events_total",
        "overlay_decision_latency_seconds_bucket",
        "overlay_orders_total",
        "overlay_skips_total",
        "overlay_dead_letters_total",
        "overlay_outbox_depth",
        "overlay_store_bytes",
    ] {
        assert!(dash_exprs.iter().any(|e| e.contains(m)), "the dashboard has no panel on {m}");
    }
    // and promtool accepts the rules and the scrape configuration, and the rules' unit tests pass
    let prom = deploy.join("prometheus");
    if promtool(&prom, &["check", "rules", "alerts.yml"]) {
        promtool(&prom, &["test", "rules", "alerts.test.yml"]);
        promtool(&prom, &["check", "config", "prometheus.yml"]);
    }
}

#[test]
fn the_kubernetes_manifests_and_the_systemd_unit_run_what_the_program_has() {
    let deploy = workspace_root().join("deploy");
    let k8s = deploy.join("k8s");
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(&k8s).unwrap() {
        let path = entry.unwrap().path();
        for doc in yaml(&path) {
            if let Some(kind) = doc["kind"].as_str() {
                kinds.insert(kind.to_string(), doc.clone());
            }
        }
    }
    // the ConfigMap's file is a valid engine configuration, serving metrics on the pod's port
    let config = kinds["ConfigMap"]["data"]["config.toml"].as_str().expect("config.toml in the ConfigMap");
    let tmp = tempdir("overlay-ops-k8s-");
    let cfg_path = write_config(tmp.path(), "config.toml", config);
    let cfg = overlay_app::config::Config::load(Some(&cfg_path)).expect("the ConfigMap's config.toml loads");
    let listen = cfg.ops.listen.expect("ops.listen is set");
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    // the StatefulSet runs the Kafka engine with its data on a claimed volume, probed on /healthz and /readyz
    let sts = &kinds["StatefulSet"];
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.ends_with(&["run", "--kafka", "--follow"]), "{args:?}");
    let env: BTreeMap<&str, &str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    let data_dir = env["OVERLAY_DATA_DIR"];
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str().unwrap();
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == claim && m["mountPath"] == data_dir), "the data dir is on the claim");
    let ports = c["ports"].as_sequence().unwrap();
    assert!(ports.iter().any(|p| p["name"] == "ops" && p["containerPort"].as_u64() == Some(port)), "{ports:?}");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    // the Job creates the topics with the same configuration
    let job = &kinds["Job"]["spec"]["template"]["spec"]["containers"][0];
    let job_args: Vec<&str> = job["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(job_args.ends_with(&["kafka", "create-topics"]), "{job_args:?}");
    // and every subcommand they and the systemd unit run exists (its --help answers)
    let unit = std::fs::read_to_string(deploy.join("systemd/overlay.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let unit_args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    for cmd in [&args[args.len() - 3..], &job_args[job_args.len() - 2..], &unit_args[..]] {
        let sub: Vec<&str> = cmd.iter().copied().take_while(|a| !a.starts_with("--")).collect();
        let help = overlay(tmp.path(), &[&sub[..], &["--help"]].concat());
        assert!(help.success(), "overlay {sub:?} --help: {}", help.stderr);
        for flag in cmd.iter().filter(|a| a.starts_with("--")) {
            assert!(help.stdout.contains(flag), "overlay {sub:?} has no {flag}");
        }
    }
    // and the unit serves metrics on loopback, with an address the configuration accepts
    let listen =
        unit.lines().find_map(|l| l.strip_prefix("Environment=OVERLAY_OPS_LISTEN=")).expect("the unit serves metrics");
    assert!(listen.starts_with("127.0.0.1:"), "{listen}");
}
