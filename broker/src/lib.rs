//! Keel: a Kafka-protocol-compatible broker.
//!
//! A strict stack of layers, each naming only its own and those below (checked by `layers.rs`):
//! `server` (listeners, framing, the API table) -> `api` (decode, call a service, encode) ->
//! services (`broker`, `log_manager`, `group`, `producer_ids`, `txn`) -> storage (`log` knows segments and nothing of
//! the protocol; `meta` owns RocksDB) -> `config`, `clock`, `metrics`.

pub mod alloc;
pub mod api;
pub mod broker;
pub mod clock;
pub mod config;
pub mod connection_limit;
pub mod error;
pub mod fetch_session;
pub mod fuzzing;
pub mod group;
pub mod kafka_uuid;
pub mod log;
pub mod log_cleaner;
pub mod log_manager;
pub mod meta;
pub mod metrics;
pub mod producer_ids;
pub mod server;
pub mod storage_task;
pub mod txn;

#[cfg(test)]
mod layers;

// The unit tests run under the broker's allocator (main.rs), so that a decoder fed a hostile
// length claim behaves in a test as it does in the broker.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: alloc::LazyHugeAllocator = alloc::LazyHugeAllocator;
