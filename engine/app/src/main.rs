//! `overlay`: the overlay-manager engine's command-line program.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use overlay_app::config::Config;
use overlay_app::demo::{run_demo, DemoOptions};
use overlay_app::runner::{self, Engine, RunOptions};
use overlay_app::{publish, show, topics};
use overlay_log::EmbeddedLog;
use overlay_scenario::demo::DemoSpec;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

// The fold and the store's writer thread allocate heavily side by side;
// mimalloc keeps them from contending the way the system allocator does.
// Built without transparent huge pages (`no_thp`: it does not ask the kernel
// for them): with them, the kernel zeroing whole 2 MiB pages as mimalloc set
// up fresh ones was over a quarter of the Kafka engine's fold threads' time
// (BENCHMARKS.md, section 4).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "overlay",
    version,
    about = "Overlay-manager engine: keeps client households on their model portfolios, tax- and restriction-aware, event-sourced."
)]
struct Cli {
    /// Where the engine keeps its log and state.
    #[arg(long, global = true, env = "OVERLAY_DATA_DIR", default_value = "./overlay-data")]
    data_dir: PathBuf,
    /// Configuration file (TOML; see schemas/config.schema.json).
    #[arg(long, global = true, env = "OVERLAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole flow on real prices: 1,000 households, models, restrictions, a custodian.
    Demo {
        #[arg(long, default_value_t = 1000)]
        households: usize,
        /// Trading days after the setup day.
        #[arg(long, default_value_t = 20)]
        days: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First day (YYYY-MM-DD, within 2013-02-08..2015-12-31).
        #[arg(long, default_value = "2015-01-02")]
        start: chrono::NaiveDate,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Backtests the engine in memory on real daily closes: households of $250k, $1M and $2M on a
    /// cap-weighted index, harvesting and rebalancing; writes a table, a trade log and a chart
    /// (see docs/backtest.md). Ignores --data-dir.
    Backtest {
        /// First day (YYYY-MM-DD; the first trading day on or after it). Default: the data's first.
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day, inclusive. Default: the data's last.
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// Daily closes in the wide layout of data/sp500/sp500_close_wide_2013-2015.csv.gz (gzip or plain).
        #[arg(long)]
        prices: Option<PathBuf>,
        /// Sectors in the layout of data/sp500/sectors_for_all_stocks_5yr.csv.
        #[arg(long)]
        sectors: Option<PathBuf>,
        /// Keep only the N largest names (by the cap proxy) priced on the first day.
        #[arg(long)]
        names: Option<usize>,
        /// The CI slice: 2015-06-15 .. 2015-09-15 on the 100 largest names (explicit flags win).
        #[arg(long)]
        quick: bool,
        /// Where the table, trade log and chart go.
        #[arg(long, default_value = overlay_app::backtest::OUT_DIR_DEFAULT)]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Prints the orders and skipped trades the engine would decide for a household snapshot
    /// (JSON; see schemas/household_snapshot.schema.json). Touches no state, sends nothing.
    Propose {
        /// The snapshot file ("-" for standard input).
        #[arg(long)]
        household: PathBuf,
        /// One JSON document (orders and per-account decisions) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Tax-aware transitions (see README): `plan` projects drift and tax per period.
    Transition {
        #[command(subcommand)]
        command: TransitionCommand,
    },
    /// Appends events (JSON, a JSON array, or NDJSON) to the input topics.
    Publish {
        /// Files to read ("-" for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Decode but do not validate (the engine then refuses bad events itself).
        #[arg(long)]
        unchecked: bool,
        /// Append each line verbatim to --topic, with no decoding at all.
        #[arg(long, requires = "topic")]
        raw: bool,
        #[arg(long)]
        topic: Option<String>,
        /// Partition key for --raw.
        #[arg(long)]
        key: Option<String>,
        /// To the Kafka brokers of the configuration instead of the embedded log.
        #[arg(long)]
        kafka: bool,
    },
    /// Folds the input topics into state and publishes orders and audit records.
    Run {
        /// Keep running and fold new events as they arrive (stop with Ctrl-C or SIGTERM).
        #[arg(long)]
        follow: bool,
        /// Stop after this many inputs.
        #[arg(long)]
        max_inputs: Option<u64>,
        /// Read from and publish to Kafka (the configuration's [kafka]), one shard per household partition.
        #[arg(long)]
        kafka: bool,
    },
    /// Kafka administration and inspection (docs/kafka.md).
    Kafka {
        #[command(subcommand)]
        command: KafkaCommand,
    },
    /// Prints published orders as JSON lines.
    Orders {
        #[arg(long)]
        household: Option<String>,
    },
    /// Prints published audit records as JSON lines.
    Audit {
        #[arg(long)]
        household: Option<String>,
    },
    /// Prints refused inputs with their reasons, as JSON lines.
    DeadLetters,
    /// Input positions, end offsets and lag, per partition.
    Status,
    /// Compliance replay.
    Replay {
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// The deterministic simulation: seeded interleavings, late, re-sent and bad
    /// inputs, store crashes, write errors and a full disk, checked against a
    /// fault-free run (see RELIABILITY.md).
    Simulate {
        /// How many seeds to play, from --from.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Play this one seed and print what it did (to reproduce a failure).
        #[arg(long, conflicts_with_all = ["seeds", "from"])]
        seed: Option<u64>,
        /// Seeds played at once (default: one per CPU).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Runs the benchmarks and prints a table (see BENCHMARKS.md).
    Bench {
        /// Smaller inputs: checks that everything runs; not figures to quote.
        #[arg(long)]
        quick: bool,
        /// Run only this benchmark (durable-fold, tick-fold, fanout, replay or kafka).
        #[arg(long)]
        only: Option<String>,
        /// A scratch Kafka broker for the kafka benchmark (it creates, then deletes, the overlay.* topics).
        #[arg(long, env = "OVERLAY_KAFKA_BROKERS")]
        brokers: Option<String>,
        /// A tansu binary the kafka benchmark starts its brokers from (`bash scripts/setup-kafka` prints it).
        #[arg(long, env = "OVERLAY_TANSU")]
        tansu: Option<PathBuf>,
        /// Household partitions of the kafka benchmark (default: the configuration's, 8; with --quick, 2).
        /// Every partition is a shard that folds the whole reference topic, so this shows what that costs.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        kafka_partitions: Option<u32>,
        /// Also write the output into this file's generated block (`bash scripts/bench` gives BENCHMARKS.md).
        #[arg(long)]
        record: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TransitionCommand {
    /// Prints the projected path (drift and tax per period) of the transition in a household
    /// snapshot (schemas/household_snapshot.schema.json, with a "transition" plan). Touches no state.
    Plan {
        /// The snapshot file ("-" for standard input).
        #[arg(long)]
        household: PathBuf,
        /// The periods as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KafkaCommand {
    /// Creates the engine's topics (idempotent; refuses a topic with the wrong partition count).
    CreateTopics,
    /// Prints every committed record of a topic, one per line (partition, then offset order).
    Read { topic: String },
    /// Copies the embedded log's input topics (in --data-dir) to Kafka, keys and times kept,
    /// in the order the embedded engine folds them: moving an installation to Kafka.
    CopyInputs,
    /// Serves librdkafka's in-memory mock cluster on loopback, with the engine's topics, until
    /// stopped: prints its bootstrap servers on the first line. For trying the transport and
    /// for tests; it has transactions and group session expiry; nothing is persisted.
    MockCluster {
        #[arg(long, default_value_t = 1)]
        brokers: i32,
    },
}

#[derive(Subcommand)]
enum ReplayCommand {
    /// Re-folds the input journal in a fresh state and checks state and every output byte.
    Verify {
        /// Check the outputs of inputs from this point: a journal seq, a date (YYYY-MM-DD) or an RFC 3339 time.
        #[arg(long, conflicts_with = "kafka")]
        from: Option<String>,
        /// ... through this point (the state hash is compared only at the journal's end).
        #[arg(long, conflicts_with = "kafka")]
        to: Option<String>,
        /// Re-derive each shard from the Kafka input topics and compare with the output topics.
        #[arg(long)]
        kafka: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// A household as it was after the journal's inputs up to a point (JSON): accounts, cash,
    /// positions, lots, targets, open orders, restrictions with their versions.
    State {
        #[arg(long)]
        household: String,
        /// A journal seq (the state version), a date (its end, UTC) or an RFC 3339 time; default: now.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        quiet: bool,
    },
    /// Why an order was made (--order), or what a household's decisions skipped and why (--household --at), as JSON.
    Explain {
        #[arg(long, conflicts_with = "household")]
        order: Option<String>,
        #[arg(long, requires = "at")]
        household: Option<String>,
        #[arg(long)]
        at: Option<String>,
        /// Only decisions that traded or skipped this security.
        #[arg(long, requires = "household")]
        security: Option<String>,
        #[arg(long)]
        quiet: bool,
    },
    /// Replays the history in memory with a changed input and reports the trades, realized gains
    /// and harvested losses that would differ. Nothing is written or published.
    WhatIf {
        /// Events to add, e.g. a model version not yet published (JSON, as for `publish`).
        #[arg(long)]
        model: Vec<PathBuf>,
        /// A changed setting: tax.FIELD (e.g. tax.annual_gain_budget_usd=5000, tax.harvest.min_loss_pct=0.05),
        /// account.FIELD (e.g. account.drift_band_abs=0.05) or engine.FIELD.
        #[arg(long = "set")]
        sets: Vec<String>,
        /// Apply --set to this household only.
        #[arg(long)]
        household: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        quiet: bool,
    },
    /// Checks the published audit records' hash chains and sequence: names the exact record
    /// where a changed byte, a deleted record or a reordering breaks them.
    AuditVerify {
        /// Audit records exported as JSON lines (`overlay audit > FILE`) instead of the log.
        #[arg(long, conflicts_with = "kafka")]
        file: Option<PathBuf>,
        /// The audit topic on the Kafka brokers of the configuration (each partition is a shard's stream).
        #[arg(long)]
        kafka: bool,
    },
    /// Prints a household's published orders or audit records over a date range (UTC dates,
    /// both ends included) as JSON lines or CSV, for a regulator or an auditor.
    Export {
        /// `orders` or `audit`.
        #[arg(value_parser = ["orders", "audit"])]
        what: String,
        #[arg(long)]
        household: String,
        /// First day (YYYY-MM-DD).
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Last day (YYYY-MM-DD).
        #[arg(long)]
        to: Option<chrono::NaiveDate>,
        /// `jsonl` (the published records as they are) or `csv`.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`overlay orders | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("overlay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    overlay_app::logging::init();
    let cfg = Config::load(cli.config.as_deref())?;
    let data_dir = cli.data_dir;
    let stdout = std::io::stdout();
    match cli.command {
        Command::Demo { households, days, seed, start, quiet } => {
            let spec = DemoSpec { households, price_days: days, seed, start_date: start };
            let progress = !quiet && std::io::stderr().is_terminal();
            let summary = run_demo(&data_dir, &cfg, &DemoOptions { spec, progress })?;
            summary.print(&data_dir, &mut stdout.lock())?;
        }
        Command::Backtest { from, to, prices, sectors, names, quick, out, quiet } => {
            let progress = !quiet && std::io::stderr().is_terminal();
            let opts = overlay_app::backtest::BacktestOptions { from, to, prices, sectors, names, out, progress };
            let opts = if quick { opts.quick() } else { opts };
            let started = std::time::Instant::now();
            let report = overlay_app::backtest::run(&opts)?;
            report.print(&mut stdout.lock())?;
            eprintln!("backtest took {:.1} s", started.elapsed().as_secs_f64());
        }
        Command::Propose { household, json } => {
            let (snapshot, proposal) = overlay_app::propose::propose_file(&household)?;
            let mut out = stdout.lock();
            if json {
                writeln!(out, "{}", overlay_app::propose::to_json(&proposal)?)?;
            } else {
                overlay_app::propose::print_text(&snapshot, &proposal, &mut out)?;
            }
        }
        Command::Transition { command: TransitionCommand::Plan { household, json } } => {
            let (snapshot, rows) = overlay_app::transition::plan_file(&household)?;
            let mut out = stdout.lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                overlay_app::transition::print_text(&snapshot, &rows, &mut out)?;
            }
        }
        Command::Publish { files, unchecked, raw, topic, key, kafka } => {
            let mut texts = Vec::new();
            for f in &files {
                let text = if f.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading standard input")?
                } else {
                    std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
                };
                texts.push((f.display().to_string(), text));
            }
            if raw {
                let topic = topic.expect("clap requires --topic with --raw");
                let mut n = 0;
                for (_, text) in &texts {
                    n += if kafka {
                        let lines: Vec<Vec<u8>> =
                            text.lines().filter(|l| !l.is_empty()).map(|l| l.as_bytes().to_vec()).collect();
                        overlay_kafka::admin::publish_raw(&cfg.kafka, &topic, key.as_deref(), &lines)?
                    } else {
                        publish::publish_raw(&open_log(&data_dir, &cfg)?, &topic, key.as_deref(), text)?
                    };
                }
                eprintln!("published {n} raw records to {topic}");
                return Ok(());
            }
            // Everything is decoded before anything is written.
            let mut events = Vec::new();
            for (name, text) in &texts {
                events.extend(publish::parse_events(text, name, !unchecked)?);
            }
            let n = if kafka {
                overlay_kafka::admin::publish_events(&cfg.kafka, &events)?
            } else {
                topics::publish_events(&open_log(&data_dir, &cfg)?, &events)?
            };
            eprintln!("published {n} events");
        }
        Command::Run { follow, max_inputs, kafka: true } => {
            let stop = shutdown_flag();
            let mut ops = overlay_app::ops::Ops::start(&cfg, &data_dir, "kafka")?;
            let opts = overlay_kafka::EngineOptions {
                batch_inputs_max: cfg.engine.batch_inputs_max,
                settings: cfg.engine.settings.clone(),
                idle_poll: std::time::Duration::from_millis(cfg.engine.idle_poll_ms.max(1)),
                fold_threads: cfg.engine.fold_threads,
                follow,
                max_inputs,
                observer: ops.observer(),
                ..overlay_kafka::EngineOptions::default()
            };
            let mut engine = overlay_kafka::KafkaEngine::open(&data_dir, &cfg.kafka, opts)?;
            ops.kafka_engine(&cfg)?;
            engine.stop_on(stop);
            let stats = engine.run(&mut |shard, applied| ops.folded(shard, applied))?;
            ops.finish();
            for r in &stats.restores {
                eprintln!("shard {} restored: {} inputs in {} ms", r.partition, r.inputs, r.millis);
            }
            eprintln!(
                "folded {} inputs in {} batches: {} orders, {} audit records, {} dead letters",
                stats.inputs, stats.batches, stats.orders, stats.audit, stats.dead_letters
            );
        }
        Command::Kafka { command: KafkaCommand::CreateTopics } => {
            for (topic, created) in overlay_kafka::admin::create_topics(&cfg.kafka)? {
                eprintln!("{topic}: {}", if created { "created" } else { "exists" });
            }
        }
        Command::Kafka { command: KafkaCommand::Read { topic } } => {
            let mut out = stdout.lock();
            for (_, _, value) in overlay_kafka::admin::read_topic(&cfg.kafka, &topic)? {
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
        }
        Command::Kafka { command: KafkaCommand::MockCluster { brokers } } => {
            let mock = overlay_kafka::mock::MockBroker::start(&cfg.kafka, brokers)?;
            let mut out = stdout.lock();
            writeln!(out, "{}", mock.bootstrap_servers())?;
            out.flush()?;
            drop(out);
            eprintln!("mock cluster on {}; stop with Ctrl-C", mock.bootstrap_servers());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("a runtime for signals")?
                .block_on(wait_for_shutdown());
        }
        Command::Kafka { command: KafkaCommand::CopyInputs } => {
            let log = open_log(&data_dir, &cfg)?;
            for topic in topics::INPUTS {
                // In the order the embedded engine folds them, so that each
                // Kafka partition holds its records in that order too.
                let records: Vec<_> = topics::read_merged(&log, topic)?
                    .into_iter()
                    .map(|r| overlay_kafka::admin::RawRecord {
                        key: r.key,
                        value: r.value,
                        timestamp_ms: r.timestamp_ms as i64,
                    })
                    .collect();
                let n = overlay_kafka::admin::publish_records(&cfg.kafka, topic, &records)?;
                eprintln!("{topic}: {n} records copied");
            }
        }
        Command::Run { follow, max_inputs, kafka: false } => {
            let stop = shutdown_flag();
            let mut ops = overlay_app::ops::Ops::start(&cfg, &data_dir, "embedded")?;
            let mut engine = Engine::open(&data_dir, &cfg)?;
            ops.embedded_engine(&mut engine)?;
            engine.stop_on(stop);
            let stats = engine.run(&RunOptions { follow, max_inputs }, &mut |applied| ops.folded(0, applied))?;
            ops.finish();
            eprintln!(
                "folded {} inputs in {} batches: {} orders, {} audit records, {} dead letters",
                stats.inputs, stats.batches, stats.orders, stats.audit, stats.dead_letters
            );
        }
        Command::Orders { household } => {
            let log = open_log(&data_dir, &cfg)?;
            show::print_topic(&log, topics::ORDERS, household.as_deref(), &mut stdout.lock())?;
        }
        Command::Audit { household } => {
            let log = open_log(&data_dir, &cfg)?;
            show::print_topic(&log, topics::AUDIT, household.as_deref(), &mut stdout.lock())?;
        }
        Command::DeadLetters => {
            let log = open_log(&data_dir, &cfg)?;
            show::print_topic(&log, topics::DEAD_LETTERS, None, &mut stdout.lock())?;
        }
        Command::Status => {
            let engine = Engine::open(&data_dir, &cfg)?;
            let mut out = stdout.lock();
            writeln!(out, "{:<28} {:>12} {:>12} {:>8}", "input", "position", "end", "lag")?;
            for topic in topics::INPUTS {
                for p in 0..engine.log().partitions(topic)? {
                    let key = format!("{topic}/{p}");
                    let pos = overlay_store::position(engine.store(), &key)?.unwrap_or(0);
                    let end = engine.log().end_offset(topic, p)?;
                    writeln!(out, "{key:<28} {pos:>12} {end:>12} {:>8}", end.saturating_sub(pos))?;
                }
            }
            let m = &engine.state().meta;
            writeln!(
                out,
                "applied {} inputs; {} orders, {} audit records, {} dead letters",
                m.applied, m.order_seq, m.audit_seq, m.dead_letter_seq
            )?;
        }
        Command::Replay { command: ReplayCommand::Verify { from, to, kafka, quiet } } => {
            if kafka {
                overlay_app::replay_cmd::verify_kafka(&cfg, quiet, &mut stdout.lock())?;
            } else {
                overlay_app::replay_cmd::verify(&data_dir, from.as_deref(), to.as_deref(), quiet, &mut stdout.lock())?;
            }
        }
        Command::Replay { command: ReplayCommand::State { household, at, quiet } } => {
            overlay_app::replay_cmd::state(&data_dir, &household, at.as_deref(), quiet, &mut stdout.lock())?;
        }
        Command::Replay { command: ReplayCommand::Explain { order, household, at, security, quiet } } => {
            let (o, h, a, s) = (order.as_deref(), household.as_deref(), at.as_deref(), security.as_deref());
            overlay_app::replay_cmd::explain(&data_dir, o, h, a, s, quiet, &mut stdout.lock())?;
        }
        Command::Replay { command: ReplayCommand::WhatIf { model, sets, household, json, quiet } } => {
            let args = overlay_app::replay_cmd::WhatIfArgs {
                models: &model,
                sets: &sets,
                household: household.as_deref(),
                json,
                quiet,
            };
            overlay_app::replay_cmd::what_if(&data_dir, &args, &mut stdout.lock())?;
        }
        Command::Replay { command: ReplayCommand::AuditVerify { file, kafka } } => {
            // Output streams, each a sequence of (location, record bytes).
            let mut streams: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
            if let Some(file) = &file {
                let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                let lines = text.split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty());
                streams.push(lines.map(|(i, l)| (format!("{} line {}", file.display(), i + 1), l.to_vec())).collect());
            } else if kafka {
                let mut by_partition: std::collections::BTreeMap<u32, Vec<(String, Vec<u8>)>> = Default::default();
                for (p, offset, value) in overlay_kafka::admin::read_topic(&cfg.kafka, topics::AUDIT)? {
                    by_partition.entry(p).or_default().push((format!("{}/{p}/{offset}", topics::AUDIT), value));
                }
                streams.extend(by_partition.into_values());
            } else {
                let log = open_log(&data_dir, &cfg)?;
                for p in 0..log.partitions(topics::AUDIT)? {
                    let records = topics::read_partition(&log, topics::AUDIT, p)?;
                    streams.push(
                        records.into_iter().map(|r| (format!("{}/{p}/{}", topics::AUDIT, r.offset), r.value)).collect(),
                    );
                }
            }
            let (mut records, mut chains) = (0, 0);
            for stream in &streams {
                let report = overlay_replay::audit::verify_chain(stream.iter().cloned())
                    .map_err(|e| anyhow::anyhow!("audit verify FAILED: {e}"))?;
                records += report.records;
                chains += report.streams;
            }
            writeln!(
                stdout.lock(),
                "audit verify OK: {records} audit records in {chains} chains across {} output stream(s): hashes, links and sequence intact",
                streams.len()
            )?;
        }
        Command::Replay { command: ReplayCommand::Export { what, household, from, to, format } } => {
            use overlay_replay::export::{export, Format, Kind, Selection};
            let (kind, topic) =
                if what == "orders" { (Kind::Orders, topics::ORDERS) } else { (Kind::Audit, topics::AUDIT) };
            let format = if format == "csv" { Format::Csv } else { Format::JsonLines };
            let log = open_log(&data_dir, &cfg)?;
            let mut records = Vec::new();
            for p in 0..log.partitions(topic)? {
                records.extend(topics::read_partition(&log, topic, p)?.into_iter().map(|r| r.value));
            }
            let (text, n) = export(kind, format, &Selection { household, from, to }, records)?;
            stdout.lock().write_all(text.as_bytes())?;
            eprintln!("exported {n} {what} records");
        }
        Command::Simulate { seeds, from, seed, jobs } => {
            let seeds: Vec<u64> = match seed {
                Some(s) => vec![s],
                None => (from..from.saturating_add(seeds)).collect(),
            };
            overlay_app::simulate::cli(&seeds, jobs, &mut stdout.lock())?;
        }
        Command::Bench { quick, only, brokers, tansu, kafka_partitions, record } => {
            let kafka = overlay_app::bench_kafka::KafkaBrokers { external: brokers, tansu };
            let opts = overlay_app::bench::BenchOptions { quick, only, kafka, kafka_partitions };
            let mut out = stdout.lock();
            let mut tee = overlay_app::bench_record::Tee::new(&mut out);
            overlay_app::bench::run(&opts, &mut tee)?;
            if let Some(file) = record {
                let command = std::env::var("OVERLAY_BENCH_COMMAND").unwrap_or_else(|_| "overlay bench".into());
                overlay_app::bench_record::record(&file, &command, &tee.copy)?;
                eprintln!("wrote the figures into {}", file.display());
            }
        }
    }
    Ok(())
}

fn open_log(data_dir: &std::path::Path, cfg: &Config) -> Result<EmbeddedLog> {
    let log = EmbeddedLog::open(&runner::log_dir(data_dir)).context("opening the embedded log")?;
    topics::ensure_topics(&log, cfg.log.household_partitions)?;
    Ok(log)
}

/// A flag set on SIGTERM or Ctrl-C. The handlers are installed before this
/// returns, so a signal that arrives while the engine is still opening (or
/// once it reports ready) asks it to stop instead of killing it.
fn shutdown_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for signals");
    #[cfg(unix)]
    let mut signals = rt
        .block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
        })
        .expect("installing the SIGTERM and SIGINT handlers");
    let set = flag.clone();
    std::thread::spawn(move || {
        #[cfg(unix)]
        rt.block_on(async {
            tokio::select! {
                _ = signals.0.recv() => {}
                _ = signals.1.recv() => {}
            }
        });
        #[cfg(not(unix))]
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        set.store(true, Ordering::Relaxed);
    });
    flag
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
