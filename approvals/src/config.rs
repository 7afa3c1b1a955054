//! `[approvals]`: where requests live, who decides, who is told; and the
//! approval mode a policy holds statements in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Holding a statement: the client waits for the decision. Async: the client
/// gets an error with the request id at once, and may run the identical
/// statement once the request is approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    #[default]
    Hold,
    Async,
}

/// `[approvals]`: where requests live, who decides, who is told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Where requests and decisions are kept, shared by every replica: a local
    /// directory, an object store URL with conditional writes (`s3://`,
    /// `gs://`, `az://`, `memory://`), or `postgres://...`.
    pub store: String,
    /// Extra object store options (as for the archive), e.g. `aws_endpoint`.
    #[serde(default)]
    pub store_options: BTreeMap<String, String>,
    /// The page an approver opens for a request; `{id}` is replaced. Shown in
    /// errors, the API and webhooks. Default: the API's own URL.
    #[serde(default)]
    pub request_url: Option<String>,
    /// How often a waiting session looks for a decision made on another replica.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Async mode: how long an approved statement may be run.
    #[serde(default = "default_claim_ttl")]
    pub claim_ttl_secs: u64,
    /// Async mode: how long a request waits for a decision.
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl_secs: u64,
    /// Who may decide, by name, with the bearer token they use on the API.
    #[serde(default)]
    pub approvers: BTreeMap<String, ApproverConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// `[approvals.approvers.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverConfig {
    /// The approver's API bearer token: from the environment (preferred), a
    /// file, or inline (tests and demos).
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token: Option<String>,
    /// Identities (token subjects or gateway user names) that are this
    /// approver: their own requests they cannot approve. The approver's name
    /// always counts.
    #[serde(default)]
    pub identities: Vec<String>,
}

/// `[[approvals.webhooks]]`: told of every new request and every decision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// `json` (the request as the API shows it) or `slack` (an incoming-webhook
    /// message).
    #[serde(default)]
    pub format: WebhookFormat,
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

fn default_poll_ms() -> u64 {
    250
}
fn default_claim_ttl() -> u64 {
    3600
}
fn default_pending_ttl() -> u64 {
    86400
}
fn default_webhook_timeout() -> u64 {
    5
}
