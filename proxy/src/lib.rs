//! The Chaperone MySQL gateway.
//!
//! Agents connect with any MySQL client; the gateway authenticates them, opens
//! its own connection to the target database with credentials the agent never
//! sees, and forwards every command faithfully while handing each frame to the
//! [`tap`] for recording.
//!
//! - [`server`]: listener, connection limit, shutdown;
//! - [`session`]: one connection, from greeting to goodbye;
//! - [`auth`]: who the client is; [`identity`]: workload identity (OIDC tokens,
//!   roles, just-in-time credentials);
//! - [`guardrails`]: policies, approvals, just-in-time access;
//! - [`control`]: roles, policies and masking rules reloaded while running;
//! - [`metrics`], [`config`].
//!
//! The wire protocol and the upstream client are `chaperone_mysql`, SQL analysis
//! `chaperone_sql`, masking `chaperone_masking`, the tap contract
//! `chaperone_schemas::tap`.

pub mod auth;
pub mod config;
pub mod control;
pub mod guardrails;
pub mod identity;
pub mod metrics;
pub mod policy_source;
pub mod registry;
pub mod server;
pub mod session;

pub use config::Config;
pub use server::{Gateway, StartError};
