//! The Chaperone archive format, v1.
//!
//! Everything that writes or reads the archive goes through this crate, so the format
//! is defined in exactly one place:
//! - [`identity`]: who an agent is, as recorded on every session;
//! - [`event`]: what the gateway hands to the recorder (the tap's vocabulary);
//!
//! The Arrow schemas, the object layout and the manifest format are added by the
//! archive issue; see `schemas/README.md`.

pub mod event;
pub mod identity;

/// The version of the archive format written by this build.
pub const FORMAT_VERSION: &str = "v1";

pub use event::{CommandSummary, Direction, Frame, SessionEnd, SessionStart, TapEvent};
pub use identity::{AuthMethod, Identity};
