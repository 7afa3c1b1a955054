//! The HTTP client behind `chaperone approvals list | show | approve | deny |
//! revoke`: it talks to a gateway's approvals API with an approver's token.

use std::path::Path;
use std::time::Duration;

use crate::{RequestView, State};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from the API: {0}")]
    Answer(String),
}

pub struct ApprovalsClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApprovalsClient {
    /// `base`: the API's URL (`https://gateway:8443`); `ca_file`: a PEM CA for a
    /// gateway certificate the system does not trust (the dev certificate).
    pub fn new(base: &str, token: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        if token.is_empty() {
            return Err(ClientError::Setup(
                "an approver token is needed: --token or CHAPERONE_APPROVER_TOKEN".into(),
            ));
        }
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| ClientError::Setup(format!("{}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Setup(format!("{}: {e}", ca.display())))?;
            http = http.add_root_certificate(cert);
        }
        Ok(ApprovalsClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: http
                .build()
                .map_err(|e| ClientError::Setup(e.to_string()))?,
        })
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            ClientError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            }
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Answer(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|_| ClientError::Answer(text.clone()))?;
        if !status.is_success() {
            let message = value
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or(&text)
                .to_string();
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok(value)
    }

    pub async fn list(&self, state: Option<&str>) -> Result<Vec<RequestView>, ClientError> {
        let mut url = format!("{}/v1/approvals", self.base);
        if let Some(s) = state {
            url.push_str(&format!("?state={s}"));
        }
        let v = self.call(self.http.get(&url), &url).await?;
        serde_json::from_value(v.get("approvals").cloned().unwrap_or_default())
            .map_err(|e| ClientError::Answer(e.to_string()))
    }

    pub async fn show(&self, id: &str) -> Result<RequestView, ClientError> {
        let url = format!("{}/v1/approvals/{id}", self.base);
        let v = self.call(self.http.get(&url), &url).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Answer(e.to_string()))
    }

    /// `action`: `approve`, `deny` or `revoke`; `note`: a comment or reason.
    pub async fn act(
        &self,
        id: &str,
        action: &str,
        note: Option<&str>,
    ) -> Result<RequestView, ClientError> {
        let url = format!("{}/v1/approvals/{id}/{action}", self.base);
        let key = if action == "approve" {
            "comment"
        } else {
            "reason"
        };
        let body = match note {
            Some(n) => serde_json::json!({ key: n }).to_string(),
            None => String::new(),
        };
        let v = self
            .call(
                self.http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body),
                &url,
            )
            .await?;
        serde_json::from_value(v).map_err(|e| ClientError::Answer(e.to_string()))
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ssZ` (the CLI's and the web inbox's times).
pub fn time(secs: i64) -> String {
    chaperone_schemas::time::format_unix_secs(secs)
}

/// A table of requests, one per line.
pub fn render_list(views: &[RequestView]) -> String {
    if views.is_empty() {
        return "no approval requests\n".into();
    }
    let mut out = format!(
        "{:<32}  {:<9}  {:<9}  {:<20}  {:<24}  {:<12}  {:<5}  {}\n",
        "ID", "KIND", "STATE", "CREATED", "IDENTITY", "TARGET", "OK", "WHAT"
    );
    for v in views {
        let r = &v.request;
        let what = match &r.sql {
            Some(sql) => one_line(sql, 60),
            None => format!(
                "open sessions ({} s window)",
                r.access_window_secs.unwrap_or(0)
            ),
        };
        out.push_str(&format!(
            "{:<32}  {:<9}  {:<9}  {:<20}  {:<24}  {:<12}  {:<5}  {}\n",
            r.id,
            match r.kind {
                crate::RequestKind::Statement => "statement",
                crate::RequestKind::Connect => "connect",
            },
            v.state.as_str(),
            time(r.created_at),
            one_line(&r.requester.display_name, 24),
            one_line(&r.target, 12),
            format!("{}/{}", v.approvals.len(), r.required_approvals),
            what
        ));
    }
    out
}

/// One request in full.
pub fn render_one(v: &RequestView) -> String {
    let r = &v.request;
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<18}{val}\n"));
    line("id", r.id.clone());
    line("state", v.state.as_str().to_string());
    line("kind", format!("{:?}", r.kind).to_lowercase());
    line(
        "identity",
        format!(
            "{} ({} from {}){}",
            r.requester.display_name,
            r.requester.subject,
            r.requester.issuer,
            r.requester
                .role
                .as_deref()
                .map(|ro| format!(", role {ro}"))
                .unwrap_or_default()
        ),
    );
    line(
        "target",
        format!(
            "{}{}",
            r.target,
            r.database
                .as_deref()
                .map(|d| format!(" / {d}"))
                .unwrap_or_default()
        ),
    );
    line("policy / rule", format!("{} / {}", r.policy, r.rule));
    line("reason", r.reason.clone());
    if let Some(c) = &r.statement_class {
        line("class", c.clone());
    }
    if !r.tables.is_empty() {
        line("tables", r.tables.join(", "));
    }
    if let Some(n) = r.explain_rows {
        line("explain rows", n.to_string());
    }
    line("created", time(r.created_at));
    if v.state == State::Pending {
        line("expires", time(r.expires_at));
    }
    line(
        "approvals",
        format!(
            "{}/{}{}",
            v.approvals.len(),
            r.required_approvals,
            if v.approvals.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    v.approvals
                        .iter()
                        .map(|a| a.by.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
    );
    if let Some(d) = &v.decision {
        line(
            "decision",
            format!(
                "{:?} by {} at {}{}",
                d.outcome,
                if d.by.is_empty() {
                    "-".to_string()
                } else {
                    d.by.join(", ")
                },
                time(d.at),
                d.reason
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default()
            )
            .to_lowercase(),
        );
    }
    if let Some(u) = v.valid_until {
        line("valid until", time(u));
    }
    if let Some(u) = &v.url {
        line("url", u.clone());
    }
    if let Some(sql) = &r.sql {
        out.push_str("sql:\n");
        for l in sql.lines() {
            out.push_str(&format!("  {l}\n"));
        }
        if !r.params.is_empty() {
            out.push_str(&format!("params: {}\n", r.params.join(", ")));
        }
    }
    out
}
