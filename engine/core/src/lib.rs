//! The pure core of the overlay engine: domain types, input events, outputs,
//! and the deterministic fold. No I/O, no clock, no randomness, no hash-map
//! iteration: the same inputs give the same bytes.

pub mod event;
pub mod ids;
pub mod output;
