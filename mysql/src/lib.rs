//! The MySQL client/server protocol as the Chaperone gateway speaks it, on both
//! legs: to the client (as a server) and to the database (as a client).
//!
//! - [`protocol`]: the wire format, one module per packet family;
//! - [`stream`]: a TCP connection that may have been upgraded to TLS;
//! - [`tls`]: rustls for the client-facing listener and the upstream leg;
//! - [`upstream`]: the gateway's own login to the database, and [`Target`];
//! - [`Secret`]: a password or token that is never printed.
//!
//! No policy, no identity, no archive: this crate knows packets, not who sends them.

pub mod protocol;
pub mod secret;
pub mod stream;
pub mod tls;
pub mod upstream;

pub use secret::Secret;
pub use upstream::{Target, Upstream, UpstreamError, UpstreamRequest};
