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
//!
//! Everything from [`store`] outwards needs the `engine` feature (on by
//! default); without it the crate is the pure core, which the fuzz targets
//! build.

pub mod accrue;
#[cfg(feature = "engine")]
pub mod allocator;
#[cfg(feature = "engine")]
pub mod api;
#[cfg(feature = "engine")]
pub mod bench;
#[cfg(feature = "engine")]
pub mod config;
pub mod datagen;
#[cfg(feature = "engine")]
pub mod engine;
pub mod events;
#[cfg(feature = "engine")]
pub mod kafka_tools;
#[cfg(feature = "engine")]
pub mod metrics;
pub mod money;
#[cfg(feature = "engine")]
pub mod partitioner;
#[cfg(feature = "engine")]
pub mod pipeline;
pub mod rules;
mod scan;
#[cfg(feature = "engine")]
pub mod simulate;
pub mod state;
#[cfg(feature = "engine")]
pub mod store;
pub mod time;
pub mod typed_toml;
