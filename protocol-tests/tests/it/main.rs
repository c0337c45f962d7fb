//! protocol-tests: each test starts the real `keel` binary (`broker::TestBroker`) and drives it
//! with real clients. One test binary, a module per area.

mod broker;
mod clients;
mod wire;

mod admin;
mod bad_input;
mod compaction;
mod coordinator;
mod disk_pressure;
mod dynamic_configs;
mod fetch_sessions;
mod groups;
mod groups_rdkafka;
mod groups_tools;
mod groups_wire;
mod hostile_clients;
mod idempotence;
mod kcat;
mod kip848;
mod metrics;
mod python_client;
mod rdkafka_roundtrip;
mod restart;
mod retention;
mod startup;
mod transactions;
mod transactions_wire;
mod wire_apis;
