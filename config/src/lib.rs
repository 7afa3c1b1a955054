//! The typed configuration pieces every Chaperone crate shares: where a secret
//! comes from ([`SecretSource`], resolved into one [`Secret`] type that is never
//! printed), the databases the gateway forwards to ([`TargetConfig`], resolved
//! into a [`chaperone_mysql::Target`]), TLS, and [`ConfigError`].
//!
//! The gateway's whole file (`chaperone.toml`, `chaperone_proxy::Config`) is made
//! of these and of the sections owned by the gateway's own concepts.

mod secret;
mod target;

use std::path::PathBuf;

pub use chaperone_mysql::Secret;
pub use secret::SecretSource;
pub use target::{TargetConfig, TargetError, TlsConfig, UpstreamTls, UpstreamTlsMode};

/// Errors while loading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("cannot read the policy file {location}: {message}")]
    PolicySource { location: String, message: String },
    #[error("secret {what}: environment variable {var} is not set")]
    MissingEnv { what: String, var: String },
    #[error("secret {what}: cannot read {path}: {source}")]
    SecretFile {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
}
