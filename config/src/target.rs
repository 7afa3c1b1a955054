//! `[targets.NAME]` and `[tls]`: the databases the gateway logs in to, and the
//! client-facing listener's certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chaperone_mysql::tls::{self, ServerCertificate, TlsError};
use chaperone_mysql::Target;
use serde::Deserialize;

use crate::{ConfigError, SecretSource};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain for the client-facing listener.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Generate a self-signed certificate at start (development only).
    #[serde(default)]
    pub self_signed: bool,
    /// Refuse clients that do not upgrade to TLS.
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `host:port` of the MySQL / MariaDB server.
    pub address: String,
    /// The database user the gateway logs in as. Clients never see it.
    pub user: String,
    #[serde(flatten)]
    pub password: SecretSource,
    /// Let clients use LOAD DATA LOCAL INFILE on this target (off by default).
    #[serde(default)]
    pub allow_local_infile: bool,
    #[serde(default)]
    pub tls: UpstreamTls,
    /// More database users the gateway may log in as on this target, chosen by
    /// role (`[roles.R.targets.T] upstream_user`): `[targets.T.users.NAME]` with
    /// `password_env` / `password_file` / `password`.
    #[serde(default)]
    pub users: BTreeMap<String, SecretSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// `disabled` (default), or `verify` (TLS with the server's certificate
    /// checked against `ca` and `server_name`).
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The name to verify the certificate for (default: the address's host).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTlsMode {
    #[default]
    Disabled,
    Verify,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("targets.{target}.tls: {source}")]
    Tls { target: String, source: TlsError },
}

impl TargetConfig {
    /// The target `name` as the upstream client uses it: passwords read, the TLS
    /// connector built.
    pub fn resolve(&self, name: &str) -> Result<Target, TargetError> {
        let password = self.password.resolve(&format!("targets.{name}"))?;
        let users = self
            .users
            .iter()
            .map(|(u, secret)| {
                Ok((
                    u.clone(),
                    secret.resolve(&format!("targets.{name}.users.{u}"))?,
                ))
            })
            .collect::<Result<_, ConfigError>>()?;
        let tls = match (&self.tls.mode, &self.tls.ca) {
            (UpstreamTlsMode::Disabled, _) => None,
            (UpstreamTlsMode::Verify, ca) => {
                let ca = ca.as_deref().expect("validated: ca is set");
                Some(
                    tls::upstream_connector(ca, self.tls.server_name.as_deref(), &self.address)
                        .map_err(|source| TargetError::Tls {
                            target: name.to_string(),
                            source,
                        })?,
                )
            }
        };
        Ok(Target::new(
            name.to_string(),
            self.address.clone(),
            self.user.clone(),
            password,
            users,
            self.allow_local_infile,
            tls,
        ))
    }
}

impl TlsConfig {
    /// The acceptor for clients that send an SSLRequest.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let certificate = match (self.self_signed, &self.cert, &self.key) {
            (_, Some(cert), Some(key)) => ServerCertificate::Files { cert, key },
            (true, _, _) => ServerCertificate::SelfSigned,
            _ => unreachable!("validated: cert and key are set"),
        };
        tls::server_acceptor(certificate)
    }
}
