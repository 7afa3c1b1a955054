//! TLS for both legs: the client-facing listener (rustls server) and the upstream
//! connection to the database (rustls client with CA verification).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

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

/// Where the client-facing listener's certificate comes from.
#[derive(Debug, Clone, Copy)]
pub enum ServerCertificate<'a> {
    /// PEM files: the certificate chain and its private key.
    Files { cert: &'a Path, key: &'a Path },
    /// A self-signed certificate generated at start (development only).
    SelfSigned,
}

/// The acceptor for clients that send an SSLRequest.
pub fn server_acceptor(certificate: ServerCertificate<'_>) -> Result<TlsAcceptor, TlsError> {
    let (certs, key) = match certificate {
        ServerCertificate::SelfSigned => {
            let (cert_pem, key_pem) = generate_self_signed()?;
            let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::Generate(e.to_string()))?;
            let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
                .map_err(|e| TlsError::Generate(e.to_string()))?
                .ok_or_else(|| TlsError::Generate("no key".into()))?;
            (certs, key)
        }
        ServerCertificate::Files { cert, key } => (load_certs(cert)?, load_key(key)?),
    };
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// A TLS connector to a database and the name its certificate must carry.
pub type UpstreamConnector = (TlsConnector, ServerName<'static>);

/// The connector and server name for a target whose certificate is verified
/// against the CA in `ca` (PEM), for `server_name` or else the host of `address`.
pub fn upstream_connector(
    ca: &Path,
    server_name: Option<&str>,
    address: &str,
) -> Result<UpstreamConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert)?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match server_name {
        Some(name) => name.to_string(),
        None => address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|| address.to_string()),
    };
    let name = ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName(host))?;
    Ok((TlsConnector::from(Arc::new(client)), name))
}
