//! accrual: a high-throughput, exactly-once accrual engine for card
//! transaction streams.
//!
//! This crate is the command line and the tools only it needs; the engine
//! itself is in the workspace's crates, which it re-exports under their
//! old names so tests, benches and the binary read `accrual::...`:
//! - `accrual-core`: [`money`], [`time`], [`events`], [`rules`], [`state`],
//!   [`accrue`], [`pipeline`], [`partitioner`]: the pure core, no I/O;
//! - `accrual-datagen`: [`datagen`], the event generator;
//! - `accrual-store`: [`store`], the RocksDB ledger;
//! - `accrual-engine`: [`engine`] (`accrual run`), [`api`], [`config`],
//!   [`metrics`], [`kafka_tools`].
//!
//! Its own modules: [`simulate`] (the file-based run of rules), [`backtest`]
//! (two rule sets compared), [`bench`](mod@bench) (the
//! end-to-end benchmark) and [`allocator`] (the binary's and benches').

pub use accrual_core::{accrue, events, money, partitioner, pipeline, rules, state, time, typed_toml};
pub use accrual_datagen as datagen;
pub use accrual_engine as engine;
pub use accrual_engine::{api, config, kafka_tools, metrics};
pub use accrual_store as store;

pub mod allocator;
pub mod backtest;
pub mod bench;
pub mod simulate;
