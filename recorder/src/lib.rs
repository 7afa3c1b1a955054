//! The Chaperone archive: spool, Parquet segments, manifests, and the read side.
//!
//! Write side (the gateway's tap): [`Recorder`] appends every event to an
//! append-only [`spool`] on local disk, seals [`segment`]s into zstd Parquet with a
//! signed manifest ([`chain`]), and uploads them to the [`store`].
//! [`verify`] checks an archive: signatures, hashes, the chain, and per-session
//! sequence continuity. [`lifecycle`]: retention and compaction, recorded in
//! signed lifecycle records that `verify` follows; [`keyring`]: the keys a
//! verifier trusts, per period (signing-key rotation).
//!
//! Read side: [`catalog`], one DataFusion catalog over the archive (tables,
//! partition pruning, views), for `chaperone query` / `sessions`, the query UI
//! and the replayer.

pub mod catalog;
pub mod chain;
mod command_codec;
pub mod config;
mod fsutil;
pub mod keyring;
pub mod lifecycle;
pub mod metrics;
pub mod recorder;
pub mod segment;
pub mod since;
pub mod spool;
pub mod store;
mod upload;

pub use config::{ArchiveConfig, Durability, FailureMode};
pub use recorder::{OpenError, Recorder, StatsSnapshot};
pub use store::Store;
pub mod verify;
