//! Keel: a Kafka-protocol-compatible broker.
//!
//! `server` knows framing and dispatch; `api` translates requests into calls on the services;
//! `log` knows segments and nothing of the protocol; `meta` owns RocksDB.

pub mod alloc;
pub mod api;
pub mod broker;
pub mod config;
pub mod error;
pub mod group;
pub mod log;
pub mod log_manager;
pub mod meta;
pub mod metrics;
pub mod server;
