//! People's login to the web UI: OIDC authorization code + PKCE against the
//! organisation's identity provider (`chaperone_web_login`), the `groups` claim
//! mapped to a role, and a browser session in a signed cookie.
//!
//! - `GET /login`: a page with a "Sign in" button (pages redirect here when
//!   nobody is logged in);
//! - `GET /auth/login`: starts the flow; the state, nonce and PKCE verifier stay
//!   on this server (only a random key goes into a short-lived cookie), so the
//!   callback must reach the same instance (sticky sessions behind a balancer);
//! - `GET /auth/callback`: finishes it and sets the session cookie;
//! - `POST /logout`: ends the session.
//!
//! The session cookie is `HttpOnly`, `SameSite=Lax`, `Secure` when the UI is
//! served over HTTPS, and signed with HMAC-SHA256 (`session_key_env` /
//! `session_key_file`, shared by replicas; a random key per start otherwise). It
//! lasts `session_secs`, and never longer than the ID token it came from.
//! Because the browser sends it with every request, a state-changing request
//! (POST) made with it must carry an `Origin` header naming this UI
//! ([`Login::same_origin`]); forms that decide something also carry the
//! session's CSRF token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
#[cfg(test)]
use chaperone_web_login::is_loopback_origin;
pub use chaperone_web_login::LoginConfig;
use chaperone_web_login::{origin_of, PendingLogin, WebLogin, WebLoginError, WebRole};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::html::{escape, page, url_encode};
use crate::AppState;

/// The browser session's cookie.
pub const SESSION_COOKIE: &str = "chaperone_session";
/// The cookie naming a login in progress (its key on this server).
const LOGIN_COOKIE: &str = "chaperone_login";
/// How long a started login may take to come back.
const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Logins in progress kept at most (a flood of `/auth/login` cannot grow memory).
const MAX_PENDING: usize = 10_000;

/// A logged-in person, as the session cookie carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebSession {
    /// Random: names the session in the access log and at logout.
    pub sid: String,
    pub issuer: String,
    pub subject: String,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    /// The highest role the person's groups give (it implies the lower ones).
    pub role: WebRole,
    /// Unix seconds.
    pub expires_at: i64,
    /// Forms that decide something carry it.
    pub csrf: String,
}

/// Signs and checks session cookies (HMAC-SHA256 over the JSON payload).
struct Signer {
    key: Vec<u8>,
}

impl Signer {
    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// The cookie value for a session: `base64(json).base64(hmac)`.
    fn seal(&self, session: &WebSession) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(serde_json::to_vec(session).expect("a session serialises"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!("{payload}.{}", b64.encode(mac.finalize().into_bytes()))
    }

    /// The session a cookie value stands for, if its signature holds and it
    /// has not expired.
    fn open(&self, value: &str) -> Option<WebSession> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, sig) = value.split_once('.')?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&b64.decode(sig).ok()?).ok()?;
        let session: WebSession = serde_json::from_slice(&b64.decode(payload).ok()?).ok()?;
        (session.expires_at > now_secs()).then_some(session)
    }
}

struct Started {
    pending: PendingLogin,
    next: String,
    at: Instant,
}

/// The web login of a running service.
pub struct Login {
    web: WebLogin,
    issuer: String,
    signer: Signer,
    session_secs: u64,
    origin: String,
    secure: bool,
    started: Mutex<HashMap<String, Started>>,
    /// Sessions logged out before their expiry (sid → expiry): a copied cookie
    /// stops working on this instance too.
    ended: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> i64 {
    chaperone_approvals::now_secs()
}

impl Login {
    /// Checks the config and reads the provider's discovery document.
    pub async fn start(config: &LoginConfig) -> Result<Login, crate::UiError> {
        config.check().map_err(crate::UiError::Config)?;
        let web = WebLogin::discover(config.clone())
            .await
            .map_err(|e| crate::UiError::Config(e.to_string()))?;
        let key = match config.session_key().map_err(crate::UiError::Config)? {
            Some(k) => k,
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let origin = origin_of(&config.redirect_url).map_err(crate::UiError::Config)?;
        Ok(Login {
            web,
            issuer: config.issuer.clone(),
            signer: Signer { key },
            session_secs: config.session_secs,
            secure: origin.starts_with("https://"),
            origin,
            started: Mutex::new(HashMap::new()),
            ended: Mutex::new(HashMap::new()),
        })
    }

    /// The logged-in person of a request, if any.
    pub fn session(&self, headers: &HeaderMap) -> Option<WebSession> {
        let session = self.signer.open(&cookie(headers, SESSION_COOKIE)?)?;
        let ended = self.ended.lock().expect("ended lock");
        (!ended.contains_key(&session.sid)).then_some(session)
    }

    /// Does a state-changing request come from this UI's own pages? Browsers
    /// send `Origin` with every POST; another site's form carries its own.
    pub fn same_origin(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| o == self.origin)
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        ))
        .expect("cookie values are base64url")
    }

    fn forget_old(&self) {
        let mut started = self.started.lock().expect("started lock");
        started.retain(|_, s| s.at.elapsed() < LOGIN_TTL);
        let now = now_secs();
        self.ended
            .lock()
            .expect("ended lock")
            .retain(|_, exp| *exp > now);
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Only paths of this UI are places to go back to after login (no
/// `//evil.example`, no absolute URLs).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/login", get(login_page))
        .route("/auth/login", get(begin))
        .route("/auth/callback", get(callback))
        .route("/logout", post(logout))
}

fn not_configured() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(page(
            "Sign in",
            "<p>Web login is not configured on this service ([ui.login]).</p>",
        )),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    /// Passed on to the provider (which account to sign in with).
    login_hint: Option<String>,
}

async fn login_page(State(state): State<Arc<AppState>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(login) = &state.login else {
        return not_configured();
    };
    let mut href = format!(
        "/auth/login?next={}",
        url_encode(&safe_next(q.next.as_deref()))
    );
    if let Some(hint) = q.login_hint.as_deref().filter(|h| !h.is_empty()) {
        href += &format!("&login_hint={}", url_encode(hint));
    }
    let body = format!(
        r#"<div class="card narrow"><p>The audit trail is for auditors, approvers and admins of this organisation.
Sign in with your company account; your role comes from your groups.</p>
<p><a class="button primary" id="sign-in" href="{}">Sign in with single sign-on</a></p>
<p><small>Identity provider: {}</small></p></div>"#,
        escape(&href),
        escape(&login.issuer)
    );
    Html(page("Sign in", &body)).into_response()
}

async fn begin(State(state): State<Arc<AppState>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(login) = &state.login else {
        return not_configured();
    };
    login.forget_old();
    let mut extra = Vec::new();
    if let Some(hint) = q.login_hint.as_deref().filter(|h| !h.is_empty()) {
        extra.push(("login_hint", hint));
    }
    let (url, pending) = login.web.begin(&extra);
    let key = random_token();
    {
        let mut started = login.started.lock().expect("started lock");
        if started.len() >= MAX_PENDING {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins in progress; try again in a few minutes\n",
            )
                .into_response();
        }
        started.insert(
            key.clone(),
            Started {
                pending,
                next: safe_next(q.next.as_deref()),
                at: Instant::now(),
            },
        );
    }
    let mut response = Redirect::to(&url).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        login.cookie(LOGIN_COOKIE, &key, "/auth", LOGIN_TTL.as_secs() as i64),
    );
    response
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn login_failed(status: StatusCode, message: &str) -> Response {
    (
        status,
        Html(page(
            "Sign-in failed",
            &format!(
                "<div class=\"card narrow\"><p class=\"error\">{}</p><p><a class=\"button\" href=\"/login\">Try again</a></p></div>",
                escape(message)
            ),
        )),
    )
        .into_response()
}

async fn callback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(login) = &state.login else {
        return not_configured();
    };
    let started = cookie(&headers, LOGIN_COOKIE).and_then(|key| {
        login
            .started
            .lock()
            .expect("started lock")
            .remove(&key)
            .filter(|s| s.at.elapsed() < LOGIN_TTL)
    });
    let Some(started) = started else {
        return login_failed(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started here, or took longer than 10 minutes.",
        );
    };
    if let Some(error) = q.error {
        tracing::warn!(target: "chaperone::access", %error, "web login refused by the identity provider");
        return login_failed(
            StatusCode::FORBIDDEN,
            &format!(
                "The identity provider refused the sign-in: {error} {}",
                q.error_description.unwrap_or_default()
            ),
        );
    }
    let (Some(code), Some(returned_state)) = (q.code, q.state) else {
        return login_failed(
            StatusCode::BAD_REQUEST,
            "The callback has no code or state.",
        );
    };
    let user = match login
        .web
        .finish(started.pending, &returned_state, &code)
        .await
    {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(target: "chaperone::access", error = %e, "web login failed");
            let status = match e {
                WebLoginError::NoRole { .. } => StatusCode::FORBIDDEN,
                WebLoginError::State => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            let message = match e {
                WebLoginError::NoRole { subject } => format!(
                    "You signed in as {subject}, who is in none of the auditor, approver or admin groups."
                ),
                other => other.to_string(),
            };
            return login_failed(status, &message);
        }
    };
    let role = *user
        .roles
        .iter()
        .max()
        .expect("web-login refuses people without a role");
    let session = WebSession {
        sid: random_token(),
        issuer: user.issuer,
        subject: user.subject,
        name: user.display_name,
        email: user.email,
        role,
        expires_at: (now_secs() + login.session_secs as i64).min(user.expires_at),
        csrf: random_token(),
    };
    tracing::info!(target: "chaperone::access", who = %session.subject, name = %session.name,
        role = role_name(role), session = %session.sid, "web login");
    let max_age = (session.expires_at - now_secs()).max(0);
    let mut response = Redirect::to(&started.next).into_response();
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        login.cookie(SESSION_COOKIE, &login.signer.seal(&session), "/", max_age),
    );
    h.append(
        header::SET_COOKIE,
        login.cookie(LOGIN_COOKIE, "", "/auth", 0),
    );
    response
}

async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(login) = &state.login else {
        return not_configured();
    };
    if !login.same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-site logout refused\n").into_response();
    }
    if let Some(session) = login.session(&headers) {
        tracing::info!(target: "chaperone::access", who = %session.subject, session = %session.sid, "web logout");
        login.forget_old();
        login
            .ended
            .lock()
            .expect("ended lock")
            .insert(session.sid, session.expires_at);
    }
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, login.cookie(SESSION_COOKIE, "", "/", 0));
    response
}

/// A role's name as the config and the access log spell it.
pub fn role_name(role: WebRole) -> &'static str {
    match role {
        WebRole::Auditor => "auditor",
        WebRole::Approver => "approver",
        WebRole::Admin => "admin",
    }
}

/// The role a config name stands for (`[[ui.tokens]]` roles).
pub fn role_from_name(name: &str) -> Option<WebRole> {
    match name {
        "auditor" => Some(WebRole::Auditor),
        "approver" => Some(WebRole::Approver),
        "admin" => Some(WebRole::Admin),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_next_paths() {
        assert_eq!(
            origin_of("https://audit.example.com/auth/callback").unwrap(),
            "https://audit.example.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/auth/callback").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(origin_of("ftp://x/auth/callback").is_err());
        assert!(is_loopback_origin("http://127.0.0.1:8080"));
        assert!(is_loopback_origin("http://localhost"));
        assert!(!is_loopback_origin("http://audit.example.com:8080"));
        assert_eq!(
            safe_next(Some("/sessions/x?offset=5")),
            "/sessions/x?offset=5"
        );
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn session_cookies_are_signed_and_expire() {
        let signer = Signer { key: vec![7; 32] };
        let mut session = WebSession {
            sid: "s1".into(),
            issuer: "https://idp.example".into(),
            subject: "alice".into(),
            name: "Alice".into(),
            email: None,
            role: WebRole::Auditor,
            expires_at: now_secs() + 60,
            csrf: "c".into(),
        };
        let sealed = signer.seal(&session);
        assert_eq!(signer.open(&sealed).unwrap().subject, "alice");
        // Promoting oneself to admin breaks the signature.
        let (payload, sig) = sealed.split_once('.').unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut json: serde_json::Value =
            serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
        json["role"] = "admin".into();
        let forged = format!("{}.{sig}", b64.encode(json.to_string()));
        assert!(signer.open(&forged).is_none());
        // Another key's cookie, and an expired one, are refused.
        assert!(Signer { key: vec![8; 32] }.open(&sealed).is_none());
        session.expires_at = now_secs() - 1;
        assert!(signer.open(&signer.seal(&session)).is_none());
        assert!(signer.open("garbage").is_none());
    }

    /// The commented web UI block of `deploy/chaperone.toml`, uncommented,
    /// is a valid `[ui]` section.
    #[test]
    fn the_deploy_example_block_parses() {
        let text = include_str!("../../deploy/chaperone.toml");
        let start = text.find("# --- web UI").expect("web UI block");
        let end = text.find("# --- end web UI").expect("end of the block");
        let block: String = text[start..end]
            .lines()
            .skip_while(|l| !l.starts_with("# ["))
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = toml::from_str(&block).unwrap();
        let ui: crate::UiConfig = table["ui"].clone().try_into().unwrap();
        let login = ui.login.expect("[ui.login]");
        assert_eq!(login.client_id, "chaperone-ui");
        assert_eq!(login.approver_groups, ["dba-oncall"]);
        assert_eq!(
            origin_of(&login.redirect_url).unwrap(),
            "https://audit.example.com"
        );
        assert_eq!(ui.tokens.len(), 1);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; chaperone_session=xyz.abc"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz.abc"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
