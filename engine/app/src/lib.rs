//! The `overlay` program's pieces: configuration, topics, the runner with its
//! outbox publisher, `publish`, the output printers, `propose`, the demo and the backtest.

pub mod backtest;
pub mod bench;
pub mod bench_kafka;
pub mod config;
pub mod demo;
pub mod propose;
pub mod publish;
pub mod runner;
pub mod show;
pub mod topics;
pub mod transition;
