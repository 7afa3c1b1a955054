//! TLS for both legs: the client-facing listener (rustls server) and the upstream
//! connection to the database (rustls client with CA verification).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{TlsConfig, UpstreamTls, UpstreamTlsMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM {what} found")]
    Empty { path: String, what: &'static str },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("invalid server name {0:?} for upstream TLS")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?
        .ok_or(TlsError::Empty {
            path: path.display().to_string(),
            what: "private key",
        })
}

/// A self-signed certificate and key for `localhost`, as PEM.
pub fn generate_self_signed() -> Result<(String, String), TlsError> {
    let cert = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(|e| TlsError::Generate(e.to_string()))?;
    Ok((cert.cert.pem(), cert.signing_key.serialize_pem()))
}

/// The acceptor for clients that send an SSLRequest.
pub fn server_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = if config.self_signed && config.cert.is_none() {
        let (cert_pem, key_pem) = generate_self_signed()?;
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| TlsError::Generate(e.to_string()))?
            .ok_or_else(|| TlsError::Generate("no key".into()))?;
        (certs, key)
    } else {
        let cert = config.cert.as_deref().expect("validated: cert is set");
        let key = config.key.as_deref().expect("validated: key is set");
        (load_certs(cert)?, load_key(key)?)
    };
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The connector and server name for a target with upstream TLS, or None.
pub fn upstream_connector(
    tls: &UpstreamTls,
    address: &str,
) -> Result<Option<(TlsConnector, ServerName<'static>)>, TlsError> {
    if tls.mode == UpstreamTlsMode::Disabled {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    let ca = tls.ca.as_deref().expect("validated: ca is set");
    for cert in load_certs(ca)? {
        roots.add(cert)?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match &tls.server_name {
        Some(name) => name.clone(),
        None => address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|| address.to_string()),
    };
    let name = ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName(host))?;
    Ok(Some((TlsConnector::from(Arc::new(client)), name)))
}
