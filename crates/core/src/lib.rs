//! The pure core of accrual: everything that decides what an event earns,
//! and nothing that reads a disk, a socket or a clock. Same input, same
//! state, same rules: byte-identical output.
//!
//! From the inside out:
//! - [`money`], [`time`]: exact decimals and event-time calendars;
//! - [`events`]: input events and their decoder;
//! - [`rules`]: the rules language, validated and compiled;
//! - [`state`]: per-account state and its binary encoding;
//! - [`accrue`]: what one event does to one account;
//! - [`pipeline`]: batch processing of a partition, against any
//!   [`pipeline::Ledger`] (the RocksDB store is one, in `accrual-store`);
//! - [`partitioner`]: the partition a Kafka producer picks for a key.

pub mod accrue;
pub mod events;
pub mod money;
pub mod partitioner;
pub mod pipeline;
pub mod rules;
mod scan;
pub mod state;
pub mod time;
pub mod typed_toml;
