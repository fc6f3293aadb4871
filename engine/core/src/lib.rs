//! The pure core of the overlay engine: domain types, input events, outputs,
//! and the deterministic fold. No I/O, no clock, no randomness, no hash-map
//! iteration: the same inputs give the same bytes.

pub mod event;
pub mod fold;
pub mod ids;
pub mod income;
pub mod objective;
pub mod output;
pub mod rebalance;
pub mod snapshot;
pub mod state;
pub mod tax;
pub mod text;
pub mod tilt;
pub mod transition;

pub use fold::{apply, decide, step, Applied, Decision, Input};
pub use state::State;

#[cfg(test)]
mod personal_prop_tests;
#[cfg(test)]
mod personal_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tax_tests;
#[cfg(test)]
mod tests;
