//! The archive's write side, the gateway's tap: [`Recorder`] appends every event
//! to an append-only [`spool`] on local disk, seals [`segment`]s into zstd
//! Parquet with a signed manifest continuing the gateway's chain
//! (`chaperone_archive::chain`), and uploads them to the store
//! (`chaperone_store`). [`config`] is `[archive]`.
//!
//! Reading, verifying and the life cycle of what it wrote are
//! `chaperone_archive`; SQL over it is `chaperone_catalog`.

mod command_codec;
pub mod commit;
pub mod config;
mod gap;
mod head;
pub mod metrics;
pub mod recorder;
pub mod segment;
pub mod spool;
mod upload;

pub use chaperone_store::{Store, StoreError};
pub use config::{ArchiveConfig, Durability, FailureMode};
pub use recorder::{OpenError, Recorder, StatsSnapshot};
