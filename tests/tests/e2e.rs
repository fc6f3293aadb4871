//! End-to-end tests: the `overlay` program, built once, driven as a user
//! would (publish, run, read outputs), on temporary data directories.
//!
//! One test binary; the scenarios live in `e2e/*.rs`.

#[path = "e2e/audit_chain.rs"]
mod audit_chain;
#[path = "e2e/backtest.rs"]
mod backtest;
#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/builds.rs"]
mod builds;
#[path = "e2e/crash_cycles.rs"]
mod crash_cycles;
#[path = "e2e/demo_smoke.rs"]
mod demo_smoke;
#[path = "e2e/documented_flow.rs"]
mod documented_flow;
#[path = "e2e/duplicates.rs"]
mod duplicates;
#[path = "e2e/kafka.rs"]
mod kafka;
#[path = "e2e/kafka_clients.rs"]
mod kafka_clients;
#[path = "e2e/kafka_cycles.rs"]
mod kafka_cycles;
#[path = "e2e/ops.rs"]
mod ops;
#[path = "e2e/propose.rs"]
mod propose;
#[path = "e2e/replay.rs"]
mod replay;
#[path = "e2e/simulate.rs"]
mod simulate;
#[path = "e2e/transition_plan.rs"]
mod transition_plan;
