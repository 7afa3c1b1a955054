//! A local OIDC issuer for tests and demos. NOT FOR PRODUCTION.
//!
//! It serves a discovery document and a JWKS on a loopback address and mints
//! tokens for whatever subject and claims it is asked for: anyone who can run
//! `chaperone token mint` with its key file can be anybody. It exists so that
//! the demo and the tests can exercise token login without a cloud provider. It
//! runs only when started (`chaperone token serve`), and a gateway trusts it
//! only if an `[issuers.*]` entry names its URL with `allow_http_loopback`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("dev issuer key {path}: {message}")]
    Key { path: String, message: String },
    #[error("dev issuer: {0}")]
    Token(String),
}

/// The issuer's signing key (ES256 or EdDSA), kept as PKCS#8 PEM.
pub struct DevKey {
    pem: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
    kid: String,
}

impl DevKey {
    /// A new random key. `alg`: `ES256` or `EdDSA`.
    pub fn generate(alg: Algorithm) -> Result<Self, DevIssuerError> {
        let kind = match alg {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            other => {
                return Err(DevIssuerError::Token(format!(
                    "the dev issuer signs with ES256 or EdDSA, not {other:?}"
                )))
            }
        };
        let pair = rcgen::KeyPair::generate_for(kind).map_err(|e| DevIssuerError::Key {
            path: "(generated)".into(),
            message: e.to_string(),
        })?;
        Self::from_pem(&pair.serialize_pem(), "(generated)")
    }

    pub fn from_pem(pem: &str, what: &str) -> Result<Self, DevIssuerError> {
        let err = |m: String| DevIssuerError::Key {
            path: what.to_string(),
            message: m,
        };
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| err(e.to_string()))?;
        let der = pair.serialize_der();
        let (alg, encoding) = if pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            (Algorithm::ES256, EncodingKey::from_ec_der(&der))
        } else if pair.is_compatible(&rcgen::PKCS_ED25519) {
            (Algorithm::EdDSA, EncodingKey::from_ed_der(&der))
        } else {
            return Err(err("not a P-256 or Ed25519 PKCS#8 key".into()));
        };
        // The public JWK from the raw public key (jsonwebtoken's own conversion
        // only knows PKCS#8 v1 Ed25519 keys; rcgen writes v2).
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        let public = match alg {
            Algorithm::ES256 if raw.len() == 65 => json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256",
                "x": b64(&raw[1..33]), "y": b64(&raw[33..]),
            }),
            Algorithm::EdDSA if raw.len() == 32 => json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64(raw),
            }),
            _ => return Err(err("unexpected public key length".into())),
        };
        let mut jwk: Jwk = serde_json::from_value(public).map_err(|e| err(e.to_string()))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| err(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Ok(DevKey {
            pem: pem.to_string(),
            alg,
            encoding,
            jwk,
            kid,
        })
    }

    /// Reads the key at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path, alg: Algorithm) -> Result<Self, DevIssuerError> {
        let what = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem, &what),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate(alg)?;
                write_private(path, key.pem.as_bytes()).map_err(|e| DevIssuerError::Key {
                    path: what,
                    message: e.to_string(),
                })?;
                Ok(key)
            }
            Err(e) => Err(DevIssuerError::Key {
                path: what,
                message: e.to_string(),
            }),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

/// The issuer: its URL (as in `iss`) and its key.
pub struct DevIssuer {
    pub issuer: String,
    key: DevKey,
}

/// What to put in a token.
#[derive(Debug, Clone)]
pub struct MintRequest {
    pub subject: String,
    pub audience: String,
    pub ttl_secs: i64,
    /// Extra claims, merged last: they may override the standard ones (tests use
    /// that for expired tokens and claims of the wrong type).
    pub claims: Map<String, Value>,
}

impl DevIssuer {
    pub fn new(issuer: impl Into<String>, key: DevKey) -> Self {
        DevIssuer {
            issuer: issuer.into(),
            key,
        }
    }

    pub fn key(&self) -> &DevKey {
        &self.key
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.jwk] })
    }

    /// A minimal discovery document, like GitHub's and Kubernetes' (no
    /// authorization endpoint: this issuer only signs workload tokens).
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks.json", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [format!("{:?}", self.key.alg)],
        })
    }

    /// Signs a token.
    pub fn mint(&self, req: &MintRequest) -> Result<String, DevIssuerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("sub".into(), json!(req.subject));
        claims.insert("aud".into(), json!(req.audience));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + req.ttl_secs));
        claims.insert(
            "jti".into(),
            json!(format!("{:016x}", rand::random::<u64>())),
        );
        for (k, v) in &req.claims {
            claims.insert(k.clone(), v.clone());
        }
        self.sign(&claims, None)
    }

    /// Signs arbitrary claims with an optional custom header (tests).
    pub fn sign(
        &self,
        claims: &Map<String, Value>,
        header: Option<Header>,
    ) -> Result<String, DevIssuerError> {
        let mut header = header.unwrap_or_else(|| Header::new(self.key.alg));
        header.alg = self.key.alg;
        if header.kid.is_none() {
            header.kid = Some(self.key.kid.clone());
        }
        jsonwebtoken::encode(&header, claims, &self.key.encoding)
            .map_err(|e| DevIssuerError::Token(e.to_string()))
    }

    pub fn router(self: Arc<Self>) -> axum::Router {
        use axum::routing::get;
        let d = self.clone();
        let j = self;
        axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let d = d.clone();
                    async move { axum::Json(d.discovery()) }
                }),
            )
            .route(
                "/jwks.json",
                get(move || {
                    let j = j.clone();
                    async move { axum::Json(j.jwks()) }
                }),
            )
    }
}

/// Binds `addr` (loopback only) and serves the issuer whose URL is derived
/// from the bound address (`http://127.0.0.1:PORT`) until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    key: DevKey,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(Arc<DevIssuer>, tokio::task::JoinHandle<()>)> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the dev issuer listens on loopback addresses only (it is not for production)",
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let issuer = Arc::new(DevIssuer::new(format!("http://{local}"), key));
    let app = issuer.clone().router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    });
    Ok((issuer, task))
}

/// `ES256` or `EdDSA` (the algorithms the dev issuer can sign with).
pub fn signing_algorithm(name: &str) -> Result<Algorithm, DevIssuerError> {
    match name {
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(DevIssuerError::Token(format!(
            "the dev issuer signs with ES256 or EdDSA, not {other}"
        ))),
    }
}

/// Extra claims given as a JSON object on the command line.
pub fn claims_from_json(text: &str) -> Result<Map<String, Value>, DevIssuerError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(DevIssuerError::Token(
            "claims must be a JSON object, e.g. '{\"repository\": \"acme/orders\"}'".into(),
        )),
    }
}
