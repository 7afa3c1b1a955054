//! The archive at rest: what a gateway wrote to the store, read back and
//! checked, without SQL (that is `chaperone_catalog`) and without the spool
//! (that is `chaperone_recorder`).
//!
//! - [`chain`]: each gateway's hash chain of signed manifests, where it continues;
//! - [`verify`]: signatures, hashes, the chain, per-session sequence continuity;
//!   [`head`]: completeness against each gateway's published head;
//! - [`lifecycle`]: retention and compaction, in signed lifecycle records that
//!   `verify` follows;
//! - [`keyring`]: the keys a verifier trusts, per period (signing-key rotation);
//! - [`parquet_file`]: how the archive's Parquet files are encoded (sealing and
//!   compaction write them the same way);
//! - [`since`]: `--since` / retention times and durations; [`fsutil`]: durable
//!   local writes.

pub mod chain;
pub mod fsutil;
pub mod head;
pub mod keyring;
pub mod lifecycle;
pub mod parquet_file;
pub mod since;
pub mod verify;
