//! Event-log transports.
