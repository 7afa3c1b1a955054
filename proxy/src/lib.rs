//! The Chaperone MySQL gateway.
//!
//! Agents connect with any MySQL client; the gateway authenticates them, opens
//! its own connection to the target database with credentials the agent never
//! sees, and forwards every command faithfully while handing each frame to the
//! [`tap`] for recording.
//!
//! - [`server`]: listener, connection limit, shutdown;
//! - [`session`]: one connection, from greeting to goodbye;
//! - [`protocol`]: the wire format;
//! - [`auth`]: who the client is; [`identity`]: workload identity (OIDC tokens,
//!   roles, just-in-time credentials); [`upstream`]: the gateway's own database login;
//! - [`control`]: roles, policies and masking rules reloaded while running;
//! - [`tap`], [`metrics`], [`tls`], [`config`].

pub mod auth;
pub mod config;
pub mod control;
pub mod guardrails;
pub mod identity;
pub mod masking;
pub mod metrics;
pub mod policy_source;
pub mod protocol;
pub mod registry;
pub mod s3;
pub mod server;
pub mod session;
pub mod sql;
pub mod stream;
pub mod tap;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use server::{Gateway, StartError};
