//! Re-executing a recorded session on another database (staging, a restored
//! copy) and comparing each response with the record: result hash (computed by
//! the gateway's own [`Exchange`]), rows affected, error code, warnings.
//!
//! The recorded request payloads are sent as they were (COM_QUERY,
//! COM_INIT_DB, COM_STMT_PREPARE / EXECUTE / CLOSE / RESET / FETCH, ...), with
//! prepared-statement ids mapped to the ones the new server hands out and the
//! session's recorded default database mapped to the DSN's.
//!
//! The record holds what the agent received, masked by its role's profile
//! (`docs/masking.md`), and its result hash covers the masked bytes. Given the
//! gateway's `[masking]` config, each response of the replay is masked the same
//! way (the gateway's own [`SessionMasking`], the role from the record) before
//! it is hashed, so a masked recording compares exactly against an unmasked
//! copy of the data.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaperone_config::{SecretSource, TargetConfig};
use chaperone_masking::{Masking, ResponseMasker, SessionMasking};
use chaperone_mysql::protocol::command::*;
use chaperone_mysql::protocol::exchange::{Exchange, PacketKind, ResponseFacts, Step};
use chaperone_mysql::protocol::{CapabilityFlags, Packet};
use chaperone_mysql::upstream::{Target, Upstream, UpstreamRequest};
use chaperone_sql::AnalysisCache;
use futures::{SinkExt, StreamExt};
use serde::Serialize;

use crate::archive::{ArchiveError, SessionSource};
use crate::model::Statement;

/// A database to replay against, from `mysql://user:pass@host:port/db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    pub user: String,
    pub password: String,
    pub address: String,
    pub database: Option<String>,
}

impl Dsn {
    pub fn parse(s: &str) -> Result<Dsn, AgainstError> {
        let bad = |m: &str| {
            AgainstError::Dsn(format!(
                "{m} (expected mysql://user:password@host:port/database)"
            ))
        };
        let url = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "mysql" && url.scheme() != "mariadb" {
            return Err(bad("the scheme must be mysql://"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let decode = |v: &str| {
            url::form_urlencoded::parse(format!("x={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let db = url.path().trim_matches('/');
        Ok(Dsn {
            user: decode(url.username()),
            password: url.password().map(decode).unwrap_or_default(),
            address: format!("{host}:{}", url.port().unwrap_or(3306)),
            database: (!db.is_empty()).then(|| db.to_string()),
        })
    }

    /// The gateway's upstream target for this DSN (same login code as the gateway).
    pub fn target(&self) -> Result<Target, AgainstError> {
        let config = TargetConfig {
            address: self.address.clone(),
            user: self.user.clone(),
            password: SecretSource {
                password: Some(self.password.clone()),
                ..Default::default()
            },
            allow_local_infile: false,
            tls: Default::default(),
            users: BTreeMap::new(),
        };
        config
            .resolve("replay")
            .map_err(|e| AgainstError::Dsn(e.to_string()))
    }
}

/// Is `address` the same server as `other` (host names resolved)?
pub fn same_server(address: &str, other: &str) -> bool {
    use std::net::ToSocketAddrs;
    let resolve = |a: &str| -> Vec<std::net::SocketAddr> {
        a.to_socket_addrs().map(|i| i.collect()).unwrap_or_default()
    };
    if address == other {
        return true;
    }
    let (a, b) = (resolve(address), resolve(other));
    a.iter().any(|x| b.contains(x))
}

#[derive(Debug, Clone, Default)]
pub struct AgainstOptions {
    /// Skip statements whose class is not `read` (and non-read commands).
    pub read_only: bool,
    /// Wrap the replay in START TRANSACTION ... ROLLBACK.
    pub rollback: bool,
    pub connect_timeout: Option<Duration>,
    /// The gateway's `[masking]`, compiled (same key): responses are masked as
    /// the recorded role's were before they are hashed. None: statements
    /// recorded masked are compared by row count only.
    pub masking: Option<Arc<Masking>>,
    /// `--map-database`: the recorded database names the target has under
    /// other names.
    pub databases: crate::dbmap::DatabaseMap,
}

#[derive(Debug, thiserror::Error)]
pub enum AgainstError {
    #[error("bad DSN: {0}")]
    Dsn(String),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("cannot log in to {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("--rollback cannot undo this session: statement #{index} ({label}) is {why}; use --read-only, or a throw-away copy without --rollback")]
    RollbackImpossible {
        index: i64,
        label: String,
        why: String,
    },
}

/// The outcome of one statement.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub command_index: i64,
    pub label: String,
    /// Skipped (and why), or executed.
    pub skipped: Option<String>,
    /// What differs from the record (empty: identical).
    pub differences: Vec<String>,
}

/// The divergence report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub session_id: String,
    pub target: String,
    pub outcomes: Vec<Outcome>,
    pub executed: usize,
    pub skipped: usize,
    pub diverged: usize,
    /// Why the replay stopped early (connection lost, Ctrl-C), if it did.
    pub stopped: Option<String>,
    pub rolled_back: bool,
    pub rollback_note: Option<String>,
    /// How statements recorded masked were compared.
    pub masking_note: Option<String>,
    pub elapsed_ms: f64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.diverged == 0 && self.stopped.is_none()
    }

    pub fn first_divergence(&self) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| !o.differences.is_empty())
    }

    pub fn render(&self, colour: bool) -> String {
        let paint = |code: &str, s: String| {
            if colour {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s
            }
        };
        let mut out = format!("replay of {} against {}\n", self.session_id, self.target);
        let first = self.first_divergence().map(|o| o.command_index);
        for o in &self.outcomes {
            if let Some(why) = &o.skipped {
                out += &format!(
                    "   #{:<4} skipped ({why}): {}\n",
                    o.command_index,
                    crate::story::truncate(&o.label, 80)
                );
            } else if !o.differences.is_empty() {
                let head = if first == Some(o.command_index) {
                    paint(
                        "1;31",
                        format!(
                            ">> #{:<4} FIRST DIVERGENCE: {}",
                            o.command_index,
                            crate::story::truncate(&o.label, 80)
                        ),
                    )
                } else {
                    paint(
                        "31",
                        format!(
                            "!! #{:<4} diverged: {}",
                            o.command_index,
                            crate::story::truncate(&o.label, 80)
                        ),
                    )
                };
                out += &head;
                out.push('\n');
                for d in &o.differences {
                    out += &format!("         {d}\n");
                }
            }
        }
        if let Some(s) = &self.stopped {
            out += &paint("31", format!("stopped early: {s}"));
            out.push('\n');
        }
        if self.rolled_back {
            out += "rolled back\n";
        }
        if let Some(n) = &self.rollback_note {
            out += &format!("rolled back ({n})\n");
        }
        if let Some(n) = &self.masking_note {
            out += &format!("{n}\n");
        }
        let secs = self.elapsed_ms / 1000.0;
        out +=
            &format!(
            "{} executed, {} identical, {} diverged, {} skipped in {:.2}s ({:.0} statements/s)\n",
            self.executed,
            self.executed - self.diverged,
            self.diverged,
            self.skipped,
            secs,
            if secs > 0.0 { self.executed as f64 / secs } else { 0.0 }
        );
        out
    }
}

const CLIENT_CAPS: CapabilityFlags = CapabilityFlags::CLIENT_LONG_PASSWORD
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_PROTOCOL_41)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_MULTI_STATEMENTS)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF);

/// utf8mb4_general_ci, when the record does not show the client's.
const COLLATION: u8 = 45;

/// The character set the recorded client used: column definitions of text
/// columns carry it (and a different one changes them, and the result hash).
/// Also whether they came with MariaDB's extended metadata (the recorded client
/// negotiated MARIADB_CLIENT_EXTENDED_METADATA): a block between the original
/// name and the 13 bytes of fixed fields.
async fn recorded_client<S: SessionSource>(
    source: &S,
    statements: &[Statement],
) -> Result<Option<(u8, bool)>, ArchiveError> {
    use chaperone_mysql::protocol::column::ColumnDef;
    /// The `binary` character set: numbers, blobs; says nothing about the client.
    const BINARY: u16 = 63;
    let mut extended = None;
    for st in statements
        .iter()
        .filter(|s| !s.result_columns.is_empty())
        .take(20)
    {
        let frames = source.frames(&st.session_id, st.command_index).await?;
        let Some(command) = frames
            .iter()
            .find(|f| f.direction == crate::model::Direction::ClientToServer)
            .and_then(|f| f.payload.first().copied())
        else {
            continue;
        };
        let mut ex = Exchange::new(command, true);
        for f in frames
            .iter()
            .filter(|f| f.direction == crate::model::Direction::ServerToClient && !f.capped)
        {
            if ex.is_done() || ex.on_packet(&f.payload).is_err() {
                break;
            }
            if ex.last_packet() == PacketKind::ColumnDef {
                let mut r =
                    chaperone_mysql::protocol::lenenc::Reader::new(&f.payload, "column definition");
                let plain = (0..6).all(|_| r.lenenc_str().is_ok())
                    && r.remaining().first() == Some(&0x0C)
                    && r.remaining().len() == 13;
                extended.get_or_insert(!plain);
                if let Ok(d) = ColumnDef::parse(&f.payload) {
                    if d.character_set != BINARY && d.character_set < 256 {
                        return Ok(Some((d.character_set as u8, !plain)));
                    }
                }
            }
        }
    }
    Ok(extended.map(|e| (COLLATION, e)))
}

async fn connect(
    dsn: &Dsn,
    options: &AgainstOptions,
    collation: u8,
    extended_metadata: bool,
) -> Result<Upstream, AgainstError> {
    use chaperone_mysql::protocol::MariadbCapabilities;
    let target = dsn.target()?;
    let attrs = BTreeMap::from([("program_name".to_string(), "chaperone-replay".to_string())]);
    let req = UpstreamRequest {
        capabilities: CLIENT_CAPS,
        mariadb_capabilities: if extended_metadata {
            MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
        } else {
            MariadbCapabilities::empty()
        },
        collation,
        max_packet_size: 1 << 30,
        database: dsn.database.as_deref(),
        connect_attrs: &attrs,
        timeout: options.connect_timeout.unwrap_or(Duration::from_secs(10)),
        max_packet: 1 << 30,
    };
    target
        .connect(&req)
        .await
        .map_err(|e| AgainstError::Connect {
            address: dsn.address.clone(),
            detail: e.to_string(),
        })
}

/// A column definition with its `schema` (database) field replaced: the replay
/// target's database has another name than the recorded one, and column
/// definitions carry it, so the result hash is computed as if it were the same.
fn with_schema(coldef: &[u8], from: &str, to: &str) -> Option<Vec<u8>> {
    use chaperone_mysql::protocol::lenenc::{put_lenenc_str, Reader};
    let mut r = Reader::new(coldef, "column definition");
    let catalog = r.lenenc_str().ok()?;
    let schema = r.lenenc_str().ok()?;
    if schema != from.as_bytes() {
        return None;
    }
    let mut out = Vec::with_capacity(coldef.len() + to.len());
    put_lenenc_str(&mut out, catalog);
    put_lenenc_str(&mut out, to.as_bytes());
    out.extend_from_slice(r.remaining());
    Some(out)
}

/// Sends one request and reads its whole response. `schema_map`: (target
/// database, recorded database) for the result hash; `masker`: masks the
/// response as the gateway did before it was recorded (and hashed).
async fn exchange(
    up: &mut Upstream,
    payload: &[u8],
    schema_map: Option<(&str, &str)>,
    mut masker: Option<&mut ResponseMasker>,
) -> Result<ResponseFacts, String> {
    let command = payload.first().copied().unwrap_or(COM_QUERY);
    let deprecate_eof = up
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    up.conn
        .send(Packet::new(0, Bytes::copy_from_slice(payload)))
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let mut ex = Exchange::new(command, deprecate_eof);
    while !ex.is_done() {
        let p = match up.conn.next().await {
            Some(Ok(p)) => p,
            Some(Err(e)) => return Err(format!("reading the response: {e}")),
            None => return Err("the database closed the connection".into()),
        };
        let step = ex.on_packet(&p.payload).map_err(|e| e.to_string())?;
        let renamed = match (ex.last_packet(), schema_map) {
            (PacketKind::ColumnDef, Some((from, to))) => with_schema(&p.payload, from, to),
            _ => None,
        };
        let delivered = renamed.as_deref().unwrap_or(&p.payload);
        let masked = match masker.as_mut() {
            Some(m) => m
                .on_packet(ex.last_packet(), delivered)
                .map_err(|e| format!("masking the response: {e}"))?,
            None => None,
        };
        ex.delivered(masked.as_deref().unwrap_or(delivered));
        if step == Step::LocalInfile {
            // The replay has no local files: send the empty packet that ends the upload.
            up.conn
                .send(Packet::new(p.seq.wrapping_add(1), Bytes::new()))
                .await
                .map_err(|e| format!("sending: {e}"))?;
            ex.resume_after_local_infile();
        }
    }
    let mut facts = ex.into_facts();
    if let (Some(m), Some(e)) = (masker, facts.error.as_mut()) {
        if let Some(message) = &m.masked_error {
            e.message = message.clone();
        }
    }
    Ok(facts)
}

async fn simple(up: &mut Upstream, sql: &str) -> Result<ResponseFacts, String> {
    let mut p = vec![COM_QUERY];
    p.extend_from_slice(sql.as_bytes());
    let f = exchange(up, &p, None, None).await?;
    match &f.error {
        Some(e) => Err(format!("{sql}: {} {}", e.code, e.message)),
        None => Ok(f),
    }
}

/// `masked`: the replay's response was masked as the recorded one was, so the
/// result hashes compare even when the record's were masked.
fn compare(st: &Statement, f: &ResponseFacts, masked: bool) -> Vec<String> {
    let mut d = Vec::new();
    let err = f.error.as_ref().map(|e| e.code as i32).filter(|c| *c != 0);
    let rec_err = st.error_code.filter(|c| *c != 0);
    if err != rec_err {
        d.push(format!(
            "error: recorded {} -> now {}",
            rec_err
                .map(|c| format!("{c} {}", st.error_message.as_deref().unwrap_or("")))
                .unwrap_or_else(|| "none".into()),
            f.error
                .as_ref()
                .map(|e| format!("{} {}", e.code, e.message))
                .unwrap_or_else(|| "none".into())
        ));
    }
    if st.masked_columns.is_empty() || masked {
        if f.result_hash != st.result_hash {
            d.push(format!(
                "result hash: recorded {} -> now {} ({} rows recorded, {} now)",
                st.result_hash.as_deref().unwrap_or("none"),
                f.result_hash.as_deref().unwrap_or("none"),
                st.rows_returned,
                f.rows
            ));
        }
    } else if f.rows as i64 != st.rows_returned {
        // The record hashes the masked result and the replay could not mask
        // (no [masking] config): compare what can be compared.
        d.push(format!(
            "rows: recorded {} -> now {}",
            st.rows_returned, f.rows
        ));
    }
    if f.affected_rows as i64 != st.rows_affected {
        d.push(format!(
            "rows affected: recorded {} -> now {}",
            st.rows_affected, f.affected_rows
        ));
    }
    if f.warnings as i32 != st.warnings {
        d.push(format!(
            "warnings: recorded {} -> now {}",
            st.warnings, f.warnings
        ));
    }
    d
}

/// Why a statement is not replayed, if it is not.
fn skip_reason(st: &Statement, command: u8, options: &AgainstOptions) -> Option<String> {
    match command {
        COM_QUIT => return Some("quit".into()),
        COM_CHANGE_USER => return Some("change user is not replayed".into()),
        COM_PROCESS_KILL => return Some("KILL is not replayed".into()),
        _ => {}
    }
    if st.is_refused() {
        return Some("the gateway refused it when recorded".into());
    }
    if options.read_only {
        let harmless = matches!(
            command,
            COM_INIT_DB
                | COM_PING
                | COM_STMT_PREPARE
                | COM_STMT_CLOSE
                | COM_STMT_RESET
                | COM_STATISTICS
        );
        let class = st.statement_class.as_deref().unwrap_or("");
        if !harmless && class != "read" {
            return Some(format!(
                "--read-only, class {}",
                if class.is_empty() { "unknown" } else { class }
            ));
        }
    }
    None
}

/// The recorded role's masking, replayed: the gateway's [`SessionMasking`],
/// driven by the recorded requests the way a gateway session drives it
/// (`proxy/src/session/step.rs`), with prepared statements known by their recorded
/// ids; and the name of the profile that applies (None: nothing is masked).
struct ReplayMasking(SessionMasking, Option<String>);

impl ReplayMasking {
    /// The masker for this request's response (None: not masked), after what
    /// the request changes in the masking state.
    fn before(&mut self, st: &Statement, command: u8) -> Option<ResponseMasker> {
        let database = st.database.as_deref();
        let sql = st.sql.as_deref().unwrap_or_default();
        let id = st.statement_id.map(|id| id as u32);
        match command {
            COM_QUERY => {
                // What strict mode refuses was refused when recorded, and is skipped.
                let analysis = AnalysisCache::shared().analyze(sql);
                let lineage = self.0.check(sql, &analysis, database).unwrap_or_default();
                self.0.masker(false, &lineage, Some(sql), database)
            }
            COM_STMT_PREPARE => {
                let analysis = AnalysisCache::shared().analyze(sql);
                self.0
                    .prepared(self.0.check(sql, &analysis, database).unwrap_or_default());
                None
            }
            COM_STMT_EXECUTE => {
                let lineage = self.0.lineage_of(id?);
                self.0.masker(true, &lineage, Some(sql), database)
            }
            COM_STMT_FETCH => self.0.cursor_masker(id?),
            COM_STMT_CLOSE => {
                if let Some(id) = id {
                    self.0.closed(id);
                }
                None
            }
            COM_RESET_CONNECTION => {
                self.0.reset();
                None
            }
            _ => None,
        }
    }

    /// What the response tells the masking state: a prepared statement's id,
    /// an executed statement's columns (for its cursor fetches).
    fn after(
        &mut self,
        st: &Statement,
        command: u8,
        masker: Option<&ResponseMasker>,
        facts: &ResponseFacts,
    ) {
        let Some(id) = st.statement_id.map(|id| id as u32) else {
            return;
        };
        match (command, masker) {
            (COM_STMT_PREPARE, _) if facts.error.is_none() && facts.prepared.is_some() => {
                self.0.prepared_id(id)
            }
            (COM_STMT_EXECUTE, Some(m)) => self.0.executed(id, m.columns()),
            _ => {}
        }
    }
}

/// How statements recorded masked are compared, when there are any.
fn masking_note(
    statements: &[Statement],
    options: &AgainstOptions,
    masking: Option<&ReplayMasking>,
) -> Option<String> {
    let masked = statements
        .iter()
        .filter(|s| !s.masked_columns.is_empty())
        .count();
    if masked == 0 {
        return None;
    }
    let role = statements.first().and_then(|s| s.role.as_deref());
    let role_name = role.map_or("none".to_string(), |r| format!("{r:?}"));
    Some(match (&options.masking, masking) {
        (Some(_), Some(ReplayMasking(_, Some(profile)))) => format!(
            "{masked} statement(s) recorded masked: compared by result hash after masking with the profile {profile:?} (recorded role: {role_name})"
        ),
        (Some(_), _) => format!(
            "{masked} statement(s) recorded masked, but the [masking] config has no profile for role {role_name} (nor \"*\"): compared by row count only"
        ),
        (None, _) => format!(
            "{masked} statement(s) recorded masked: compared by row count only (pass --config with the gateway's [masking] section, and its key, to compare their result hashes)"
        ),
    })
}

fn remap_id(payload: &mut [u8], ids: &HashMap<u32, u32>) -> Result<(), String> {
    if payload.len() < 5 {
        return Err("request too short for a statement id".into());
    }
    let old = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
    let new = ids
        .get(&old)
        .ok_or_else(|| format!("statement id {old} was not prepared in this replay"))?;
    payload[1..5].copy_from_slice(&new.to_le_bytes());
    Ok(())
}

/// Replays a session on `dsn`. `cancel` resolves when the user asks to stop (Ctrl-C).
pub async fn replay_against<S: SessionSource>(
    source: &S,
    session_id: &str,
    dsn: &Dsn,
    options: &AgainstOptions,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<Report, AgainstError> {
    let statements = source.statements(session_id).await?;
    if options.rollback && !options.read_only {
        if let Some((st, why)) = statements
            .iter()
            .find_map(|s| crate::txn::cannot_contain(s).map(|why| (s, why)))
        {
            return Err(AgainstError::RollbackImpossible {
                index: st.command_index,
                label: st.label(),
                why,
            });
        }
    }
    let requests = source.requests(session_id).await?;
    let mut by_index: HashMap<i64, Vec<Vec<u8>>> = HashMap::new();
    for f in requests {
        by_index.entry(f.command_index).or_default().push(f.payload);
    }
    let recorded_db = statements.first().and_then(|s| s.database.clone());
    let (collation, extended) = recorded_client(source, &statements)
        .await?
        .unwrap_or((COLLATION, false));
    let mut up = connect(dsn, options, collation, extended).await?;
    let started = Instant::now();
    let mut report = Report {
        session_id: session_id.to_string(),
        target: format!("{}/{}", dsn.address, dsn.database.as_deref().unwrap_or("")),
        ..Default::default()
    };
    if options.rollback {
        for sql in [
            "START TRANSACTION",
            &format!("SAVEPOINT {}", crate::txn::SAVEPOINT),
        ] {
            simple(&mut up, sql)
                .await
                .map_err(|detail| AgainstError::Connect {
                    address: dsn.address.clone(),
                    detail,
                })?;
        }
    }
    let mut ids: HashMap<u32, u32> = HashMap::new();
    // The target's name for the recorded database: the DSN's, else the mapped one.
    let target_db = dsn.database.clone().or_else(|| {
        let mapped = recorded_db
            .as_deref()
            .and_then(|d| options.databases.database(d));
        mapped.map(str::to_string)
    });
    let schema_map = match (&target_db, &recorded_db) {
        (Some(new), Some(old)) if new != old => Some((new.as_str(), old.as_str())),
        _ => None,
    };
    let mut masking = options.masking.as_ref().map(|m| {
        let role = statements.first().and_then(|s| s.role.as_deref());
        let policy = m.policy(role);
        let profile = policy.as_ref().map(|p| p.role.clone());
        ReplayMasking(SessionMasking::new(policy), profile)
    });
    report.masking_note = masking_note(&statements, options, masking.as_ref());
    let mut broken = false;
    tokio::pin!(cancel);
    for st in &statements {
        let Some(payload) = by_index.get(&st.command_index).and_then(|p| p.first()) else {
            report.outcomes.push(Outcome {
                command_index: st.command_index,
                label: st.label(),
                skipped: Some("no recorded request frame".into()),
                differences: vec![],
            });
            report.skipped += 1;
            continue;
        };
        let mut payload = payload.clone();
        let command = payload.first().copied().unwrap_or(0);
        if let Some(why) = skip_reason(st, command, options) {
            report.skipped += 1;
            report.outcomes.push(Outcome {
                command_index: st.command_index,
                label: st.label(),
                skipped: Some(why),
                differences: vec![],
            });
            continue;
        }
        if matches!(
            command,
            COM_STMT_EXECUTE
                | COM_STMT_CLOSE
                | COM_STMT_RESET
                | COM_STMT_FETCH
                | COM_STMT_SEND_LONG_DATA
        ) {
            if let Err(e) = remap_id(&mut payload, &ids) {
                report.stopped = Some(format!("#{}: {e}", st.command_index));
                break;
            }
        }
        payload =
            crate::txn::request_for(st, command, payload, options.rollback, &options.databases);
        if command == COM_INIT_DB {
            if let (Some(rec), Some(new)) = (&recorded_db, &dsn.database) {
                if payload[1..] == *rec.as_bytes() {
                    payload = [&[COM_INIT_DB][..], new.as_bytes()].concat();
                }
            }
        }
        let mut masker = masking.as_mut().and_then(|m| m.before(st, command));
        let facts = tokio::select! {
            biased;
            _ = &mut cancel => {
                report.stopped = Some(format!("interrupted at #{}", st.command_index));
                // A response may be half read: the connection is not reused.
                broken = true;
                break;
            }
            f = exchange(&mut up, &payload, schema_map, masker.as_mut()) => f,
        };
        let facts = match facts {
            Ok(f) => f,
            Err(e) => {
                report.stopped = Some(format!("#{} ({}): {e}", st.command_index, st.label()));
                broken = true;
                break;
            }
        };
        report.executed += 1;
        if let Some(m) = masking.as_mut() {
            m.after(st, command, masker.as_ref(), &facts);
        }
        if command == COM_STMT_PREPARE {
            if let (Some(old), Some((new, _, _))) = (st.statement_id, facts.prepared) {
                ids.insert(old as u32, new);
            }
        }
        let differences = if command == COM_STMT_CLOSE || command == COM_STMT_SEND_LONG_DATA {
            vec![]
        } else {
            compare(
                st,
                &facts,
                masking.as_ref().is_some_and(|m| m.0.is_active()),
            )
        };
        if !differences.is_empty() {
            report.diverged += 1;
        }
        report.outcomes.push(Outcome {
            command_index: st.command_index,
            label: st.label(),
            skipped: None,
            differences,
        });
    }
    if options.rollback {
        report.rolled_back = if broken {
            // The server rolls back an open transaction when its connection closes.
            drop(up);
            report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
            report.rollback_note =
                Some("connection closed: the server rolled the transaction back".into());
            return Ok(report);
        } else {
            simple(&mut up, "ROLLBACK").await.is_ok()
        };
    }
    let _ = up
        .conn
        .send(Packet::new(0, Bytes::from_static(&[COM_QUIT])))
        .await;
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dsns() {
        let d = Dsn::parse("mysql://app:p%40ss@127.0.0.1:3307/shop").unwrap();
        assert_eq!(d.user, "app");
        assert_eq!(d.password, "p@ss");
        assert_eq!(d.address, "127.0.0.1:3307");
        assert_eq!(d.database.as_deref(), Some("shop"));
        let d = Dsn::parse("mysql://root@localhost").unwrap();
        assert_eq!(d.address, "localhost:3306");
        assert_eq!(d.database, None);
        assert!(Dsn::parse("postgres://x@y/z").is_err());
        assert!(same_server("localhost:3306", "127.0.0.1:3306"));
        assert!(!same_server("127.0.0.1:3306", "127.0.0.1:3307"));
    }
}
