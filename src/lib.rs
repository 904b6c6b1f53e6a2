//! accrual: a high-throughput, exactly-once accrual engine for card
//! transaction streams.
//!
//! The pieces, from the inside out:
//! - [`money`], [`time`]: exact decimals and event-time calendars;
//! - [`events`]: input events and their decoder;
//! - [`rules`]: the rules language, validated and compiled;
//! - [`state`]: per-account state and its binary encoding;
//! - [`accrue`]: the pure, deterministic core;
//! - [`store`]: the RocksDB ledger;
//! - [`pipeline`]: batch processing shared by every driver;
//! - [`config`]: the engine's configuration file;
//! - [`engine`]: `accrual run`, the exactly-once Kafka engine;
//! - [`simulate`], [`datagen`]: the file-based backtest and the data generator;
//! - [`bench`]: the end-to-end benchmark against a baseline on the same broker.

pub mod accrue;
pub mod allocator;
pub mod api;
pub mod bench;
pub mod config;
pub mod datagen;
pub mod engine;
pub mod events;
pub mod kafka_tools;
pub mod metrics;
pub mod money;
pub mod partitioner;
pub mod pipeline;
pub mod rules;
mod scan;
pub mod simulate;
pub mod state;
pub mod store;
pub mod time;
pub mod typed_toml;
