//! The control plane: roles, guardrail policies and masking rules change while
//! the gateway runs, without a restart and without dropping sessions.
//!
//! - [`PolicySet`]: one config version's compiled policies and masking rules;
//! - [`ControlPlane`]: the current set and its generation. Sessions compare the
//!   generation before each command and, when it moved, take the new set: a
//!   tightened policy or a new masking rule applies to the *next statement of
//!   open sessions*, not only to new ones (a loosened one too);
//! - [`Reloader`]: reads the config file again (on SIGHUP, or when polling finds
//!   it changed), validates it like `chaperone config check`, installs what may
//!   change at run time, and records the change — who, when, the diff — in the
//!   archive as a control-plane record (`schemas/README.md`). A config that does
//!   not validate is rejected with a log line saying why; the previous one stays
//!   in force.
//!
//! What reloads: `[roles.*]`, `[policies.*]`, `[masking]`. Everything else
//! (listeners, targets, users, issuers, TLS, the archive, approvals, the API)
//! takes effect at the next restart; a reload that changes it applies the rest
//! and says which keys wait for the restart.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chaperone_schemas::event::now_ns;
use chaperone_schemas::identity::{AuthMethod, Identity};
use chaperone_schemas::{CommandSummary, SessionEnd, SessionStart, TapEvent};
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::guardrails::policy::Policy;
use crate::identity::roles::Roles;
use crate::identity::WorkloadIdentity;
use chaperone_masking::Masking;
use chaperone_schemas::tap::Tap;

/// The top-level config sections a reload applies to running sessions.
pub const RELOADABLE_SECTIONS: [&str; 3] = ["roles", "policies", "masking"];

/// The `command` of a control-plane record in the archive's `statements` table.
pub const CONFIG_CHANGE_COMMAND: &str = "CONFIG_CHANGE";
/// The issuer recorded on control-plane records.
pub const CONTROL_PLANE_ISSUER: &str = "chaperone:control-plane";

/// One config version's guardrail policies and masking rules, compiled.
pub struct PolicySet {
    policies: HashMap<String, Arc<Policy>>,
    /// Each role's policy name, to re-resolve open sessions' policies when a
    /// role is pointed at another policy.
    role_policies: HashMap<String, Option<String>>,
    masking: Masking,
}

impl PolicySet {
    /// Compiles `[policies.*]`, the roles' policy names and `[masking]`.
    pub fn compile(config: &Config) -> Result<PolicySet, ConfigError> {
        let policies = config
            .policies
            .iter()
            .map(|(name, p)| (name.clone(), Arc::new(Policy::from_config(name, p))))
            .collect();
        let role_policies = config
            .roles
            .iter()
            .map(|(name, r)| (name.clone(), r.policy.clone()))
            .collect();
        let masking =
            Masking::compile(&config.masking).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(PolicySet {
            policies,
            role_policies,
            masking,
        })
    }

    pub fn policy(&self, name: Option<&str>) -> Option<Arc<Policy>> {
        name.and_then(|n| self.policies.get(n)).cloned()
    }

    /// The policy name for a session: its role's current policy when the role
    /// still exists, else the one it logged in with.
    pub fn policy_name<'a>(
        &'a self,
        role: Option<&str>,
        at_login: Option<&'a str>,
    ) -> Option<&'a str> {
        match role.and_then(|r| self.role_policies.get(r)) {
            Some(current) => current.as_deref(),
            None => at_login,
        }
    }

    /// The masking policy of a role (None: nothing is masked).
    pub fn masking(&self, role: Option<&str>) -> Option<Arc<chaperone_masking::Policy>> {
        self.masking.policy(role)
    }
}

/// The current [`PolicySet`], shared by every session of a gateway.
pub struct ControlPlane {
    /// The set and its generation, replaced together.
    current: RwLock<(Arc<PolicySet>, u64)>,
    /// The generation, also readable without the lock: sessions compare it
    /// before each command (one atomic load; the lock only when it moved).
    generation: AtomicU64,
}

impl ControlPlane {
    pub fn new(set: PolicySet) -> ControlPlane {
        ControlPlane {
            current: RwLock::new((Arc::new(set), 0)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current set and its generation.
    pub fn current(&self) -> (Arc<PolicySet>, u64) {
        let (set, generation) = &*self.current.read().expect("control plane lock");
        (set.clone(), *generation)
    }

    /// Makes `set` the current one; returns its generation.
    pub fn install(&self, set: PolicySet) -> u64 {
        let mut current = self.current.write().expect("control plane lock");
        let generation = current.1 + 1;
        *current = (Arc::new(set), generation);
        self.generation.store(generation, Ordering::Release);
        generation
    }
}

/// What made the gateway read its config again: recorded as the change's author.
#[derive(Debug, Clone)]
pub enum ReloadTrigger {
    /// SIGHUP, from this process and user when the kernel told us.
    Signal { pid: Option<u32>, uid: Option<u32> },
    /// `[gateway] config_poll_secs` found the file changed.
    Poll,
}

impl ReloadTrigger {
    /// Who, as recorded: `sighup from pid 4242 (kill) uid 1000 (alice)`, or
    /// `poll of /etc/chaperone/chaperone.toml`.
    fn describe(&self, source: &std::path::Path) -> String {
        match self {
            ReloadTrigger::Signal { pid, uid } => {
                let mut who = String::from("sighup");
                if let Some(pid) = pid {
                    who.push_str(&format!(" from pid {pid}"));
                    if let Some(name) = process_name(*pid) {
                        who.push_str(&format!(" ({name})"));
                    }
                }
                if let Some(uid) = uid {
                    who.push_str(&format!(" uid {uid}"));
                    if let Some(name) = user_name(*uid) {
                        who.push_str(&format!(" ({name})"));
                    }
                }
                who
            }
            ReloadTrigger::Poll => format!("poll of {}", source.display()),
        }
    }

    fn origin(&self) -> &'static str {
        match self {
            ReloadTrigger::Signal { .. } => "sighup",
            ReloadTrigger::Poll => "poll",
        }
    }
}

fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim().to_string()).filter(|c| !c.is_empty())
}

/// The user name of `uid` from `/etc/passwd` (no NSS lookups).
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse() == Ok(uid)).then(|| name.to_string())
    })
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file is the same as the config in force.
    Unchanged,
    /// Installed; `restart_keys` changed too but wait for a restart.
    Applied {
        generation: u64,
        changes: usize,
        restart_keys: Vec<String>,
    },
    /// Not installed: the previous config stays in force.
    Rejected { reason: String },
}

/// Reads the config file again and installs what may change at run time.
pub struct Reloader {
    path: PathBuf,
    gateway_id: String,
    shared: Arc<crate::server::Shared>,
    workload: Option<Arc<WorkloadIdentity>>,
    state: tokio::sync::Mutex<ReloadState>,
}

struct ReloadState {
    /// The config file's content in force (as a TOML table, for diffs).
    in_force: toml::Table,
    /// Why the last reload was rejected, not to log and record it at every poll.
    rejected: Option<String>,
    /// Numbers the records' session ids.
    records: u64,
}

impl Reloader {
    /// `in_force`: the config's content the gateway started with
    /// ([`Config::load_effective`]).
    pub fn new(
        path: PathBuf,
        in_force: toml::Table,
        shared: Arc<crate::server::Shared>,
        workload: Option<Arc<WorkloadIdentity>>,
    ) -> Reloader {
        Reloader {
            path,
            gateway_id: shared.config.gateway.id.clone(),
            shared,
            workload,
            state: tokio::sync::Mutex::new(ReloadState {
                in_force,
                rejected: None,
                records: 0,
            }),
        }
    }

    /// Reads, validates, diffs, installs and records. `trigger`: who asked.
    pub async fn reload(&self, trigger: ReloadTrigger) -> ReloadOutcome {
        let mut state = self.state.lock().await;
        let who = trigger.describe(&self.path);
        // Off the async workers: the policy file may be an object on S3.
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || match Config::load_effective(&path) {
            Ok(c) => Ok(c),
            // The diff of what was rejected, when the files can be read at all.
            Err(e) => Err((e, Config::effective_table(&path).ok())),
        })
        .await;
        let (config, table) = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err((e, table))) => {
                return self.reject(&mut state, &trigger, &who, e.to_string(), table.as_ref());
            }
            Err(e) => {
                let reason = format!("reading the config failed: {e}");
                return self.reject(&mut state, &trigger, &who, reason, None);
            }
        };
        if table == state.in_force {
            if matches!(trigger, ReloadTrigger::Signal { .. }) {
                info!(source = %self.path.display(), "config reload: nothing changed");
            }
            state.rejected = None;
            return ReloadOutcome::Unchanged;
        }
        let set = match PolicySet::compile(&config) {
            Ok(set) => set,
            Err(e) => return self.reject(&mut state, &trigger, &who, e.to_string(), Some(&table)),
        };
        let changes = diff(&state.in_force, &table);
        let restart_keys: Vec<String> = changes
            .iter()
            .filter(|c| !RELOADABLE_SECTIONS.contains(&c.section()))
            .map(|c| c.key.clone())
            .collect();
        let generation = self.shared.control.install(set);
        if let Some(workload) = &self.workload {
            workload.set_roles(Roles::from_config(&config.roles));
        }
        state.in_force = table;
        state.rejected = None;
        let diff_text = render(&changes);
        info!(
            source = %self.path.display(),
            %who,
            generation,
            changes = changes.len(),
            "config reloaded: roles, policies and masking rules in force for every session's next statement\n{diff_text}"
        );
        let mut reason = format!("generation {generation}");
        if !restart_keys.is_empty() {
            warn!(
                keys = %restart_keys.join(", "),
                "config reload: these keys changed but take effect only at the next restart"
            );
            reason.push_str(&format!(
                "; needs a restart to take effect: {}",
                restart_keys.join(", ")
            ));
        }
        self.record(&mut state, &trigger, &who, "applied", reason, diff_text);
        ReloadOutcome::Applied {
            generation,
            changes: changes.len(),
            restart_keys,
        }
    }

    /// Keeps the config in force; logs and records why (once per reason
    /// while polling). `table`: the rejected content, when it could be read.
    fn reject(
        &self,
        state: &mut ReloadState,
        trigger: &ReloadTrigger,
        who: &str,
        reason: String,
        table: Option<&toml::Table>,
    ) -> ReloadOutcome {
        let repeated = matches!(trigger, ReloadTrigger::Poll)
            && state.rejected.as_deref() == Some(reason.as_str());
        if !repeated {
            error!(
                source = %self.path.display(),
                %who,
                %reason,
                "config reload rejected; the previous config stays in force"
            );
            let diff_text = table.map_or_else(String::new, |t| render(&diff(&state.in_force, t)));
            self.record(state, trigger, who, "rejected", reason.clone(), diff_text);
            state.rejected = Some(reason.clone());
        }
        ReloadOutcome::Rejected { reason }
    }

    /// Writes the change into the archive: a session of its own (start, one
    /// `CONFIG_CHANGE` command, end; no frames), attributed to `who`.
    fn record(
        &self,
        state: &mut ReloadState,
        trigger: &ReloadTrigger,
        who: &str,
        verdict: &str,
        reason: String,
        diff_text: String,
    ) {
        state.records += 1;
        let now = now_ns();
        let session_id = format!("config-{}-{now}-{}", self.gateway_id, state.records);
        let tap: &dyn Tap = &*self.shared.tap;
        let identity = Identity {
            issuer: CONTROL_PLANE_ISSUER.to_string(),
            subject: who.to_string(),
            display_name: who.to_string(),
            auth_method: AuthMethod::ControlPlane,
            role: None,
            claims: serde_json::json!({}),
            expires_at: None,
        };
        tap.record(TapEvent::SessionStart(Box::new(SessionStart {
            session_id: session_id.clone(),
            connection_id: 0,
            upstream_connection_id: 0,
            started_at_ns: now,
            gateway_id: self.gateway_id.clone(),
            identity,
            client_user: "chaperone-control-plane".into(),
            target: String::new(),
            upstream_user: String::new(),
            database: None,
            client_addr: self.path.display().to_string(),
            client_tls: false,
            upstream_tls: false,
            connect_attrs: BTreeMap::from([
                ("origin".to_string(), trigger.origin().to_string()),
                ("source".to_string(), self.path.display().to_string()),
            ]),
            access_request_id: None,
        })));
        let summary = CommandSummary {
            session_id: session_id.clone(),
            command_index: 0,
            started_at_ns: now,
            command: CONFIG_CHANGE_COMMAND.into(),
            sql: Some(diff_text),
            refused: verdict != "applied",
            verdict: Some(verdict.to_string()),
            verdict_reason: Some(reason),
            ..Default::default()
        };
        // Through the request path: the record is in the spool (or the tap
        // says why not) before the reload is reported.
        if let Err(e) = tap.record_request(TapEvent::Command(Box::new(summary))) {
            error!(error = %e, "the config change could not be recorded in the archive");
        }
        tap.record(TapEvent::SessionEnd(Box::new(SessionEnd {
            session_id,
            ended_at_ns: now_ns(),
            reason: "config_change".into(),
            commands: 1,
            frames: 0,
            bytes_from_client: 0,
            bytes_to_client: 0,
        })));
    }

    /// Reloads on SIGHUP and, every `poll` when set, when the file changed,
    /// until `shutdown`. `early`: SIGHUPs caught while the gateway was starting
    /// (one reload at once if there was any).
    pub fn spawn(
        self: Arc<Self>,
        poll: Option<Duration>,
        shutdown: tokio_util::sync::CancellationToken,
        early: EarlyHangups,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let mut hangups = hangup_signals()?;
        Ok(tokio::spawn(async move {
            if early.0.swap(false, Ordering::AcqRel) {
                info!("a SIGHUP came while the gateway was starting: reloading now");
                self.reload(ReloadTrigger::Signal {
                    pid: None,
                    uid: None,
                })
                .await;
            }
            let mut ticker = poll.map(|p| {
                let mut t = tokio::time::interval(p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                let trigger = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    t = hangups.recv() => match t {
                        Some(t) => t,
                        None => return,
                    },
                    _ = async { ticker.as_mut().expect("polling").tick().await }, if ticker.is_some() => ReloadTrigger::Poll,
                };
                self.reload(trigger).await;
            }
        }))
    }
}

/// SIGHUPs that came before the [`Reloader`] listened.
///
/// SIGHUP's default action ends the process, and starting a gateway (config,
/// TLS, JWKS, archive recovery, listeners) takes a while: a config-management
/// tool's "reload" in that window must not kill it. [`catch_early_hangups`],
/// called first thing, replaces the default action with a flag.
pub struct EarlyHangups(Arc<std::sync::atomic::AtomicBool>);

/// Installs the early SIGHUP handler (see [`EarlyHangups`]).
pub fn catch_early_hangups() -> std::io::Result<EarlyHangups> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone())?;
    Ok(EarlyHangups(flag))
}

/// SIGHUPs with their sender (pid and uid from the kernel's siginfo), from a
/// thread of `signal-hook`.
fn hangup_signals() -> std::io::Result<tokio::sync::mpsc::Receiver<ReloadTrigger>> {
    use signal_hook::consts::SIGHUP;
    use signal_hook::iterator::exfiltrator::origin::WithOrigin;
    use signal_hook::iterator::SignalsInfo;
    let mut signals = SignalsInfo::<WithOrigin>::new([SIGHUP])?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::Builder::new()
        .name("chaperone-sighup".into())
        .spawn(move || {
            for info in signals.forever() {
                let trigger = ReloadTrigger::Signal {
                    pid: info.process.as_ref().map(|p| p.pid as u32),
                    uid: info.process.as_ref().map(|p| p.uid),
                };
                if tx.blocking_send(trigger).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// One changed key of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted path: `policies.app.classes`.
    pub key: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Change {
    fn section(&self) -> &str {
        self.key.split('.').next().unwrap_or("")
    }
}

/// Keys whose values are never written to logs or the archive.
fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    ["password", "token", "secret", "key"]
        .iter()
        .any(|s| last == *s || last.ends_with(&format!("_{s}")))
        && !last.ends_with("_env")
        && !last.ends_with("_file")
}

/// The keys that differ between two config files, leaf by leaf (arrays are
/// compared whole), in key order.
pub fn diff(before: &toml::Table, after: &toml::Table) -> Vec<Change> {
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    flatten("", before, &mut old);
    flatten("", after, &mut new);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| {
            let shown = |v: Option<&String>| {
                v.map(|v| {
                    if is_secret(k) {
                        "<redacted>".to_string()
                    } else {
                        v.clone()
                    }
                })
            };
            Change {
                key: k.clone(),
                before: shown(old.get(k)),
                after: shown(new.get(k)),
            }
        })
        .collect()
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            // Arrays of tables (`[[policies.p.approve]]`) by index.
            toml::Value::Array(items)
                if items.iter().all(|i| i.is_table()) && !items.is_empty() =>
            {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        flatten(&format!("{key}[{i}]"), t, out);
                    }
                }
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

/// The diff as text: `+ key = value`, `- key = value`, `~ key: old -> new`.
pub fn render(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| match (&c.before, &c.after) {
            (None, Some(a)) => format!("+ {} = {a}", c.key),
            (Some(b), None) => format!("- {} = {b}", c.key),
            (Some(b), Some(a)) => format!("~ {}: {b} -> {a}", c.key),
            (None, None) => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_diff_names_added_removed_and_changed_keys_and_hides_secrets() {
        let before = table(
            r#"
            [gateway]
            listen = "127.0.0.1:3307"
            [users.app]
            password = "old-secret"
            password_env = "A"
            [policies.p]
            classes = ["read", "write"]
            [[policies.p.approve]]
            name = "ddl"
            "#,
        );
        let after = table(
            r#"
            [gateway]
            listen = "127.0.0.1:3307"
            [users.app]
            password = "new-secret"
            password_env = "B"
            [policies.p]
            classes = ["read"]
            databases = ["shop"]
            "#,
        );
        let text = render(&diff(&before, &after));
        assert_eq!(
            text,
            "- policies.p.approve[0].name = \"ddl\"\n\
             ~ policies.p.classes: [\"read\", \"write\"] -> [\"read\"]\n\
             + policies.p.databases = [\"shop\"]\n\
             ~ users.app.password: <redacted> -> <redacted>\n\
             ~ users.app.password_env: \"A\" -> \"B\"",
        );
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_role_pointed_at_another_policy_moves_open_sessions_with_it() {
        let config = Config::parse(
            r#"
            [gateway]
            listen = "127.0.0.1:0"
            [targets.db]
            address = "127.0.0.1:3306"
            user = "root"
            password = ""
            [issuers.ci]
            issuer = "https://issuer.example"
            audiences = ["chaperone"]
            [roles.agent]
            claims = { sub = "*" }
            policy = "strict"
            [roles.agent.targets.db]
            [policies.strict]
            classes = ["read"]
            [policies.loose]
            classes = ["read", "write"]
            "#,
        )
        .unwrap();
        let set = PolicySet::compile(&config).unwrap();
        // The role's current policy wins over the one the session logged in with.
        assert_eq!(
            set.policy_name(Some("agent"), Some("loose")),
            Some("strict")
        );
        // A role that no longer exists: the session keeps its login-time policy.
        assert_eq!(set.policy_name(Some("gone"), Some("loose")), Some("loose"));
        assert_eq!(set.policy_name(None, Some("loose")), Some("loose"));
    }
}
