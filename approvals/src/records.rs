//! What the store keeps about a request: who asked, what, which rule, the
//! approvals and decision, and the view the API, the CLI and the inbox show.

use chaperone_schemas::Identity;
use serde::{Deserialize, Serialize};

use crate::config::ApprovalMode;
use crate::StoreError;

/// Who asked (the session's identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requester {
    pub issuer: String,
    pub subject: String,
    pub display_name: String,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub claims: serde_json::Value,
}

impl Requester {
    pub fn of(identity: &Identity) -> Self {
        Requester {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            display_name: identity.display_name.clone(),
            role: identity.role.clone(),
            claims: identity.claims.clone(),
        }
    }

    pub(crate) fn same(&self, other: &Requester) -> bool {
        self.issuer == other.issuer && self.subject == other.subject
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// A statement held before forwarding.
    Statement,
    /// An access request: a session may not open before it is approved.
    Connect,
}

/// A request, as created (never changed afterwards).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub kind: RequestKind,
    /// Unix seconds.
    pub created_at: i64,
    /// Undecided at this time (unix seconds), the request has expired.
    pub expires_at: i64,
    pub requester: Requester,
    pub target: String,
    #[serde(default)]
    pub database: Option<String>,
    /// The statement (statement requests).
    #[serde(default)]
    pub sql: Option<String>,
    /// Its parameters, rendered as SQL literals (prepared statements).
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub statement_class: Option<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    pub policy: String,
    /// The rule that asked for approval.
    pub rule: String,
    pub reason: String,
    /// `EXPLAIN`'s row estimate, where the gateway made one.
    #[serde(default)]
    pub explain_rows: Option<u64>,
    /// Approvals needed, from different approvers.
    pub required_approvals: u32,
    /// Who may decide (names of `[approvals.approvers]`); None: any approver.
    #[serde(default)]
    pub approvers: Option<Vec<String>>,
    pub mode: ApprovalModeName,
    /// Same identity, target, database, text and parameters: same fingerprint.
    pub fingerprint: String,
    pub gateway_id: String,
    pub session_id: String,
    /// Access requests: how long the grant lasts once approved.
    #[serde(default)]
    pub access_window_secs: Option<u64>,
}

/// [`ApprovalMode`] as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalModeName {
    Hold,
    Async,
}

impl From<ApprovalMode> for ApprovalModeName {
    fn from(m: ApprovalMode) -> Self {
        match m {
            ApprovalMode::Hold => ApprovalModeName::Hold,
            ApprovalMode::Async => ApprovalModeName::Async,
        }
    }
}

/// One approver's yes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at: i64,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Approved,
    Denied,
    Expired,
}

/// The terminal decision (the first one written wins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub outcome: Outcome,
    /// The approvers (approved), the approver who denied, or empty (expired).
    pub by: Vec<String>,
    pub at: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A statement approval was used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UseRecord {
    pub at: i64,
    pub session_id: String,
    pub gateway_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub at: i64,
    pub by: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Approved,
    Denied,
    Expired,
    Used,
    Revoked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Used => "used",
            State::Revoked => "revoked",
        }
    }

    pub fn from_name(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Approved,
            State::Denied,
            State::Expired,
            State::Used,
            State::Revoked,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A request with everything decided about it: what the API returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    #[serde(flatten)]
    pub request: ApprovalRequest,
    pub state: State,
    pub approvals: Vec<Approval>,
    #[serde(default)]
    pub decision: Option<DecisionRecord>,
    #[serde(default)]
    pub used: Option<UseRecord>,
    #[serde(default)]
    pub revoked: Option<Revocation>,
    /// Approved: usable (statement) or valid (access window) until then.
    #[serde(default)]
    pub valid_until: Option<i64>,
    /// Where an approver decides.
    #[serde(default)]
    pub url: Option<String>,
}

/// Why an approver's action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no such approval request")]
    NotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
