//! The Chaperone archive format, v1.
//!
//! Everything that writes or reads the archive goes through this crate, so the format
//! is defined in exactly one place (the data engineer's view is `schemas/README.md`):
//! - [`identity`]: who an agent is, as recorded on every session;
//! - [`event`]: what the gateway hands to the recorder (the tap's vocabulary);
//! - [`tables`]: the Arrow schemas of `sessions`, `statements` and `frames`;
//! - [`rows`]: tap events to Arrow record batches;
//! - [`layout`]: object paths and partitions in the store;
//! - [`manifest`]: per-segment manifests, their hash chain and signature;
//! - [`lifecycle`]: what retention and compaction removed or replaced;
//! - [`head`]: how far each gateway's archive should reach;
//! - [`tap`]: the contract between the gateway and the recorder, and [`command`]
//!   codes and names (the recorder names commands without knowing the gateway).

pub mod command;
pub mod event;
pub mod head;
pub mod identity;
pub mod layout;
pub mod lifecycle;
pub mod manifest;
pub mod rows;
pub mod tables;
pub mod tap;
pub mod time;

/// The version of the archive format written by this build; the first element of
/// every object path.
pub const FORMAT_VERSION: &str = "v1";

pub use event::{CommandSummary, Direction, Frame, SessionEnd, SessionStart, TapEvent};
pub use identity::{AuthMethod, Identity};
pub use layout::{Layout, Partition};
pub use manifest::Manifest;
pub use tables::Table;
