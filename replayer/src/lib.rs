//! Terminal replay, re-execution against a target, and session diff.
//!
//! - [`archive`]: loading a session (statements first, frames on demand).
//! - [`decode`]: the result sets a client saw, from the recorded frames.
//! - [`story`]: `replay --plain` / `--json`.
//! - [`player`]: the interactive terminal player.
//! - [`against`]: re-executing a session on another database and comparing.
//! - [`diff`]: aligning two sessions and reporting what changed.
//! - [`dbmap`]: `--map-database a=b`, for runs on differently named databases.
//! - [`txn`]: a session's transaction statements inside `--rollback`'s transaction.

pub mod against;
pub mod archive;
pub mod dbmap;
pub mod decode;
pub mod diff;
pub mod model;
pub mod player;
pub mod story;
pub mod txn;
