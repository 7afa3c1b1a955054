//! Token validation: is this JWT from a configured issuer, signed by one of its
//! keys, for us, and valid now?
//!
//! Order matters: the size is capped before anything is decoded; the issuer is
//! read (unverified) from the payload only to choose the issuer's keys and
//! settings; the algorithm must be one the issuer allows and the key's type
//! permits (no `none`, no HMAC, no RSA key used as an HMAC secret); then
//! `jsonwebtoken` verifies the signature and `exp`, `nbf`, `iss`, `aud`, `sub`,
//! all required and all of the right type. The token itself never appears in an
//! error, a log line or a record.

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use super::issuer::{Issuer, IssuerError};

/// Why a token was refused. Safe to log: never contains the token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("token of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("token issuer {0:?} is not configured")]
    UnknownIssuer(String),
    #[error("signature algorithm {0} is not accepted for this issuer")]
    Algorithm(String),
    #[error(transparent)]
    Keys(#[from] IssuerError),
    #[error("signature does not verify with the issuer's keys")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token audience is not one this gateway accepts")]
    Audience,
    #[error("token issuer does not match")]
    Issuer,
    #[error("token was issued to a client (azp/client_id) this gateway does not accept")]
    AuthorizedParty,
    #[error("required claim `{0}` is missing")]
    MissingClaim(String),
    #[error("claim `{0}` has the wrong type")]
    ClaimType(String),
    #[error("token rejected: {0}")]
    Invalid(String),
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: Arc<Issuer>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub subject: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("issuer", &self.config.issuer)
            .finish()
    }
}

/// Validates tokens against the configured issuers.
pub struct TokenValidator {
    issuers: Vec<Arc<Issuer>>,
    max_token_bytes: usize,
}

impl TokenValidator {
    pub fn new(issuers: Vec<Arc<Issuer>>, max_token_bytes: usize) -> Self {
        TokenValidator {
            issuers,
            max_token_bytes,
        }
    }

    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    pub async fn validate(&self, token: &[u8]) -> Result<VerifiedToken, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: self.max_token_bytes,
            });
        }
        let token = std::str::from_utf8(token)
            .map_err(|_| TokenError::Malformed("not UTF-8".into()))?
            .trim();
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(TokenError::Malformed(format!(
                "{} parts, a signed JWT has 3 (header.payload.signature)",
                parts.len()
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| TokenError::Malformed(format!("header: {}", describe(e.kind()))))?;
        let issuer = self.issuer_of(parts[1])?;
        let alg = header.alg;
        if !issuer.algorithms.contains(&alg) {
            return Err(TokenError::Algorithm(format!("{alg:?}")));
        }
        let keys = issuer.keys_for(header.kid.as_deref(), alg).await?;
        let validation = validation(&issuer, alg);
        let mut last = TokenError::BadSignature;
        for key in keys {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => return verified(issuer, data.claims),
                // Another key of the same type may have signed it (no kid).
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => {
                    last = classify(e.kind());
                    break;
                }
            }
        }
        Err(last)
    }

    /// The configured issuer named by the payload's `iss`, read without
    /// verification only to pick the keys; the verified claims are checked again.
    fn issuer_of(&self, payload: &str) -> Result<Arc<Issuer>, TokenError> {
        #[derive(serde::Deserialize)]
        struct Peek {
            iss: Option<serde_json::Value>,
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed("payload is not base64url".into()))?;
        let peek: Peek = serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Malformed("payload is not a JSON object".into()))?;
        let iss = match peek.iss {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(TokenError::ClaimType("iss".into())),
            None => return Err(TokenError::MissingClaim("iss".into())),
        };
        self.issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .cloned()
            .ok_or_else(|| {
                // Attacker-controlled: bounded before it reaches a log line.
                let shown: String = iss.chars().take(120).collect();
                TokenError::UnknownIssuer(shown)
            })
    }
}

fn validation(issuer: &Issuer, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    let mut required = vec!["exp", "iss", "aud", "sub"];
    if issuer.config.require_nbf {
        required.push("nbf");
    }
    v.set_required_spec_claims(&required);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.leeway = issuer.config.leeway_secs;
    v.set_issuer(&[&issuer.config.issuer]);
    v.set_audience(&issuer.config.audiences);
    v
}

fn verified(
    issuer: Arc<Issuer>,
    claims: serde_json::Map<String, serde_json::Value>,
) -> Result<VerifiedToken, TokenError> {
    // jsonwebtoken checked presence and type of these; an empty subject is no
    // identity, and `exp` must be an integer to be recorded.
    let subject = match claims.get("sub") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(TokenError::ClaimType("sub".into())),
    };
    let expires_at = claims
        .get("exp")
        .and_then(|v| v.as_f64())
        .map(|f| f as i64)
        .ok_or_else(|| TokenError::ClaimType("exp".into()))?;
    let parties = &issuer.config.authorized_parties;
    if !parties.is_empty() {
        let azp = claims
            .get("azp")
            .or_else(|| claims.get("client_id"))
            .and_then(|v| v.as_str());
        if !azp.is_some_and(|a| parties.iter().any(|p| p == a)) {
            return Err(TokenError::AuthorizedParty);
        }
    }
    Ok(VerifiedToken {
        issuer,
        claims,
        subject,
        expires_at,
    })
}

fn classify(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenError::ClaimType(c.clone()),
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm("not permitted for the key".into()),
        other => TokenError::Invalid(describe(other)),
    }
}

/// A description of a jsonwebtoken error that never quotes the input.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::Base64(_) => "bad base64url".into(),
        // serde_json messages can quote values: only the position is kept.
        ErrorKind::Json(e) => format!("bad JSON or claim type (column {})", e.column()),
        ErrorKind::Utf8(_) => "not UTF-8".into(),
        ErrorKind::InvalidAlgorithmName => "unknown or forbidden algorithm".into(),
        other => format!("{other:?}"),
    }
}
