//! The engine's configuration file: the types, parsing and validation are
//! `overlay_config`'s (a crate of their own, light enough to fuzz).

pub use overlay_config::{Config, EngineConfig, LogConfig, OpsConfig, OPS_LISTEN_ENV};
