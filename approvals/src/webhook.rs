//! Outgoing webhooks: every new request and every decision is POSTed to the
//! configured URLs, as generic JSON or as a Slack incoming-webhook message.
//!
//! Generic JSON: `{"event": "approval.requested", "approval": <the request as
//! GET /v1/approvals/{id} returns it>}`; events are `approval.requested`,
//! `approval.approval_added` (one of several needed approvals),
//! `approval.approved`, `approval.denied`, `approval.expired`,
//! `approval.revoked`.
//!
//! Slack: `{"text": ..., "blocks": [...]}` with the identity, target, rule,
//! reason and SQL, and a link to the request. Everything from the request is
//! escaped (`&`, `<`, `>`): the SQL is the agent's, not the gateway's.
//!
//! Delivery is best effort, off the data path: one attempt per URL with a
//! timeout, failures logged. The store is the record; webhooks are a nudge.

use std::time::Duration;

use tracing::{debug, warn};

use super::RequestView;
use crate::config::{WebhookConfig, WebhookFormat};

pub struct Webhooks {
    hooks: Vec<WebhookConfig>,
    client: Option<reqwest::Client>,
}

impl Webhooks {
    pub fn new(hooks: &[WebhookConfig]) -> Self {
        let client = (!hooks.is_empty())
            .then(|| reqwest::Client::builder().build().ok())
            .flatten();
        Webhooks {
            hooks: hooks.to_vec(),
            client,
        }
    }

    /// Sends `event` about `view` to every hook, in the background.
    pub fn publish(&self, event: &str, view: &RequestView) {
        let Some(client) = &self.client else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for hook in &self.hooks {
            let body = match hook.format {
                WebhookFormat::Json => json_payload(event, view),
                WebhookFormat::Slack => slack_payload(event, view),
            };
            let request = client
                .post(&hook.url)
                .timeout(Duration::from_secs(hook.timeout_secs))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            let url = hook.url.clone();
            let id = view.request.id.clone();
            runtime.spawn(async move {
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        debug!(%url, approval = %id, "webhook delivered")
                    }
                    Ok(r) => warn!(%url, approval = %id, status = %r.status(), "webhook refused"),
                    Err(e) => warn!(%url, approval = %id, error = %e, "webhook failed"),
                }
            });
        }
    }
}

pub fn json_payload(event: &str, view: &RequestView) -> serde_json::Value {
    serde_json::json!({ "event": event, "approval": view })
}

/// Slack's mrkdwn control characters, escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace("```", "`\u{200b}``")
}

pub fn slack_payload(event: &str, view: &RequestView) -> serde_json::Value {
    let r = &view.request;
    let what = match event {
        "approval.requested" => "needs approval",
        "approval.approval_added" => "got an approval",
        "approval.approved" => "was approved",
        "approval.denied" => "was denied",
        "approval.expired" => "expired",
        "approval.revoked" => "was revoked",
        _ => "changed",
    };
    let kind = match r.kind {
        super::RequestKind::Statement => "Statement",
        super::RequestKind::Connect => "Access request",
    };
    let headline = format!(
        "{kind} {} from {} on {} {what}",
        r.id, r.requester.display_name, r.target
    );
    let mut text = format!(
        "*{}*\n*Identity:* {} ({})\n*Target:* {}{}\n*Rule:* {} ({})\n*Why:* {}\n*Approvals:* {}/{}",
        esc(&headline),
        esc(&r.requester.display_name),
        esc(&r.requester.subject),
        esc(&r.target),
        r.database
            .as_deref()
            .map(|d| format!(" / {}", esc(d)))
            .unwrap_or_default(),
        esc(&r.rule),
        esc(&r.policy),
        esc(&r.reason),
        view.approvals.len(),
        r.required_approvals,
    );
    if let Some(rows) = r.explain_rows {
        text.push_str(&format!("\n*EXPLAIN rows:* {rows}"));
    }
    if let Some(sql) = &r.sql {
        let shown: String = sql.chars().take(2500).collect();
        text.push_str(&format!("\n```{}```", esc(&shown)));
    }
    if let Some(url) = &view.url {
        text.push_str(&format!("\n<{}|Open the request>", esc(url)));
    }
    serde_json::json!({
        "text": headline,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "context", "elements": [ { "type": "mrkdwn",
                "text": format!("state: {} · chaperone approvals approve {}", view.state.as_str(), r.id) } ] }
        ]
    })
}
