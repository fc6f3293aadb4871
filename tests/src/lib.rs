//! End-to-end test support: build the `overlay` program once, run it on a
//! data directory as a user would, feed it events, and read what it printed.
//!
//! Everything here drives the real binary (`overlay --data-dir DIR …`) in a
//! child process; the only in-process access is read-only, to the embedded
//! log (end offsets and the engine's advisory group positions), which is
//! safe to read while an engine runs.

use overlay_core::event::Envelope;
use overlay_log::EmbeddedLog;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use overlay_app::topics;

pub mod cycles;

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `overlay` binary: `$OVERLAY_BIN` if set, otherwise built once per
/// test process with `cargo build -p overlay --bin overlay` (in release when
/// the tests themselves are).
pub fn overlay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("OVERLAY_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "OVERLAY_BIN={} is not a file", p.display());
            return p;
        }
        build_overlay(!cfg!(debug_assertions))
    })
    .clone()
}

/// The `overlay` binary of the debug (dev) profile, whatever profile the
/// tests were built in: `$OVERLAY_DEBUG_BIN` if set, else [`overlay_bin`]
/// when that is the debug build, else built with `cargo build -p overlay`.
pub fn overlay_debug_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = given_bin("OVERLAY_DEBUG_BIN") {
            return p;
        }
        if cfg!(debug_assertions) && std::env::var_os("OVERLAY_BIN").is_none() {
            return overlay_bin();
        }
        build_overlay(false)
    })
    .clone()
}

/// The `overlay` binary of the release profile: `$OVERLAY_RELEASE_BIN` if set
/// (`scripts/test` builds it and sets it), else built here with `cargo build
/// --release -p overlay` (minutes the first time on a cold target directory;
/// quick after). Never skipped: a test that needs both builds runs both.
pub fn overlay_release_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = given_bin("OVERLAY_RELEASE_BIN") {
            return p;
        }
        eprintln!("[support] OVERLAY_RELEASE_BIN is not set: building the release overlay (set it to a built binary to skip this)");
        build_overlay(true)
    })
    .clone()
}

/// A binary named by an environment variable, pinned; panics if it names no file.
fn given_bin(var: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(var)?);
    assert!(p.is_file(), "{var}={} is not a file", p.display());
    Some(pin(&p))
}

fn build_overlay(release: bool) -> PathBuf {
    let root = workspace_root();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root).args([
        "build",
        "-p",
        "overlay",
        "--bin",
        "overlay",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let started = Instant::now();
    let out = cmd.stderr(Stdio::inherit()).output().expect("running cargo build");
    assert!(out.status.success(), "cargo build -p overlay failed ({})", out.status);
    // Cargo names the executable it built; fall back to the usual place.
    let from_messages = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|m| {
            (m["reason"] == "compiler-artifact" && m["target"]["name"] == "overlay" && m["executable"].is_string())
                .then(|| PathBuf::from(m["executable"].as_str().unwrap()))
        });
    let bin = from_messages.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let target = if target.is_absolute() { target } else { root.join(target) };
        target.join(if release { "release" } else { "debug" }).join(format!("overlay{}", std::env::consts::EXE_SUFFIX))
    });
    assert!(bin.is_file(), "cargo built no overlay binary at {}", bin.display());
    eprintln!("[support] overlay binary {} (cargo build took {:.1} s)", bin.display(), started.elapsed().as_secs_f64());
    pin(&bin)
}

/// A link to `bin` private to this test process, so that a rebuild of the
/// workspace while the tests run (another cargo command) cannot swap the
/// program between two runs of one test. Links left by test processes that
/// are gone are removed.
fn pin(bin: &Path) -> PathBuf {
    let dir = bin.parent().expect("the binary is in a directory").join("overlay-tests-pinned");
    if std::fs::create_dir_all(&dir).is_err() {
        return bin.to_path_buf();
    }
    // Only where /proc tells which processes are alive (Linux).
    let entries = if Path::new("/proc/self").exists() { std::fs::read_dir(&dir).ok() } else { None };
    if let Some(entries) = entries {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("overlay-").and_then(|p| p.split('-').next()?.parse::<u32>().ok());
            if pid.is_some_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // One link per process and binary (a test may run the debug and the release build).
    let profile = bin.parent().and_then(|d| d.file_name()).map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let pinned = dir.join(format!("overlay-{}-{profile}", std::process::id()));
    let _ = std::fs::remove_file(&pinned);
    if std::fs::hard_link(bin, &pinned).is_ok() || std::fs::copy(bin, &pinned).is_ok() {
        pinned
    } else {
        bin.to_path_buf()
    }
}

/// What one run of the program did.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with everything the program said unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(
            self.success(),
            "`overlay {}` failed ({:?})\n--- stderr:\n{}\n--- stdout (head):\n{}",
            self.args.join(" "),
            self.code,
            self.stderr,
            head(&self.stdout, 2000)
        );
        self
    }

    /// Panics unless the program exited with a non-zero code.
    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "`overlay {}` should have failed, but exited {:?}\n--- stderr:\n{}\n--- stdout (head):\n{}",
            self.args.join(" "),
            self.code,
            self.stderr,
            head(&self.stdout, 2000)
        );
        self
    }

    /// The non-empty stdout lines, each parsed as JSON.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        json_lines(&self.stdout)
    }
}

pub fn head(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[track_caller]
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {}", head(l, 300))))
        .collect()
}

/// `overlay --data-dir DIR <args>`, without configuration from the environment.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    command_with(&overlay_bin(), dir, args)
}

/// `BIN --data-dir DIR <args>` for a given `overlay` binary, without configuration from the environment.
pub fn command_with(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir").arg(dir).args(args);
    cmd.env_remove("OVERLAY_DATA_DIR").env_remove("OVERLAY_CONFIG").env_remove("OVERLAY_LOG");
    cmd
}

/// Runs `overlay --data-dir DIR <args>` to the end.
pub fn overlay(dir: &Path, args: &[&str]) -> Run {
    overlay_with_stdin(dir, args, None)
}

/// Runs `overlay --data-dir DIR <args>` with `stdin` on its standard input.
pub fn overlay_with_stdin(dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    run_command(command(dir, args), args, stdin)
}

/// Runs `BIN --data-dir DIR <args>` (a given `overlay` binary) to the end, feeding it `stdin`.
pub fn overlay_using(bin: &Path, dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    run_command(command_with(bin, dir, args), args, stdin)
}

/// Runs a prepared `overlay` command to the end, feeding it `stdin`.
fn run_command(mut cmd: Command, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawning overlay");
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // A thread, so a program that answers before reading everything cannot deadlock us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("waiting for overlay");
    if let Some(w) = writer {
        w.join().expect("stdin writer");
    }
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Starts `overlay --data-dir DIR <args>` in the background, output discarded
/// except stderr (kept in a file, for diagnosing an unexpected exit).
pub fn spawn(dir: &Path, args: &[&str], stderr_to: &Path) -> Running {
    let err = std::fs::File::create(stderr_to).expect("stderr file");
    Running::new(
        command(dir, args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err).spawn().expect("spawning overlay"),
    )
}

/// A background `overlay`, killed and reaped when dropped: a test that
/// fails half-way (a panic) leaves no engine following its inputs.
pub struct Running(Option<Child>);

impl Running {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// The process, no longer killed on drop (for a harness that manages it).
    pub fn detach(mut self) -> Child {
        self.0.take().expect("a running process")
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a running process")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running process")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            // Nothing happens to a process already waited for.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Events as NDJSON, one event per line, in the JSON form `overlay publish` reads.
pub fn ndjson(events: &[Envelope]) -> String {
    let mut s = String::new();
    for e in events {
        s.push_str(&serde_json::to_string(e).expect("events serialize"));
        s.push('\n');
    }
    s
}

/// `overlay publish -` with the events on standard input.
pub fn publish(dir: &Path, events: &[Envelope]) -> Run {
    overlay_with_stdin(dir, &["publish", "-"], Some(ndjson(events).into_bytes()))
}

/// `overlay publish <extra args> -` with `text` on standard input.
pub fn publish_text(dir: &Path, extra: &[&str], text: &str) -> Run {
    let mut args = vec!["publish"];
    args.extend_from_slice(extra);
    args.push("-");
    overlay_with_stdin(dir, &args, Some(text.as_bytes().to_vec()))
}

/// `overlay publish FILE`.
pub fn publish_file(dir: &Path, file: &Path) -> Run {
    overlay(dir, &["publish", file.to_str().expect("a UTF-8 path")])
}

/// The raw text `overlay orders` prints (one JSON line per order).
pub fn orders_text(dir: &Path) -> String {
    overlay(dir, &["orders"]).ok().stdout
}

pub fn audit_text(dir: &Path) -> String {
    overlay(dir, &["audit"]).ok().stdout
}

pub fn dead_letters_text(dir: &Path) -> String {
    overlay(dir, &["dead-letters"]).ok().stdout
}

pub fn orders(dir: &Path) -> Vec<Value> {
    json_lines(&orders_text(dir))
}

pub fn audit(dir: &Path) -> Vec<Value> {
    json_lines(&audit_text(dir))
}

pub fn dead_letters(dir: &Path) -> Vec<Value> {
    json_lines(&dead_letters_text(dir))
}

/// The embedded log of a data directory (read-only use; safe while an engine runs).
pub fn open_log(dir: &Path) -> EmbeddedLog {
    EmbeddedLog::open(&overlay_app::runner::log_dir(dir)).expect("opening the embedded log")
}

/// End offset of every partition of every topic in the data directory's
/// log (`topic/partition` → end); empty when there is no log yet.
pub fn end_offsets(dir: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let log_dir = overlay_app::runner::log_dir(dir);
    if !log_dir.exists() {
        return out;
    }
    let log = EmbeddedLog::open(&log_dir).expect("opening the embedded log");
    for t in log.topics().expect("listing topics") {
        for p in 0..log.partitions(&t).expect("partitions") {
            out.insert(format!("{t}/{p}"), log.end_offset(&t, p).expect("end offset"));
        }
    }
    out
}

/// Inputs published but not yet folded, by the engine's advisory group
/// positions (committed after each batch; may lag the store by one batch).
pub fn input_lag(log: &EmbeddedLog) -> u64 {
    let mut lag = 0;
    for t in topics::INPUTS {
        let Ok(parts) = log.partitions(t) else { continue };
        for p in 0..parts {
            let end = log.end_offset(t, p).expect("end offset");
            let pos = log.committed(topics::ENGINE_GROUP, t, p).expect("group position").unwrap_or(0);
            lag += end.saturating_sub(pos);
        }
    }
    lag
}

/// Every input published, over all input partitions.
pub fn input_count(log: &EmbeddedLog) -> u64 {
    topics::INPUTS
        .iter()
        .filter_map(|t| log.partitions(t).ok().map(|n| (t, n)))
        .map(|(t, n)| (0..n).map(|p| log.end_offset(t, p).expect("end offset")).sum::<u64>())
        .sum()
}

/// Values of `field` that occur more than once.
pub fn duplicates<'a>(records: impl IntoIterator<Item = &'a Value>, field: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut dups = BTreeSet::new();
    for r in records {
        let v = r[field].to_string();
        if !seen.insert(v.clone()) {
            dups.insert(v);
        }
    }
    dups.into_iter().collect()
}

/// Where two texts first differ, by line, for a readable failure.
pub fn first_difference(a: &str, b: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        if x != y {
            return Some(format!(
                "line {} differs ({} vs {} lines):\n  left:  {}\n  right: {}",
                i + 1,
                la.len(),
                lb.len(),
                x.map_or("<none>", |s| head(s, 600)),
                y.map_or("<none>", |s| head(s, 600))
            ));
        }
    }
    Some("texts differ only in line endings".into())
}

/// A small deterministic xorshift64* generator (no `rand` dependency).
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Avoid the all-zero state; mix the seed a little.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A fresh temporary directory for one test's data directories.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("a temporary directory")
}

/// A Kafka-protocol broker on loopback, stopped when dropped: tansu (in
/// memory) or librdkafka's mock cluster served by `overlay kafka mock-cluster`.
pub struct Broker {
    /// The tansu process (started as the benchmark starts it).
    _tansu: Option<overlay_kafka::bench::Broker>,
    /// The `overlay kafka mock-cluster` process.
    mock: Option<Child>,
    brokers: String,
    /// `[kafka]` settings every engine on this broker needs.
    settings: &'static str,
}

impl Broker {
    /// tansu on a free port. The binary is `$OVERLAY_TANSU` (set by
    /// `scripts/test`, which installs it) or tansu on the PATH.
    pub fn start() -> Broker {
        let bin = std::env::var_os("OVERLAY_TANSU").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("tansu"));
        let tansu = overlay_kafka::bench::Broker::tansu(&bin).unwrap_or_else(|e| panic!("{e:#}"));
        // tansu 0.6.0 serves a fetch from the batches starting at or after its offset.
        Broker { brokers: tansu.brokers(), _tansu: Some(tansu), mock: None, settings: "fetch_from_log_start = true" }
    }

    /// librdkafka's mock cluster (transactions, group session expiry), with
    /// the engine's topics made for `partitions` household partitions.
    pub fn mock(partitions: u32) -> Broker {
        let cfg = std::env::temp_dir().join(format!("overlay-mock-{}-{partitions}.toml", std::process::id()));
        std::fs::write(&cfg, format!("[kafka]\nhousehold_partitions = {partitions}\n")).expect("config file");
        let mut child = command(Path::new("unused"), &["--config", cfg.to_str().unwrap(), "kafka", "mock-cluster"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning overlay kafka mock-cluster");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("piped")), &mut line)
            .expect("the mock cluster's address");
        let brokers = line.trim().to_string();
        assert!(brokers.contains(':'), "overlay kafka mock-cluster printed {line:?}");
        Broker { _tansu: None, mock: Some(child), brokers, settings: "" }
    }

    pub fn brokers(&self) -> String {
        self.brokers.clone()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.mock.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `overlay --data-dir DIR <args>` against a broker (its address in the
/// environment), with a configuration file of `household_partitions` and
/// `extra` TOML (sections after `[kafka]`, e.g. `[engine]\nbatch_inputs_max = 20`).
pub fn kafka_command(dir: &Path, broker: &Broker, partitions: u32, extra: &str, args: &[&str]) -> Command {
    let mut cmd = command(dir, args);
    cmd.env("OVERLAY_KAFKA_BROKERS", broker.brokers());
    let cfg = dir.with_extension("kafka.toml");
    std::fs::create_dir_all(cfg.parent().expect("a parent")).expect("config dir");
    let settings = format!("[kafka]\nhousehold_partitions = {partitions}\n{}\n{extra}\n", broker.settings);
    std::fs::write(&cfg, settings).expect("config file");
    cmd.arg("--config").arg(&cfg);
    cmd
}

/// `overlay --data-dir DIR <args>` against a broker, to the end.
pub fn overlay_kafka(dir: &Path, broker: &Broker, partitions: u32, args: &[&str]) -> Run {
    run_command(kafka_command(dir, broker, partitions, "", args), args, None)
}

/// `overlay --data-dir DIR <args>` against a broker, to the end, with
/// `extra` configuration (as in [`kafka_command`]) and `stdin` on its standard input.
pub fn overlay_kafka_with(
    dir: &Path,
    broker: &Broker,
    partitions: u32,
    extra: &str,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Run {
    run_command(kafka_command(dir, broker, partitions, extra, args), args, stdin)
}

/// Starts `overlay --data-dir DIR <args>` against a broker in the background,
/// stderr to a file, with the Kafka engine's progress logged (`OVERLAY_LOG`:
/// partitions assigned and revoked, shards restored, and each publish).
pub fn spawn_kafka(
    dir: &Path,
    broker: &Broker,
    partitions: u32,
    extra: &str,
    args: &[&str],
    stderr_to: &Path,
) -> Running {
    let err = std::fs::File::create(stderr_to).expect("stderr file");
    Running::new(
        kafka_command(dir, broker, partitions, extra, args)
            .env("OVERLAY_LOG", "warn,overlay_kafka=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawning overlay"),
    )
}

/// Held by the tests whose assertions depend on timing (kills landing
/// mid-work, an instance stopped mid-stream): they run one at a time, so
/// that on a 2-core machine they do not starve each other.
pub fn timing_sensitive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the others still run.
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The address `overlay run` serves its metrics on, from the line it prints
/// at start (`overlay: metrics on http://ADDR/metrics, …`) into `stderr_file`;
/// fails after `limit`, or at once if the program has exited.
pub fn ops_address(child: &mut Child, stderr_file: &Path, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(stderr_file).unwrap_or_default();
        if let Some(addr) = text.split("metrics on http://").nth(1).and_then(|r| r.split('/').next()) {
            return addr.to_string();
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("overlay exited ({status}) before serving its metrics:\n{text}");
        }
        assert!(started.elapsed() < limit, "overlay did not serve its metrics within {limit:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on `addr` (HTTP/1.1, connection closed after): (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("sending the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    let text = String::from_utf8(raw).expect("a text response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP header end in {text:?}"));
    let status =
        head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad status line: {head}"));
    let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    (status, if chunked { unchunk(body) } else { body.to_string() })
}

/// The body of a chunked transfer encoding.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// One sample of a Prometheus text exposition: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped; label
/// values without escapes, which is all the engine writes for its labels).
pub fn prometheus_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                let labels = inner
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.push(Sample { name, labels, value });
    }
    out
}

/// The families a Prometheus text exposition declares (`# TYPE name kind`): name → kind.
pub fn prometheus_families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect()
}

/// Inputs real feeds carry, so the dead-letter and duplicate paths are
/// exercised too: a price for a security nobody listed (event id
/// `{prefix}-unknown-security`), and a household event delivered twice, both
/// at the end of the scenario's first trading day.
pub fn bad_inputs(scenario: &overlay_scenario::Demo, prefix: &str) -> Vec<Envelope> {
    use overlay_core::event::{Payload, PriceTick};
    let day1 = &scenario.days[1];
    let at = day1.events.last().expect("day 1 has events").event_time;
    let unknown = Envelope {
        event_id: format!("{prefix}-unknown-security"),
        producer: "price-feed".into(),
        event_time: at,
        schema_version: 1,
        payload: Payload::PriceTick(PriceTick {
            security: "ZZZZ".into(),
            price: rust_decimal::Decimal::new(1234, 2),
            as_of: at,
        }),
    };
    let mut again = scenario
        .events()
        .find(|e| matches!(e.payload, Payload::HouseholdUpserted(_)))
        .expect("the scenario has households")
        .clone();
    again.event_time = at;
    vec![unknown, again]
}

/// Asserts that `run` folded exactly `inputs` inputs (from its closing line).
#[track_caller]
pub fn assert_folded(run: &Run, inputs: usize) {
    assert!(
        run.stderr.contains(&format!("folded {inputs} inputs")),
        "expected `folded {inputs} inputs`, got:\n{}",
        run.stderr
    );
}
