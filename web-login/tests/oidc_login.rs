//! The web login against a real OIDC provider (node `oidc-provider`,
//! `tests/clients/oidc-issuer.mjs`): the authorization code flow with PKCE, as a
//! browser would drive it (redirects and cookies by hand), then the ID token's
//! groups mapped to roles.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use chaperone_web_login::{LoginConfig, WebLogin, WebLoginError, WebRole};
use tokio::io::AsyncBufReadExt;

const REDIRECT: &str = "http://127.0.0.1:9/auth/callback";

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/clients")
}

/// The provider of the identity tests, on an ephemeral loopback port.
async fn provider() -> (tokio::process::Child, String) {
    let dir = clients_dir();
    if !dir.join("node_modules/oidc-provider").is_dir() {
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .expect("npm runs (run scripts/setup-test-env.sh)")
            .success();
        assert!(ok, "npm install in tests/clients failed");
    }
    let mut child = tokio::process::Command::new("node")
        .args(["oidc-issuer.mjs", "--port", "0", "--redirect-uri", REDIRECT])
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the provider starts in time")
        .unwrap()
        .expect("the provider prints its address");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    (child, v["issuer"].as_str().unwrap().to_string())
}

fn config(issuer: &str) -> LoginConfig {
    serde_json::from_value(serde_json::json!({
        "issuer": issuer,
        "client_id": "chaperone-ui",
        "client_secret": "ui-secret",
        "redirect_url": REDIRECT,
        "auditor_groups": ["chaperone-auditors"],
        "approver_groups": ["chaperone-approvers"],
        "admin_groups": ["chaperone-admins"],
    }))
    .unwrap()
}

/// Plays the browser: follows redirects, keeping cookies, until the provider
/// sends it to the redirect URL; returns that URL's `state` and `code`.
async fn browse(start: &str) -> (String, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut cookies: Vec<String> = Vec::new();
    let mut url = reqwest::Url::parse(start).unwrap();
    for _ in 0..10 {
        let resp = http
            .get(url.clone())
            .header("cookie", cookies.join("; "))
            .send()
            .await
            .unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_string();
            let name = pair.split('=').next().unwrap().to_string();
            cookies.retain(|k| !k.starts_with(&format!("{name}=")));
            cookies.push(pair);
        }
        let status = resp.status();
        let Some(location) = resp.headers().get("location") else {
            panic!(
                "no redirect from {url}: {status} {}",
                resp.text().await.unwrap_or_default()
            );
        };
        url = url.join(location.to_str().unwrap()).unwrap();
        if url.as_str().starts_with(REDIRECT) {
            let q = |k: &str| {
                url.query_pairs()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| panic!("no {k} in {url}"))
            };
            return (q("state"), q("code"));
        }
    }
    panic!("too many redirects");
}

#[tokio::test(flavor = "multi_thread")]
async fn people_log_in_with_pkce_and_their_groups_become_roles() {
    let (mut child, issuer) = provider().await;
    let login = WebLogin::discover(config(&issuer)).await.unwrap();

    let cases = [
        ("alice", vec![WebRole::Auditor]),
        ("bob", vec![WebRole::Auditor, WebRole::Approver]),
        (
            "carol",
            vec![WebRole::Auditor, WebRole::Approver, WebRole::Admin],
        ),
    ];
    for (who, roles) in cases {
        let (url, pending) = login.begin(&[("login_hint", who)]);
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        let (state, code) = browse(&url).await;
        let user = login.finish(pending, &state, &code).await.unwrap();
        assert_eq!(user.subject, who);
        assert_eq!(user.issuer, issuer);
        assert_eq!(
            user.email.as_deref(),
            Some(format!("{who}@example.test").as_str())
        );
        assert!(
            user.display_name.to_lowercase().starts_with(who),
            "{}",
            user.display_name
        );
        assert_eq!(user.roles, roles.into_iter().collect::<BTreeSet<_>>());
    }

    // No Chaperone group: refused.
    let (url, pending) = login.begin(&[("login_hint", "dave")]);
    let (state, code) = browse(&url).await;
    let err = login.finish(pending, &state, &code).await.unwrap_err();
    assert!(matches!(err, WebLoginError::NoRole { .. }), "{err}");

    // A callback whose state is not the one this login started with (CSRF).
    let (url, _pending) = login.begin(&[("login_hint", "alice")]);
    let (state, code) = browse(&url).await;
    let (_, other_pending) = login.begin(&[("login_hint", "alice")]);
    let err = login
        .finish(other_pending, &state, &code)
        .await
        .unwrap_err();
    assert!(matches!(err, WebLoginError::State), "{err}");

    // A code replayed after use is refused by the provider.
    let (url, pending) = login.begin(&[("login_hint", "alice")]);
    let kept = serde_json::to_string(&pending).unwrap();
    let (state, code) = browse(&url).await;
    login.finish(pending, &state, &code).await.unwrap();
    let again = serde_json::from_str(&kept).unwrap();
    let err = login.finish(again, &state, &code).await.unwrap_err();
    assert!(matches!(err, WebLoginError::Exchange(_)), "{err}");
    let _ = child.kill().await;
}
