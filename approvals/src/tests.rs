use std::collections::BTreeMap;

use super::*;
use crate::config::{ApprovalsConfig, ApproverConfig};

fn config(store: &str) -> ApprovalsConfig {
    let approver = |token: &str, identities: &[&str]| ApproverConfig {
        token_env: None,
        token_file: None,
        token: Some(token.to_string()),
        identities: identities.iter().map(|s| s.to_string()).collect(),
    };
    ApprovalsConfig {
        store: store.to_string(),
        store_options: BTreeMap::new(),
        request_url: Some("https://ui.example/approvals/{id}".into()),
        poll_interval_ms: 20,
        claim_ttl_secs: 60,
        pending_ttl_secs: 60,
        approvers: BTreeMap::from([
            ("alice".to_string(), approver("alice-token-0123456789", &[])),
            ("bob".to_string(), approver("bob-token-0123456789ab", &[])),
            (
                "carol".to_string(),
                approver("carol-token-0123456789", &["agent-7"]),
            ),
        ]),
        webhooks: Vec::new(),
    }
}

fn requester(subject: &str) -> Requester {
    Requester {
        issuer: "https://issuer".into(),
        subject: subject.into(),
        display_name: subject.into(),
        role: Some("ci".into()),
        claims: serde_json::json!({}),
    }
}

fn request(subject: &str, required: u32, approvers: Option<Vec<String>>) -> ApprovalRequest {
    let who = requester(subject);
    let now = now_secs();
    ApprovalRequest {
        id: new_id(),
        kind: RequestKind::Statement,
        created_at: now,
        expires_at: now + 30,
        fingerprint: fingerprint(&who, "orders", Some("shop"), "DROP TABLE t", &[]),
        requester: who,
        target: "orders".into(),
        database: Some("shop".into()),
        sql: Some("DROP TABLE t".into()),
        params: Vec::new(),
        statement_class: Some("ddl".into()),
        tables: vec!["shop.t".into()],
        policy: "migrations".into(),
        rule: "ddl".into(),
        reason: "DROP on shop.t needs approval".into(),
        explain_rows: None,
        required_approvals: required,
        approvers,
        mode: ApprovalModeName::Hold,
        gateway_id: "gw".into(),
        session_id: "s1".into(),
        access_window_secs: None,
    }
}

#[tokio::test]
async fn two_of_three_approvers_and_no_self_approval() {
    let a = Approvals::open(&config("memory://")).await.unwrap();
    assert_eq!(a.approver_for_token(b"bob-token-0123456789ab"), Some("bob"));
    assert_eq!(a.approver_for_token(b"bob-token"), None);
    let v = a.open_request(request("agent-7", 2, None)).await.unwrap();
    let id = v.request.id.clone();
    assert_eq!(v.state, State::Pending);
    assert_eq!(
        v.url.as_deref(),
        Some(&*format!("https://ui.example/approvals/{id}"))
    );
    // carol is agent-7: her own request.
    assert!(matches!(
        a.approve(&id, "carol", None).await,
        Err(ActionError::Forbidden(_))
    ));
    let v = a.approve(&id, "alice", Some("ok".into())).await.unwrap();
    assert_eq!(v.state, State::Pending);
    // The same approver twice still counts once.
    let v = a.approve(&id, "alice", None).await.unwrap();
    assert_eq!((v.state, v.approvals.len()), (State::Pending, 1));
    let v = a.approve(&id, "bob", None).await.unwrap();
    assert_eq!(v.state, State::Approved);
    assert_eq!(v.decision.as_ref().unwrap().by, ["alice", "bob"]);
    assert!(matches!(
        a.deny(&id, "bob", None).await,
        Err(ActionError::Conflict(_))
    ));
    // Used exactly once.
    assert!(a.claim(&id, "s2", "gw").await.unwrap());
    assert!(!a.claim(&id, "s3", "gw").await.unwrap());
    assert_eq!(a.view(&id).await.unwrap().unwrap().state, State::Used);
    assert_eq!(a.list(Some(State::Used)).await.unwrap().len(), 1);
    assert!(a.list(Some(State::Pending)).await.unwrap().is_empty());
    let found = a
        .by_fingerprint(&v.request.fingerprint, &requester("agent-7"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(a
        .by_fingerprint(&v.request.fingerprint, &requester("other"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn deny_expire_revoke_and_eligibility() {
    let a = Approvals::open(&config("memory://")).await.unwrap();
    let v = a
        .open_request(request("agent-1", 1, Some(vec!["bob".into()])))
        .await
        .unwrap();
    let id = v.request.id;
    assert!(matches!(
        a.approve(&id, "alice", None).await,
        Err(ActionError::Forbidden(_))
    ));
    let v = a.deny(&id, "bob", Some("not today".into())).await.unwrap();
    assert_eq!(v.state, State::Denied);
    assert_eq!(v.decision.unwrap().reason.as_deref(), Some("not today"));

    let id = a
        .open_request(request("agent-1", 1, None))
        .await
        .unwrap()
        .request
        .id;
    assert!(a.expire(&id, "timeout").await.unwrap());
    assert_eq!(a.view(&id).await.unwrap().unwrap().state, State::Expired);
    assert!(matches!(
        a.approve(&id, "alice", None).await,
        Err(ActionError::Conflict(_))
    ));

    let id = a
        .open_request(request("agent-1", 1, None))
        .await
        .unwrap()
        .request
        .id;
    a.approve(&id, "alice", None).await.unwrap();
    let v = a.revoke(&id, "bob", None).await.unwrap();
    assert_eq!(v.state, State::Revoked);
    assert!(!a.window_valid(&id).await.unwrap());
    assert!(matches!(a.view("../../etc/passwd").await, Ok(None)));
}

#[tokio::test]
async fn a_waiting_session_wakes_on_the_decision() {
    let a = std::sync::Arc::new(Approvals::open(&config("memory://")).await.unwrap());
    let id = a
        .open_request(request("agent-1", 1, None))
        .await
        .unwrap()
        .request
        .id;
    let waiter = {
        let a = a.clone();
        let id = id.clone();
        tokio::spawn(async move { a.wait(&id, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.approve(&id, "alice", None).await.unwrap();
    let v = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(v.state, State::Approved);
    // A wait that times out returns the pending request.
    let id = a
        .open_request(request("agent-1", 1, None))
        .await
        .unwrap()
        .request
        .id;
    let v = a.wait(&id, Duration::from_millis(60)).await.unwrap();
    assert_eq!(v.state, State::Pending);
}

#[tokio::test]
async fn short_tokens_are_refused() {
    let mut c = config("memory://");
    c.approvers.get_mut("alice").unwrap().token = Some("short".into());
    assert!(Approvals::open(&c).await.is_err());
}

/// A web UI login finds its approver by name, else by `identities`.
#[tokio::test]
async fn people_are_matched_to_approvers() {
    let a = Approvals::open(&config("memory://")).await.unwrap();
    assert_eq!(a.approver_for_person(&["bob", "bob@x"]), Some("bob"));
    assert_eq!(
        a.approver_for_person(&["someone", "agent-7"]),
        Some("carol")
    );
    assert_eq!(a.approver_for_person(&["dave", "dave@x"]), None);
}
