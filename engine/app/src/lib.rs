//! The `overlay` program's pieces: configuration, topics, the runner with its
//! outbox publisher, `publish`, the output printers, `propose`, the demo and the backtest;
//! `ops` and `logging`, what operations teams watch.

pub mod backtest;
pub mod bench;
pub mod bench_kafka;
pub mod bench_record;
pub mod bench_replay;
pub mod config;
pub mod demo;
pub mod logging;
pub mod ops;
pub mod propose;
pub mod publish;
pub mod replay_cmd;
pub mod runner;
pub mod show;
pub mod simulate;
pub mod topics;
pub mod transition;
