//! Approval requests: a held statement (or a session that needs an access
//! grant) waits while approvers decide through the API, the CLI or a webhook's
//! link.
//!
//! Layout in the [store](store) (every object written once, JSON):
//! ```text
//! requests/<id>/request.json        the request: who, what, which rule, why
//! requests/<id>/approve/<name>.json one per approver: {by, at, comment}
//! requests/<id>/decision.json       the first terminal decision wins:
//!                                   {outcome: approved | denied | expired, by, at, reason}
//! requests/<id>/used.json           a statement approval was used (once)
//! requests/<id>/revoked.json        an approval (access window) was revoked
//! fingerprints/<fp>/<id>            index: requests for the same identity and statement
//! ```
//! These objects are the record of every request and decision; statement rows
//! in the archive name the request (`approval_id`) and its approvers.
//!
//! States: `pending` until enough approvals (then `approved`), a denial
//! (`denied`), or its deadline (`expired`); an approved statement request is
//! `used` once run, and `expired` when not run within `claim_ttl_secs`; an
//! approved access request is valid for its window unless `revoked`.

pub mod client;
pub mod config;
pub mod postgres;
mod records;
pub mod store;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use chaperone_config::ConfigError;
use config::ApprovalsConfig;
pub use records::{
    ActionError, Approval, ApprovalModeName, ApprovalRequest, DecisionRecord, Outcome, RequestKind,
    RequestView, Requester, Revocation, State, UseRecord,
};
pub use store::{ObjectLog, StoreError};

struct Approver {
    name: String,
    token: chaperone_config::Secret,
    identities: Vec<String>,
}

/// The approval service: the store, the approvers, the webhooks.
pub struct Approvals {
    log: Arc<dyn ObjectLog>,
    config: ApprovalsConfig,
    approvers: Vec<Approver>,
    webhooks: webhook::Webhooks,
    /// Wakes waiting sessions when this gateway records a decision.
    decided: tokio::sync::Notify,
    /// Requests are immutable: read once.
    requests: Mutex<HashMap<String, Arc<ApprovalRequest>>>,
    /// The API's base URL once it listens (default links to requests).
    api_base: OnceLock<String>,
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn from_json<T: for<'de> Deserialize<'de>>(key: &str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Backend(format!("{key}: unreadable: {e}")))
}

/// A new request id: time-ordered, unguessable.
pub fn new_id() -> String {
    use rand::Rng;
    let ms = chaperone_schemas::event::now_ns() / 1_000_000;
    let r: u64 = rand::rng().random();
    format!("apr_{ms:012x}{r:016x}")
}

/// Ids are used in keys and URLs: only what [`new_id`] makes.
fn valid_id(id: &str) -> bool {
    id.len() <= 64 && id.starts_with("apr_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The fingerprint of "this identity runs this statement here".
pub fn fingerprint(
    requester: &Requester,
    target: &str,
    database: Option<&str>,
    sql: &str,
    params: &[String],
) -> String {
    let mut h = Sha256::new();
    for part in [
        "statement",
        &requester.issuer,
        &requester.subject,
        target,
        database.unwrap_or(""),
        sql,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for p in params {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// The fingerprint of "this identity opens sessions on this target".
pub fn connect_fingerprint(requester: &Requester, target: &str) -> String {
    let mut h = Sha256::new();
    for part in ["connect", &requester.issuer, &requester.subject, target] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

impl Approvals {
    /// Opens the store and resolves the approvers' tokens.
    pub async fn open(config: &ApprovalsConfig) -> Result<Self, ConfigError> {
        let log = store::open(&config.store, &config.store_options)
            .await
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Self::with_log(log, config)
    }

    pub fn with_log(
        log: Arc<dyn ObjectLog>,
        config: &ApprovalsConfig,
    ) -> Result<Self, ConfigError> {
        let mut approvers = Vec::new();
        for (name, a) in &config.approvers {
            let source = chaperone_config::SecretSource::of(
                "token",
                a.token_env.clone(),
                a.token_file.clone(),
                a.token.clone(),
            );
            let token = source.resolve(&format!("approvals.approvers.{name}"))?;
            if token.expose().len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "approvals.approvers.{name}: the token is shorter than 16 bytes; use a long random value"
                )));
            }
            approvers.push(Approver {
                name: name.clone(),
                token,
                identities: a.identities.clone(),
            });
        }
        Ok(Approvals {
            log,
            webhooks: webhook::Webhooks::new(&config.webhooks),
            config: config.clone(),
            approvers,
            decided: tokio::sync::Notify::new(),
            requests: Mutex::new(HashMap::new()),
            api_base: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &ApprovalsConfig {
        &self.config
    }

    pub fn store_description(&self) -> String {
        self.log.describe()
    }

    /// Called when the API listens: links to requests point at it by default.
    pub fn set_api_base(&self, base: String) {
        let _ = self.api_base.set(base);
    }

    /// Where an approver decides on `id`.
    pub fn url(&self, id: &str) -> Option<String> {
        match &self.config.request_url {
            Some(u) => Some(u.replace("{id}", id)),
            None => self
                .api_base
                .get()
                .map(|b| format!("{b}/v1/approvals/{id}")),
        }
    }

    /// The approver a bearer token belongs to.
    pub fn approver_for_token(&self, token: &[u8]) -> Option<&str> {
        self.approvers
            .iter()
            .find(|a| bool::from(a.token.expose().ct_eq(token)))
            .map(|a| a.name.as_str())
    }

    /// The configured approver who is this person (a web UI login): the one
    /// named like any of `names` (subject, email, ...), else the one listing
    /// any of them in its `identities`.
    pub fn approver_for_person(&self, names: &[&str]) -> Option<&str> {
        let by_name = self
            .approvers
            .iter()
            .find(|a| names.contains(&a.name.as_str()));
        by_name
            .or_else(|| {
                self.approvers
                    .iter()
                    .find(|a| a.identities.iter().any(|i| names.contains(&i.as_str())))
            })
            .map(|a| a.name.as_str())
    }

    async fn request(&self, id: &str) -> Result<Option<Arc<ApprovalRequest>>, StoreError> {
        if let Some(r) = self.requests.lock().expect("requests lock").get(id) {
            return Ok(Some(r.clone()));
        }
        let key = format!("requests/{id}/request.json");
        let Some(body) = self.log.get(&key).await? else {
            return Ok(None);
        };
        let r: Arc<ApprovalRequest> = Arc::new(from_json(&key, &body)?);
        let mut cache = self.requests.lock().expect("requests lock");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id.to_string(), r.clone());
        Ok(Some(r))
    }

    /// Records a new request and tells the webhooks.
    pub async fn open_request(&self, request: ApprovalRequest) -> Result<RequestView, StoreError> {
        let id = request.id.clone();
        self.log
            .create(&format!("requests/{id}/request.json"), to_json(&request))
            .await?;
        self.log
            .create(
                &format!("fingerprints/{}/{id}", request.fingerprint),
                Bytes::new(),
            )
            .await?;
        info!(
            approval = %id,
            kind = ?request.kind,
            identity = %request.requester.subject,
            target = %request.target,
            rule = %request.rule,
            "approval requested"
        );
        self.requests
            .lock()
            .expect("requests lock")
            .insert(id.clone(), Arc::new(request));
        let view = self.view(&id).await?.ok_or_else(|| {
            StoreError::Backend(format!("request {id} not readable after it was written"))
        })?;
        self.webhooks.publish("approval.requested", &view);
        Ok(view)
    }

    /// The request with its approvals and decision; None if there is none.
    pub async fn view(&self, id: &str) -> Result<Option<RequestView>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let Some(request) = self.request(id).await? else {
            return Ok(None);
        };
        let keys = self.log.list(&format!("requests/{id}/")).await?;
        self.build_view(request, &keys).await.map(Some)
    }

    async fn build_view(
        &self,
        request: Arc<ApprovalRequest>,
        keys: &[String],
    ) -> Result<RequestView, StoreError> {
        let id = &request.id;
        let mut approvals = Vec::new();
        let mut decision = None;
        let mut used = None;
        let mut revoked = None;
        let approve_prefix = format!("requests/{id}/approve/");
        for key in keys {
            let load = || async {
                match self.log.get(key).await? {
                    Some(b) => Ok::<_, StoreError>(Some(b)),
                    None => Ok(None),
                }
            };
            if key.starts_with(&approve_prefix) {
                if let Some(b) = load().await? {
                    approvals.push(from_json::<Approval>(key, &b)?);
                }
            } else if key.ends_with("/decision.json") {
                if let Some(b) = load().await? {
                    decision = Some(from_json::<DecisionRecord>(key, &b)?);
                }
            } else if key.ends_with("/used.json") {
                if let Some(b) = load().await? {
                    used = Some(from_json::<UseRecord>(key, &b)?);
                }
            } else if key.ends_with("/revoked.json") {
                if let Some(b) = load().await? {
                    revoked = Some(from_json::<Revocation>(key, &b)?);
                }
            }
        }
        approvals.sort_by(|a, b| a.at.cmp(&b.at).then(a.by.cmp(&b.by)));
        let now = now_secs();
        let valid_until = decision.as_ref().and_then(|d| {
            (d.outcome == Outcome::Approved).then(|| {
                d.at + match request.kind {
                    RequestKind::Statement => self.config.claim_ttl_secs as i64,
                    RequestKind::Connect => request.access_window_secs.unwrap_or(0) as i64,
                }
            })
        });
        let state = match &decision {
            None if now >= request.expires_at => State::Expired,
            None => State::Pending,
            Some(d) => match d.outcome {
                Outcome::Denied => State::Denied,
                Outcome::Expired => State::Expired,
                Outcome::Approved => {
                    if revoked.is_some() {
                        State::Revoked
                    } else if request.kind == RequestKind::Statement && used.is_some() {
                        State::Used
                    } else if valid_until.is_some_and(|u| now >= u) {
                        State::Expired
                    } else {
                        State::Approved
                    }
                }
            },
        };
        Ok(RequestView {
            url: self.url(id),
            request: (*request).clone(),
            state,
            approvals,
            decision,
            used,
            revoked,
            valid_until,
        })
    }

    /// Every request, newest first; `state` filters.
    pub async fn list(&self, state: Option<State>) -> Result<Vec<RequestView>, StoreError> {
        let keys = self.log.list("requests/").await?;
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in keys {
            if let Some(id) = k
                .strip_prefix("requests/")
                .and_then(|r| r.split('/').next())
            {
                by_id.entry(id.to_string()).or_default().push(k.clone());
            }
        }
        let mut out = Vec::new();
        for (id, keys) in by_id.iter().rev() {
            if !valid_id(id) {
                continue;
            }
            let Some(request) = self.request(id).await? else {
                continue;
            };
            let view = self.build_view(request, keys).await?;
            if state.is_none_or(|s| s == view.state) {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// Requests with this fingerprint from this requester, newest first.
    pub async fn by_fingerprint(
        &self,
        fingerprint: &str,
        requester: &Requester,
    ) -> Result<Vec<RequestView>, StoreError> {
        let prefix = format!("fingerprints/{fingerprint}/");
        let mut ids: Vec<String> = self
            .log
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .filter(|id| valid_id(id))
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids.iter().rev() {
            if let Some(v) = self.view(id).await? {
                if v.request.requester.same(requester) {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    /// Uses an approved statement request: true for exactly one caller.
    pub async fn claim(
        &self,
        id: &str,
        session_id: &str,
        gateway_id: &str,
    ) -> Result<bool, StoreError> {
        let used = UseRecord {
            at: now_secs(),
            session_id: session_id.to_string(),
            gateway_id: gateway_id.to_string(),
        };
        self.log
            .create(&format!("requests/{id}/used.json"), to_json(&used))
            .await
    }

    async fn decide(&self, id: &str, decision: &DecisionRecord) -> Result<bool, StoreError> {
        let created = self
            .log
            .create(&format!("requests/{id}/decision.json"), to_json(decision))
            .await?;
        if created {
            self.decided.notify_waiters();
            if let Ok(Some(view)) = self.view(id).await {
                let event = match decision.outcome {
                    Outcome::Approved => "approval.approved",
                    Outcome::Denied => "approval.denied",
                    Outcome::Expired => "approval.expired",
                };
                self.webhooks.publish(event, &view);
            }
        }
        Ok(created)
    }

    /// Marks an undecided request expired (its deadline passed).
    pub async fn expire(&self, id: &str, reason: &str) -> Result<bool, StoreError> {
        self.decide(
            id,
            &DecisionRecord {
                outcome: Outcome::Expired,
                by: Vec::new(),
                at: now_secs(),
                reason: Some(reason.to_string()),
            },
        )
        .await
    }

    fn check_approver(&self, view: &RequestView, approver: &str) -> Result<(), ActionError> {
        let Some(a) = self.approvers.iter().find(|a| a.name == approver) else {
            return Err(ActionError::Forbidden(format!(
                "'{approver}' is not a configured approver"
            )));
        };
        if let Some(eligible) = &view.request.approvers {
            if !eligible.iter().any(|e| e == approver) {
                return Err(ActionError::Forbidden(format!(
                    "'{approver}' may not decide requests of policy '{}' (approvers: {})",
                    view.request.policy,
                    eligible.join(", ")
                )));
            }
        }
        let r = &view.request.requester;
        let own = std::iter::once(&a.name)
            .chain(&a.identities)
            .any(|i| *i == r.subject || *i == r.display_name);
        if own {
            return Err(ActionError::Forbidden(
                "approvers cannot decide their own requests".into(),
            ));
        }
        Ok(())
    }

    async fn undecided(&self, id: &str) -> Result<RequestView, ActionError> {
        let view = self.view(id).await?.ok_or(ActionError::NotFound)?;
        match view.state {
            State::Pending => Ok(view),
            State::Expired if view.decision.is_none() => {
                self.expire(id, "no decision before the deadline").await?;
                Err(ActionError::Conflict(
                    "the request expired before it was decided".into(),
                ))
            }
            s => Err(ActionError::Conflict(format!(
                "the request is already {}",
                s.as_str()
            ))),
        }
    }

    /// An approver's yes; the request is approved once enough approvers agree.
    pub async fn approve(
        &self,
        id: &str,
        approver: &str,
        comment: Option<String>,
    ) -> Result<RequestView, ActionError> {
        let view = self.undecided(id).await?;
        self.check_approver(&view, approver)?;
        let approval = Approval {
            by: approver.to_string(),
            at: now_secs(),
            comment,
        };
        self.log
            .create(
                &format!("requests/{id}/approve/{approver}.json"),
                to_json(&approval),
            )
            .await?;
        info!(approval = %id, %approver, "approval given");
        let view = self.view(id).await?.ok_or(ActionError::NotFound)?;
        let mut by: Vec<String> = view.approvals.iter().map(|a| a.by.clone()).collect();
        by.dedup();
        if by.len() as u32 >= view.request.required_approvals && view.decision.is_none() {
            self.decide(
                id,
                &DecisionRecord {
                    outcome: Outcome::Approved,
                    by,
                    at: now_secs(),
                    reason: None,
                },
            )
            .await?;
        } else {
            self.webhooks.publish("approval.approval_added", &view);
        }
        self.view(id).await?.ok_or(ActionError::NotFound)
    }

    /// An approver's no: the request is denied at once.
    pub async fn deny(
        &self,
        id: &str,
        approver: &str,
        reason: Option<String>,
    ) -> Result<RequestView, ActionError> {
        let view = self.undecided(id).await?;
        self.check_approver(&view, approver)?;
        let created = self
            .decide(
                id,
                &DecisionRecord {
                    outcome: Outcome::Denied,
                    by: vec![approver.to_string()],
                    at: now_secs(),
                    reason,
                },
            )
            .await?;
        if !created {
            return Err(ActionError::Conflict(
                "the request was decided in the meantime".into(),
            ));
        }
        info!(approval = %id, %approver, "approval denied");
        self.view(id).await?.ok_or(ActionError::NotFound)
    }

    /// Withdraws an approval not used yet (a statement request) or an access
    /// window: sessions it opened end at their next command.
    pub async fn revoke(
        &self,
        id: &str,
        approver: &str,
        reason: Option<String>,
    ) -> Result<RequestView, ActionError> {
        let view = self.view(id).await?.ok_or(ActionError::NotFound)?;
        if !self.approvers.iter().any(|a| a.name == approver) {
            return Err(ActionError::Forbidden(format!(
                "'{approver}' is not a configured approver"
            )));
        }
        match view.state {
            State::Approved => {}
            State::Pending => return self.deny(id, approver, reason).await,
            s => {
                return Err(ActionError::Conflict(format!(
                    "only an approved request can be revoked; this one is {}",
                    s.as_str()
                )))
            }
        }
        let r = Revocation {
            at: now_secs(),
            by: approver.to_string(),
            reason,
        };
        self.log
            .create(&format!("requests/{id}/revoked.json"), to_json(&r))
            .await?;
        self.decided.notify_waiters();
        info!(approval = %id, %approver, "approval revoked");
        let view = self.view(id).await?.ok_or(ActionError::NotFound)?;
        self.webhooks.publish("approval.revoked", &view);
        Ok(view)
    }

    /// Waits until the request is decided or `timeout` passes; returns the
    /// last view (state `pending` on timeout). Decisions made by this gateway
    /// wake it at once; others are seen at the next poll.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<RequestView, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            let notified = self.decided.notified();
            let view = self
                .view(id)
                .await?
                .ok_or_else(|| StoreError::Backend(format!("request {id} disappeared")))?;
            if view.state != State::Pending {
                return Ok(view);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(view);
            }
            let next = (now + poll).min(deadline);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// Is the access window `id` still valid (approved, unexpired, unrevoked)?
    pub async fn window_valid(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .view(id)
            .await?
            .is_some_and(|v| v.state == State::Approved))
    }
}

/// Logs a store failure once per call site; the caller refuses the command.
pub fn store_failed(e: &StoreError) {
    warn!(error = %e, "approvals store unavailable");
}

#[cfg(test)]
mod tests;
