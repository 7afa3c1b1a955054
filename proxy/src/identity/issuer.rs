//! One configured OIDC issuer: where its signing keys are, and a cache of them.
//!
//! Keys come only from the configured JWKS URL, or from the `jwks_uri` of the
//! issuer's discovery document; never from a token (`jku`, `x5u`, `jwk` headers
//! are ignored). The cache is refreshed when it is older than `jwks_max_age_secs`
//! and when a token names an unknown `kid` (key rotation), at most once per
//! `jwks_min_refresh_secs`, so random `kid`s cannot cause a fetch storm. When a
//! refresh fails the keys already known keep working.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tracing::{info, warn};

use super::config::{parse_algorithm, IssuerConfig};

/// The largest discovery document or JWKS accepted.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// RSA keys shorter than this are ignored.
const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, thiserror::Error)]
pub enum IssuerError {
    #[error("no signing keys for issuer {issuer}: {reason}")]
    NoKeys { issuer: String, reason: String },
    #[error("the token's key id is not in the JWKS of issuer {issuer} (rotated, or not this issuer's key)")]
    UnknownKid { issuer: String },
}

/// A verification key from the JWKS, with the algorithms it may be used with:
/// the key's type decides (RSA → RS*/PS*, P-256 → ES256, Ed25519 → EdDSA),
/// narrowed by the JWK's own `alg` and the issuer's configured algorithms.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    fetched_at: Instant,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
    /// The JWKS URL found by discovery.
    jwks_url: Option<String>,
}

pub struct Issuer {
    /// The key of `[issuers.NAME]`.
    pub name: String,
    pub config: IssuerConfig,
    pub algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

/// Checks that a URL may be fetched: `https`, or `http` to a loopback address
/// when allowed (tests, the dev issuer).
pub fn check_url(url: &str, allow_http_loopback: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host_str() {
                Some("localhost") => true,
                Some(h) => h
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback()),
                None => false,
            };
            if loopback && allow_http_loopback {
                Ok(())
            } else {
                Err(format!(
                    "\"{url}\": use https (plain http only to a loopback address with allow_http_loopback = true)"
                ))
            }
        }
        s => Err(format!("\"{url}\": scheme {s} is not supported, use https")),
    }
}

impl Issuer {
    pub fn new(name: &str, config: &IssuerConfig) -> Result<Self, String> {
        let algorithms = config
            .algorithms
            .iter()
            .filter_map(|a| parse_algorithm(a))
            .collect();
        let mut http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // Redirects could lead the key fetch anywhere: not followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chaperone/", env!("CARGO_PKG_VERSION")));
        if !config.allow_http_loopback {
            http = http.https_only(true);
        }
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("issuers.{name}.ca_file {}: {e}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("issuers.{name}.ca_file {}: {e}", ca.display()))?;
            http = http.add_root_certificate(cert);
        }
        Ok(Issuer {
            name: name.to_string(),
            config: config.clone(),
            algorithms,
            http: http
                .build()
                .map_err(|e| format!("issuers.{name}: HTTP client: {e}"))?,
            keys: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        self.keys.read().expect("key cache lock").clone()
    }

    /// The keys that may verify a token with this `kid` and `alg`: the one with
    /// that `kid`, or, for a token without one, every key of a fitting type.
    ///
    /// A known key is used at once, even from a stale cache (which is then
    /// refreshed in the background), so that a slow JWKS endpoint never holds
    /// up logins whose key is known; an unknown `kid` waits for a refresh.
    pub async fn keys_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<VerifyKey>>, IssuerError> {
        let max_age = Duration::from_secs(self.config.jwks_max_age_secs);
        let set = match self.cached() {
            Some(set) if find(&set, kid, alg).next().is_some() => {
                if set.fetched_at.elapsed() >= max_age {
                    let me = self.clone();
                    tokio::spawn(async move {
                        // Rate-limited like any refresh; errors are logged there.
                        let _ = me.refresh().await;
                    });
                }
                set
            }
            // Empty, or an unknown kid: refresh if the rate limit allows.
            _ => self.refresh().await?,
        };
        let found: Vec<_> = find(&set, kid, alg).cloned().collect();
        if found.is_empty() {
            return Err(match kid {
                Some(_) => IssuerError::UnknownKid {
                    issuer: self.config.issuer.clone(),
                },
                None => IssuerError::NoKeys {
                    issuer: self.config.issuer.clone(),
                    reason: format!("no key for algorithm {alg:?}"),
                },
            });
        }
        Ok(found)
    }

    /// Fetches the keys unless a fetch happened within `jwks_min_refresh_secs`;
    /// returns the best key set known afterwards.
    async fn refresh(&self) -> Result<Arc<KeySet>, IssuerError> {
        let mut state = self.fetch.lock().await;
        let min = Duration::from_secs(self.config.jwks_min_refresh_secs);
        let due = state.last_attempt.is_none_or(|t| t.elapsed() >= min);
        if due {
            state.last_attempt = Some(Instant::now());
            match self.fetch_keys(&mut state).await {
                Ok(keys) => {
                    info!(issuer = %self.config.issuer, keys = keys.len(), "fetched signing keys");
                    state.last_error = None;
                    let set = Arc::new(KeySet {
                        keys,
                        fetched_at: Instant::now(),
                    });
                    *self.keys.write().expect("key cache lock") = Some(set.clone());
                    return Ok(set);
                }
                Err(e) => {
                    warn!(issuer = %self.config.issuer, error = %e, "fetching signing keys failed; keeping the keys already known");
                    state.last_error = Some(e);
                }
            }
        }
        self.cached().ok_or_else(|| IssuerError::NoKeys {
            issuer: self.config.issuer.clone(),
            reason: match &state.last_error {
                Some(e) => format!("the JWKS could not be fetched ({e})"),
                None => "the JWKS has not been fetched yet".into(),
            },
        })
    }

    async fn fetch_keys(&self, state: &mut FetchState) -> Result<Vec<Arc<VerifyKey>>, String> {
        let url = match (&self.config.jwks_url, &state.jwks_url) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) => u.clone(),
            (None, None) => {
                let u = self.discover().await?;
                state.jwks_url = Some(u.clone());
                u
            }
        };
        let body = self.get(&url).await?;
        parse_jwks(&body, &self.algorithms)
    }

    /// Reads `jwks_uri` from the discovery document. Parsed leniently on purpose:
    /// GitHub's and Kubernetes' documents lack fields that strict OIDC discovery
    /// types (`openidconnect::core::CoreProviderMetadata`) demand, such as
    /// `authorization_endpoint`; only `issuer` and `jwks_uri` matter here.
    async fn discover(&self) -> Result<String, String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let doc: Discovery =
            serde_json::from_slice(&body).map_err(|e| format!("discovery document {url}: {e}"))?;
        if doc.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(format!(
                "discovery document {url} names issuer \"{}\", not \"{}\"",
                doc.issuer, self.config.issuer
            ));
        }
        check_url(&doc.jwks_uri, self.config.allow_http_loopback)
            .map_err(|e| format!("discovery document {url}: jwks_uri {e}"))?;
        Ok(doc.jwks_uri)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn find<'a>(
    set: &'a KeySet,
    kid: Option<&'a str>,
    alg: Algorithm,
) -> impl Iterator<Item = &'a Arc<VerifyKey>> + 'a {
    set.keys.iter().filter(move |k| {
        k.algorithms.contains(&alg)
            && match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            }
    })
}

/// Parses a JWKS, keeping the signature keys usable with `allowed` algorithms.
/// Keys the gateway cannot or must not use (symmetric `oct` keys, encryption
/// keys, unknown types or curves, short RSA keys) are skipped, not fatal.
pub fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<Arc<VerifyKey>>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("JWKS: {e}"))?;
    let mut keys = Vec::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if let Some(k) = verify_key(&jwk, allowed) {
            keys.push(Arc::new(k));
        }
    }
    Ok(keys)
}

fn verify_key(jwk: &Jwk, allowed: &[Algorithm]) -> Option<VerifyKey> {
    use base64::Engine;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.n.trim_end_matches('='))
                .ok()?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return None;
            }
            &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ]
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        // Never a shared secret from a key set: that is the key-confusion attack.
        _ => return None,
    };
    let declared = jwk
        .common
        .key_algorithm
        .and_then(|a| parse_algorithm(&a.to_string()));
    if jwk.common.key_algorithm.is_some() && declared.is_none() {
        // The key says it is for something this gateway does not verify.
        return None;
    }
    let algorithms: Vec<Algorithm> = by_type
        .iter()
        .copied()
        .filter(|a| allowed.contains(a) && declared.is_none_or(|d| d == *a))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey {
        kid: jwk.common.key_id.clone(),
        key,
        algorithms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_allowed_loopback_http() {
        assert!(check_url("https://token.actions.githubusercontent.com", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080", true).is_ok());
        assert!(check_url("http://127.0.0.1:8080", false).is_err());
        assert!(check_url("http://issuer.example", true).is_err());
        assert!(check_url("file:///etc/passwd", true).is_err());
    }

    #[test]
    fn symmetric_encryption_and_weak_keys_are_skipped() {
        let jwks = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"EC","crv":"P-256","use":"enc","kid":"enc",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"RSA","kid":"short","n":"AQAB","e":"AQAB"},
            {"kty":"EC","crv":"P-256","kid":"ok",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"weird","kid":"w"}
        ]}"#;
        let all = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
        let keys = parse_jwks(jwks, &all).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec!["ok".to_string()]);
        assert_eq!(keys[0].algorithms, vec![Algorithm::ES256]);
        // Not allowed by the issuer's configuration: no key at all.
        assert!(parse_jwks(jwks, &[Algorithm::RS256]).unwrap().is_empty());
    }
}
